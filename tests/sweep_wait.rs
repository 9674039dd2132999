//! The sweep's wait for tasks that are still starting, against fakes behind the registrar's
//! seams, with tokio's paused clock so the waits are instant.

use std::sync::Mutex;
use std::time::Duration;

use ecs_target_registrar::aws::{ApiError, Ecs, LoadBalancing, TaskLookup};
use ecs_target_registrar::decision::Target;
use ecs_target_registrar::health::Observation;
use ecs_target_registrar::sweep::SweepOptions;
use ecs_target_registrar::task::{Container, Task};
use ecs_target_registrar::{Config, Registrar};
use serde_json::json;

/// An ECS whose one task reports PENDING for the first `pending_scans` listings, then RUNNING.
struct SlowStart {
    pending_scans: usize,
    scans: Mutex<usize>,
}

impl Ecs for SlowStart {
    async fn describe_task(&self, _: &str, _: &str) -> Result<TaskLookup, ApiError> {
        Err(ApiError::service("Unexpected", "not scripted"))
    }

    async fn running_tasks(&self, _: &str) -> Result<Vec<Task>, ApiError> {
        let scan = {
            let mut scans = self.scans.lock().expect("scans lock");
            *scans += 1;
            *scans
        };
        let status = if scan <= self.pending_scans {
            "PENDING"
        } else {
            "RUNNING"
        };
        Ok(vec![Task {
            task_arn: "arn:aws:ecs:us-east-1:123456789012:task/web/abc".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:123456789012:cluster/web".into(),
            last_status: status.into(),
            desired_status: "RUNNING".into(),
            task_definition_arn: Some(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1".into(),
            ),
            eni_ipv4: Some("10.0.3.3".into()),
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            ..Task::default()
        }])
    }

    async fn stopped_tasks(&self, _: &str) -> Result<Vec<Task>, ApiError> {
        Ok(Vec::new())
    }

    async fn ec2_instance_id(&self, _: &str, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
}

/// A load balancer with empty groups that records registrations.
#[derive(Default)]
struct Recorder {
    registered: Mutex<Vec<Target>>,
}

impl LoadBalancing for Recorder {
    async fn register_targets(&self, _: &str, targets: &[Target]) -> Result<(), ApiError> {
        self.registered
            .lock()
            .expect("lock")
            .extend_from_slice(targets);
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

    async fn target_group_arn(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
}

fn registrar(pending_scans: usize) -> Registrar<SlowStart, Recorder> {
    let config = Config::from_value(&json!({"services": [{
        "name": "web", "cluster": "web", "family": "web", "container": "app",
        "containerPort": 8080,
        "targetGroups": ["arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"]
    }]}))
    .expect("valid mapping");
    let ecs = SlowStart {
        pending_scans,
        scans: Mutex::new(0),
    };
    Registrar::new(config, ecs, Recorder::default())
}

#[tokio::test(start_paused = true)]
async fn sweep_waits_for_starting_tasks() {
    let registrar = registrar(3);
    let options = SweepOptions {
        max_wait: Duration::from_secs(300),
        ..SweepOptions::default()
    };

    let report = registrar.sweep(&options).await.expect("sweep");

    assert!(report.starting.is_empty(), "{report:#?}");
    assert_eq!(report.running.len(), 1);
    assert_eq!(report.groups[0].register.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn sweep_without_wait_reports_starting_tasks() {
    let registrar = registrar(3);

    let report = registrar
        .sweep(&SweepOptions::default())
        .await
        .expect("sweep");

    assert_eq!(report.starting.len(), 1);
    assert_eq!(report.starting[0].last_status, "PENDING");
    assert!(report.groups[0].register.is_empty());
}

#[tokio::test(start_paused = true)]
async fn sweep_wait_gives_up_at_the_maximum() {
    let registrar = registrar(usize::MAX);
    let options = SweepOptions {
        max_wait: Duration::from_secs(20),
        ..SweepOptions::default()
    };
    let started = tokio::time::Instant::now();

    let report = registrar.sweep(&options).await.expect("sweep");

    assert_eq!(report.starting.len(), 1);
    assert!(
        started.elapsed() <= Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

/// An ECS with two running tasks of the same service.
struct TwoTasks;

impl Ecs for TwoTasks {
    async fn describe_task(&self, _: &str, _: &str) -> Result<TaskLookup, ApiError> {
        Err(ApiError::service("Unexpected", "not scripted"))
    }

    async fn running_tasks(&self, _: &str) -> Result<Vec<Task>, ApiError> {
        let task = |id: &str, ip: &str| Task {
            task_arn: format!("arn:aws:ecs:us-east-1:123456789012:task/web/{id}"),
            cluster_arn: "arn:aws:ecs:us-east-1:123456789012:cluster/web".into(),
            last_status: "RUNNING".into(),
            desired_status: "RUNNING".into(),
            task_definition_arn: Some(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1".into(),
            ),
            eni_ipv4: Some(ip.into()),
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            ..Task::default()
        };
        Ok(vec![task("one", "10.0.3.1"), task("two", "10.0.3.2")])
    }

    async fn stopped_tasks(&self, _: &str) -> Result<Vec<Task>, ApiError> {
        Ok(Vec::new())
    }

    async fn ec2_instance_id(&self, _: &str, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
}

/// Step Functions that records each execution's input.
#[derive(Default)]
struct Executions(Mutex<Vec<serde_json::Value>>);

impl ecs_target_registrar::aws::Workflows for Executions {
    async fn start_execution(
        &self,
        _: &str,
        name: &str,
        input: &str,
    ) -> Result<ecs_target_registrar::aws::Started, ApiError> {
        let input: serde_json::Value = serde_json::from_str(input).expect("JSON input");
        self.0.lock().expect("lock").push(input);
        Ok(ecs_target_registrar::aws::Started::Execution {
            execution_arn: format!("arn:aws:states:us-east-1:123456789012:execution:w:{name}"),
        })
    }
}

#[tokio::test]
async fn sweep_with_deregister_action_waits_per_target() {
    use ecs_target_registrar::health::{HealthSettings, OnFailure};

    let config = Config::from_value(&json!({"services": [{
        "name": "web", "cluster": "web", "family": "web", "container": "app",
        "containerPort": 8080,
        "targetGroups": ["arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"]
    }]}))
    .expect("valid mapping");
    let settings = HealthSettings {
        state_machine_arn: Some("arn:aws:states:us-east-1:123456789012:stateMachine:w".into()),
        on_failure: OnFailure::Deregister,
        ..HealthSettings::default()
    };
    let registrar = Registrar::new(config, TwoTasks, Recorder::default())
        .with_health_wait(Executions::default(), settings);

    let response = ecs_target_registrar::handler::invoke(
        &registrar,
        &json!({"action": "sweep"}),
        &ecs_target_registrar::Environment::default(),
    )
    .await
    .expect("sweep");

    let checks = response["healthChecks"].as_array().expect("health checks");
    assert_eq!(checks.len(), 2, "{response}");
    assert_ne!(checks[0]["executionName"], checks[1]["executionName"]);
}
