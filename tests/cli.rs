//! The operator CLI as a user runs it: the `registrar` binary, spawned with files on disk and
//! pointed at moto on 127.0.0.1.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use serde_json::{Value, json};
use support::{Emulator, RunningTask};

/// Runs the CLI with a clean environment holding only dummy credentials.
async fn registrar(args: &[&str]) -> Output {
    registrar_with_env(args, &[]).await
}

/// Runs the CLI with dummy credentials and the given extra variables.
async fn registrar_with_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .expect("run the registrar CLI")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch folder for this test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let path = std::env::temp_dir().join(support::unique("registrar-cli"));
        std::fs::create_dir_all(&path).expect("create scratch folder");
        Scratch(path)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write scratch file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Setup {
    cluster: String,
    definition: String,
    group: String,
    task: RunningTask,
    mapping: Value,
}

async fn setup() -> Setup {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config();
    let ecs = EcsClient::new(&sdk);
    let elb = ElbClient::new(&sdk);
    let cluster = support::create_cluster(&ecs, &support::unique("cli")).await;
    let family = support::unique("cli-web");
    let definition = support::register_task_definition(&ecs, &family, "app", 8080).await;
    let group =
        support::create_ip_target_group(&elb, &support::unique("tg"), &emulator.vpc_id, 8080).await;
    let task = support::run_task(&ecs, &cluster, &definition, emulator).await;
    let mapping = json!({"services": [{
        "name": "web", "cluster": cluster, "family": family,
        "container": "app", "containerPort": 8080, "targetGroups": [group]
    }]});
    Setup {
        cluster,
        definition,
        group,
        task,
        mapping,
    }
}

fn event_file(scratch: &Scratch, setup: &Setup, fixture: &str) -> String {
    let event = support::rewrite_event(
        support::fixture_event(fixture),
        &setup.task,
        &setup.cluster,
        &setup.definition,
    );
    scratch.write(fixture, &event.to_string())
}

fn repo_file(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn check_config_prints_the_example_mapping() {
    let output = registrar(&[
        "--config-file",
        &repo_file("config/services.example.json"),
        "check-config",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.contains("health confirmation: off"), "{text}");
    assert!(text.contains("pdf: tasks of cluster arn:aws:ecs:us-east-2:123456789012:cluster/pdfapi-cluster with family dev-pdf, container pdf port 9080"), "{text}");
}

#[tokio::test]
async fn invalid_mapping_exits_2_with_every_problem() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "mapping.json",
        r#"{"services": [{"name": "x", "cluster": "c", "containerPort": 70000, "targetGroups": []}]}"#,
    );
    let output = registrar(&["--config-file", &file, "check-config"]).await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("services[0].containerPort: 70000 is out of range"),
        "{text}"
    );
    assert!(text.contains("services[0].container: missing"), "{text}");
    assert!(
        text.contains("services[0].targetGroups: the list is empty"),
        "{text}"
    );
    assert!(text.contains("set \"family\", \"group\" or both"), "{text}");
}

