//! One fuzz input, run through the whole invocation path with fake AWS services.
//!
//! The bytes are read as JSON, as the Lambda runtime reads a payload, and handed to
//! [`handler::invoke`], the function's own entry point. That covers event parsing, the mapping
//! match, the decision table, target forming, the ECS confirmation and the target group
//! changes, or the sweep and status actions. The fake DescribeTasks returns the event's own
//! task, so the registrar acts on whatever the input claims, and the fakes record every change.
//!
//! Besides "no panic", each run checks what the registrar may never do, whatever the input:
//! register an address that is not a usable IPv4 address or instance id, register a task that
//! ECS does not report RUNNING, or register into a group the mapping does not name.
//!
//! The libFuzzer target (`fuzz_targets/handle_payload.rs`) and the regression test
//! (`tests/fuzz_corpus.rs`) both include this file.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};

use ecs_target_registrar::aws::{ApiError, Ecs, LoadBalancing, TaskLookup};
use ecs_target_registrar::decision::{self, Lifecycle, Target};
use ecs_target_registrar::event::{self, Invocation};
use ecs_target_registrar::handler;
use ecs_target_registrar::health::Observation;
use ecs_target_registrar::task::Task;
use ecs_target_registrar::{Config, Environment, Registrar};
use serde_json::{Value, json};

/// The instance id that the fake DescribeContainerInstances returns.
const INSTANCE_ID: &str = "i-0123456789abcdef0";
/// ARN of the mapping's first target group.
const GROUP_ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-a/0123456789abcdef";
/// The ARN that the fake DescribeTargetGroups gives any name: `.../NAME/feedfacefeedface`.
const RESOLVED_PREFIX: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/";

/// Returns a mapping with an awsvpc service (family, group ARN and name) and a bridge-mode service
/// (task group, cluster ARN), so both ways of forming a target are reachable.
fn mapping() -> Value {
    json!({"services": [
        {"name": "web", "cluster": "web", "family": "web", "container": "app",
         "containerPort": 8080, "targetGroups": [GROUP_ARN, "web-b"]},
        {"name": "batch", "cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/batch",
         "group": "batch-api", "container": "worker", "containerPort": 9000,
         "targetGroups": ["batch-tg"]}
    ]})
}

/// Runs one input. Panics when the registrar breaks one of the rules in the module docs.
pub fn check(data: &[u8]) {
    // The Lambda runtime hands the function a `serde_json::Value`: input that is not JSON
    // never reaches the function.
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let event_task = event_task(&payload);
    let (result, registered) = invoke(&payload, event_task.clone());
    match &result {
        Ok(summary) => assert!(summary.is_object(), "summary is not an object: {summary}"),
        Err(err) => assert!(
            !err.to_string().is_empty(),
            "empty error for {}",
            err.kind()
        ),
    }

    if registered.is_empty() {
        return;
    }
    let task = event_task.as_ref().unwrap_or_else(|| {
        panic!("targets {registered:?} were registered for a payload that is not a task event")
    });
    assert_eq!(
        decision::lifecycle(&task.last_status, &task.desired_status),
        Lifecycle::Register,
        "registered {registered:?} for a task that is {} (desired {})",
        task.last_status,
        task.desired_status
    );
    for (group, target) in &registered {
        let mapped = group == GROUP_ARN || group.starts_with(RESOLVED_PREFIX);
        assert!(mapped, "registered into unmapped group {group}");
        assert_usable(task, target);
    }
}

/// Returns the task of a Task State Change payload.
fn event_task(payload: &Value) -> Option<Task> {
    match event::parse(payload) {
        Ok(Invocation::TaskStateChange(event)) => Some(event.task),
        _ => None,
    }
}

