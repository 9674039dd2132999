//! Request-level tests: the real SDK clients with `aws-smithy-mocks` rules in place of HTTP.
//!
//! These check what the registrar sends (targets, ports, order of calls) and how it handles
//! answers the local emulator cannot give: throttling, AccessDenied, bridge-mode bindings,
//! ECS lagging behind an event, and a stop landing between registration and its check.

use aws_sdk_ecs::operation::describe_container_instances::DescribeContainerInstancesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::{ListTasksError, ListTasksOutput};
use aws_sdk_ecs::types::{
    Attachment, Container, ContainerInstance, Failure, KeyValuePair, NetworkBinding, Task,
};
use aws_sdk_elasticloadbalancingv2::error::ErrorMetadata;
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::{
    DeregisterTargetsError, DeregisterTargetsOutput,
};
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::register_targets::{
    RegisterTargetsError, RegisterTargetsOutput,
};
use aws_sdk_elasticloadbalancingv2::types::TargetGroup;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use ecs_target_registrar::summary::{ChangeResult, Outcome};
use ecs_target_registrar::{Config, Environment, Error, Registrar};
use serde_json::{Value, json};

const CLUSTER: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/web";
const TASK: &str = "arn:aws:ecs:us-east-1:123456789012:task/web/0123456789abcdef0123456789abcdef";
const TG_A: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-a/0123456789abcdef";
const TG_B_NAME: &str = "web-b";
const TG_B: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-b/fedcba9876543210";

type Mocked = Registrar<aws_sdk_ecs::Client, aws_sdk_elasticloadbalancingv2::Client>;

fn config() -> Config {
    Config::from_value(&json!({"services": [{
        "name": "web", "cluster": "web", "family": "web", "container": "app",
        "containerPort": 8080, "targetGroups": [TG_A, TG_B_NAME]
    }]}))
    .expect("valid mapping")
}

fn env() -> Environment {
    Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    }
}

fn event(last: &str, desired: &str, version: i64, ip: &str) -> Value {
    json!({
        "version": "0", "id": "e", "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": "123456789012", "time": "2026-11-30T10:00:00Z", "region": "us-east-1",
        "resources": [TASK],
        "detail": {
            "taskArn": TASK, "clusterArn": CLUSTER, "lastStatus": last, "desiredStatus": desired,
            "version": version, "group": "family:web",
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
            "attachments": [{"type": "eni", "status": "ATTACHED", "details": [
                {"name": "privateIPv4Address", "value": ip}]}],
            "containers": [{"name": "app", "networkInterfaces": [{"privateIpv4Address": ip}]}]
        }
    })
}

fn ecs_task(last: &str, desired: &str, version: i64, ip: &str) -> Task {
    Task::builder()
        .task_arn(TASK)
        .cluster_arn(CLUSTER)
        .last_status(last)
        .desired_status(desired)
        .version(version)
        .group("family:web")
        .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/web:3")
        .attachments(
            Attachment::builder()
                .r#type("ElasticNetworkInterface")
                .details(
                    KeyValuePair::builder()
                        .name("privateIPv4Address")
                        .value(ip)
                        .build(),
                )
                .build(),
        )
        .containers(Container::builder().name("app").build())
        .build()
}

/// DescribeTasks returning each task in turn, then the last one for every later call.
fn describe_sequence(tasks: Vec<Task>) -> Rule {
    let mut builder = mock!(aws_sdk_ecs::Client::describe_tasks).sequence();
    let count = tasks.len();
    for (index, task) in tasks.into_iter().enumerate() {
        let output = move || DescribeTasksOutput::builder().tasks(task.clone()).build();
        builder = builder.output(output);
        if index + 1 == count {
            return builder.repeatedly().build();
        }
    }
    builder.build()
}

/// ListTasks returning the given task ARNs.
fn list_running(arns: &[&str]) -> Rule {
    let arns: Vec<String> = arns.iter().map(|arn| (*arn).to_owned()).collect();
    mock!(aws_sdk_ecs::Client::list_tasks)
        .sequence()
        .output(move || {
            ListTasksOutput::builder()
                .set_task_arns(Some(arns.clone()))
                .build()
        })
        .repeatedly()
        .build()
}

fn register_ok() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .sequence()
        .output(|| RegisterTargetsOutput::builder().build())
        .repeatedly()
        .build()
}

fn deregister_ok() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .sequence()
        .output(|| DeregisterTargetsOutput::builder().build())
        .repeatedly()
        .build()
}

/// DescribeTasks reporting the task as MISSING, as ECS does for a task it no longer describes.
fn describe_missing() -> Rule {
    mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|input| input.tasks() == [TASK.to_owned()])
        .sequence()
        .output(|| {
            DescribeTasksOutput::builder()
                .failures(Failure::builder().arn(TASK).reason("MISSING").build())
                .build()
        })
        .repeatedly()
        .build()
}

/// DeregisterTargets rejecting a target that is not registered, as ELB does.
fn deregister_not_registered() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .sequence()
        .error(|| {
            DeregisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("InvalidTarget")
                    .message("not registered")
                    .build(),
            )
        })
        .repeatedly()
        .build()
}

fn lookup_b() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups)
        .match_requests(|input| input.names() == [TG_B_NAME.to_owned()])
        .sequence()
        .output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_name(TG_B_NAME)
                        .target_group_arn(TG_B)
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build()
}

