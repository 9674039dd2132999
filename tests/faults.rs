//! Injected faults against the local emulator. The registrar's clients talk to moto through
//! `tools/fault_proxy.py`, which replaces the response to a share of the ECS and ELBv2 calls.
//! It sends throttling, a 5xx status, a late response or a permanent error, each in the
//! service's own protocol.
//!
//! The clients use the function's own retry and time-out settings, so these tests show what
//! the deployed function does: transient faults are retried by the SDK and change nothing in
//! the outcome, a call that fails past its retries fails the invocation (for Lambda to retry
//! it), and a permanent error in one target group is reported as such, names the group and
//! target, and leaves the other groups of the task registered.
//!
//! Set-up calls (cluster, tasks, target groups) and the final reads of the target groups go to
//! the emulator directly, without faults.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_ecs::config::retry::RetryPartition;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use ecs_target_registrar::aws::MAX_ATTEMPTS;
use ecs_target_registrar::summary::{ChangeResult, Outcome};
use ecs_target_registrar::{Config, Environment, Error, Registrar, Summary};
use futures::future::join_all;
use serde_json::{Value, json};
use support::fault_proxy::FaultProxy;
use support::{Emulator, RunningTask};

type Live = Registrar<EcsClient, ElbClient>;

/// A cluster, a task definition and target groups in an emulator, with clients that bypass
/// the proxy.
struct Scenario {
    ecs: EcsClient,
    elb: ElbClient,
    cluster_arn: String,
    family: String,
    task_definition_arn: String,
    target_groups: Vec<String>,
}

impl Scenario {
    async fn new(emulator: &Emulator, target_group_count: usize) -> Scenario {
        let sdk = emulator.sdk_config();
        let ecs = EcsClient::new(&sdk);
        let elb = ElbClient::new(&sdk);
        let cluster_arn = support::create_cluster(&ecs, &support::unique("faults")).await;
        let family = support::unique("web");
        let task_definition_arn =
            support::register_task_definition(&ecs, &family, "app", 8080).await;
        let mut target_groups = Vec::new();
        for _ in 0..target_group_count {
            let name = support::unique("ftg");
            let group = support::create_ip_target_group(&elb, &name, &emulator.vpc_id, 8080).await;
            target_groups.push(group);
        }
        Scenario {
            ecs,
            elb,
            cluster_arn,
            family,
            task_definition_arn,
            target_groups,
        }
    }

    fn config(&self) -> Config {
        Config::from_value(&json!({"services": [{
            "name": "web",
            "cluster": ecs_target_registrar::task::cluster_name(&self.cluster_arn),
            "family": self.family,
            "container": "app",
            "containerPort": 8080,
            "targetGroups": self.target_groups,
        }]}))
        .expect("valid mapping")
    }

    /// Builds a registrar whose clients go through `proxy`, as one Lambda process would build them.
    fn registrar(&self, proxy: &FaultProxy, emulator: &Emulator) -> Live {
        let sdk = proxy.sdk_config(emulator);
        Registrar::new(self.config(), EcsClient::new(&sdk), ElbClient::new(&sdk))
    }

    async fn run_task(&self, emulator: &Emulator) -> RunningTask {
        support::run_task(
            &self.ecs,
            &self.cluster_arn,
            &self.task_definition_arn,
            emulator,
        )
        .await
    }

    fn event(&self, fixture: &str, task: &RunningTask) -> Value {
        support::rewrite_event(
            support::fixture_event(fixture),
            task,
            &self.cluster_arn,
            &self.task_definition_arn,
        )
    }

    async fn targets(&self, index: usize) -> Vec<(String, i32)> {
        let mut targets: Vec<(String, i32)> =
            support::registered_targets(&self.elb, &self.target_groups[index])
                .await
                .into_iter()
                .map(|(id, port, _state)| (id, port))
                .collect();
        targets.sort();
        targets
    }
}

fn env() -> Environment {
    Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    }
}

/// Returns fault rules that fail the first `times` calls of every ECS and ELBv2 action with `fault`.
fn first_calls_fail(fault: &str, times: u64) -> Value {
    let actions = [
        ("ecs", "DescribeTasks"),
        ("ecs", "ListTasks"),
        ("elbv2", "RegisterTargets"),
        ("elbv2", "DeregisterTargets"),
    ];
    actions
        .iter()
        .map(|(service, action)| {
            json!({"service": service, "action": action, "fault": fault, "times": times})
        })
        .collect()
}

