//! Test support: the local AWS emulator and the resources the tests and the demo build in it.
//!
//! [`Emulator`] runs `tools/moto_launcher.py` from the project's venv on a free port of
//! 127.0.0.1. Every client made from [`Emulator::sdk_config`] has that endpoint and static dummy
//! credentials, so nothing here can reach AWS or an instance metadata address. Tests share one
//! emulator per test binary and keep apart by giving every resource a [`unique`] name.

// Each test binary and the demo use a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_ecs::config::Credentials;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, LaunchType,
    NetworkConfiguration, NetworkMode, PortMapping,
};
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, ProtocolEnum, TargetTypeEnum,
};
use serde_json::Value;

/// How long the launcher may take to print its description line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto server on 127.0.0.1, with a VPC, two subnets and a security group ready for use.
pub struct Emulator {
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The VPC created for tasks and load balancers.
    pub vpc_id: String,
    /// Two subnets in two availability zones, as an ALB needs.
    pub subnet_ids: Vec<String>,
    /// A security group in the VPC.
    pub security_group_id: String,
    child: Mutex<Option<Child>>,
    /// Kept open for the emulator's life: the launcher exits when it closes.
    stdin: Mutex<Option<ChildStdin>>,
}

impl Emulator {
    /// Returns the emulator shared by every test of this binary, starting it on first use.
    /// Its launcher ends with the test process, because the process's end closes its stdin.
    pub fn shared() -> &'static Emulator {
        static SHARED: OnceLock<Emulator> = OnceLock::new();
        SHARED.get_or_init(Emulator::start)
    }

    /// Starts an emulator owned by the caller; dropping it stops the server.
    ///
    /// # Panics
    ///
    /// When the venv is missing or the launcher does not report ready in time; the message
    /// says what to do.
    pub fn start() -> Emulator {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `make venv` to install the pinned emulator",
            python.display()
        );
        let log_path =
            std::env::temp_dir().join(format!("registrar-moto-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", log_path.display()));

        let mut child = Command::new(&python)
            .arg(root.join("tools/moto_launcher.py"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", python.display()));

        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            outcome => {
                let _ = child.kill();
                panic!(
                    "the emulator did not start ({outcome:?}); its log is {}",
                    log_path.display()
                );
            }
        };
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("unreadable launcher line {line:?}: {err}"));
        let text = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();

        Emulator {
            port: ready["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .expect("port"),
            endpoint: text("endpoint"),
            vpc_id: text("vpcId"),
            subnet_ids: ready["subnetIds"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            security_group_id: text("securityGroupId"),
            stdin: Mutex::new(child.stdin.take()),
            child: Mutex::new(Some(child)),
        }
    }

    /// SDK configuration for this emulator: its endpoint, us-east-1 and dummy credentials.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_credential_provider())
            .build()
    }

    /// Stops the server and waits for the launcher to exit.
    pub fn stop(&self) {
        if let Ok(mut stdin) = self.stdin.lock() {
            if let Some(mut pipe) = stdin.take() {
                let _ = pipe.flush();
            }
        }
        if let Ok(mut child) = self.child.lock() {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn aws_credential_provider() -> aws_sdk_ecs::config::SharedCredentialsProvider {
    aws_sdk_ecs::config::SharedCredentialsProvider::new(Credentials::new(
        "testing", "testing", None, None, "static",
    ))
}

/// Returns a name no other test of this process uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A task started with RunTask, with the address of its network interface.
#[derive(Debug, Clone)]
pub struct RunningTask {
    /// The task ARN.
    pub task_arn: String,
    /// The ENI's private IPv4 address.
    pub ip: String,
}

/// Creates a cluster and returns its ARN.
pub async fn create_cluster(ecs: &EcsClient, name: &str) -> String {
    let output = ecs
        .create_cluster()
        .cluster_name(name)
        .send()
        .await
        .expect("CreateCluster");
    output
        .cluster()
        .and_then(|c| c.cluster_arn())
        .expect("cluster ARN")
        .to_owned()
}

/// Registers an awsvpc task definition with one container listening on `container_port`.
pub async fn register_task_definition(
    ecs: &EcsClient,
    family: &str,
    container: &str,
    container_port: i32,
) -> String {
    let output = ecs
        .register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name(container)
                .image("public.ecr.aws/nginx/nginx:latest")
                // moto's RunTask fails unless each container sets its own memory.
                .memory(512)
                .essential(true)
                .port_mappings(
                    PortMapping::builder()
                        .container_port(container_port)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("RegisterTaskDefinition");
    output
        .task_definition()
        .and_then(|d| d.task_definition_arn())
        .expect("task definition ARN")
        .to_owned()
}

/// Runs one Fargate task in the emulator's subnets and returns it with its address.
pub async fn run_task(
    ecs: &EcsClient,
    cluster: &str,
    task_definition: &str,
    emulator: &Emulator,
) -> RunningTask {
    let network = AwsVpcConfiguration::builder()
        .set_subnets(Some(emulator.subnet_ids.clone()))
        .security_groups(&emulator.security_group_id)
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .expect("awsvpc configuration");
    let output = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(task_definition)
        .launch_type(LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(network)
                .build(),
        )
        .send()
        .await
        .expect("RunTask");
    let task = output.tasks().first().expect("RunTask started a task");
    let ip = task
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|pair| pair.name() == Some("privateIPv4Address"))
        .and_then(|pair| pair.value())
        .expect("the task's ENI has an address")
        .to_owned();
    RunningTask {
        task_arn: task.task_arn().expect("task ARN").to_owned(),
        ip,
    }
}

/// Stops a task; the emulator makes it STOPPED at once.
pub async fn stop_task(ecs: &EcsClient, cluster: &str, task_arn: &str) {
    ecs.stop_task()
        .cluster(cluster)
        .task(task_arn)
        .reason("stopped by test")
        .send()
        .await
        .expect("StopTask");
}

/// Creates an internal ALB in the emulator's subnets and returns its ARN.
pub async fn create_load_balancer(elb: &ElbClient, name: &str, emulator: &Emulator) -> String {
    let output = elb
        .create_load_balancer()
        .name(name)
        .scheme(LoadBalancerSchemeEnum::Internal)
        .set_subnets(Some(emulator.subnet_ids.clone()))
        .security_groups(&emulator.security_group_id)
        .send()
        .await
        .expect("CreateLoadBalancer");
    output
        .load_balancers()
        .first()
        .and_then(|lb| lb.load_balancer_arn())
        .expect("load balancer ARN")
        .to_owned()
}

/// Creates an HTTP target group of target type ip and returns its ARN.
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
        .expect("CreateTargetGroup");
    output
        .target_groups()
        .first()
        .and_then(|tg| tg.target_group_arn())
        .expect("target group ARN")
        .to_owned()
}

/// Adds an HTTP listener on `port` that forwards to `target_group`.
pub async fn add_listener(elb: &ElbClient, load_balancer: &str, port: i32, target_group: &str) {
    elb.create_listener()
        .load_balancer_arn(load_balancer)
        .protocol(ProtocolEnum::Http)
        .port(port)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(target_group)
                .build(),
        )
        .send()
        .await
        .expect("CreateListener");
}

