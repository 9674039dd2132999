//! Test support: the local AWS emulator and the resources that the tests and the demo build in it.
//!
//! [`Emulator`] runs `tools/moto_launcher.py` from the project's venv, which starts moto on a
//! free port of 127.0.0.1. Every client built from [`Emulator::sdk_config`] has that endpoint,
//! region us-east-1 and static dummy credentials, without aws-config's environment and profile
//! loaders. Only the HTTP client's proxy settings still come from the environment, and
//! [`Emulator::sdk_config`] checks them. Tests in one binary share one emulator and run in
//! parallel, so every resource gets a name from [`unique`].
//!
//! [`fault_proxy::FaultProxy`] puts `tools/fault_proxy.py` in front of an emulator. It replaces
//! the response to a share of the ECS and ELBv2 calls with throttling, a 5xx status or a delay.
//!
//! Setup failures panic with a message that names the failed call: this is test code.

// Each test binary and the demo use a different part of this module.
#![allow(dead_code)]

pub mod fault_proxy;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_ecs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, LaunchType,
    NetworkConfiguration, NetworkMode, PortMapping,
};
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, ProtocolEnum, TargetTypeEnum,
};
use serde_json::{Value, json};

/// Maximum time the launcher may take to print its JSON line. A start took about 2.4 s with
/// moto 5.2.5 on a 2-core machine, and the margin covers a machine busy compiling.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum time a launcher may take to exit after its stdin closes, before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Region of every emulator client and of rewritten events.
const REGION: &str = "us-east-1";

/// Account ID that moto gives every resource.
const ACCOUNT: &str = "123456789012";

/// A moto server on 127.0.0.1, with a VPC, two subnets and a security group for tasks and
/// load balancers.
pub struct Emulator {
    /// Server port on 127.0.0.1.
    pub port: u16,
    /// Endpoint URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// VPC for tasks, load balancers and target groups, with DNS hostnames enabled.
    pub vpc_id: String,
    /// Two subnets of the VPC, in us-east-1a and us-east-1b, as an ALB needs two zones.
    pub subnet_ids: Vec<String>,
    /// A /19 subnet of the VPC in us-east-1a, for tests that run more tasks than a /24 holds.
    pub wide_subnet_id: String,
    /// Security group in the VPC.
    pub security_group_id: String,
    /// File that receives the launcher's stderr: moto's request log and any traceback.
    pub log_path: PathBuf,
    /// Launcher process, until it is stopped.
    child: Mutex<Option<Child>>,
    /// Write end of the launcher's stdin. The launcher exits once this pipe closes.
    stdin: Mutex<Option<ChildStdin>>,
}