#[tokio::test]
async fn throttling_is_retried_until_registered() {
    let emulator = Emulator::shared();
    let scenario = Scenario::new(emulator, 1).await;
    let task = scenario.run_task(emulator).await;
    let proxy = FaultProxy::start(emulator);
    let registrar = scenario.registrar(&proxy, emulator);

    proxy.set_rules(1, first_calls_fail("throttle", 2));
    let summary = registrar
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("retries absorb throttling");
    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
    let stats = proxy.stats();
    println!("throttled registration: {stats:?}");
    assert_eq!(stats.faults_of("elbv2:RegisterTargets"), 2);
    assert_eq!(stats.requests_of("elbv2:RegisterTargets"), 3);
    // Two throttled DescribeTasks, then the confirmation and the check after registering.
    assert_eq!(stats.requests_of("ecs:DescribeTasks"), 4);

    support::stop_task(&scenario.ecs, &scenario.cluster_arn, &task.task_arn).await;
    proxy.set_rules(2, first_calls_fail("throttle", 2));
    let summary = registrar
        .handle(
            &scenario.event("fargate-stopped-same-task.json", &task),
            &env(),
        )
        .await
        .expect("retries absorb throttling");
    assert_eq!(summary.outcome, Outcome::Deregistered);
    assert!(scenario.targets(0).await.is_empty());
    assert_eq!(proxy.stats().faults_of("elbv2:DeregisterTargets"), 2);
}

#[tokio::test]
async fn service_unavailable_is_retried() {
    let emulator = Emulator::shared();
    let scenario = Scenario::new(emulator, 1).await;
    let task = scenario.run_task(emulator).await;
    let proxy = FaultProxy::start(emulator);
    let registrar = scenario.registrar(&proxy, emulator);

    proxy.set_rules(3, first_calls_fail("unavailable", 3));
    let summary = registrar
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("retries absorb 503 responses");

    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
    let stats = proxy.stats();
    assert_eq!(stats.faults_of("elbv2:RegisterTargets"), 3);
    assert_eq!(stats.requests_of("elbv2:RegisterTargets"), 4);
}

#[tokio::test]
async fn late_response_is_retried_after_timeout() {
    let emulator = Emulator::shared();
    let scenario = Scenario::new(emulator, 1).await;
    let task = scenario.run_task(emulator).await;
    let proxy = FaultProxy::start(emulator);
    let registrar = scenario.registrar(&proxy, emulator);

    // One RegisterTargets response comes after the attempt time-out; the client gives up on it
    // and sends the call again.
    let delay = ecs_target_registrar::aws::ATTEMPT_TIMEOUT.as_secs_f64() + 1.0;
    proxy.set_rules(
        4,
        json!([{"service": "elbv2", "action": "RegisterTargets", "fault": "delay",
                "delaySeconds": delay, "times": 1}]),
    );
    let summary = registrar
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("the second attempt registers");

    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
    assert_eq!(proxy.stats().requests_of("elbv2:RegisterTargets"), 2);
}

#[tokio::test]
async fn persistent_throttling_fails_after_max_attempts() {
    let emulator = Emulator::shared();
    let scenario = Scenario::new(emulator, 1).await;
    let task = scenario.run_task(emulator).await;
    let proxy = FaultProxy::start(emulator);
    let registrar = scenario.registrar(&proxy, emulator);

    proxy.set_rules(
        5,
        json!([{"service": "elbv2", "action": "RegisterTargets", "fault": "throttle"}]),
    );
    let err = registrar
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect_err("throttled on every attempt");

    assert_eq!(err.kind(), "TargetGroupChangeFailed");
    assert!(!err.is_permanent());
    let message = err.to_string();
    assert!(message.contains("Throttling: Rate exceeded"), "{message}");
    assert!(message.contains(&task.task_arn), "{message}");
    assert!(message.contains(&scenario.target_groups[0]), "{message}");
    assert_eq!(
        proxy.stats().requests_of("elbv2:RegisterTargets"),
        u64::from(MAX_ATTEMPTS)
    );
    assert!(scenario.targets(0).await.is_empty());
}