#[tokio::test]
async fn missing_mapping_says_how_to_give_one() {
    let output = registrar(&["check-config"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--config-file"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn handle_registers_then_deregisters() {
    let setup = setup().await;
    let scratch = Scratch::new();
    let mapping = scratch.write("mapping.json", &setup.mapping.to_string());
    let running = event_file(&scratch, &setup, "fargate-running.json");
    let pending = event_file(&scratch, &setup, "fargate-pending.json");
    let endpoint = Emulator::shared().endpoint.clone();
    let common = [
        "--config-file",
        &mapping,
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
    ];

    let mut args = common.to_vec();
    args.extend(["handle", pending.as_str(), running.as_str()]);
    let output = registrar(&args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("fargate-pending.json: waiting"), "{text}");
    assert!(text.contains("fargate-running.json: registered"), "{text}");
    let line = format!(
        "  registered {}:8080 in {} (web)",
        setup.task.ip, setup.group
    );
    assert!(text.contains(&line), "no {line:?} in {text}");

    let sdk = Emulator::shared().sdk_config();
    support::stop_task(&EcsClient::new(&sdk), &setup.cluster, &setup.task.task_arn).await;
    let stopped = event_file(&scratch, &setup, "fargate-stopped-same-task.json");
    let mut args = common.to_vec();
    args.extend(["handle", "--output", "json", stopped.as_str()]);
    let output = registrar(&args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: Value = serde_json::from_str(&stdout(&output)).expect("JSON summary");
    assert_eq!(summary["outcome"], "deregistered");
    assert_eq!(summary["changes"][0]["targets"][0]["port"], 8080);
    let targets = support::registered_targets(&ElbClient::new(&sdk), &setup.group).await;
    assert!(targets.is_empty(), "{targets:?}");
}

#[tokio::test]
async fn handle_failure_exits_1_and_goes_on() {
    let setup = setup().await;
    let scratch = Scratch::new();
    let mut mapping = setup.mapping.clone();
    mapping["services"][0]["targetGroups"] = json!(["no-such-group"]);
    let mapping = scratch.write("mapping.json", &mapping.to_string());
    let broken = scratch.write("broken.json", "{ not json");
    let running = event_file(&scratch, &setup, "fargate-running.json");
    let ignored = scratch.write(
        "service-action.json",
        &support::fixture_event("service-action.json").to_string(),
    );
    let endpoint = Emulator::shared().endpoint.clone();

    let output = registrar(&[
        "--config-file",
        &mapping,
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
        "handle",
        &broken,
        &running,
        &ignored,
    ])
    .await;

    assert_eq!(output.status.code(), Some(1));
    let errors = stderr(&output);
    assert!(
        errors.contains("broken.json: error: not valid JSON"),
        "{errors}"
    );
    assert!(errors.contains("\"no-such-group\" not found"), "{errors}");
    assert!(errors.contains(&setup.task.task_arn), "{errors}");
    let text = stdout(&output);
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains("service-action.json: ignored"), "{text}");
}

#[tokio::test]
async fn wait_healthy_reports_each_target() {
    let setup = setup().await;
    let emulator = Emulator::shared();
    let elb = ElbClient::new(&emulator.sdk_config());
    elb.register_targets()
        .target_group_arn(&setup.group)
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(&setup.task.ip)
                .port(8080)
                .build(),
        )
        .send()
        .await
        .expect("RegisterTargets");
    let registered = format!("{}:8080", setup.task.ip);
    let endpoint = emulator.endpoint.clone();
    let base = [
        "--endpoint-url",
        endpoint.as_str(),
        "--region",
        "us-east-1",
        "wait-healthy",
        "--target-group",
        setup.group.as_str(),
        "--poll-interval",
        "1",
        "--timeout",
        "2",
    ];

    let output = registrar(&[&base[..], &["--target", &registered]].concat()).await;
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains(&format!("{registered} in {}: healthy", setup.group)),
        "{text}"
    );
    assert!(text.contains("healthy after 1 checks"), "{text}");

    // A target that was never registered fails at once, with a non-zero exit code.
    let output = registrar(
        &[
            &base[..],
            &[
                "--target",
                &registered,
                "--target",
                "10.255.0.9:8080",
                "--output",
                "json",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let results: Value = serde_json::from_str(&stdout(&output)).expect("JSON results");
    let results = results.as_array().expect("a list");
    assert_eq!(results.len(), 2);
    let missing = results
        .iter()
        .find(|result| result["target"]["id"] == "10.255.0.9")
        .expect("the unregistered target");
    assert_eq!(missing["failure"], "deregistered");
}

#[tokio::test]
async fn wait_healthy_rejects_bad_targets() {
    let output = registrar(&[
        "wait-healthy",
        "--target-group",
        "tg",
        "--target",
        "10.0.0.1",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("write ID:PORT"),
        "{}",
        stderr(&output)
    );
    let output = registrar(&[
        "wait-healthy",
        "--target-group",
        "tg",
        "--target",
        "10.0.0.1:0",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid port"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn handle_can_wait_for_health() {
    let setup = setup().await;
    let scratch = Scratch::new();
    let mapping = scratch.write("mapping.json", &setup.mapping.to_string());
    let running = event_file(&scratch, &setup, "fargate-running.json");
    let endpoint = Emulator::shared().endpoint.clone();

    let output = registrar(&[
        "--config-file",
        &mapping,
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
        "handle",
        "--wait-healthy",
        "--poll-interval",
        "1",
        "--timeout",
        "2",
        &running,
    ])
    .await;

    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(text.contains("fargate-running.json: registered"), "{text}");
    assert!(
        text.contains(&format!(
            "{}:8080 in {}: healthy after 1 checks",
            setup.task.ip, setup.group
        )),
        "{text}"
    );
}

#[tokio::test]
async fn wait_healthy_prints_each_change_and_fails_unhealthy() {
    let setup = setup().await;
    let emulator = Emulator::shared();
    let elb = ElbClient::new(&emulator.sdk_config());
    elb.register_targets()
        .target_group_arn(&setup.group)
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(&setup.task.ip)
                .port(8080)
                .build(),
        )
        .send()
        .await
        .expect("RegisterTargets");
    emulator.script_target_health(
        &setup.group,
        &setup.task.ip,
        8080,
        &[
            json!({"state": "initial", "reason": "Elb.InitialHealthChecking", "description": "Initial health checks in progress"}),
            json!({"state": "unhealthy", "reason": "Target.FailedHealthChecks", "description": "Health checks failed with these codes: [502]"}),
        ],
    );
    let target = format!("{}:8080", setup.task.ip);
    let output = registrar(&[
        "--endpoint-url",
        &emulator.endpoint,
        "--region",
        "us-east-1",
        "wait-healthy",
        "--target-group",
        &setup.group,
        "--target",
        &target,
        "--poll-interval",
        "1",
        "--grace-period",
        "1",
        "--timeout",
        "5",
    ])
    .await;

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("initial (Elb.InitialHealthChecking: Initial health checks in progress)"),
        "{text}"
    );
    assert!(
        text.contains(
            "unhealthy (Target.FailedHealthChecks: Health checks failed with these codes: [502])"
        ),
        "{text}"
    );
    assert!(text.contains("FAILED (TargetUnhealthy)"), "{text}");
    // One line per change: the unhealthy state is printed once, not every round.
    assert_eq!(text.matches("] ").count(), 2, "{text}");
}

#[tokio::test]
async fn check_config_rejects_what_the_function_rejects() {
    let example = repo_file("config/services.example.json");
    let output = registrar_with_env(
        &["--config-file", &example, "check-config"],
        &[("HEALTH_ON_FAILURE", "bogus"), ("HEALTH_MAX_ROUNDS", "0")],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("invalid configuration (2 problems)"),
        "{text}"
    );
    assert!(text.contains("HEALTH_ON_FAILURE: \"bogus\""), "{text}");
    assert!(
        text.contains("HEALTH_MAX_ROUNDS: \"0\" is invalid"),
        "{text}"
    );

    let output = registrar_with_env(
        &["--config-file", &example, "check-config"],
        &[(
            "HEALTH_STATE_MACHINE_ARN",
            "arn:aws:states:us-east-2:123456789012:stateMachine:health-wait",
        )],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("health confirmation: arn:aws:states:us-east-2:123456789012:stateMachine:health-wait, a check every 10 s"), "{}", stdout(&output));
}

#[tokio::test]
async fn missing_region_and_bad_endpoint_are_named() {
    let example = repo_file("config/services.example.json");
    let event = repo_file("events/service-action.json");
    let output = registrar(&[
        "--config-file",
        &example,
        "--endpoint-url",
        "http://127.0.0.1:9",
        "handle",
        &event,
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("pass --region or set AWS_REGION"),
        "{}",
        stderr(&output)
    );

    let output = registrar(&[
        "--config-file",
        &example,
        "--endpoint-url",
        "not-a-url",
        "--region",
        "us-east-1",
        "handle",
        &event,
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("\"not-a-url\" is not an http:// or https:// URL"),
        "{}",
        stderr(&output)
    );
}

/// Runs the CLI with dummy credentials, writing `input` to its standard input.
async fn registrar_with_input(args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(args)
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the registrar CLI");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write the answer");
    drop(stdin);
    child.wait_with_output().await.expect("registrar output")
}

#[tokio::test]
async fn sweep_asks_first_and_applies_on_yes() {
    let setup = setup().await;
    let scratch = Scratch::new();
    let mapping = scratch.write("mapping.json", &setup.mapping.to_string());
    let endpoint = Emulator::shared().endpoint.clone();
    let base = [
        "--config-file",
        &mapping,
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
        "sweep",
    ];
    let elb = ElbClient::new(&Emulator::shared().sdk_config());

    // No answer (standard input closed): nothing changes, exit 1.
    let output = registrar(&base).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains(&format!(
            "{}:8080 in {}: missing, to register",
            setup.task.ip, setup.group
        )),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("aborted: nothing was changed"),
        "{}",
        stderr(&output)
    );
    assert!(
        support::registered_targets(&elb, &setup.group)
            .await
            .is_empty()
    );

    // A dry run changes nothing either, and succeeds.
    let output = registrar(&[&base[..], &["--dry-run"]].concat()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("would change 1 targets"),
        "{}",
        stdout(&output)
    );
    assert!(
        support::registered_targets(&elb, &setup.group)
            .await
            .is_empty()
    );

    // "y" applies, then the health check passes.
    let output = registrar_with_input(&base, "y\n").await;
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("Apply the 1 target changes listed above? [y/N]"),
        "{text}"
    );
    assert!(text.contains("healthy after 1 checks"), "{text}");
    assert!(text.contains("TARGET GROUP"), "{text}");
    let targets = support::registered_targets(&elb, &setup.group).await;
    assert_eq!(targets.len(), 1);

    // Nothing left to do: a second sweep prints so without asking.
    let output = registrar(&base).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("nothing to change"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn sweep_force_json_and_status_exit_codes() {
    let setup = setup().await;
    let scratch = Scratch::new();
    let mapping = scratch.write("mapping.json", &setup.mapping.to_string());
    let endpoint = Emulator::shared().endpoint.clone();
    let common = [
        "--config-file",
        mapping.as_str(),
        "--endpoint-url",
        endpoint.as_str(),
        "--region",
        "us-east-1",
    ];

    let output = registrar(&[&common[..], &["status"]].concat()).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "a missing target fails the status"
    );
    assert!(stdout(&output).contains("missing"), "{}", stdout(&output));

    let output = registrar(
        &[
            &common[..],
            &[
                "sweep",
                "--force",
                "--skip-health-check",
                "--output",
                "json",
            ],
        ]
        .concat(),
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(report["dryRun"], false);
    assert_eq!(
        report["groups"][0]["register"][0]["id"],
        setup.task.ip.as_str()
    );

    let output = registrar(&[&common[..], &["status", "--output", "json"]].concat()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let status: Value = serde_json::from_str(&stdout(&output)).expect("JSON status");
    assert_eq!(status["ok"], true);
    assert_eq!(status["targets"][0]["state"], "healthy");
    assert_eq!(
        status["targets"][0]["taskArn"],
        setup.task.task_arn.as_str()
    );

    let output = registrar(&[&common[..], &["status", "--services", "nope"]].concat()).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown service"),
        "{}",
        stderr(&output)
    );
}