impl Emulator {
    /// Returns the emulator shared by all tests of this binary, starting it on first use.
    ///
    /// It is never dropped. Its launcher exits when the test process ends, because the end of
    /// the process closes the launcher's stdin.
    pub fn shared() -> &'static Emulator {
        static SHARED: OnceLock<Emulator> = OnceLock::new();
        SHARED.get_or_init(Emulator::start)
    }

    /// Starts an emulator owned by the caller, which stops it with [`Emulator::stop`] or by
    /// dropping it.
    ///
    /// # Panics
    ///
    /// If the venv's Python is missing, the launcher cannot start, or it prints no valid JSON
    /// line within [`START_TIMEOUT`]. The message includes the end of the launcher's log.
    pub fn start() -> Emulator {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `make venv` to install the pinned emulator (moto)",
            python.display()
        );
        let log_path = new_log_path();
        let log = File::create(&log_path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", log_path.display()));

        let mut child = Command::new(&python)
            .arg(root.join("tools/moto_launcher.py"))
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", python.display()));

        let line = match read_first_line(&mut child) {
            Ok(line) => line,
            Err(problem) => {
                kill_and_wait(&mut child);
                panic!(
                    "the emulator did not start: {problem}\n{}",
                    log_tail(&log_path)
                );
            }
        };
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|err| {
            kill_and_wait(&mut child);
            panic!("invalid JSON line from the launcher {line:?}: {err}")
        });
        let text = |key: &str| {
            ready[key]
                .as_str()
                .unwrap_or_else(|| panic!("launcher line {line:?} has no string {key:?}"))
                .to_owned()
        };
        let port = ready["port"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("launcher line {line:?} has no valid port"));
        let subnet_ids: Vec<String> = ready["subnetIds"]
            .as_array()
            .unwrap_or_else(|| panic!("launcher line {line:?} has no subnetIds"))
            .iter()
            .map(|id| id.as_str().expect("subnet IDs are strings").to_owned())
            .collect();

        Emulator {
            port,
            endpoint: text("endpoint"),
            vpc_id: text("vpcId"),
            subnet_ids,
            wide_subnet_id: text("wideSubnetId"),
            security_group_id: text("securityGroupId"),
            log_path,
            stdin: Mutex::new(child.stdin.take()),
            child: Mutex::new(Some(child)),
        }
    }

    /// Builds an SDK configuration with this emulator's endpoint, us-east-1 and static dummy
    /// credentials.
    ///
    /// # Panics
    ///
    /// If an HTTP proxy from the environment would receive the emulator's requests: with
    /// `BehaviorVersion::latest()` the SDK's default HTTP client reads `HTTP_PROXY`,
    /// `ALL_PROXY` and `NO_PROXY`.
    pub fn sdk_config(&self) -> SdkConfig {
        assert_no_proxy_for_loopback();
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "static",
            )))
            .build()
    }

    /// Stops the server: closes the launcher's stdin, waits up to [`STOP_TIMEOUT`] for it to
    /// exit, then kills it by its pid. Calling it again does nothing.
    pub fn stop(&self) {
        drop(lock(&self.stdin).take());
        let Some(mut child) = lock(&self.child).take() else {
            return;
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        kill_and_wait(&mut child);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Locks a mutex, and keeps using its value if another test panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Returns a log file path that no other emulator of this process or machine uses, under
/// cargo's scratch folder for tests (`target/tmp`, which `cargo clean` removes) when there is
/// one, else the system's temporary folder.
fn new_log_path() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let folder = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    folder.join(format!(
        "ecs-target-registrar-moto-{}-{}.log",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Reads the launcher's first stdout line, or describes why none arrived in time.
fn read_first_line(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().expect("the launcher's stdout is piped");
    let (sender, receiver) = mpsc::channel();
    // The thread keeps reading after the first line, so that a later write by the launcher
    // never fails on a closed pipe. It ends at end of file, when the launcher exits.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let result = reader.read_line(&mut line).map(|_| line);
        let _ = sender.send(result);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(Ok(line)) if !line.trim().is_empty() => Ok(line),
        Ok(Ok(_)) => Err("the launcher exited before printing its JSON line".to_owned()),
        Ok(Err(err)) => Err(format!("reading the launcher's stdout failed: {err}")),
        Err(_) => Err(format!(
            "no JSON line from the launcher within {} s",
            START_TIMEOUT.as_secs()
        )),
    }
}

/// Kills a launcher by its pid and reaps it.
fn kill_and_wait(child: &mut Child) {
    // Either call fails only when the process is already gone, so the errors are ignored.
    let _ = child.kill();
    let _ = child.wait();
}

/// Returns the last lines of a launcher log, for panic messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

/// Panics if the environment sets an HTTP proxy that 127.0.0.1 does not bypass.
fn assert_no_proxy_for_loopback() {
    let setting = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
    };
    let Some(proxy) = setting(["HTTP_PROXY", "http_proxy"]).or(setting(["ALL_PROXY", "all_proxy"]))
    else {
        return;
    };
    let no_proxy = setting(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    let bypassed = no_proxy
        .split(',')
        .map(str::trim)
        .any(|rule| matches!(rule, "*" | "127.0.0.1" | "127.0.0.0/8"));
    assert!(
        bypassed,
        "the proxy {proxy} from the environment would receive the emulator's requests: \
         unset HTTP_PROXY and ALL_PROXY, or add 127.0.0.1 to NO_PROXY"
    );
}

/// Returns a resource name that no other call in this process returns, such as `tg-4242-7`.
///
/// The process ID keeps names of parallel test binaries apart, and the counter keeps names of
/// parallel tests apart. Names stay short, because load balancer and target group names allow
/// at most 32 characters.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A task started by RunTask.
#[derive(Debug, Clone)]
pub struct RunningTask {
    /// Task ARN.
    pub task_arn: String,
    /// Private IPv4 address of the task's elastic network interface.
    pub ip: String,
    /// Names of the task's containers, in the order RunTask returned them.
    pub containers: Vec<String>,
}

/// Creates an ECS cluster and returns its ARN.
pub async fn create_cluster(ecs: &EcsClient, name: &str) -> String {
    let output = ecs
        .create_cluster()
        .cluster_name(name)
        .send()
        .await
        .unwrap_or_else(|err| panic!("CreateCluster {name} failed: {err:?}"));
    output
        .cluster()
        .and_then(|cluster| cluster.cluster_arn())
        .expect("CreateCluster returned a cluster ARN")
        .to_owned()
}

/// Registers a Fargate task definition in awsvpc mode with one container that listens on
/// `container_port`, and returns its ARN.
pub async fn register_task_definition(
    ecs: &EcsClient,
    family: &str,
    container_name: &str,
    container_port: i32,
) -> String {
    let container = ContainerDefinition::builder()
        .name(container_name)
        .image("public.ecr.aws/nginx/nginx:latest")
        // moto's RunTask returns HTTP 500 unless each container sets its own memory.
        .memory(512)
        .essential(true)
        .port_mappings(
            PortMapping::builder()
                .container_port(container_port)
                .build(),
        )
        .build();
    let output = ecs
        .register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(container)
        .send()
        .await
        .unwrap_or_else(|err| panic!("RegisterTaskDefinition {family} failed: {err:?}"));
    output
        .task_definition()
        .and_then(|definition| definition.task_definition_arn())
        .expect("RegisterTaskDefinition returned a task definition ARN")
        .to_owned()
}

/// Runs one Fargate task in the emulator's subnets and security group, and returns its ARN,
/// address and container names.
pub async fn run_task(
    ecs: &EcsClient,
    cluster: &str,
    task_definition: &str,
    emulator: &Emulator,
) -> RunningTask {
    let mut tasks = run_tasks(
        ecs,
        cluster,
        task_definition,
        &emulator.subnet_ids,
        &emulator.security_group_id,
        1,
    )
    .await;
    tasks.remove(0)
}

/// Runs `count` Fargate tasks (at most 10, the RunTask limit) in the given subnets with one
/// RunTask call, and returns each task's ARN, address and container names.
pub async fn run_tasks(
    ecs: &EcsClient,
    cluster: &str,
    task_definition: &str,
    subnet_ids: &[String],
    security_group_id: &str,
    count: i32,
) -> Vec<RunningTask> {
    // moto's RunTask returns HTTP 500 if the configuration lists no security group.
    let awsvpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(subnet_ids.to_vec()))
        .security_groups(security_group_id)
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .expect("the awsvpc configuration has subnets");
    let network = NetworkConfiguration::builder()
        .awsvpc_configuration(awsvpc)
        .build();
    let output = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(task_definition)
        .launch_type(LaunchType::Fargate)
        .network_configuration(network)
        .count(count)
        .send()
        .await
        .unwrap_or_else(|err| panic!("RunTask {task_definition} in {cluster} failed: {err:?}"));
    assert_eq!(
        output.tasks().len(),
        usize::try_from(count).unwrap_or_default(),
        "RunTask {task_definition} started too few tasks: {:?}",
        output.failures()
    );
    output.tasks().iter().map(running_task).collect()
}

/// Reads a task's ARN, ENI address and container names from RunTask's response.
fn running_task(task: &aws_sdk_ecs::types::Task) -> RunningTask {
    let task_arn = task.task_arn().expect("RunTask returned a task ARN");

    // moto calls the attachment type "ElasticNetworkInterface", as DescribeTasks does on AWS.
    // Events call it "eni".
    let ip = task
        .attachments()
        .iter()
        .filter(|attachment| attachment.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|attachment| attachment.details())
        .find(|detail| detail.name() == Some("privateIPv4Address"))
        .and_then(|detail| detail.value())
        .unwrap_or_else(|| panic!("task {task_arn} has no ENI with a privateIPv4Address"));
    let containers = task
        .containers()
        .iter()
        .filter_map(|container| container.name())
        .map(str::to_owned)
        .collect();

    RunningTask {
        task_arn: task_arn.to_owned(),
        ip: ip.to_owned(),
        containers,
    }
}

/// Stops a task. moto marks it STOPPED at once.
pub async fn stop_task(ecs: &EcsClient, cluster: &str, task_arn: &str) {
    ecs.stop_task()
        .cluster(cluster)
        .task(task_arn)
        .reason("stopped by a test")
        .send()
        .await
        .unwrap_or_else(|err| panic!("StopTask {task_arn} failed: {err:?}"));
}

/// Creates an internal Application Load Balancer in the emulator's subnets and returns its ARN.
pub async fn create_load_balancer(elb: &ElbClient, name: &str, emulator: &Emulator) -> String {
    let output = elb
        .create_load_balancer()
        .name(name)
        .scheme(LoadBalancerSchemeEnum::Internal)
        .set_subnets(Some(emulator.subnet_ids.clone()))
        .security_groups(&emulator.security_group_id)
        .send()
        .await
        .unwrap_or_else(|err| panic!("CreateLoadBalancer {name} failed: {err:?}"));
    output
        .load_balancers()
        .first()
        .and_then(|load_balancer| load_balancer.load_balancer_arn())
        .expect("CreateLoadBalancer returned a load balancer ARN")
        .to_owned()
}

/// Creates an HTTP target group with target type `ip` and returns its ARN.
pub async fn create_ip_target_group(
    elb: &ElbClient,
    name: &str,
    vpc_id: &str,
    port: i32,
) -> String {
    let output = elb
        .create_target_group()
        .name(name)
        .protocol(ProtocolEnum::Http)
        .port(port)
        .vpc_id(vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap_or_else(|err| panic!("CreateTargetGroup {name} failed: {err:?}"));
    output
        .target_groups()
        .first()
        .and_then(|group| group.target_group_arn())
        .expect("CreateTargetGroup returned a target group ARN")
        .to_owned()
}

/// Adds an HTTP listener on `listener_port` of a load balancer that forwards to a target group.
pub async fn add_listener(
    elb: &ElbClient,
    load_balancer_arn: &str,
    listener_port: i32,
    target_group_arn: &str,
) {
    let forward = Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(target_group_arn)
        .build();
    elb.create_listener()
        .load_balancer_arn(load_balancer_arn)
        .protocol(ProtocolEnum::Http)
        .port(listener_port)
        .default_actions(forward)
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!("CreateListener on port {listener_port} of {load_balancer_arn} failed: {err:?}")
        });
}

/// Lists a target group's targets as (ID, port, health state) with DescribeTargetHealth.
pub async fn registered_targets(
    elb: &ElbClient,
    target_group_arn: &str,
) -> Vec<(String, i32, String)> {
    let output = elb
        .describe_target_health()
        .target_group_arn(target_group_arn)
        .send()
        .await
        .unwrap_or_else(|err| panic!("DescribeTargetHealth {target_group_arn} failed: {err:?}"));
    output
        .target_health_descriptions()
        .iter()
        .map(|description| {
            let target = description.target();
            let id = target.and_then(|target| target.id()).unwrap_or_default();
            let port = target.and_then(|target| target.port()).unwrap_or_default();
            let state = description
                .target_health()
                .and_then(|health| health.state())
                .map(|state| state.as_str())
                .unwrap_or_default();
            (id.to_owned(), port, state.to_owned())
        })
        .collect()
}

/// Reads and parses `events/NAME` from the repository root.
pub fn fixture_event(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("invalid JSON in {}: {err}", path.display()))
}