#[tokio::test]
async fn emulator_killed_mid_invocation_fails_it() {
    // An emulator of its own, since this test stops it.
    let emulator = Emulator::start();
    let scenario = Scenario::new(&emulator, 1).await;
    let task = scenario.run_task(&emulator).await;
    let proxy = FaultProxy::start(&emulator);
    let registrar = scenario.registrar(&proxy, &emulator);
    // RegisterTargets waits in the proxy, so the emulator can be stopped while it is open.
    proxy.set_rules(
        6,
        json!([{"service": "elbv2", "action": "RegisterTargets", "fault": "delay",
                "delaySeconds": 2.0, "times": 1}]),
    );
    let event = scenario.event("fargate-running.json", &task);
    let env = env();
    let invocation = registrar.handle(&event, &env);
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.stats().requests_of("elbv2:RegisterTargets") == 0 {
            assert!(Instant::now() < deadline, "RegisterTargets never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        emulator.stop();
    };

    let (result, ()) = tokio::join!(invocation, killer);

    let err = result.expect_err("an invocation whose calls cannot finish must fail");
    assert_eq!(err.kind(), "TargetGroupChangeFailed");
    assert!(!err.is_permanent());
    let message = err.to_string();
    assert!(message.contains("RegisterTargets"), "{message}");
    assert!(message.contains(&task.task_arn), "{message}");
    assert!(message.contains(&task.ip), "{message}");
}

/// Runs a permanent error on RegisterTargets into the first of two target groups.
async fn permanent_error_in_first_group(code: &str, message: &str) -> (Scenario, Error) {
    let emulator = Emulator::shared();
    let scenario = Scenario::new(emulator, 2).await;
    let task = scenario.run_task(emulator).await;
    let proxy = FaultProxy::start(emulator);
    let registrar = scenario.registrar(&proxy, emulator);
    proxy.set_rules(
        7,
        json!([{"service": "elbv2", "action": "RegisterTargets", "fault": "error",
                "code": code, "message": message, "contains": scenario.target_groups[0]}]),
    );
    let err = registrar
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect_err("a rejected registration fails the invocation");

    let stats = proxy.stats();
    // Not retried by the SDK: one failed call into the first group, one call into the second.
    assert_eq!(
        stats.faults_of("elbv2:RegisterTargets"),
        1,
        "{code}: {stats:?}"
    );
    assert_eq!(
        stats.requests_of("elbv2:RegisterTargets"),
        2,
        "{code}: {stats:?}"
    );
    assert!(scenario.targets(0).await.is_empty(), "{code}");
    assert_eq!(
        scenario.targets(1).await,
        [(task.ip.clone(), 8080)],
        "{code}: the second group must still be registered"
    );
    let text = err.to_string();
    assert!(text.contains(code), "{text}");
    assert!(text.contains(&scenario.target_groups[0]), "{text}");
    assert!(text.contains(&format!("{}:8080", task.ip)), "{text}");
    (scenario, err)
}

#[tokio::test]
async fn permanent_errors_are_classified() {
    let cases = [
        (
            "TooManyTargets",
            "You have reached the maximum number of targets",
        ),
        (
            "AccessDenied",
            "not authorized to perform: elasticloadbalancing:RegisterTargets",
        ),
        (
            "ValidationError",
            "The IP address is not in the VPC of the target group",
        ),
        ("TargetGroupNotFound", "One or more target groups not found"),
    ];
    for (code, message) in cases {
        let (_scenario, err) = permanent_error_in_first_group(code, message).await;
        assert_eq!(err.kind(), "TargetGroupChangeRejected", "{code}");
        assert!(err.is_permanent(), "{code}");
        let summary = err.summary().expect("the summary is kept");
        let failed: Vec<_> = summary
            .changes
            .iter()
            .filter(|change| change.result == ChangeResult::Failed)
            .collect();
        assert_eq!(failed.len(), 1, "{code}");
        assert!(failed[0].permanent, "{code}");
        let registered = summary
            .changes
            .iter()
            .filter(|change| change.result == ChangeResult::Registered)
            .count();
        assert_eq!(registered, 1, "{code}");
    }
}

/// Number of tasks the burst starts and events it sends at once.
const BURST_TASKS: usize = 500;
/// Share of ECS and ELBv2 calls that the proxy throttles during the burst.
const BURST_THROTTLED_SHARE: f64 = 0.3;
/// Invocations per event: Lambda retries a failed asynchronous invocation twice.
const LAMBDA_ATTEMPTS: usize = 3;

/// Starts `count` tasks of the scenario in the emulator's wide subnet, ten per RunTask call.
async fn run_many_tasks(
    scenario: &Scenario,
    emulator: &Emulator,
    count: usize,
) -> Vec<RunningTask> {
    let mut tasks = Vec::with_capacity(count);
    while tasks.len() < count {
        let batch = (count - tasks.len()).min(10);
        let started = support::run_tasks(
            &scenario.ecs,
            &scenario.cluster_arn,
            &scenario.task_definition_arn,
            std::slice::from_ref(&emulator.wide_subnet_id),
            &emulator.security_group_id,
            i32::try_from(batch).expect("at most 10"),
        )
        .await;
        tasks.extend(started);
    }
    tasks
}

/// Handles one event as Lambda would: a new process (its own clients and retry quota) per
/// concurrent invocation, and up to [`LAMBDA_ATTEMPTS`] invocations while it fails. Returns
/// the last result and the errors of the failed invocations.
async fn invoke_like_lambda(
    scenario: &Scenario,
    proxy: &FaultProxy,
    emulator: &Emulator,
    index: usize,
    event: &Value,
) -> (Result<Summary, Error>, Vec<String>) {
    let sdk = proxy.sdk_config(emulator);
    // Each Lambda process has its own retry quota. Clients of one process share a quota per
    // service, so each simulated process gets partitions of its own.
    let ecs_config = aws_sdk_ecs::config::Builder::from(&sdk)
        .retry_partition(RetryPartition::new(format!("burst-ecs-{index}")))
        .build();
    let elb_config = aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk)
        .retry_partition(RetryPartition::new(format!("burst-elb-{index}")))
        .build();
    let registrar = Registrar::new(
        scenario.config(),
        EcsClient::from_conf(ecs_config),
        ElbClient::from_conf(elb_config),
    );
    let mut failures = Vec::new();
    loop {
        let result = registrar.handle(event, &env()).await;
        match result {
            Err(err) if failures.len() + 1 < LAMBDA_ATTEMPTS => failures.push(err.to_string()),
            result => return (result, failures),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_with_throttling_registers_every_task_once() {
    // An emulator of its own, so that the other tests' calls do not share its threads.
    let emulator = Emulator::start();
    let scenario = Scenario::new(&emulator, 1).await;
    let started = Instant::now();
    let tasks = run_many_tasks(&scenario, &emulator, BURST_TASKS).await;
    let setup = started.elapsed();
    let proxy = FaultProxy::start(&emulator);
    proxy.set_rules(
        8,
        json!([{"service": "any", "fault": "throttle", "rate": BURST_THROTTLED_SHARE}]),
    );
    let events: Vec<Value> = tasks
        .iter()
        .map(|task| scenario.event("fargate-running.json", task))
        .collect();

    let started = Instant::now();
    let calls = events
        .iter()
        .enumerate()
        .map(|(index, event)| invoke_like_lambda(&scenario, &proxy, &emulator, index, event));
    let results = join_all(calls).await;
    let burst = started.elapsed();

    let stats = proxy.stats();
    let requests: u64 = stats.requests.values().sum();
    let retried: Vec<&String> = results
        .iter()
        .filter_map(|(_, failures)| failures.first())
        .collect();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(result, _)| result.as_ref().err().map(ToString::to_string))
        .collect();
    println!(
        "burst: {BURST_TASKS} events, {requests} ECS and ELBv2 requests, {} throttled and \
         retried by the SDK, {} events needed a second invocation, {} failed after \
         {LAMBDA_ATTEMPTS}; set-up {:.1} s, burst {:.1} s",
        stats.total_faults(),
        retried.len(),
        failed.len(),
        setup.as_secs_f64(),
        burst.as_secs_f64()
    );
    println!("burst requests: {:?}", stats.requests);
    println!("burst faults: {:?}", stats.faults);
    for failure in retried.iter().take(3) {
        println!("burst: a first invocation failed: {failure}");
    }

    assert!(failed.is_empty(), "failed invocations: {failed:#?}");
    assert!(stats.total_faults() > 0, "no fault was injected: {stats:?}");
    let targets = scenario.targets(0).await;
    let distinct: BTreeSet<&(String, i32)> = targets.iter().collect();
    assert_eq!(distinct.len(), targets.len(), "a target is listed twice");
    let expected: BTreeSet<(String, i32)> =
        tasks.iter().map(|task| (task.ip.clone(), 8080)).collect();
    assert_eq!(expected.len(), BURST_TASKS, "two tasks share an address");
    let registered: BTreeSet<(String, i32)> = targets.into_iter().collect();
    assert_eq!(registered, expected);
}