fn registrar(ecs_rules: &[&Rule], elb_rules: &[&Rule]) -> Mocked {
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, ecs_rules);
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        elb_rules
    );
    Registrar::new(config(), ecs, elb)
}

fn sent_targets(
    input: &[aws_sdk_elasticloadbalancingv2::types::TargetDescription],
) -> Vec<(String, i32)> {
    input
        .iter()
        .map(|t| {
            (
                t.id().unwrap_or_default().to_owned(),
                t.port().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn running_registers_ecs_address_on_container_port() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register_a = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| {
            input.target_group_arn() == Some(TG_A)
                && sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 8080)]
        })
        .then_output(|| RegisterTargetsOutput::builder().build());
    let register_b = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| {
            input.target_group_arn() == Some(TG_B)
                && sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 8080)]
        })
        .then_output(|| RegisterTargetsOutput::builder().build());
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&register_a, &register_b, &lookup]);

    // The event claims another address; ECS's answer decides.
    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.9.9.9"), &env())
        .await
        .expect("registered");

    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(summary.changes.len(), 2);
    assert_eq!(register_a.num_calls(), 1);
    assert_eq!(register_b.num_calls(), 1);
    // One DescribeTasks to read the truth, one after RegisterTargets to close the stop race.
    assert_eq!(describe.num_calls(), 2);
}

#[tokio::test]
async fn target_group_name_is_looked_up_once() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let lookup = lookup_b();
    let register = register_ok();
    let registrar = registrar(&[&describe], &[&register, &lookup]);
    for _ in 0..3 {
        registrar
            .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
            .await
            .expect("registered");
    }
    assert_eq!(lookup.num_calls(), 1);
    assert_eq!(register.num_calls(), 6);
}

#[tokio::test]
async fn stop_requested_deregisters_with_exact_port() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "STOPPED", 5, "10.0.1.5")]);
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|input| sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 8080)])
        .sequence()
        .output(|| DeregisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&deregister, &lookup]);

    let summary = registrar
        .handle(&event("RUNNING", "STOPPED", 5, "10.0.1.5"), &env())
        .await
        .expect("deregistered");

    assert_eq!(summary.outcome, Outcome::Deregistered);
    assert_eq!(deregister.num_calls(), 2);
    assert!(
        summary
            .changes
            .iter()
            .all(|c| c.result == ChangeResult::Deregistered)
    );
}

#[tokio::test]
async fn not_registered_counts_as_deregistered() {
    let describe = describe_sequence(vec![ecs_task("STOPPED", "STOPPED", 8, "10.0.1.5")]);
    let listed = list_running(&[]);
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .sequence()
        .error(|| {
            DeregisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("InvalidTarget")
                    .message("The following targets are not registered: 10.0.1.5")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe, &listed], &[&deregister, &lookup]);
    let summary = registrar
        .handle(&event("STOPPED", "STOPPED", 8, "10.0.1.5"), &env())
        .await
        .expect("not registered is success");
    assert!(
        summary
            .changes
            .iter()
            .all(|c| c.result == ChangeResult::NotRegistered)
    );
}

#[tokio::test]
async fn stop_during_registration_is_rolled_back() {
    let describe = describe_sequence(vec![
        ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5"),
        ecs_task("RUNNING", "STOPPED", 5, "10.0.1.5"),
    ]);
    let register = register_ok();
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|input| sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 8080)])
        .sequence()
        .output(|| DeregisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&register, &deregister, &lookup]);

    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("rolled back");

    assert_eq!(summary.outcome, Outcome::RolledBack);
    assert_eq!(register.num_calls(), 2);
    assert_eq!(deregister.num_calls(), 2);
    assert!(
        summary
            .changes
            .iter()
            .all(|c| c.result == ChangeResult::RolledBack)
    );
}

#[tokio::test]
async fn access_denied_spares_other_group() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let denied = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| input.target_group_arn() == Some(TG_A))
        .sequence()
        .error(|| {
            RegisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform: elasticloadbalancing:RegisterTargets")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let register_b = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| input.target_group_arn() == Some(TG_B))
        .then_output(|| RegisterTargetsOutput::builder().build());
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&denied, &register_b, &lookup]);

    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("a failed group fails the invocation");

    assert_eq!(register_b.num_calls(), 1);
    assert_eq!(err.kind(), "TargetGroupChangeRejected");
    assert!(err.is_permanent());
    let message = err.to_string();
    assert!(message.contains("RegisterTargets"), "{message}");
    assert!(message.contains(TASK), "{message}");
    assert!(message.contains(TG_A), "{message}");
    assert!(message.contains("10.0.1.5:8080"), "{message}");
    assert!(message.contains("AccessDenied"), "{message}");
    let summary = err.summary().expect("summary kept");
    assert_eq!(summary.outcome, Outcome::Failed);
    let results: Vec<_> = summary.changes.iter().map(|c| c.result).collect();
    assert!(results.contains(&ChangeResult::Registered), "{results:?}");
    assert!(results.contains(&ChangeResult::Failed), "{results:?}");
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let throttled_then_ok = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .sequence()
        .error(|| {
            RegisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        })
        .times(2)
        .output(|| RegisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &[&describe]);
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        &[&throttled_then_ok, &lookup],
        |conf| conf.retry_config(
            aws_sdk_elasticloadbalancingv2::config::retry::RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(std::time::Duration::from_millis(1))
        )
    );
    let registrar = Registrar::new(config(), ecs, elb);

    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("retries absorb throttling");
    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(throttled_then_ok.num_calls(), 4);
}

