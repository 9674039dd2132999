//! The verify-and-repair sweep against moto on 127.0.0.1, with every AWS request counted by an
//! SDK interceptor, so the batching of ListTasks, DescribeTasks and the writes is asserted.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_ecs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ecs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ecs::error::BoxError;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use ecs_target_registrar::sweep::SweepOptions;
use ecs_target_registrar::{Config, Registrar};
use serde_json::json;
use support::{Emulator, RunningTask};

/// Counts requests by operation name: the `X-Amz-Target` suffix for ECS (JSON protocol), the
/// `Action` form field for ELBv2 (query protocol). Retried attempts count again.
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<Mutex<HashMap<String, usize>>>);

impl CallCounter {
    fn get(&self, operation: &str) -> usize {
        self.0
            .lock()
            .expect("counter lock")
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    fn reset(&self) {
        self.0.lock().expect("counter lock").clear();
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = match request.headers().get("x-amz-target") {
            Some(target) => target.rsplit('.').next().unwrap_or(target).to_owned(),
            None => {
                let body = request.body().bytes().unwrap_or_default();
                let body = String::from_utf8_lossy(body);
                body.split('&')
                    .find_map(|pair| pair.strip_prefix("Action="))
                    .unwrap_or("unknown")
                    .to_owned()
            }
        };
        *self
            .0
            .lock()
            .expect("counter lock")
            .entry(operation)
            .or_default() += 1;
        Ok(())
    }
}

struct Fleet {
    ecs: EcsClient,
    elb: ElbClient,
    counter: CallCounter,
    cluster: String,
    shared: String,
    exclusive: String,
    a_definition: String,
    mapping: serde_json::Value,
}

impl Fleet {
    async fn new() -> Fleet {
        let emulator = Emulator::shared();
        let sdk = emulator.sdk_config();
        let counter = CallCounter::default();
        let ecs = EcsClient::from_conf(
            aws_sdk_ecs::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let elb = ElbClient::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let cluster = support::create_cluster(&ecs, &support::unique("fleet")).await;
        let a_family = support::unique("svc-a");
        let b_family = support::unique("svc-b");
        let a_definition = support::register_task_definition(&ecs, &a_family, "app", 8080).await;
        support::register_task_definition(&ecs, &b_family, "app", 9080).await;
        let shared = support::create_ip_target_group(
            &elb,
            &support::unique("shared"),
            &emulator.vpc_id,
            8080,
        )
        .await;
        let exclusive =
            support::create_ip_target_group(&elb, &support::unique("excl"), &emulator.vpc_id, 9080)
                .await;
        let mapping = json!({
            "services": [
                {"name": "a", "cluster": cluster, "family": a_family, "container": "app",
                 "containerPort": 8080, "targetGroups": [shared]},
                {"name": "b", "cluster": cluster, "family": b_family, "container": "app",
                 "containerPort": 9080, "targetGroups": [exclusive]}
            ],
            "exclusiveTargetGroups": [exclusive],
            "maxRemovalPercent": 50
        });
        Fleet {
            ecs,
            elb,
            counter,
            cluster,
            shared,
            exclusive,
            a_definition,
            mapping,
        }
    }

    async fn start(&self, family: &str, count: usize) -> Vec<RunningTask> {
        let mut tasks = Vec::new();
        for _ in 0..count {
            tasks.push(
                support::run_task(&self.ecs, &self.cluster, family, Emulator::shared()).await,
            );
        }
        tasks
    }

    fn registrar(&self, mapping: &serde_json::Value) -> Registrar<EcsClient, ElbClient> {
        let config = Config::from_value(mapping).expect("valid mapping");
        Registrar::new(config, self.ecs.clone(), self.elb.clone())
    }

    async fn add(&self, group: &str, id: &str, port: i32) {
        self.elb
            .register_targets()
            .target_group_arn(group)
            .targets(TargetDescription::builder().id(id).port(port).build())
            .send()
            .await
            .expect("RegisterTargets");
    }

    async fn ids(&self, group: &str) -> Vec<String> {
        let mut ids: Vec<String> = support::registered_targets(&self.elb, group)
            .await
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        ids.sort();
        ids
    }
}

#[tokio::test]
async fn sweep_repairs_a_large_fleet_in_batches() {
    let fleet = Fleet::new().await;
    let b_definition = fleet.mapping["services"][1]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    let a_tasks = fleet.start(&fleet.a_definition, 80).await;
    let b_tasks = fleet.start(&b_definition, 75).await;
    // A target left behind by a task whose stop event was lost.
    let gone = fleet.start(&fleet.a_definition, 1).await.remove(0);
    fleet.add(&fleet.shared, &gone.ip, 8080).await;
    support::stop_task(&fleet.ecs, &fleet.cluster, &gone.task_arn).await;
    // A target someone registered by hand in the shared group, and a stranger in the
    // exclusive one.
    fleet.add(&fleet.shared, "10.250.0.1", 8080).await;
    fleet.add(&fleet.exclusive, "10.250.0.2", 9080).await;
    let registrar = fleet.registrar(&fleet.mapping);
    fleet.counter.reset();

    let report = registrar
        .sweep(&SweepOptions::default())
        .await
        .expect("sweep");

    assert!(!report.has_errors(), "{report:#?}");
    assert_eq!(report.running.len(), 155);
    // 155 running tasks: two ListTasks pages and two DescribeTasks batches; the stale target
    // in the shared group needs one look at the stopped tasks (one page, one batch).
    assert_eq!(fleet.counter.get("ListTasks"), 3);
    assert_eq!(fleet.counter.get("DescribeTasks"), 3);
    assert_eq!(fleet.counter.get("DescribeTargetHealth"), 2);
    assert_eq!(
        fleet.counter.get("RegisterTargets"),
        2,
        "one chunk per group"
    );
    assert_eq!(fleet.counter.get("DeregisterTargets"), 2);

    let mut expected_shared: Vec<String> = a_tasks.iter().map(|t| t.ip.clone()).collect();
    expected_shared.push("10.250.0.1".to_owned());
    expected_shared.sort();
    assert_eq!(fleet.ids(&fleet.shared).await, expected_shared);
    let mut expected_exclusive: Vec<String> = b_tasks.iter().map(|t| t.ip.clone()).collect();
    expected_exclusive.sort();
    assert_eq!(fleet.ids(&fleet.exclusive).await, expected_exclusive);
    let shared = report
        .groups
        .iter()
        .find(|g| g.target_group == fleet.shared)
        .expect("shared");
    assert_eq!(shared.kept.len(), 1);
    assert_eq!(shared.deregister.len(), 1);

    // A second sweep right after finds nothing to change.
    fleet.counter.reset();
    let again = registrar
        .sweep(&SweepOptions::default())
        .await
        .expect("sweep");
    assert_eq!(again.changes(), 0, "{again:#?}");
    assert_eq!(fleet.counter.get("RegisterTargets"), 0);
    assert_eq!(fleet.counter.get("DeregisterTargets"), 0);
}

#[tokio::test]
async fn dry_run_reports_the_plan_and_changes_nothing() {
    let fleet = Fleet::new().await;
    let tasks = fleet.start(&fleet.a_definition, 3).await;
    let b_family = fleet.mapping["services"][1]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    let b_task = fleet.start(&b_family, 1).await.remove(0);
    fleet.add(&fleet.exclusive, &b_task.ip, 9080).await;
    fleet.add(&fleet.exclusive, "10.250.0.3", 9080).await;
    let registrar = fleet.registrar(&fleet.mapping);
    fleet.counter.reset();

    let options = SweepOptions {
        dry_run: true,
        ..SweepOptions::default()
    };
    let report = registrar.sweep(&options).await.expect("sweep");

    assert!(report.dry_run);
    let shared = report
        .groups
        .iter()
        .find(|g| g.target_group == fleet.shared)
        .expect("shared");
    assert_eq!(shared.register.len(), tasks.len());
    let exclusive = report
        .groups
        .iter()
        .find(|g| g.target_group == fleet.exclusive)
        .expect("exclusive");
    assert_eq!(exclusive.deregister.len(), 1);
    assert_eq!(fleet.counter.get("RegisterTargets"), 0);
    assert_eq!(fleet.counter.get("DeregisterTargets"), 0);
    assert!(fleet.ids(&fleet.shared).await.is_empty());
    assert_eq!(fleet.ids(&fleet.exclusive).await.len(), 2);
}

#[tokio::test]
async fn removal_cap_holds_back_and_reports() {
    let fleet = Fleet::new().await;
    let b_family = fleet.mapping["services"][1]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    fleet.start(&b_family, 1).await;
    for i in 1..=4 {
        fleet
            .add(&fleet.exclusive, &format!("10.250.1.{i}"), 9080)
            .await;
    }
    let registrar = fleet.registrar(&fleet.mapping);

    let report = registrar
        .sweep(&SweepOptions::default())
        .await
        .expect("sweep");

    let exclusive = report
        .groups
        .iter()
        .find(|g| g.target_group == fleet.exclusive)
        .expect("exclusive");
    assert_eq!(exclusive.register.len(), 1);
    assert_eq!(exclusive.deregister.len(), 2, "50% of 4");
    assert_eq!(exclusive.held_back.len(), 2);
    assert_eq!(fleet.ids(&fleet.exclusive).await.len(), 3);
}

#[tokio::test]
async fn mapping_that_matches_nothing_empties_no_group() {
    let fleet = Fleet::new().await;
    let b_family = fleet.mapping["services"][1]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    let b_task = fleet.start(&b_family, 1).await.remove(0);
    fleet.add(&fleet.exclusive, &b_task.ip, 9080).await;
    let mut typo = fleet.mapping.clone();
    typo["services"][1]["family"] = json!("fam-typo");
    let registrar = fleet.registrar(&typo);

    for _ in 0..3 {
        let report = registrar
            .sweep(&SweepOptions::default())
            .await
            .expect("sweep");
        assert!(report.unmatched.contains(&"b".to_owned()), "{report:#?}");
    }
    assert_eq!(
        fleet.ids(&fleet.exclusive).await,
        std::slice::from_ref(&b_task.ip)
    );
}

#[tokio::test]
async fn filtered_sweep_keeps_other_services() {
    let fleet = Fleet::new().await;
    let b_family = fleet.mapping["services"][1]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    // Both services put their targets into the exclusive group, one naming it by ARN and the
    // other by name.
    let name = fleet.exclusive.split('/').nth(1).expect("name").to_owned();
    let mut mapping = fleet.mapping.clone();
    mapping["services"][0]["targetGroups"] = json!([fleet.shared, name]);
    let registrar = fleet.registrar(&mapping);
    let a_task = fleet.start(&fleet.a_definition, 1).await.remove(0);
    let b_task = fleet.start(&b_family, 1).await.remove(0);
    registrar
        .sweep(&SweepOptions::default())
        .await
        .expect("full sweep");
    let mut both = vec![a_task.ip.clone(), b_task.ip.clone()];
    both.sort();
    assert_eq!(fleet.ids(&fleet.exclusive).await, both);

    let only_a = SweepOptions {
        services: vec!["a".into()],
        ..SweepOptions::default()
    };
    let report = registrar.sweep(&only_a).await.expect("filtered sweep");

    assert_eq!(report.changes(), 0, "{report:#?}");
    assert_eq!(fleet.ids(&fleet.exclusive).await, both);
    let again = registrar
        .sweep(&SweepOptions::default())
        .await
        .expect("second full sweep");
    assert_eq!(again.changes(), 0, "{again:#?}");
}

#[tokio::test]
async fn unknown_service_is_named() {
    let fleet = Fleet::new().await;
    let registrar = fleet.registrar(&fleet.mapping);
    let options = SweepOptions {
        services: vec!["nope".into()],
        ..SweepOptions::default()
    };
    let err = registrar
        .sweep(&options)
        .await
        .expect_err("unknown service");
    assert!(
        err.to_string().contains("unknown service [\"nope\"]"),
        "{err}"
    );
}

#[tokio::test]
async fn status_reports_missing_and_healthy_targets() {
    let fleet = Fleet::new().await;
    let tasks = fleet.start(&fleet.a_definition, 2).await;
    fleet.add(&fleet.shared, &tasks[0].ip, 8080).await;
    let registrar = fleet.registrar(&fleet.mapping);

    let report = registrar.status(&["a".to_owned()]).await.expect("status");

    assert!(!report.ok);
    let line = |ip: &str| {
        report
            .targets
            .iter()
            .find(|l| l.target.id == ip)
            .expect("line")
    };
    assert_eq!(line(&tasks[0].ip).state, "healthy");
    assert!(line(&tasks[0].ip).ok);
    assert_eq!(line(&tasks[1].ip).state, "missing");
    assert_eq!(
        line(&tasks[1].ip).task_arn.as_deref(),
        Some(tasks[1].task_arn.as_str())
    );

    registrar
        .sweep(&SweepOptions {
            services: vec!["a".into()],
            ..SweepOptions::default()
        })
        .await
        .expect("sweep");
    assert!(
        registrar
            .status(&["a".to_owned()])
            .await
            .expect("status")
            .ok
    );
}

#[tokio::test]
async fn function_routes_actions_and_schedules() {
    use ecs_target_registrar::Environment;
    use ecs_target_registrar::handler::invoke;

    let fleet = Fleet::new().await;
    let tasks = fleet.start(&fleet.a_definition, 2).await;
    let registrar = fleet.registrar(&fleet.mapping);
    let env = Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    };