/// Rewrites a recorded ECS Task State Change event so that it describes `task` in the emulator.
///
/// It sets the region (us-east-1), account, `resources`, the task, cluster and task definition
/// ARNs, `group` (`family:FAMILY`), each container's `taskArn`, and every copy of the private
/// IPv4 address. The event's containers take the task's container names in order, so that a
/// mapping that names the task definition's container matches. Containers beyond the task's
/// keep their recorded names.
pub fn rewrite_event(
    mut event: Value,
    task: &RunningTask,
    cluster_arn: &str,
    task_definition_arn: &str,
) -> Value {
    event["region"] = json!(REGION);
    event["account"] = json!(ACCOUNT);
    event["resources"] = json!([task.task_arn]);

    let detail = &mut event["detail"];
    detail["taskArn"] = json!(task.task_arn);
    detail["clusterArn"] = json!(cluster_arn);
    detail["taskDefinitionArn"] = json!(task_definition_arn);
    detail["group"] = json!(format!("family:{}", family(task_definition_arn)));

    if let Some(attachments) = detail["attachments"].as_array_mut() {
        for attachment in attachments {
            let Some(details) = attachment["details"].as_array_mut() else {
                continue;
            };
            for pair in details {
                if pair["name"] == "privateIPv4Address" {
                    pair["value"] = json!(task.ip);
                }
            }
        }
    }

    if let Some(containers) = detail["containers"].as_array_mut() {
        for (index, container) in containers.iter_mut().enumerate() {
            container["taskArn"] = json!(task.task_arn);
            if let Some(name) = task.containers.get(index) {
                container["name"] = json!(name);
            }
            if let Some(interfaces) = container["networkInterfaces"].as_array_mut() {
                for interface in interfaces {
                    interface["privateIpv4Address"] = json!(task.ip);
                }
            }
        }
    }
    event
}

