//! Cases an operator ran into, each written as the behaviour they expect: one target group
//! named twice, a stop that keeps a reused address, a duplicate mapping key, and action
//! payloads given to `registrar handle`. The emulator cases run against moto on 127.0.0.1.

mod support;

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use ecs_target_registrar::summary::Outcome;
use ecs_target_registrar::{Config, Environment, Registrar};
use serde_json::{Value, json};
use support::{Emulator, RunningTask};

/// One cluster, one task definition with container `app` on port 8080, one running task and
/// one ip target group, known by name and by ARN.
struct Fixture {
    ecs: EcsClient,
    elb: ElbClient,
    cluster_arn: String,
    family: String,
    task_definition_arn: String,
    group_name: String,
    group_arn: String,
    task: RunningTask,
}

impl Fixture {
    async fn new() -> Fixture {
        let emulator = Emulator::shared();
        let sdk = emulator.sdk_config();
        let ecs = EcsClient::new(&sdk);
        let elb = ElbClient::new(&sdk);
        let cluster_arn = support::create_cluster(&ecs, &support::unique("reg")).await;
        let family = support::unique("reg-web");
        let task_definition_arn =
            support::register_task_definition(&ecs, &family, "app", 8080).await;
        let group_name = support::unique("rtg");
        let group_arn =
            support::create_ip_target_group(&elb, &group_name, &emulator.vpc_id, 8080).await;
        let task = support::run_task(&ecs, &cluster_arn, &task_definition_arn, emulator).await;
        Fixture {
            ecs,
            elb,
            cluster_arn,
            family,
            task_definition_arn,
            group_name,
            group_arn,
            task,
        }
    }

    fn registrar(&self, target_groups: &[&str]) -> Registrar<EcsClient, ElbClient> {
        let mapping = json!({"services": [{
            "name": "web",
            "cluster": self.cluster_arn,
            "family": self.family,
            "container": "app",
            "containerPort": 8080,
            "targetGroups": target_groups,
        }]});
        let config = Config::from_value(&mapping).expect("valid mapping");
        Registrar::new(config, self.ecs.clone(), self.elb.clone())
    }

    fn event(&self, fixture: &str, task: &RunningTask) -> Value {
        support::rewrite_event(
            support::fixture_event(fixture),
            task,
            &self.cluster_arn,
            &self.task_definition_arn,
        )
    }
}

fn env() -> Environment {
    Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    }
}

/// A mapping entry may name one target group twice, once by name and once by ARN. The handler
/// sends one RegisterTargets call and reports one change, so the summary, the metrics and the
/// health waits count the group once.
#[tokio::test]
async fn group_named_twice_changes_once() {
    let fixture = Fixture::new().await;
    let registrar = fixture.registrar(&[&fixture.group_name, &fixture.group_arn]);
    let event = fixture.event("fargate-running.json", &fixture.task);

    let summary = registrar
        .handle(&event, &env())
        .await
        .expect("registration succeeds");

    assert_eq!(summary.outcome, Outcome::Registered);
    let groups: Vec<Option<&str>> = summary
        .changes
        .iter()
        .map(|change| change.target_group_arn.as_deref())
        .collect();
    assert_eq!(
        groups,
        vec![Some(fixture.group_arn.as_str())],
        "one change per target group"
    );
}

/// A stop event for a task that ECS does not know, carrying the address of a running mapped
/// task, changes nothing, and the summary reports `skipped` with the reason the target stays.
#[tokio::test]
async fn kept_address_reports_skipped() {
    let fixture = Fixture::new().await;
    let registrar = fixture.registrar(&[&fixture.group_arn]);
    let running = fixture.event("fargate-running.json", &fixture.task);
    registrar
        .handle(&running, &env())
        .await
        .expect("registration succeeds");

    let unknown = RunningTask {
        task_arn: format!(
            "{}/00000000000000000000000000000000",
            fixture.cluster_arn.replace(":cluster/", ":task/")
        ),
        ..fixture.task.clone()
    };
    let stopped = fixture.event("fargate-stopped.json", &unknown);
    let summary = registrar
        .handle(&stopped, &env())
        .await
        .expect("the stop event is handled");

    assert!(summary.changes.is_empty(), "{:?}", summary.changes);
    assert_eq!(summary.unplaced.len(), 1, "{:?}", summary.unplaced);
    assert_eq!(summary.outcome, Outcome::Skipped, "{}", summary.reason);
    assert!(
        !summary.reason.contains("has no address"),
        "reason: {}",
        summary.reason
    );
    let targets = support::registered_targets(&fixture.elb, &fixture.group_arn).await;
    assert_eq!(targets.len(), 1, "{targets:?}");
}

/// JSON allows a key twice, and serde_json keeps the last value. The mapping is checked in
/// full, so a second `containerPort` must be reported, not used in silence.
#[test]
fn mapping_duplicate_key_is_rejected() {
    let text = r#"{"services": [{"name": "web", "cluster": "web", "family": "web",
        "container": "app", "containerPort": 8080, "containerPort": 9090,
        "targetGroups": ["web-tg"]}]}"#;

    let result = Config::from_json(text);

    assert!(result.is_err(), "accepted: {result:?}");
}

/// The `events/` folder ships action payloads (`sweep.json`, `sweep-dry-run.json`,
/// `status.json`) next to task events. `handle` points to the CLI command that does the same,
/// instead of calling them "not an EventBridge event".
#[tokio::test]
async fn handle_names_action_payloads() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mapping = format!("{root}/config/services.example.json");
    let payload = format!("{root}/events/sweep-dry-run.json");
    let endpoint = Emulator::shared().endpoint.clone();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(["--config-file", &mapping, "--endpoint-url", &endpoint])
        .args(["--region", "us-east-1", "handle", &payload])
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .expect("run the registrar CLI");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("not an EventBridge event"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("registrar sweep"), "stderr: {stderr}");
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
}