#[tokio::test]
async fn persistent_throttling_fails_the_invocation() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let throttled = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .sequence()
        .error(|| {
            RegisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&throttled, &lookup]);
    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("throttled past the retries");
    assert!(
        err.to_string().contains("Throttling: Rate exceeded"),
        "{err}"
    );
}

#[tokio::test]
async fn ecs_behind_the_event_fails_for_retry() {
    let describe = describe_sequence(vec![ecs_task("PENDING", "RUNNING", 3, "10.0.1.5")]);
    let register = register_ok();
    let registrar = registrar(&[&describe], &[&register]);
    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("ECS older than the event");
    assert!(matches!(
        err,
        Error::EcsBehindEvent {
            event_version: 4,
            ecs_version: 3,
            ..
        }
    ));
    assert_eq!(register.num_calls(), 0);
}

#[tokio::test]
async fn forged_running_event_for_stopped_task_registers_nothing() {
    let describe = describe_sequence(vec![ecs_task("STOPPED", "STOPPED", 8, "10.0.1.5")]);
    let listed = list_running(&[]);
    let register = register_ok();
    let deregister = deregister_ok();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe, &listed], &[&register, &deregister, &lookup]);
    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("stale event handled");
    assert_eq!(register.num_calls(), 0);
    assert_eq!(summary.outcome, Outcome::Deregistered);
}

#[tokio::test]
async fn unknown_task_registers_nothing() {
    let missing = describe_missing();
    let register = register_ok();
    let listed = list_running(&[]);
    let not_registered = deregister_not_registered();
    let lookup = lookup_b();
    let registrar = registrar(&[&missing, &listed], &[&register, &not_registered, &lookup]);
    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("skipped");
    assert_eq!(summary.outcome, Outcome::Skipped);
    assert!(summary.reason.contains("MISSING"), "{}", summary.reason);
    assert_eq!(register.num_calls(), 0);
    // The address is removed in case an earlier attempt of the event registered it.
    assert_eq!(not_registered.num_calls(), 2);
}

/// A retried RUNNING event whose first attempt registered the task and then failed finds the
/// task gone from ECS: the target the first attempt left is removed.
#[tokio::test]
async fn unknown_task_retry_removes_its_target() {
    let missing = describe_missing();
    let listed = list_running(&[]);
    let deregister = deregister_ok();
    let lookup = lookup_b();
    let registrar = registrar(&[&missing, &listed], &[&deregister, &lookup]);
    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("cleaned up");
    assert_eq!(summary.outcome, Outcome::Deregistered);
    assert!(
        summary.reason.contains("nothing registered"),
        "{}",
        summary.reason
    );
    assert_eq!(deregister.num_calls(), 2);
}

#[tokio::test]
async fn stop_of_task_ecs_forgot_uses_event_address() {
    let missing = describe_missing();
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|input| sent_targets(input.targets()) == [("10.0.7.7".to_owned(), 8080)])
        .sequence()
        .output(|| DeregisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let listed = list_running(&[]);
    let registrar = registrar(&[&missing, &listed], &[&deregister, &lookup]);
    let summary = registrar
        .handle(&event("STOPPED", "STOPPED", 9, "10.0.7.7"), &env())
        .await
        .expect("deregistered");
    assert_eq!(summary.outcome, Outcome::Deregistered);
    assert_eq!(deregister.num_calls(), 2);
}

#[tokio::test]
async fn forged_stop_for_running_task_changes_nothing() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 9, "10.0.1.5")]);
    let deregister = deregister_ok();
    let registrar = registrar(&[&describe], &[&deregister]);
    let summary = registrar
        .handle(&event("STOPPED", "STOPPED", 8, "10.0.1.5"), &env())
        .await
        .expect("skipped");
    assert_eq!(summary.outcome, Outcome::Skipped);
    assert_eq!(deregister.num_calls(), 0);
}

#[tokio::test]
async fn foreign_account_or_region_makes_no_calls() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let registrar = registrar(&[&describe], &[&register]);

    let mut other_account = event("RUNNING", "RUNNING", 4, "10.0.1.5");
    other_account["account"] = json!("210987654321");
    let mut other_region = event("RUNNING", "RUNNING", 4, "10.0.1.5");
    other_region["detail"]["clusterArn"] = json!("arn:aws:ecs:eu-west-1:123456789012:cluster/web");

    for payload in [other_account, other_region] {
        let summary = registrar.handle(&payload, &env()).await.expect("ignored");
        assert_eq!(summary.outcome, Outcome::Ignored);
        assert!(
            summary.reason.contains("but the function runs in"),
            "{}",
            summary.reason
        );
    }
    assert_eq!(describe.num_calls(), 0);
    assert_eq!(register.num_calls(), 0);
}

#[tokio::test]
async fn pending_event_makes_no_calls() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let registrar = registrar(&[&describe], &[]);
    for status in ["PROVISIONING", "PENDING", "ACTIVATING"] {
        let summary = registrar
            .handle(&event(status, "RUNNING", 2, "10.0.1.5"), &env())
            .await
            .expect("waiting");
        assert_eq!(summary.outcome, Outcome::Waiting, "{status}");
    }
    assert_eq!(describe.num_calls(), 0);
}

