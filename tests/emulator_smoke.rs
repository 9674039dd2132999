//! Checks the emulator harness in `tests/support` without the registrar: moto on 127.0.0.1
//! keeps a task RUNNING with an address, and an ip target group behind an ALB listener accepts
//! that address. If this test fails, the other emulator tests fail for the same reason.

mod support;

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use support::Emulator;

/// Returns the task's last status from DescribeTasks.
async fn last_status(ecs: &EcsClient, cluster: &str, task_arn: &str) -> String {
    let output = ecs
        .describe_tasks()
        .cluster(cluster)
        .tasks(task_arn)
        .send()
        .await
        .expect("DescribeTasks");
    assert!(output.failures().is_empty(), "{:?}", output.failures());
    output
        .tasks()
        .first()
        .and_then(|task| task.last_status())
        .expect("DescribeTasks returned the task with a last status")
        .to_owned()
}

#[tokio::test]
async fn emulator_runs_task_and_registers_target() {
    let emulator = Emulator::shared();
    assert!(
        emulator.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        emulator.endpoint
    );
    assert_eq!(emulator.subnet_ids.len(), 2);
    let sdk = emulator.sdk_config();
    let ecs = EcsClient::new(&sdk);
    let elb = ElbClient::new(&sdk);

    let cluster = support::create_cluster(&ecs, &support::unique("smoke")).await;
    let family = support::unique("smoke-web");
    let definition = support::register_task_definition(&ecs, &family, "app", 8080).await;
    let task = support::run_task(&ecs, &cluster, &definition, emulator).await;

    assert!(!task.ip.is_empty(), "task {} has no address", task.task_arn);
    assert_eq!(task.containers, ["app"]);
    // By default moto moves a task one step towards STOPPED on every DescribeTasks call. The
    // launcher's manual transition keeps it RUNNING.
    assert_eq!(last_status(&ecs, &cluster, &task.task_arn).await, "RUNNING");
    assert_eq!(last_status(&ecs, &cluster, &task.task_arn).await, "RUNNING");

    let load_balancer =
        support::create_load_balancer(&elb, &support::unique("smoke-alb"), emulator).await;
    let group =
        support::create_ip_target_group(&elb, &support::unique("smoke-tg"), &emulator.vpc_id, 8080)
            .await;
    support::add_listener(&elb, &load_balancer, 8000, &group).await;
    assert!(support::registered_targets(&elb, &group).await.is_empty());

    elb.register_targets()
        .target_group_arn(&group)
        .targets(TargetDescription::builder().id(&task.ip).port(8080).build())
        .send()
        .await
        .expect("RegisterTargets");

    let targets = support::registered_targets(&elb, &group).await;
    assert_eq!(targets.len(), 1, "{targets:?}");
    let (id, port, state) = &targets[0];
    assert_eq!(id, &task.ip);
    assert_eq!(*port, 8080);
    // moto reports a registered target healthy at once (AWS starts at "initial").
    assert_eq!(state, "healthy");
}