/// Returns the error an input fails with, or `None` when it is not JSON or succeeds.
// The libFuzzer target uses `check` only.
#[allow(dead_code)]
pub fn error_message(data: &[u8]) -> Option<String> {
    let payload = serde_json::from_slice::<Value>(data).ok()?;
    let event_task = event_task(&payload);
    invoke(&payload, event_task)
        .0
        .err()
        .map(|err| err.to_string())
}

/// Runs one payload through the function's entry point with fake AWS services, where
/// DescribeTasks returns `event_task`. Returns the result and every registered target.
fn invoke(
    payload: &Value,
    event_task: Option<Task>,
) -> (
    Result<Value, ecs_target_registrar::Error>,
    Vec<(String, Target)>,
) {
    let elb = FakeElb::default();
    let recorded = Arc::clone(&elb.registered);
    let registrar = Registrar::new(config(), FakeEcs { task: event_task }, elb);
    let env = Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    };
    let result = runtime().block_on(handler::invoke(&registrar, payload, &env));
    let registered = std::mem::take(&mut *lock(&recorded));
    (result, registered)
}

/// Asserts that a registered target is the task's usable IPv4 address, or the instance id in
/// bridge mode, on a non-zero port.
fn assert_usable(task: &Task, target: &Target) {
    assert_ne!(target.port, 0, "target {target} has port 0");
    if target.id == INSTANCE_ID {
        return;
    }
    let ip: Ipv4Addr = target
        .id
        .parse()
        .unwrap_or_else(|err| panic!("registered target id {:?}: {err}", target.id));
    assert!(
        !ip.is_unspecified() && !ip.is_broadcast(),
        "registered unusable address {ip}"
    );
    assert_eq!(
        task.ipv4().and_then(|own| own.parse::<Ipv4Addr>().ok()),
        Some(ip),
        "registered {ip}, which is not the task's address"
    );
}

fn config() -> Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG
        .get_or_init(|| Config::from_value(&mapping()).expect("the fuzz mapping is valid"))
        .clone()
}

/// Returns a current-thread runtime with paused time, so a sweep that waits for starting tasks
/// finishes at once instead of sleeping.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds")
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// ECS as the input describes it: DescribeTasks returns the event's own task.
struct FakeEcs {
    task: Option<Task>,
}

impl Ecs for FakeEcs {
    async fn describe_task(&self, _cluster: &str, task_arn: &str) -> Result<TaskLookup, ApiError> {
        Ok(match &self.task {
            Some(task) if task.task_arn == task_arn => TaskLookup::Found(Box::new(task.clone())),
            _ => TaskLookup::Missing {
                reason: "MISSING".into(),
            },
        })
    }

    async fn running_tasks(&self, _cluster: &str) -> Result<Vec<Task>, ApiError> {
        Ok(Vec::new())
    }

    async fn stopped_tasks(&self, _cluster: &str) -> Result<Vec<Task>, ApiError> {
        Ok(Vec::new())
    }

    async fn ec2_instance_id(&self, _: &str, _: &str) -> Result<Option<String>, ApiError> {
        Ok(Some(INSTANCE_ID.into()))
    }
}

/// A load balancer that accepts every change and records the registrations.
#[derive(Default)]
struct FakeElb {
    registered: Arc<Mutex<Vec<(String, Target)>>>,
}

impl LoadBalancing for FakeElb {
    async fn register_targets(&self, group: &str, targets: &[Target]) -> Result<(), ApiError> {
        let mut registered = lock(&self.registered);
        registered.extend(targets.iter().map(|t| (group.to_owned(), t.clone())));
        Ok(())
    }

    async fn deregister_targets(&self, _: &str, _: &[Target]) -> Result<(), ApiError> {
        Ok(())
    }

    async fn describe_target_health(
        &self,
        _: &str,
        _: &[Target],
    ) -> Result<Vec<(Target, Observation)>, ApiError> {
        Ok(Vec::new())
    }

    async fn target_group_arn(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(Some(format!("{RESOLVED_PREFIX}{name}/feedfacefeedface")))
    }
}