#[tokio::test]
async fn bridge_task_registers_instance_on_host_port() {
    let bridge = Task::builder()
        .task_arn(TASK)
        .cluster_arn(CLUSTER)
        .last_status("RUNNING")
        .desired_status("RUNNING")
        .version(2)
        .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/web:3")
        .container_instance_arn("arn:aws:ecs:us-east-1:123456789012:container-instance/web/abc")
        .containers(
            Container::builder()
                .name("app")
                .network_bindings(
                    NetworkBinding::builder()
                        .bind_ip("0.0.0.0")
                        .container_port(8080)
                        .host_port(32768)
                        .build(),
                )
                .network_bindings(
                    NetworkBinding::builder()
                        .bind_ip("::")
                        .container_port(8080)
                        .host_port(32768)
                        .build(),
                )
                .build(),
        )
        .build();
    let describe = describe_sequence(vec![bridge]);
    let instance = mock!(aws_sdk_ecs::Client::describe_container_instances)
        .sequence()
        .output(|| {
            DescribeContainerInstancesOutput::builder()
                .container_instances(
                    ContainerInstance::builder()
                        .ec2_instance_id("i-0123456789abcdef0")
                        .build(),
                )
                .build()
        })
        .repeatedly()
        .build();
    let register = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| {
            sent_targets(input.targets()) == [("i-0123456789abcdef0".to_owned(), 32768)]
        })
        .sequence()
        .output(|| RegisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe, &instance], &[&register, &lookup]);

    let mut payload = event("RUNNING", "RUNNING", 2, "10.0.1.5");
    payload["detail"]["attachments"] = json!([]);
    payload["detail"]["containers"] = json!([{"name": "app"}]);
    let summary = registrar
        .handle(&payload, &env())
        .await
        .expect("registered");

    assert_eq!(summary.outcome, Outcome::Registered);
    assert_eq!(register.num_calls(), 2);
}

#[tokio::test]
async fn wrong_container_name_fails_registration() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &[&describe]);
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        &[&register_ok()]
    );
    let config = Config::from_value(&json!({"services": [{
        "name": "web", "cluster": "web", "family": "web", "container": "sidecar",
        "containerPort": 8080, "targetGroups": [TG_A]
    }]}))
    .expect("valid mapping");
    let registrar = Registrar::new(config, ecs, elb);
    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("no target can be formed");
    assert_eq!(err.kind(), "NoTargetForTask");
    assert!(
        err.to_string()
            .contains("\"sidecar\" is not part of the task"),
        "{err}"
    );
}

const NEW_TASK: &str =
    "arn:aws:ecs:us-east-1:123456789012:task/web/fedcba9876543210fedcba9876543210";

/// DescribeTasks of [`TASK`] alone, returning `task()` on every call.
fn describe_task(task: fn() -> Task) -> Rule {
    mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|input| input.tasks() == [TASK.to_owned()])
        .sequence()
        .output(move || DescribeTasksOutput::builder().tasks(task()).build())
        .repeatedly()
        .build()
}

/// DescribeTasks of [`NEW_TASK`] alone: a running task of the mapped service at `ip`.
fn new_task_holding(ip: &'static str) -> Rule {
    mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|input| input.tasks() == [NEW_TASK.to_owned()])
        .sequence()
        .output(move || {
            let mut task = ecs_task("RUNNING", "RUNNING", 4, ip);
            task.task_arn = Some(NEW_TASK.to_owned());
            DescribeTasksOutput::builder().tasks(task).build()
        })
        .repeatedly()
        .build()
}

#[tokio::test]
async fn late_stop_keeps_address_a_new_task_holds() {
    let stopped = describe_task(|| ecs_task("STOPPED", "STOPPED", 8, "10.0.1.5"));
    // ECS gave the stopped task's address to a new task of the same service.
    let newcomer = new_task_holding("10.0.1.5");
    let listed = list_running(&[NEW_TASK]);
    let deregister = deregister_ok();
    let registrar = registrar(&[&stopped, &newcomer, &listed], &[&deregister]);

    let summary = registrar
        .handle(&event("STOPPED", "STOPPED", 8, "10.0.1.5"), &env())
        .await
        .expect("handled");

    assert_eq!(deregister.num_calls(), 0);
    assert!(summary.changes.is_empty(), "{summary:?}");
    assert!(
        summary.unplaced[0]
            .reason
            .contains(&format!("belongs to running task {NEW_TASK}")),
        "{summary:?}"
    );
}

#[tokio::test]
async fn stop_requested_needs_no_reuse_check() {
    // While lastStatus is RUNNING the task still holds its address, so ListTasks is not needed.
    let describe = describe_sequence(vec![ecs_task("RUNNING", "STOPPED", 5, "10.0.1.5")]);
    let listed = list_running(&[]);
    let deregister = deregister_ok();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe, &listed], &[&deregister, &lookup]);
    registrar
        .handle(&event("RUNNING", "STOPPED", 5, "10.0.1.5"), &env())
        .await
        .expect("deregistered");
    assert_eq!(listed.num_calls(), 0);
    assert_eq!(deregister.num_calls(), 2);
}