    let dry = json!({"action": "sweep", "services": ["a"], "dryRun": true});
    let report = invoke(&registrar, &dry, &env).await.expect("dry run");
    assert_eq!(report["dryRun"], true);
    assert_eq!(
        report["groups"][0]["register"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(fleet.ids(&fleet.shared).await.is_empty());

    let scheduled = support::fixture_event("scheduled-event.json");
    let report = invoke(&registrar, &scheduled, &env)
        .await
        .expect("scheduled sweep");
    assert_eq!(report["dryRun"], false);
    let mut expected: Vec<String> = tasks.iter().map(|t| t.ip.clone()).collect();
    expected.sort();
    assert_eq!(fleet.ids(&fleet.shared).await, expected);

    let status = invoke(&registrar, &json!({"action": "status"}), &env)
        .await
        .expect("status");
    assert_eq!(status["ok"], true);

    for (payload, fragment) in [
        (json!({"action": "reboot"}), "unknown action \"reboot\""),
        (
            json!({"action": "sweep", "dryrun": true}),
            "unknown field `dryrun`",
        ),
        (
            json!({"action": "sweep", "waitForStarting": true, "maxWaitSeconds": 3600}),
            "maxWaitSeconds 3600 is over 300",
        ),
    ] {
        let err = invoke(&registrar, &payload, &env)
            .await
            .expect_err("rejected");
        assert_eq!(err.kind(), "InvalidAction");
        assert!(err.to_string().contains(fragment), "{err}");
    }
}

#[test]
fn sample_action_payloads_parse() {
    for name in ["sweep-dry-run.json", "sweep.json", "status.json"] {
        let payload = support::fixture_event(name);
        assert!(payload["action"].is_string(), "{name}");
    }
}