/// Lists a target group's targets as (id, port, health state).
pub async fn registered_targets(elb: &ElbClient, target_group: &str) -> Vec<(String, i32, String)> {
    let output = elb
        .describe_target_health()
        .target_group_arn(target_group)
        .send()
        .await
        .expect("DescribeTargetHealth");
    output
        .target_health_descriptions()
        .iter()
        .map(|description| {
            let target = description.target();
            let state = description
                .target_health()
                .and_then(|health| health.state())
                .map(|state| state.as_str().to_owned())
                .unwrap_or_default();
            (
                target.and_then(|t| t.id()).unwrap_or_default().to_owned(),
                target.and_then(|t| t.port()).unwrap_or_default(),
                state,
            )
        })
        .collect()
}

/// Reads `events/NAME` from the repository.
pub fn fixture_event(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Rewrites a recorded event so that it describes `task` in the emulator: region, account,
/// task, cluster and task definition ARNs, group, and every copy of the address.
pub fn rewrite_event(
    mut event: Value,
    task: &RunningTask,
    cluster_arn: &str,
    task_definition_arn: &str,
) -> Value {
    let family = task_definition_arn
        .rsplit_once("task-definition/")
        .map(|(_, rest)| rest.split(':').next().unwrap_or(rest))
        .unwrap_or_default();
    event["region"] = "us-east-1".into();
    event["account"] = "123456789012".into();
    event["resources"] = serde_json::json!([task.task_arn]);
    let detail = &mut event["detail"];
    detail["taskArn"] = task.task_arn.clone().into();
    detail["clusterArn"] = cluster_arn.into();
    detail["taskDefinitionArn"] = task_definition_arn.into();
    detail["group"] = format!("family:{family}").into();
    if let Some(attachments) = detail["attachments"].as_array_mut() {
        for pair in attachments
            .iter_mut()
            .flat_map(|a| a["details"].as_array_mut().into_iter().flatten())
        {
            if pair["name"] == "privateIPv4Address" {
                pair["value"] = task.ip.clone().into();
            }
        }
    }
    if let Some(containers) = detail["containers"].as_array_mut() {
        for container in containers {
            container["taskArn"] = task.task_arn.clone().into();
            container["name"] = "app".into();
            if let Some(interfaces) = container["networkInterfaces"].as_array_mut() {
                for interface in interfaces {
                    interface["privateIpv4Address"] = task.ip.clone().into();
                }
            }
        }
    }
    event
}