#[tokio::test]
async fn failed_reuse_check_fails_the_invocation() {
    let describe = describe_sequence(vec![ecs_task("STOPPED", "STOPPED", 8, "10.0.1.5")]);
    let denied = mock!(aws_sdk_ecs::Client::list_tasks)
        .sequence()
        .error(|| {
            ListTasksError::generic(
                aws_sdk_ecs::error::ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: ecs:ListTasks")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let deregister = deregister_ok();
    let registrar = registrar(&[&describe, &denied], &[&deregister]);
    let err = registrar
        .handle(&event("STOPPED", "STOPPED", 8, "10.0.1.5"), &env())
        .await
        .expect_err("an unchecked address is not removed");
    assert_eq!(err.kind(), "ListTasksFailed");
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
    assert_eq!(deregister.num_calls(), 0);
}

#[tokio::test]
async fn vanished_group_name_is_looked_up_again() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register_a = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| input.target_group_arn() == Some(TG_A))
        .sequence()
        .output(|| RegisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let gone = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| input.target_group_arn() == Some(TG_B))
        .sequence()
        .error(|| {
            RegisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("TargetGroupNotFound")
                    .message("One or more target groups not found")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&register_a, &gone, &lookup]);

    for _ in 0..2 {
        let err = registrar
            .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
            .await
            .expect_err("the group is gone");
        assert!(err.to_string().contains("TargetGroupNotFound"), "{err}");
    }
    assert_eq!(lookup.num_calls(), 2);
}

const STATE_MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:health-wait";

fn health_settings() -> ecs_target_registrar::health::HealthSettings {
    ecs_target_registrar::health::HealthSettings {
        state_machine_arn: Some(STATE_MACHINE.to_owned()),
        on_failure: ecs_target_registrar::health::OnFailure::Deregister,
        timing: ecs_target_registrar::health::Timing::default(),
    }
}

fn start_ok() -> Rule {
    mock!(aws_sdk_sfn::Client::start_execution)
        .match_requests(|input| input.state_machine_arn() == Some(STATE_MACHINE))
        .sequence()
        .output(|| {
            aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
                .execution_arn("arn:aws:states:us-east-1:123456789012:execution:health-wait:x")
                .start_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .expect("output")
        })
        .repeatedly()
        .build()
}

#[tokio::test]
async fn registration_starts_one_health_wait_per_group() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let lookup = lookup_b();
    let started = start_ok();
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[&started]);
    let registrar =
        registrar(&[&describe], &[&register, &lookup]).with_health_wait(sfn, health_settings());

    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("registered");

    assert_eq!(started.num_calls(), 2);
    assert_eq!(summary.health_checks.len(), 2);
    let groups: Vec<_> = summary
        .health_checks
        .iter()
        .map(|c| c.target_group_arn.as_str())
        .collect();
    assert!(
        groups.contains(&TG_A) && groups.contains(&TG_B),
        "{groups:?}"
    );
    for check in &summary.health_checks {
        assert_eq!(
            check.result,
            ecs_target_registrar::summary::HealthCheckResult::Started
        );
        assert!(
            check
                .execution_name
                .starts_with("0123456789abcdef0123456789abcdef-v4-"),
            "{}",
            check.execution_name
        );
    }
    assert_ne!(
        summary.health_checks[0].execution_name,
        summary.health_checks[1].execution_name
    );
}

#[tokio::test]
async fn health_wait_input_names_group_targets_and_timing() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let expected_input = json!({
        "targetGroupArn": TG_A,
        "targets": [{"Id": "10.0.1.5", "Port": 8080}],
        "taskArn": TASK,
        "timing": {"initialDelaySeconds": 0, "pollIntervalSeconds": 10, "gracePeriodSeconds": 30, "maxRounds": 13},
        "onFailure": "deregister",
        "metrics": {
            "namespace": "RegistrarTests",
            "service": "web",
            "targetGroup": ecs_target_registrar::metrics::group_name(TG_A),
        }
    });
    let started = mock!(aws_sdk_sfn::Client::start_execution)
        .match_requests(move |input| {
            input
                .input()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                == Some(expected_input.clone())
        })
        .sequence()
        .output(|| {
            aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
                .execution_arn("arn:aws:states:us-east-1:123456789012:execution:health-wait:x")
                .start_date(aws_smithy_types::DateTime::from_secs(0))
                .build()
                .expect("output")
        })
        .repeatedly()
        .build();
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[&started]);
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &[&describe]);
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        &[&register]
    );
    let config = Config::from_value(&json!({"services": [{
        "name": "web", "cluster": "web", "family": "web", "container": "app",
        "containerPort": 8080, "targetGroups": [TG_A]
    }]}))
    .expect("valid mapping");
    let registrar = Registrar::new(config, ecs, elb)
        .with_health_wait(sfn, health_settings())
        .with_metrics_namespace(Some("RegistrarTests".into()));

    registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("the input matched");
    assert_eq!(started.num_calls(), 1);
}

