//! End-to-end tests against moto in server mode on 127.0.0.1: a real cluster, real running
//! tasks, an ALB with ip target groups, real events from `events/` rewritten to the emulator's
//! task, and assertions on the target groups' real contents.

mod support;

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use ecs_target_registrar::summary::Outcome;
use ecs_target_registrar::{Config, Environment, Registrar};
use serde_json::{Value, json};
use support::{Emulator, RunningTask};

type Live = Registrar<EcsClient, ElbClient>;

/// A cluster with one task definition and an ALB with ip target groups behind listeners.
struct Scenario {
    ecs: EcsClient,
    elb: ElbClient,
    cluster_arn: String,
    family: String,
    task_definition_arn: String,
    target_groups: Vec<String>,
}

impl Scenario {
    async fn new(target_group_count: usize) -> Scenario {
        let emulator = Emulator::shared();
        let sdk = emulator.sdk_config();
        let ecs = EcsClient::new(&sdk);
        let elb = ElbClient::new(&sdk);

        let cluster_arn = support::create_cluster(&ecs, &support::unique("cluster")).await;
        let family = support::unique("web");
        let task_definition_arn =
            support::register_task_definition(&ecs, &family, "app", 8080).await;
        let load_balancer =
            support::create_load_balancer(&elb, &support::unique("alb"), emulator).await;
        let mut target_groups = Vec::new();
        for index in 0..target_group_count {
            let group = support::create_ip_target_group(
                &elb,
                &support::unique("tg"),
                &emulator.vpc_id,
                8080,
            )
            .await;
            support::add_listener(&elb, &load_balancer, 8000 + index as i32, &group).await;
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

    fn mapping(&self) -> Value {
        json!({"services": [{
            "name": "web",
            "cluster": ecs_target_registrar::task::cluster_name(&self.cluster_arn),
            "family": self.family,
            "container": "app",
            "containerPort": 8080,
            "targetGroups": self.target_groups,
        }]})
    }

    fn registrar_with(&self, mapping: Value) -> Live {
        let config = Config::from_value(&mapping).expect("valid mapping");
        Registrar::new(config, self.ecs.clone(), self.elb.clone())
    }

    fn registrar(&self) -> Live {
        self.registrar_with(self.mapping())
    }

    async fn run_task(&self) -> RunningTask {
        support::run_task(
            &self.ecs,
            &self.cluster_arn,
            &self.task_definition_arn,
            Emulator::shared(),
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

#[tokio::test]
async fn running_event_registers_task_address() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;

    let summary = scenario
        .registrar()
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("registered");

    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
}

#[tokio::test]
async fn duplicate_running_event_leaves_one_target() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let registrar = scenario.registrar();
    let event = scenario.event("fargate-running.json", &task);

    for _ in 0..3 {
        registrar.handle(&event, &env()).await.expect("registered");
    }

    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
}

#[tokio::test]
async fn stopped_event_after_running_deregisters() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let other = scenario.run_task().await;
    let registrar = scenario.registrar();
    for running in [&task, &other] {
        registrar
            .handle(&scenario.event("fargate-running.json", running), &env())
            .await
            .expect("registered");
    }

    support::stop_task(&scenario.ecs, &scenario.cluster_arn, &task.task_arn).await;
    let summary = registrar
        .handle(
            &scenario.event("fargate-stopped-same-task.json", &task),
            &env(),
        )
        .await
        .expect("deregistered");

    assert_eq!(summary.outcome, Outcome::Deregistered);
    assert_eq!(scenario.targets(0).await, [(other.ip.clone(), 8080)]);
}

#[tokio::test]
async fn stop_requested_while_running_deregisters() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let registrar = scenario.registrar();
    registrar
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("registered");

    // ECS flips desiredStatus first; the event still says lastStatus RUNNING.
    support::stop_task(&scenario.ecs, &scenario.cluster_arn, &task.task_arn).await;
    let event = scenario.event("fargate-stop-requested.json", &task);
    assert_eq!(event["detail"]["lastStatus"], "RUNNING");
    let summary = registrar
        .handle(&event, &env())
        .await
        .expect("deregistered");

    assert_eq!(summary.outcome, Outcome::Deregistered);
    assert!(scenario.targets(0).await.is_empty());
}

#[tokio::test]
async fn running_event_after_stop_registers_nothing() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    support::stop_task(&scenario.ecs, &scenario.cluster_arn, &task.task_arn).await;

