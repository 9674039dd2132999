//! The Lambda binary itself, as Lambda runs it: a fake Runtime API on 127.0.0.1 hands it events,
//! and the binary talks to moto through `AWS_ENDPOINT_URL`. This covers `main.rs`: start-up
//! with the mapping from the environment, JSON logs on request with the request id on every
//! line, metrics in Embedded Metric Format, the summary as the response, a failed invocation
//! reported with our error type, and no credentials in the output.

mod support;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use serde_json::{Value, json};
use support::Emulator;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:registrar";

/// Credentials given to the binary, distinct enough that a leak into its output shows.
const ACCESS_KEY_ID: &str = "AKIDLOGLEAKCHECK";
const SECRET_ACCESS_KEY: &str = "secret-value-that-must-never-be-logged";
const SESSION_TOKEN: &str = "session-token-that-must-never-be-logged";

/// What the binary posted back to the fake Runtime API.
#[derive(Debug, Clone)]
enum Posted {
    Response {
        request_id: String,
        body: Value,
    },
    Error {
        request_id: String,
        error_type: String,
        body: Value,
    },
}

/// A minimal Lambda Runtime API: hands out queued events, records responses and errors.
struct RuntimeApi {
    events: Mutex<VecDeque<(String, Value)>>,
    posted: Mutex<Vec<Posted>>,
}