#[tokio::test]
async fn duplicate_event_starts_no_second_wait() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let lookup = lookup_b();
    let exists = mock!(aws_sdk_sfn::Client::start_execution)
        .sequence()
        .error(|| {
            aws_sdk_sfn::operation::start_execution::StartExecutionError::ExecutionAlreadyExists(
                aws_sdk_sfn::types::error::ExecutionAlreadyExists::builder()
                    .message("Execution Already Exists")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[&exists]);
    let registrar =
        registrar(&[&describe], &[&register, &lookup]).with_health_wait(sfn, health_settings());

    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("a duplicate is success");
    assert!(
        summary
            .health_checks
            .iter()
            .all(|c| c.result == ecs_target_registrar::summary::HealthCheckResult::AlreadyStarted)
    );
}

#[tokio::test]
async fn failed_health_wait_start_fails_the_invocation() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let lookup = lookup_b();
    let denied = mock!(aws_sdk_sfn::Client::start_execution)
        .sequence()
        .error(|| {
            aws_sdk_sfn::operation::start_execution::StartExecutionError::generic(
                aws_sdk_sfn::error::ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: states:StartExecution")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[&denied]);
    let registrar =
        registrar(&[&describe], &[&register, &lookup]).with_health_wait(sfn, health_settings());

    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("a wait that cannot start is retried");
    assert_eq!(err.kind(), "StartExecutionFailed");
    let message = err.to_string();
    assert!(
        message.contains("is registered, but its health wait could not be started"),
        "{message}"
    );
    assert!(message.contains("AccessDeniedException"), "{message}");
    assert_eq!(register.num_calls(), 2);
}

#[tokio::test]
async fn rolled_back_registration_starts_no_wait() {
    let describe = describe_sequence(vec![
        ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5"),
        ecs_task("RUNNING", "STOPPED", 5, "10.0.1.5"),
    ]);
    let register = register_ok();
    let deregister = deregister_ok();
    let lookup = lookup_b();
    let started = start_ok();
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[&started]);
    let registrar = registrar(&[&describe], &[&register, &deregister, &lookup])
        .with_health_wait(sfn, health_settings());

    let summary = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect("rolled back");
    assert_eq!(summary.outcome, Outcome::RolledBack);
    assert_eq!(started.num_calls(), 0);
}

fn two_port_registrar(ecs_rules: &[&Rule], elb_rules: &[&Rule]) -> Mocked {
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, ecs_rules);
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        elb_rules
    );
    // One group, named once by name and once by ARN, with a target on each of two ports.
    let config = Config::from_value(&json!({"services": [
        {"name": "web", "cluster": "web", "family": "web", "container": "app",
         "containerPort": 8080, "targetGroups": [TG_B_NAME]},
        {"name": "web-admin", "cluster": "web", "family": "web", "container": "app",
         "containerPort": 9080, "targetGroups": [TG_B]}
    ]}))
    .expect("valid mapping");
    Registrar::new(config, ecs, elb)
}

#[tokio::test]
async fn failed_rollback_in_shared_group_fails() {
    let describe = describe_sequence(vec![
        ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5"),
        ecs_task("RUNNING", "STOPPED", 5, "10.0.1.5"),
    ]);
    let register = register_ok();
    let denied = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|input| {
            sent_targets(input.targets()).contains(&("10.0.1.5".to_owned(), 8080))
        })
        .sequence()
        .error(|| {
            DeregisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("denied")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = two_port_registrar(&[&describe], &[&register, &denied, &lookup]);

    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("a target that stays registered after its task stopped is a failure");
    assert!(err.to_string().contains("rollback"), "{err}");
    let summary = err.summary().expect("summary");
    // The group named by name and by ARN is one group: one change with both ports.
    assert_eq!(summary.changes.len(), 1, "{:?}", summary.changes);
    assert_eq!(summary.changes[0].targets.len(), 2);
    assert_eq!(summary.changes[0].result, ChangeResult::Failed);
    assert_eq!(register.num_calls(), 1);
}

#[tokio::test]
async fn invalid_target_batch_is_retried_one_by_one() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "STOPPED", 5, "10.0.1.5")]);
    // A batch that contains a target ELB does not have is rejected whole.
    let batch = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|input| {
            input.targets().len() > 1
                || sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 9080)]
        })
        .sequence()
        .error(|| {
            DeregisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("InvalidTarget")
                    .message("not registered")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let single = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .match_requests(|input| sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 8080)])
        .sequence()
        .output(|| DeregisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, &[&describe]);
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        &[&batch, &single, &lookup]
    );
    let config = Config::from_value(&json!({"services": [
        {"name": "web", "cluster": "web", "family": "web", "container": "app",
         "containerPort": 8080, "targetGroups": [TG_B]},
        {"name": "web-admin", "cluster": "web", "family": "web", "container": "app",
         "containerPort": 9080, "targetGroups": [TG_B]}
    ]}))
    .expect("valid mapping");
    let registrar = Registrar::new(config, ecs, elb);

    let summary = registrar
        .handle(&event("RUNNING", "STOPPED", 5, "10.0.1.5"), &env())
        .await
        .expect("deregistered");
    assert_eq!(
        single.num_calls(),
        1,
        "the registered target was sent on its own"
    );
    assert_eq!(batch.num_calls(), 2);
    assert_eq!(summary.changes[0].result, ChangeResult::Deregistered);
}