    let summary = scenario
        .registrar()
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("handled");

    assert_ne!(summary.outcome, Outcome::Registered);
    assert_eq!(
        summary.ecs_status.as_ref().map(|s| s.last_status.as_str()),
        Some("STOPPED")
    );
    assert!(scenario.targets(0).await.is_empty());
}

#[tokio::test]
async fn provisioning_and_pending_change_nothing() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let registrar = scenario.registrar();

    for fixture in ["fargate-provisioning.json", "fargate-pending.json"] {
        let summary = registrar
            .handle(&scenario.event(fixture, &task), &env())
            .await
            .expect("waiting");
        assert_eq!(summary.outcome, Outcome::Waiting, "{fixture}");
        assert!(summary.ecs_status.is_none(), "{fixture}: ECS was asked");
    }
    assert!(scenario.targets(0).await.is_empty());
}

#[tokio::test]
async fn unmapped_task_and_foreign_events_are_ignored() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let mut unmapped = scenario.mapping();
    unmapped["services"][0]["family"] = json!("some-other-family");
    let registrar = scenario.registrar_with(unmapped);

    let mut events = vec![scenario.event("fargate-running.json", &task)];
    for fixture in [
        "service-action.json",
        "container-instance-state-change.json",
        "deployment-state-change.json",
        "scheduled-event.json",
    ] {
        events.push(support::fixture_event(fixture));
    }
    for event in &events {
        let summary = registrar.handle(event, &env()).await.expect("ignored");
        assert_eq!(
            summary.outcome,
            Outcome::Ignored,
            "{}",
            event["detail-type"]
        );
    }
    assert!(scenario.targets(0).await.is_empty());
}

#[tokio::test]
async fn task_mapped_to_two_groups_lands_in_both() {
    let scenario = Scenario::new(2).await;
    let task = scenario.run_task().await;

    let summary = scenario
        .registrar()
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("registered");

    assert_eq!(summary.changes.len(), 2);
    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
    assert_eq!(scenario.targets(1).await, [(task.ip.clone(), 8080)]);
}

#[tokio::test]
async fn target_group_given_by_name_is_resolved() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let name = scenario.target_groups[0]
        .split('/')
        .nth(1)
        .expect("target group ARN has a name")
        .to_owned();
    let mut mapping = scenario.mapping();
    mapping["services"][0]["targetGroups"] = json!([name]);

    scenario
        .registrar_with(mapping)
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect("registered");

    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
}

#[tokio::test]
async fn missing_target_group_fails_with_clear_message() {
    let scenario = Scenario::new(1).await;
    let task = scenario.run_task().await;
    let missing =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/gone/0123456789abcdef";
    let mut mapping = scenario.mapping();
    mapping["services"][0]["targetGroups"] =
        json!([scenario.target_groups[0], missing, "also-gone"]);

    let err = scenario
        .registrar_with(mapping)
        .handle(&scenario.event("fargate-running.json", &task), &env())
        .await
        .expect_err("a missing target group fails the invocation");

    let message = err.to_string();
    assert!(message.contains(missing), "{message}");
    assert!(message.contains("\"also-gone\" not found"), "{message}");
    assert!(message.contains(&task.task_arn), "{message}");
    assert!(message.contains("RegisterTargets"), "{message}");
    // The group that exists still got its target.
    assert_eq!(scenario.targets(0).await, [(task.ip.clone(), 8080)]);
}
