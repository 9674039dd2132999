//! The health-wait state machine, `statemachine/health-wait.asl.json`, executed by moto's Step
//! Functions interpreter against moto's ELBv2 on 127.0.0.1.
//!
//! Every case of `statemachine/health-cases.json` (the table the CLI's poller is tested against
//! too) runs as a real execution: a real target group with a registered target whose
//! DescribeTargetHealth results are scripted through the emulator launcher. Wait states really
//! sleep in moto, so the cases use 1 s poll intervals and run concurrently.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use aws_sdk_sfn::Client as SfnClient;
use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType, StateMachineType};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::{Value, json};
use support::Emulator;

/// Maximum time one execution may run. The longest case takes about 3 s, and a retried
/// throttled call adds at most a second.
const EXECUTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Address and port of the target every case registers.
const TARGET_ID: &str = "10.0.1.5";
const TARGET_PORT: i32 = 8080;

/// Task ARN in the execution input. The state machine only copies it into causes and output.
const TASK_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:task/health-tests/0123456789abcdef";

#[derive(Debug, Deserialize)]
struct Cases {
    cases: Vec<Case>,
    errors: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    timing: Value,
    #[serde(default)]
    target_group_missing: bool,
    health: Vec<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
struct Expect {
    outcome: String,
    rounds: u64,
    #[serde(default)]
    reason: Option<String>,
}

fn cases() -> Cases {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/statemachine/health-cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read statemachine/health-cases.json");
    serde_json::from_str(&text).expect("parse statemachine/health-cases.json")
}

/// Clients of the shared emulator and one state machine created from the real definition.
struct Harness {
    emulator: &'static Emulator,
    elb: ElbClient,
    sfn: SfnClient,
    state_machine_arn: String,
}

impl Harness {
    async fn new() -> Harness {
        let emulator = Emulator::shared();
        let sdk = emulator.sdk_config();
        let elb = ElbClient::new(&sdk);
        let sfn = SfnClient::new(&sdk);
        let state_machine_arn =
            create_health_state_machine(&sfn, &support::unique("health-wait")).await;
        Harness {
            emulator,
            elb,
            sfn,
            state_machine_arn,
        }
    }

    /// Creates an ip target group with the given targets registered, each with its scripted
    /// health sequence, and returns its ARN.
    async fn target_group(&self, targets: &[(&str, i32, &[Value])]) -> String {
        let arn = support::create_ip_target_group(
            &self.elb,
            &support::unique("hw"),
            &self.emulator.vpc_id,
            TARGET_PORT,
        )
        .await;
        let descriptions: Vec<TargetDescription> = targets
            .iter()
            .map(|(id, port, _)| TargetDescription::builder().id(*id).port(*port).build())
            .collect();
        self.elb
            .register_targets()
            .target_group_arn(&arn)
            .set_targets(Some(descriptions))
            .send()
            .await
            .expect("RegisterTargets");
        for (id, port, sequence) in targets {
            self.emulator
                .script_target_health(&arn, id, *port, sequence);
        }
        arn
    }

    /// Starts one execution with the input the registrar sends, and waits for its end.
    async fn run(
        &self,
        target_group_arn: &str,
        targets: &[(&str, i32)],
        timing: &Value,
        on_failure: &str,
    ) -> Execution {
        let input = json!({
            "targetGroupArn": target_group_arn,
            "targets": targets
                .iter()
                .map(|(id, port)| json!({"Id": id, "Port": port}))
                .collect::<Vec<_>>(),
            "taskArn": TASK_ARN,
            "timing": timing,
            "onFailure": on_failure,
        });
        let started = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(support::unique("wait"))
            .input(input.to_string())
            .send()
            .await
            .expect("StartExecution");
        let arn = started.execution_arn().to_owned();
        let description = wait_for_execution(&self.sfn, &arn, EXECUTION_TIMEOUT).await;
        let history = execution_history(&self.sfn, &arn).await;
        Execution {
            description,
            history,
        }
    }
}

/// A finished execution: DescribeExecution's result and the whole history.
struct Execution {
    description: DescribeExecutionOutput,
    history: Vec<HistoryEvent>,
}

impl Execution {
    fn status(&self) -> &ExecutionStatus {
        self.description.status()
    }