/// Returns the family of a task definition ARN such as
/// `arn:aws:ecs:us-east-1:123456789012:task-definition/web:3`.
fn family(task_definition_arn: &str) -> &str {
    let (_, family_and_revision) = task_definition_arn
        .rsplit_once(":task-definition/")
        .unwrap_or_else(|| panic!("{task_definition_arn:?} is not a task definition ARN"));
    family_and_revision
        .split_once(':')
        .map_or(family_and_revision, |(family, _revision)| family)
}

impl Emulator {
    /// Scripts what DescribeTargetHealth returns for one target of a target group.
    ///
    /// Each call that names the target (as the health-wait state machine does) returns the next
    /// entry of `sequence`, and the last entry repeats. An entry is
    /// `{"state", "reason"?, "description"?}` or `{"error": "Throttling"}`, which makes that call
    /// fail with ELBv2's Throttling error. An empty sequence removes the script. Calls that list
    /// the whole group, such as [`registered_targets`], keep the emulator's own answer.
    ///
    /// # Panics
    ///
    /// When the launcher rejects the script; the message includes its reason.
    pub fn script_target_health(
        &self,
        target_group_arn: &str,
        target_id: &str,
        port: i32,
        sequence: &[Value],
    ) {
        let body = serde_json::json!({
            "targetGroupArn": target_group_arn,
            "targetId": target_id,
            "port": port,
            "sequence": sequence,
        })
        .to_string();
        let (status, answer) =
            loopback_http(self.port, "POST", "/registrar-test/target-health", &body);
        assert_eq!(
            status, 200,
            "the emulator rejected the health script for {target_id}:{port}: {answer}"
        );
    }
}

/// Sends one HTTP/1.1 request with a JSON body (empty for none) to 127.0.0.1:`port` and returns
/// the status code and the response body.
///
/// # Panics
///
/// When the connection or the exchange fails, or takes more than 10 s.
pub fn loopback_http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};

    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|err| panic!("cannot connect to 127.0.0.1:{port}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|err| panic!("cannot send {method} {path}: {err}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|err| panic!("cannot read the answer to {method} {path}: {err}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the answer to {method} {path}: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