impl RuntimeApi {
    async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let api = Arc::clone(&self);
            tokio::spawn(async move { api.connection(stream).await });
        }
    }

    async fn connection(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end().to_owned();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let reply = self
                .route(&path, header("lambda-runtime-function-error-type"), &body)
                .await;
            let Some((status, extra, body)) = reply else {
                // No more events: keep the binary waiting until the test kills it.
                std::future::pending::<()>().await;
                return;
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                body.len()
            );
            if reader
                .get_mut()
                .write_all(response.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn route(
        &self,
        path: &str,
        error_type: Option<String>,
        body: &[u8],
    ) -> Option<(String, String, String)> {
        let accepted = Some(("202 Accepted".to_owned(), String::new(), "{}".to_owned()));
        if path.ends_with("/runtime/invocation/next") {
            let next = self.events.lock().expect("events lock").pop_front();
            let (request_id, event) = next?;
            let headers = format!(
                "lambda-runtime-aws-request-id: {request_id}\r\n\
                 lambda-runtime-deadline-ms: 32503680000000\r\n\
                 lambda-runtime-invoked-function-arn: {FUNCTION_ARN}\r\n\
                 lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n"
            );
            return Some(("200 OK".to_owned(), headers, event.to_string()));
        }
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let request_id = path.split('/').nth(4).unwrap_or_default().to_owned();
        let posted = if path.ends_with("/response") {
            Posted::Response {
                request_id,
                body: parsed,
            }
        } else {
            Posted::Error {
                request_id,
                error_type: error_type.unwrap_or_default(),
                body: parsed,
            }
        };
        self.posted.lock().expect("posted lock").push(posted);
        accepted
    }
}

#[tokio::test]
async fn lambda_binary_registers_and_reports_errors() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config();
    let ecs = EcsClient::new(&sdk);
    let elb = ElbClient::new(&sdk);
    let cluster = support::create_cluster(&ecs, &support::unique("lambda")).await;
    let family = support::unique("lambda-web");
    let definition = support::register_task_definition(&ecs, &family, "app", 8080).await;
    let group =
        support::create_ip_target_group(&elb, &support::unique("tg"), &emulator.vpc_id, 8080).await;
    let task = support::run_task(&ecs, &cluster, &definition, emulator).await;
    let running = support::rewrite_event(
        support::fixture_event("fargate-running.json"),
        &task,
        &cluster,
        &definition,
    );

    let api = Arc::new(RuntimeApi {
        events: Mutex::new(VecDeque::from([
            ("request-1".to_owned(), running),
            ("request-2".to_owned(), json!({"hello": "world"})),
            (
                "request-3".to_owned(),
                support::fixture_event("service-action.json"),
            ),
        ])),
        posted: Mutex::new(Vec::new()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(Arc::clone(&api).serve(listener));

    let mapping = json!({"services": [{
        "name": "web", "cluster": cluster, "family": family,
        "container": "app", "containerPort": 8080, "targetGroups": [group]
    }]});
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-target-registrar"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "registrar")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_ENDPOINT_URL", &emulator.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("REGISTRAR_CONFIG", mapping.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Lambda binary");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.posted.lock().expect("posted lock").len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary answered {:?}",
            api.posted.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().expect("stop the binary");
    let output = child.wait_with_output().await.expect("binary output");
    let posted = api.posted.lock().expect("posted lock").clone();

    let Posted::Response { request_id, body } = &posted[0] else {
        panic!("{:?}", posted[0])
    };
    assert_eq!(request_id, "request-1");
    assert_eq!(body["outcome"], "registered");
    let targets = support::registered_targets(&elb, &group).await;
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].0, task.ip);

    let Posted::Error {
        request_id,
        error_type,
        body,
    } = &posted[1]
    else {
        panic!("{:?}", posted[1])
    };
    assert_eq!(request_id, "request-2");
    // The runtime marks every handler error "unhandled" in the header; ours is in the body.
    assert_eq!(error_type, "unhandled");
    assert_eq!(body["errorType"], "InvalidPayload");
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("detail-type"), "{message}");

    let Posted::Response { body, .. } = &posted[2] else {
        panic!("{:?}", posted[2])
    };
    assert_eq!(body["outcome"], "ignored");

    // Lambda asked for JSON logs: every line is a JSON object, and the registration line
    // carries the task, target group and target as fields.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    let registered = lines
        .iter()
        .find(|line| line["fields"]["message"] == "target group updated")
        .unwrap_or_else(|| panic!("no registration line in {stdout}"));
    assert_eq!(registered["fields"]["task_arn"], task.task_arn.as_str());
    assert_eq!(registered["fields"]["target"], format!("{}:8080", task.ip));
    assert!(
        registered["fields"]["target_group"]
            .as_str()
            .is_some_and(|tg| tg == group)
    );
    assert_eq!(registered["span"]["requestId"], "request-1");
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "invocation failed"),
        "{stdout}"
    );

    // Every log line written while an invocation ran names its request; metric documents
    // (the lines with `_aws`) are not log lines.
    let (metric_lines, log_lines): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|line| line.get("_aws").is_some());
    for line in &log_lines {
        assert!(
            line["span"]["requestId"].is_string(),
            "log line without a request id: {line}"
        );
    }

    // One metric document per dimension set: the registration under its service and target
    // group, the bad payload under its error class, the ignored event without dimensions.
    let group_name = ecs_target_registrar::metrics::group_name(&group);
    let registration = metric_lines
        .iter()
        .find(|line| line.get("TargetsRegistered").is_some())
        .unwrap_or_else(|| panic!("no registration metrics in {stdout}"));
    assert_eq!(registration["TargetsRegistered"], 1.0);
    assert_eq!(registration["Service"], "web");
    assert_eq!(registration["TargetGroup"], group_name.as_str());
    assert!(registration["RegistrationLatency"].is_number());
    assert_eq!(
        registration["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "EcsTargetRegistrar"
    );
    assert!(
        metric_lines
            .iter()
            .any(|line| line["ErrorClass"] == "InvalidPayload" && line["Failures"] == 1.0),
        "{stdout}"
    );
    assert!(
        metric_lines.iter().any(|line| line["IgnoredEvents"] == 1.0),
        "{stdout}"
    );

    // Credentials never reach the logs, in any form the process had them.
    let stderr = String::from_utf8_lossy(&output.stderr);
    for secret in [ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN] {
        assert!(!stdout.contains(secret), "{secret} logged: {stdout}");
        assert!(!stderr.contains(secret), "{secret} logged: {stderr}");
    }
}

#[tokio::test]
async fn lambda_binary_rejects_an_invalid_mapping_at_start() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-target-registrar"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_FUNCTION_NAME", "registrar")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "REGISTRAR_CONFIG",
            r#"{"services": [{"name": "auth", "containerPort": 0}]}"#,
        )
        .output()
        .await
        .expect("run the Lambda binary");

    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("services[0].cluster: missing"), "{text}");
    assert!(
        text.contains("services[0].containerPort: 0 is out of range"),
        "{text}"
    );
}