#[tokio::test]
async fn reused_address_in_sharing_cluster_is_kept() {
    const OTHER_CLUSTER_TASK: &str =
        "arn:aws:ecs:us-east-1:123456789012:task/blue/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let stopped = mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|input| input.cluster() == Some("web"))
        .sequence()
        .output(|| {
            DescribeTasksOutput::builder()
                .tasks(ecs_task("STOPPED", "STOPPED", 8, "10.0.1.5"))
                .build()
        })
        .repeatedly()
        .build();
    let live = mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(|input| input.cluster() == Some("blue"))
        .sequence()
        .output(|| {
            let mut task = ecs_task("RUNNING", "RUNNING", 2, "10.0.1.5");
            task.task_arn = Some(OTHER_CLUSTER_TASK.to_owned());
            DescribeTasksOutput::builder().tasks(task).build()
        })
        .repeatedly()
        .build();
    let web_list = mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|input| input.cluster() == Some("web"))
        .sequence()
        .output(|| ListTasksOutput::builder().build())
        .repeatedly()
        .build();
    let blue_list = mock!(aws_sdk_ecs::Client::list_tasks)
        .match_requests(|input| input.cluster() == Some("blue"))
        .sequence()
        .output(|| {
            ListTasksOutput::builder()
                .task_arns(OTHER_CLUSTER_TASK)
                .build()
        })
        .repeatedly()
        .build();
    let deregister = deregister_ok();
    let ecs = mock_client!(
        aws_sdk_ecs,
        RuleMode::MatchAny,
        &[&stopped, &live, &web_list, &blue_list]
    );
    let elb = mock_client!(
        aws_sdk_elasticloadbalancingv2,
        RuleMode::MatchAny,
        &[&deregister]
    );
    let config = Config::from_value(&json!({"services": [
        {"name": "web", "cluster": "web", "family": "web", "container": "app",
         "containerPort": 8080, "targetGroups": [TG_A]},
        {"name": "web-blue", "cluster": "blue", "family": "web", "container": "app",
         "containerPort": 8080, "targetGroups": [TG_A]}
    ]}))
    .expect("valid mapping");
    let registrar = Registrar::new(config, ecs, elb);

    let summary = registrar
        .handle(&event("STOPPED", "STOPPED", 8, "10.0.1.5"), &env())
        .await
        .expect("handled");
    assert_eq!(blue_list.num_calls(), 1);
    assert_eq!(deregister.num_calls(), 0);
    assert!(
        summary.unplaced[0].reason.contains(OTHER_CLUSTER_TASK),
        "{summary:?}"
    );
}

#[tokio::test]
async fn task_arn_of_other_account_is_ignored() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let registrar = registrar(&[&describe], &[]);
    let mut payload = event("RUNNING", "RUNNING", 4, "10.0.1.5");
    payload["detail"]["taskArn"] =
        json!("arn:aws:ecs:us-east-1:999999999999:task/web/0123456789abcdef0123456789abcdef");
    let summary = registrar.handle(&payload, &env()).await.expect("ignored");
    assert_eq!(summary.outcome, Outcome::Ignored);
    assert!(
        summary.reason.contains("account 999999999999"),
        "{}",
        summary.reason
    );
    assert_eq!(describe.num_calls(), 0);
}

/// Log lines written while `body` runs, as the function's log would show them.
async fn captured_logs<T>(body: impl std::future::Future<Output = T>) -> (T, String) {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut buffer = self.0.lock().unwrap_or_else(|err| err.into_inner());
            buffer.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so the subscriber sees every line of `body`.
    let guard = tracing::subscriber::set_default(subscriber);
    let output = body.await;
    drop(guard);
    let bytes = buffer
        .0
        .lock()
        .unwrap_or_else(|err| err.into_inner())
        .clone();
    (output, String::from_utf8_lossy(&bytes).into_owned())
}

/// Returns the WARN lines of a captured log.
fn warnings(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|line| line.contains(" WARN "))
        .collect()
}

#[tokio::test]
async fn forged_unknown_task_is_logged() {
    let missing = describe_missing();
    let register = register_ok();
    // A running mapped task now uses the forged event's address, so its target must stay.
    let holder = new_task_holding("10.0.1.5");
    let listed = list_running(&[NEW_TASK]);
    let deregister = deregister_ok();
    let lookup = lookup_b();
    let registrar = registrar(
        &[&holder, &missing, &listed],
        &[&register, &deregister, &lookup],
    );
    let payload = event("RUNNING", "RUNNING", 4, "10.0.1.5");

    let (summary, logs) = captured_logs(registrar.handle(&payload, &env())).await;

    assert_eq!(summary.expect("skipped").outcome, Outcome::Skipped);
    assert_eq!(register.num_calls(), 0);
    assert_eq!(deregister.num_calls(), 0);
    let warned = warnings(&logs);
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(warned[0].contains("ECS does not know the task"), "{logs}");
    assert!(warned[0].contains("MISSING"), "{logs}");
    assert!(warned[0].contains(TASK), "{logs}");
}

#[tokio::test]
async fn forged_unmapped_cluster_is_logged() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let registrar = registrar(&[&describe], &[&register]);
    let mut payload = event("RUNNING", "RUNNING", 4, "10.0.1.5");
    let other_cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/other";
    payload["detail"]["clusterArn"] = json!(other_cluster);

    let (summary, logs) = captured_logs(registrar.handle(&payload, &env())).await;

    let summary = summary.expect("ignored");
    assert_eq!(summary.outcome, Outcome::Ignored);
    assert_eq!(describe.num_calls(), 0);
    assert_eq!(register.num_calls(), 0);
    let warned = warnings(&logs);
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(warned[0].contains("no service mapping names"), "{logs}");
    assert!(warned[0].contains(other_cluster), "{logs}");
    assert!(summary.reason.contains("cluster"), "{}", summary.reason);
}

#[tokio::test]
async fn forged_account_and_region_are_logged() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = register_ok();
    let registrar = registrar(&[&describe], &[&register]);
    let mut other_account = event("RUNNING", "RUNNING", 4, "10.0.1.5");
    other_account["account"] = json!("210987654321");
    let mut other_region = event("RUNNING", "RUNNING", 4, "10.0.1.5");
    other_region["region"] = json!("eu-west-1");

    for (payload, named) in [(other_account, "210987654321"), (other_region, "eu-west-1")] {
        let (summary, logs) = captured_logs(registrar.handle(&payload, &env())).await;
        assert_eq!(summary.expect("ignored").outcome, Outcome::Ignored);
        let warned = warnings(&logs);
        assert_eq!(warned.len(), 1, "{logs}");
        assert!(warned[0].contains(named), "{logs}");
        assert!(warned[0].contains("but the function runs in"), "{logs}");
    }
    assert_eq!(describe.num_calls(), 0);
    assert_eq!(register.num_calls(), 0);
}