    fn error(&self) -> &str {
        self.description.error().unwrap_or_default()
    }

    fn cause(&self) -> &str {
        self.description.cause().unwrap_or_default()
    }

    fn output(&self) -> Value {
        let text = self.description.output().unwrap_or("null");
        serde_json::from_str(text).unwrap_or_else(|err| panic!("output {text:?}: {err}"))
    }

    /// DescribeTargetHealth calls scheduled, retries included.
    fn describe_calls(&self) -> usize {
        self.history
            .iter()
            .filter(|event| *event.r#type() == HistoryEventType::TaskScheduled)
            .filter_map(|event| event.task_scheduled_event_details())
            .filter(|details| details.resource() == "describeTargetHealth")
            .count()
    }

    /// Errors of the failed task calls, in order.
    fn task_errors(&self) -> Vec<String> {
        self.history
            .iter()
            .filter_map(|event| event.task_failed_event_details())
            .map(|details| details.error().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Creates a STANDARD state machine from `statemachine/health-wait.asl.json` and returns its
/// ARN. The emulator does not check the role, so it is a dummy.
async fn create_health_state_machine(sfn: &SfnClient, name: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/statemachine/health-wait.asl.json"
    );
    let definition = std::fs::read_to_string(path).expect("read the state machine definition");
    let output = sfn
        .create_state_machine()
        .name(name)
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/x")
        .r#type(StateMachineType::Standard)
        .send()
        .await
        .expect("CreateStateMachine");
    output.state_machine_arn().to_owned()
}

/// Polls DescribeExecution every 200 ms until the execution is no longer RUNNING.
///
/// # Panics
///
/// When it is still RUNNING after `timeout`, naming the execution and its history's length.
async fn wait_for_execution(
    sfn: &SfnClient,
    execution_arn: &str,
    timeout: Duration,
) -> DescribeExecutionOutput {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let execution = sfn
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .expect("DescribeExecution");
        if *execution.status() != ExecutionStatus::Running {
            return execution;
        }
        if tokio::time::Instant::now() >= deadline {
            let events = execution_history(sfn, execution_arn).await.len();
            panic!(
                "execution {execution_arn} is still RUNNING after {timeout:?}, \
                 with {events} history events"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fetches every history event of an execution, oldest first.
async fn execution_history(sfn: &SfnClient, execution_arn: &str) -> Vec<HistoryEvent> {
    let mut events = Vec::new();
    let mut next_token = None;
    loop {
        let page = sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .set_next_token(next_token)
            .send()
            .await
            .expect("GetExecutionHistory");
        events.extend(page.events().iter().cloned());
        next_token = page.next_token().map(str::to_owned);
        if next_token.is_none() {
            return events;
        }
    }
}

/// Seconds from the start of the wait to the given round (1 for the first check).
fn elapsed_seconds(timing: &Value, rounds: u64) -> u64 {
    let field = |name: &str| {
        timing[name]
            .as_u64()
            .unwrap_or_else(|| panic!("timing.{name} is missing in {timing}"))
    };
    field("initialDelaySeconds") + (rounds - 1) * field("pollIntervalSeconds")
}

/// Runs one case of the table and returns every check that failed, each as one message.
async fn check_case(
    harness: &Harness,
    case: &Case,
    errors: &HashMap<String, String>,
) -> Vec<String> {
    let target_group_arn = if case.target_group_missing {
        format!(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{}/0123456789abcdef",
            support::unique("missing")
        )
    } else {
        harness
            .target_group(&[(TARGET_ID, TARGET_PORT, &case.health)])
            .await
    };
    let execution = harness
        .run(
            &target_group_arn,
            &[(TARGET_ID, TARGET_PORT)],
            &case.timing,
            "none",
        )
        .await;

    let mut problems = Vec::new();
    let mut check = |ok: bool, message: String| {
        if !ok {
            problems.push(format!("{}: {message}", case.name));
        }
    };
    let expect = &case.expect;
    let calls = execution.describe_calls();
    check(
        calls == expect.rounds as usize,
        format!(
            "{calls} DescribeTargetHealth calls, expected {}",
            expect.rounds
        ),
    );

    if expect.outcome == "healthy" {
        check(
            *execution.status() == ExecutionStatus::Succeeded,
            format!(
                "status {:?}, expected SUCCEEDED (error {:?}, cause {:?})",
                execution.status(),
                execution.error(),
                execution.cause()
            ),
        );
        let output = execution.output();
        let result = &output["targets"][0];
        check(
            result["Id"] == TARGET_ID && result["Port"] == TARGET_PORT,
            format!("output names another target: {output}"),
        );
        check(
            result["rounds"].as_u64() == Some(expect.rounds),
            format!(
                "output rounds {}, expected {}",
                result["rounds"], expect.rounds
            ),
        );
        let elapsed = elapsed_seconds(&case.timing, expect.rounds);
        check(
            result["elapsedSeconds"].as_u64() == Some(elapsed),
            format!(
                "output elapsedSeconds {}, expected {elapsed}",
                result["elapsedSeconds"]
            ),
        );
        return problems;
    }

    let expected_error = errors
        .get(&expect.outcome)
        .unwrap_or_else(|| panic!("{}: no error name for {:?}", case.name, expect.outcome));
    check(
        *execution.status() == ExecutionStatus::Failed,
        format!("status {:?}, expected FAILED", execution.status()),
    );
    // The state machine's own errors are bare names. ELBv2 errors carry the service prefix
    // (ElasticLoadBalancingV2.TargetGroupNotFoundException), which the table leaves out.
    check(
        execution.error() == expected_error
            || execution.error().ends_with(&format!(".{expected_error}")),
        format!(
            "error {:?}, expected {expected_error:?} (cause {:?})",
            execution.error(),
            execution.cause()
        ),
    );
    if let Some(reason) = &expect.reason {
        check(
            execution.cause().contains(reason.as_str()),
            format!("cause {:?} does not contain {reason:?}", execution.cause()),
        );
    }
    if !case.target_group_missing {
        let round = format!("Round {} of", expect.rounds);
        check(
            execution.cause().contains(&round),
            format!("cause {:?} does not contain {round:?}", execution.cause()),
        );
        check(
            execution.cause().contains(TARGET_ID),
            format!("cause {:?} does not name the target", execution.cause()),
        );
        // onFailure "none" leaves the target registered.
        let registered = support::registered_targets(&harness.elb, &target_group_arn).await;
        check(
            registered.iter().any(|(id, _, _)| id == TARGET_ID),
            format!("the target is gone from the group: {registered:?}"),
        );
    }
    problems
}

#[tokio::test]
async fn state_machine_agrees_with_every_case() {
    let table = cases();
    assert!(table.cases.len() >= 12, "the case table lost cases");
    let harness = Harness::new().await;

    let runs = table
        .cases
        .iter()
        .map(|case| check_case(&harness, case, &table.errors));
    let problems: Vec<String> = join_all(runs).await.into_iter().flatten().collect();

    assert!(
        problems.is_empty(),
        "{} checks failed:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn deregister_on_failure_removes_targets() {
    let harness = Harness::new().await;
    let unhealthy = [json!({
        "state": "unhealthy",
        "reason": "Target.FailedHealthChecks",
        "description": "Health checks failed with these codes: [502]"
    })];
    let group = harness
        .target_group(&[(TARGET_ID, TARGET_PORT, &unhealthy)])
        .await;
    let timing = json!({
        "initialDelaySeconds": 0,
        "pollIntervalSeconds": 1,
        "gracePeriodSeconds": 1,
        "maxRounds": 4
    });

    let execution = harness
        .run(&group, &[(TARGET_ID, TARGET_PORT)], &timing, "deregister")
        .await;

    assert_eq!(*execution.status(), ExecutionStatus::Failed);
    assert_eq!(
        execution.error(),
        "TargetUnhealthy",
        "{}",
        execution.cause()
    );
    assert!(
        execution.cause().contains("Target.FailedHealthChecks"),
        "{}",
        execution.cause()
    );
    let registered = support::registered_targets(&harness.elb, &group).await;
    assert!(
        registered.is_empty(),
        "the target is still registered: {registered:?}"
    );
}

#[tokio::test]
async fn deregistered_target_is_not_deregistered_again() {
    let harness = Harness::new().await;
    let draining = [json!({
        "state": "draining",
        "reason": "Target.DeregistrationInProgress",
        "description": "Target deregistration is in progress"
    })];
    let group = harness
        .target_group(&[(TARGET_ID, TARGET_PORT, &draining)])
        .await;
    let timing = json!({
        "initialDelaySeconds": 0,
        "pollIntervalSeconds": 1,
        "gracePeriodSeconds": 2,
        "maxRounds": 3
    });

    let execution = harness
        .run(&group, &[(TARGET_ID, TARGET_PORT)], &timing, "deregister")
        .await;

    assert_eq!(
        execution.error(),
        "TargetDeregistered",
        "{}",
        execution.cause()
    );
    let deregister_calls = execution
        .history
        .iter()
        .filter_map(|event| event.task_scheduled_event_details())
        .filter(|details| details.resource() == "deregisterTargets")
        .count();
    assert_eq!(deregister_calls, 0, "DeregisterTargets was called");
}

#[tokio::test]
async fn throttled_check_is_retried() {
    let harness = Harness::new().await;
    let throttled_then_healthy = [json!({"error": "Throttling"}), json!({"state": "healthy"})];
    let group = harness
        .target_group(&[(TARGET_ID, TARGET_PORT, &throttled_then_healthy)])
        .await;
    let timing = json!({
        "initialDelaySeconds": 0,
        "pollIntervalSeconds": 1,
        "gracePeriodSeconds": 2,
        "maxRounds": 3
    });

    let execution = harness
        .run(&group, &[(TARGET_ID, TARGET_PORT)], &timing, "none")
        .await;

    assert_eq!(
        *execution.status(),
        ExecutionStatus::Succeeded,
        "{}: {}",
        execution.error(),
        execution.cause()
    );
    // ELBv2's Throttling code is not in the SDK's model, so the integration reports the
    // service's generic exception.
    assert_eq!(
        execution.task_errors(),
        ["ElasticLoadBalancingV2.ElasticLoadBalancingV2Exception"]
    );
    assert_eq!(execution.describe_calls(), 2, "one call and one retry");
    assert_eq!(execution.output()["targets"][0]["rounds"], 1);
}

#[tokio::test]
async fn every_target_is_waited_for() {
    let harness = Harness::new().await;
    let healthy = [json!({"state": "healthy"})];
    let starting = [
        json!({
            "state": "initial",
            "reason": "Elb.InitialHealthChecking",
            "description": "Initial health checks in progress"
        }),
        json!({"state": "healthy"}),
    ];
    let group = harness
        .target_group(&[("10.0.1.6", 8080, &healthy), ("10.0.1.7", 9090, &starting)])
        .await;
    let timing = json!({
        "initialDelaySeconds": 0,
        "pollIntervalSeconds": 1,
        "gracePeriodSeconds": 2,
        "maxRounds": 3
    });

    let execution = harness
        .run(
            &group,
            &[("10.0.1.6", 8080), ("10.0.1.7", 9090)],
            &timing,
            "none",
        )
        .await;

    assert_eq!(
        *execution.status(),
        ExecutionStatus::Succeeded,
        "{}: {}",
        execution.error(),
        execution.cause()
    );
    let output = execution.output();
    assert_eq!(output["targetGroupArn"], group.as_str());
    assert_eq!(output["taskArn"], TASK_ARN);
    assert_eq!(
        output["targets"],
        json!([
            {"Id": "10.0.1.6", "Port": 8080, "state": "healthy", "rounds": 1, "elapsedSeconds": 0},
            {"Id": "10.0.1.7", "Port": 9090, "state": "healthy", "rounds": 2, "elapsedSeconds": 1}
        ])
    );
}

#[tokio::test]
async fn cause_reports_missing_reason_as_none() {
    // ELB leaves Reason and Description out of some results, and the cause must still name them.
    let harness = Harness::new().await;
    let unhealthy_without_reason = [json!({"state": "unhealthy"})];
    let group = harness
        .target_group(&[(TARGET_ID, TARGET_PORT, &unhealthy_without_reason)])
        .await;
    let timing = json!({
        "initialDelaySeconds": 0,
        "pollIntervalSeconds": 1,
        "gracePeriodSeconds": 0,
        "maxRounds": 3
    });

    let execution = harness
        .run(&group, &[(TARGET_ID, TARGET_PORT)], &timing, "none")
        .await;

    assert_eq!(
        execution.error(),
        "TargetUnhealthy",
        "{}",
        execution.cause()
    );
    assert!(
        execution.cause().contains("reason none: none"),
        "{}",
        execution.cause()
    );
}

/// The registrar registers a running task, starts the real state machine for it, and the
/// execution ends healthy; the same event again starts no second execution.
#[tokio::test]
async fn registrar_starts_the_wait_once_per_event() {
    use ecs_target_registrar::health::{HealthSettings, OnFailure, Timing};
    use ecs_target_registrar::summary::HealthCheckResult;
    use ecs_target_registrar::{Config, Environment, Registrar};

    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config();
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let elb = ElbClient::new(&sdk);
    let sfn = SfnClient::new(&sdk);
    let cluster = support::create_cluster(&ecs, &support::unique("health")).await;
    let family = support::unique("health-web");
    let definition = support::register_task_definition(&ecs, &family, "app", 8080).await;
    let group =
        support::create_ip_target_group(&elb, &support::unique("tg"), &emulator.vpc_id, 8080).await;
    let task = support::run_task(&ecs, &cluster, &definition, emulator).await;
    let state_machine = create_health_state_machine(&sfn, &support::unique("health-wait")).await;
    emulator.script_target_health(
        &group,
        &task.ip,
        8080,
        &[
            json!({"state": "initial", "reason": "Elb.RegistrationInProgress"}),
            json!({"state": "healthy"}),
        ],
    );

    let mapping = json!({"services": [{
        "name": "web", "cluster": cluster, "family": family,
        "container": "app", "containerPort": 8080, "targetGroups": [group]
    }]});
    let settings = HealthSettings {
        state_machine_arn: Some(state_machine.clone()),
        on_failure: OnFailure::None,
        timing: Timing {
            initial_delay_seconds: 0,
            poll_interval_seconds: 1,
            grace_period_seconds: 2,
            max_rounds: 5,
        },
    };
    let registrar = Registrar::new(
        Config::from_value(&mapping).expect("valid mapping"),
        ecs.clone(),
        elb.clone(),
    )
    .with_health_wait(sfn.clone(), settings)
    .with_metrics_namespace(Some("RegistrarTests".into()));
    let event = support::rewrite_event(
        support::fixture_event("fargate-running.json"),
        &task,
        &cluster,
        &definition,
    );
    let env = Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    };

    let summary = registrar.handle(&event, &env).await.expect("registered");
    assert_eq!(summary.health_checks.len(), 1);
    let check = &summary.health_checks[0];
    assert_eq!(check.result, HealthCheckResult::Started);
    let execution_arn = check.execution_arn.clone().expect("execution ARN");
    let execution = wait_for_execution(&sfn, &execution_arn, EXECUTION_TIMEOUT).await;
    assert_eq!(*execution.status(), ExecutionStatus::Succeeded);
    let output: Value =
        serde_json::from_str(execution.output().unwrap_or("null")).expect("JSON output");
    assert_eq!(output["targets"][0]["rounds"], 2, "{output}");

    // The healthy round wrote TimeToHealthy under the configured namespace, with the
    // service and target group as dimensions and the seconds the wait took.
    let history = execution_history(&sfn, &execution_arn).await;
    let metric_writes: Vec<Value> = history
        .iter()
        .filter_map(|event| event.task_scheduled_event_details())
        .filter(|details| details.resource() == "putMetricData")
        .map(|details| serde_json::from_str(details.parameters()).expect("JSON parameters"))
        .collect();
    assert_eq!(metric_writes.len(), 1, "{history:?}");
    let written = &metric_writes[0];
    assert_eq!(written["Namespace"], "RegistrarTests", "{written}");
    let datum = &written["MetricData"][0];
    assert_eq!(datum["MetricName"], "TimeToHealthy", "{written}");
    assert_eq!(datum["Unit"], "Seconds", "{written}");
    assert_eq!(datum["Value"], 1, "{written}");
    let group_name = ecs_target_registrar::metrics::group_name(&group);
    assert_eq!(
        datum["Dimensions"],
        json!([
            {"Name": "Service", "Value": "web"},
            {"Name": "TargetGroup", "Value": group_name},
        ]),
        "{written}"
    );
    let failed_writes = history
        .iter()
        .filter_map(|event| event.task_failed_event_details())
        .count();
    assert_eq!(failed_writes, 0, "{history:?}");

    // The duplicate asks for the same execution name; the emulator ended that execution,
    // so Step Functions reports it as existing and no second loop starts.
    let again = registrar
        .handle(&event, &env)
        .await
        .expect("registered again");
    assert_eq!(again.health_checks[0].execution_name, check.execution_name);
    assert_eq!(
        again.health_checks[0].result,
        HealthCheckResult::AlreadyStarted
    );
    let executions = sfn
        .list_executions()
        .state_machine_arn(&state_machine)
        .send()
        .await
        .expect("ListExecutions");
    assert_eq!(executions.executions().len(), 1);
}

/// A sweep through the function starts a health wait for the targets it registered.
#[tokio::test]
async fn sweep_starts_health_waits_for_its_registrations() {
    use ecs_target_registrar::health::{HealthSettings, OnFailure, Timing};
    use ecs_target_registrar::{Config, Environment, Registrar, handler::invoke};

    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config();
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let elb = ElbClient::new(&sdk);
    let sfn = SfnClient::new(&sdk);
    let cluster = support::create_cluster(&ecs, &support::unique("sweep-health")).await;
    let family = support::unique("sweep-web");
    let definition = support::register_task_definition(&ecs, &family, "app", 8080).await;
    let group =
        support::create_ip_target_group(&elb, &support::unique("tg"), &emulator.vpc_id, 8080).await;
    support::run_task(&ecs, &cluster, &definition, emulator).await;
    let state_machine = create_health_state_machine(&sfn, &support::unique("health-wait")).await;
    let mapping = json!({"services": [{
        "name": "web", "cluster": cluster, "family": family,
        "container": "app", "containerPort": 8080, "targetGroups": [group]
    }]});
    let settings = HealthSettings {
        state_machine_arn: Some(state_machine),
        on_failure: OnFailure::None,
        timing: Timing {
            initial_delay_seconds: 0,
            poll_interval_seconds: 1,
            grace_period_seconds: 2,
            max_rounds: 3,
        },
    };
    let registrar = Registrar::new(
        Config::from_value(&mapping).expect("valid mapping"),
        ecs.clone(),
        elb.clone(),
    )
    .with_health_wait(sfn.clone(), settings);
    let env = Environment::default();

    let response = invoke(&registrar, &json!({"action": "sweep"}), &env)
        .await
        .expect("sweep");

    let checks = response["healthChecks"].as_array().expect("health checks");
    assert_eq!(checks.len(), 1, "{response}");
    assert_eq!(checks[0]["result"], "started");
    let execution_arn = checks[0]["executionArn"].as_str().expect("execution ARN");
    let execution = wait_for_execution(&sfn, execution_arn, EXECUTION_TIMEOUT).await;
    assert_eq!(*execution.status(), ExecutionStatus::Succeeded);
}