#[tokio::test]
async fn forged_address_is_never_registered() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| sent_targets(input.targets()) == [("10.0.1.5".to_owned(), 8080)])
        .sequence()
        .output(|| RegisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let lookup = lookup_b();
    // Any other registration finds no rule and fails the test's invocation.
    let registrar = registrar(&[&describe], &[&register, &lookup]);
    let payload = event("RUNNING", "RUNNING", 4, "203.0.113.9");

    let (summary, logs) = captured_logs(registrar.handle(&payload, &env())).await;

    assert_eq!(summary.expect("registered").outcome, Outcome::Registered);
    assert_eq!(register.num_calls(), 2);
    let warned = warnings(&logs);
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(warned[0].contains("203.0.113.9"), "{logs}");
    assert!(warned[0].contains("10.0.1.5"), "{logs}");
}

#[tokio::test]
async fn forged_family_registers_nothing() {
    let mut other = ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5");
    other.task_definition_arn =
        Some("arn:aws:ecs:us-east-1:123456789012:task-definition/other:1".into());
    other.group = Some("family:other".into());
    let describe = describe_sequence(vec![other]);
    let register = register_ok();
    let registrar = registrar(&[&describe], &[&register]);
    let payload = event("RUNNING", "RUNNING", 4, "10.0.1.5");

    let (summary, logs) = captured_logs(registrar.handle(&payload, &env())).await;

    assert_eq!(summary.expect("skipped").outcome, Outcome::Skipped);
    assert_eq!(register.num_calls(), 0);
    let warned = warnings(&logs);
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(warned[0].contains("matches no service mapping"), "{logs}");
}

#[tokio::test]
async fn unknown_group_name_is_permanent() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let register_a = register_ok();
    let no_group = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups)
        .sequence()
        .output(|| DescribeTargetGroupsOutput::builder().build())
        .repeatedly()
        .build();
    let registrar = registrar(&[&describe], &[&register_a, &no_group]);

    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("the group web-b does not exist");

    assert_eq!(err.kind(), "TargetGroupChangeRejected");
    assert!(err.is_permanent());
    assert_eq!(register_a.num_calls(), 1);
    let message = err.to_string();
    assert!(message.contains("TargetGroupNotFound"), "{message}");
    assert!(message.contains(TG_B_NAME), "{message}");
    assert!(message.contains("10.0.1.5:8080"), "{message}");
    let summary = err.summary().expect("the summary is kept");
    let failed: Vec<_> = summary
        .changes
        .iter()
        .filter(|change| change.result == ChangeResult::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].permanent);
    assert_eq!(failed[0].target_group, TG_B_NAME);
}

#[tokio::test]
async fn mixed_failures_are_not_permanent() {
    let describe = describe_sequence(vec![ecs_task("RUNNING", "RUNNING", 4, "10.0.1.5")]);
    let denied = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| input.target_group_arn() == Some(TG_A))
        .sequence()
        .error(|| {
            RegisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("TooManyTargets")
                    .message("You have reached the maximum number of targets")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let throttled = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .match_requests(|input| input.target_group_arn() == Some(TG_B))
        .sequence()
        .error(|| {
            RegisterTargetsError::generic(
                ErrorMetadata::builder()
                    .code("Throttling")
                    .message("Rate exceeded")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let lookup = lookup_b();
    let registrar = registrar(&[&describe], &[&denied, &throttled, &lookup]);

    let err = registrar
        .handle(&event("RUNNING", "RUNNING", 4, "10.0.1.5"), &env())
        .await
        .expect_err("both groups fail");

    // One group may still succeed on Lambda's retry, so the failure as a whole is transient.
    assert_eq!(err.kind(), "TargetGroupChangeFailed");
    assert!(!err.is_permanent());
    let summary = err.summary().expect("the summary is kept");
    assert_eq!(summary.changes.len(), 2);
    for change in &summary.changes {
        let expected = change.target_group == TG_A;
        assert_eq!(change.permanent, expected, "{}", change.target_group);
    }
}

/// ECS describes a task that was asked to stop before its network interface had an address,
/// so the stop falls back on the event's address. While ECS does not report the address
/// released, the reuse check is skipped, and the event's address is removed even though a
/// running mapped task holds it.
#[tokio::test]
async fn event_address_fallback_checks_reuse() {
    let stopping = describe_task(|| ecs_task("PROVISIONING", "STOPPED", 3, ""));
    let holder = new_task_holding("10.0.1.99");
    let listed = list_running(&[NEW_TASK]);
    let deregister = deregister_ok();
    let lookup = lookup_b();
    let registrar = registrar(&[&stopping, &holder, &listed], &[&deregister, &lookup]);

    let summary = registrar
        .handle(&event("STOPPED", "STOPPED", 3, "10.0.1.99"), &env())
        .await
        .expect("the stop event is handled");

    assert_eq!(deregister.num_calls(), 0);
    assert!(summary.changes.is_empty(), "{:?}", summary.changes);
}
