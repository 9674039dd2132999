//! Parsing of what the function is invoked with.
//!
//! The envelope is `aws_lambda_events`' generic [`EventBridgeEvent`]. Only the `detail` of an
//! "ECS Task State Change" from `aws.ecs` is read here, and only the fields the registrar uses.
//! Unknown fields are ignored and every field that ECS leaves out in some events is optional,
//! so a new ECS release does not break parsing. This module decides nothing.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::task::{Container, PortBinding, Task};

/// The `source` of events that ECS emits.
pub const ECS_SOURCE: &str = "aws.ecs";
/// The `detail-type` of the events the registrar acts on.
pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";

/// A parsed invocation payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// An ECS Task State Change, with its envelope fields that matter for trust checks.
    TaskStateChange(Box<TaskEvent>),
    /// A well-formed EventBridge event of another source or detail-type.
    Other {
        /// The event's `source`.
        source: String,
        /// The event's `detail-type`.
        detail_type: String,
    },
}

/// An ECS Task State Change event, reduced to what the registrar reads.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// The EventBridge event id, for logs.
    pub id: Option<String>,
    /// The account the event claims to come from.
    pub account: Option<String>,
    /// The region the event claims to come from.
    pub region: Option<String>,
    /// The event's `time`, as sent.
    pub time: Option<String>,
    /// The task as the event describes it.
    pub task: Task,
}

/// The reason a payload could not be read as an EventBridge event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload is not an EventBridge event at all.
    #[error(
        "payload is not an EventBridge event: {0}; send an EventBridge event or a documented action"
    )]
    NotEventBridge(String),
    /// A hand-made action request (`{"action": ...}`) is malformed.
    #[error("invalid action request: {0}")]
    InvalidAction(String),
    /// The envelope is fine but the Task State Change detail is not.
    #[error("invalid ECS Task State Change detail: {0}")]
    InvalidDetail(String),
}

/// Parses an invocation payload.
///
/// # Errors
///
/// [`PayloadError::NotEventBridge`] when the envelope lacks a required field (`detail-type`,
/// `source`, `detail`) or has one of the wrong type, and [`PayloadError::InvalidDetail`] when a
/// Task State Change detail lacks a field the registrar needs. The message names the field.
pub fn parse(payload: &Value) -> Result<Invocation, PayloadError> {
    if !payload.is_object() {
        return Err(PayloadError::NotEventBridge(format!(
            "expected a JSON object, got {}",
            json_kind(payload)
        )));
    }
    let envelope: EventBridgeEvent<SkippedDetail> = serde_path_to_error::deserialize(payload)
        .map_err(|err| PayloadError::NotEventBridge(describe_error("", &err)))?;

    if envelope.source != ECS_SOURCE || envelope.detail_type != TASK_STATE_CHANGE {
        return Ok(Invocation::Other {
            source: envelope.source,
            detail_type: envelope.detail_type,
        });
    }

    // The envelope read above has a `detail`, so the payload has one.
    let detail = payload.get("detail").unwrap_or(&Value::Null);
    if !detail.is_object() {
        return Err(PayloadError::InvalidDetail(format!(
            "detail: expected a JSON object, got {}",
            json_kind(detail)
        )));
    }
    let required: RequiredDetail = serde_path_to_error::deserialize(detail)
        .map_err(|err| PayloadError::InvalidDetail(describe_error("detail", &err)))?;
    let time = envelope.time.map(|time| time.to_rfc3339());
    Ok(Invocation::TaskStateChange(Box::new(TaskEvent {
        id: envelope.id,
        account: envelope.account,
        region: envelope.region,
        time,
        task: task_from_detail(required, detail),
    })))
}

/// Formats a parse error with the path of the field it concerns under `prefix`, such as
/// `detail.lastStatus: invalid type: integer `3`, expected a string`.
fn describe_error(prefix: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let at = match (prefix, path.as_str()) {
        ("", ".") => return shorten(err.inner().to_string()),
        (prefix, ".") => prefix.to_owned(),
        ("", path) => path.to_owned(),
        (prefix, path) => format!("{prefix}.{path}"),
    };
    shorten(format!("{at}: {}", err.inner()))
}

/// The longest error message, in bytes, that a payload produces. serde's messages quote the
/// offending value, and an invoker can send megabytes of it, which would otherwise be copied
/// into the log line and the invocation's error.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] at a character boundary, marking the cut.
pub fn shorten(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("... ({cut} more bytes)"));
    message
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The envelope's `detail` while the envelope is read. serde checks that the field is there
/// and skips its contents, so the detail is not copied; [`parse`] reads it by reference.
#[derive(Debug, Serialize)]
struct SkippedDetail;

impl<'de> Deserialize<'de> for SkippedDetail {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| SkippedDetail)
    }
}

/// The fields of an ECS Task State Change `detail` that every event has and the registrar
/// cannot do without. serde names a missing or mistyped one; other fields are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequiredDetail {
    task_arn: String,
    cluster_arn: String,
    last_status: String,
    desired_status: String,
}

// The optional fields are read from the detail by reference, taking a value of the wrong type
// as missing: the event is only a trigger, so a malformed field that the registrar can do
// without must not fail it. Reading them through serde would copy each subtree into a new
// `Value` first, which made parsing most of the handler's CPU time per event.

/// Returns the string at `key`, or `None` when it is missing or not a string.
fn optional_string(object: &Value, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Returns the objects of the list at `key`, skipping elements that are not objects; empty
/// when the list is missing or not a list.
fn objects<'a>(object: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    object
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|element| element.is_object())
}

/// Returns the task version, given as a number or a numeric string.
fn task_version(detail: &Value) -> Option<i64> {
    match detail.get("version")? {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Builds the task from the required fields and the optional ones in `detail`.
fn task_from_detail(required: RequiredDetail, detail: &Value) -> Task {
    let eni_ipv4 = objects(detail, "attachments")
        .filter(|attachment| is_eni_attachment(attachment.get("type").and_then(Value::as_str)))
        .find_map(|attachment| detail_value(attachment, "privateIPv4Address"));
    let containers = objects(detail, "containers")
        .filter_map(container_from_detail)
        .collect();
    Task {
        task_arn: required.task_arn,
        cluster_arn: required.cluster_arn,
        last_status: required.last_status,
        desired_status: required.desired_status,
        version: task_version(detail),
        task_definition_arn: optional_string(detail, "taskDefinitionArn"),
        group: optional_string(detail, "group"),
        launch_type: optional_string(detail, "launchType"),
        container_instance_arn: optional_string(detail, "containerInstanceArn"),
        stop_code: optional_string(detail, "stopCode"),
        stopped_reason: optional_string(detail, "stoppedReason"),
        updated_at: optional_string(detail, "updatedAt"),
        eni_ipv4,
        containers,
    }
}

/// Builds a container from one element of `detail.containers`; `None` without a name.
///
/// Ports are read as wide integers, so that a value out of the port range drops its binding
/// instead of failing the whole event.
fn container_from_detail(container: &Value) -> Option<Container> {
    let name = optional_string(container, "name")?;
    let bindings = objects(container, "networkBindings")
        .filter_map(|binding| {
            let port = |key: &str| binding.get(key).and_then(Value::as_i64);
            Some(PortBinding {
                container_port: u16::try_from(port("containerPort")?).ok()?,
                host_port: u16::try_from(port("hostPort")?).ok()?,
            })
        })
        .collect();
    let ipv4 = objects(container, "networkInterfaces").find_map(|interface| {
        optional_string(interface, "privateIpv4Address").filter(|ip| !ip.is_empty())
    });
    Some(Container {
        name,
        ipv4,
        bindings,
    })
}

/// Returns whether an attachment type names the task's network interface. Events say `eni`; the
/// DescribeTasks API says `ElasticNetworkInterface`.
pub fn is_eni_attachment(kind: Option<&str>) -> bool {
    matches!(kind, Some(kind) if kind.eq_ignore_ascii_case("eni") || kind == "ElasticNetworkInterface")
}

/// Returns the value of the first `{name, value}` pair named `wanted` in an attachment's
/// `details` list; `None` when that pair has no value or an empty one.
fn detail_value(attachment: &Value, wanted: &str) -> Option<String> {
    objects(attachment, "details")
        .find(|pair| pair.get("name").and_then(Value::as_str) == Some(wanted))
        .and_then(|pair| optional_string(pair, "value"))
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    fn task_event(name: &str) -> TaskEvent {
        match parse(&fixture(name)) {
            Ok(Invocation::TaskStateChange(event)) => *event,
            other => panic!("{name}: expected a task state change, got {other:?}"),
        }
    }

    #[test]
    fn running_fargate_event_reads_eni_address() {
        let event = task_event("fargate-running.json");
        assert_eq!(event.task.last_status, "RUNNING");
        assert_eq!(event.task.desired_status, "RUNNING");
        assert_eq!(event.task.eni_ipv4.as_deref(), Some("10.0.0.139"));
        assert_eq!(event.task.version, Some(4));
        assert_eq!(event.task.containers[0].name, "FargateApp");
        assert_eq!(event.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn provisioning_event_has_no_address() {
        let event = task_event("fargate-provisioning.json");
        assert_eq!(event.task.last_status, "PROVISIONING");
        assert_eq!(event.task.eni_ipv4, None);
    }

    #[test]
    fn stopped_event_keeps_deleted_eni_address() {
        let event = task_event("fargate-stopped.json");
        assert_eq!(event.task.desired_status, "STOPPED");
        assert_eq!(event.task.eni_ipv4.as_deref(), Some("172.31.82.109"));
        assert_eq!(
            event.task.stop_code.as_deref(),
            Some("ServiceSchedulerInitiated")
        );
    }

    #[test]
    fn bridge_event_reads_port_bindings() {
        let event = task_event("external-bridge-running.json");
        assert_eq!(event.task.eni_ipv4, None);
        let nginx = &event.task.containers[0];
        assert_eq!(nginx.bindings.len(), 2);
        assert_eq!(nginx.bindings[0].container_port, 80);
        assert_eq!(nginx.bindings[0].host_port, 49153);
        assert!(event.task.container_instance_arn.is_some());
    }

    #[test]
    fn old_event_without_optional_fields_parses() {
        let event = task_event("ec2-running-no-attachments.json");
        assert_eq!(event.task.launch_type, None);
        assert_eq!(event.task.eni_ipv4, None);
        assert_eq!(event.task.group.as_deref(), Some("task-group"));
    }

    #[test]
    fn other_detail_types_are_not_task_events() {
        for name in [
            "container-instance-state-change.json",
            "service-action.json",
            "deployment-state-change.json",
        ] {
            let parsed = parse(&fixture(name));
            assert!(
                matches!(parsed, Ok(Invocation::Other { .. })),
                "{name}: {parsed:?}"
            );
        }
    }

    #[test]
    fn long_eni_type_name_is_accepted() {
        let mut payload = fixture("fargate-running.json");
        payload["detail"]["attachments"][0]["type"] = json!("ElasticNetworkInterface");
        let Ok(Invocation::TaskStateChange(event)) = parse(&payload) else {
            panic!("not parsed");
        };
        assert_eq!(event.task.eni_ipv4.as_deref(), Some("10.0.0.139"));
    }

    #[test]
    fn unknown_fields_and_missing_optionals_are_tolerated() {
        let payload = json!({
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "detail": {
                "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/abc",
                "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/c",
                "lastStatus": "RUNNING",
                "desiredStatus": "RUNNING",
                "someNewField": {"nested": [1, 2, 3]},
                "attachments": [
                    {"type": "sdi", "details": []},
                    {"type": "eni", "details": [{"name": "privateIPv4Address"}]},
                    {"type": "eni", "details": [{"name": "privateIPv4Address", "value": "10.1.2.3"}]}
                ],
                "containers": [
                    {"name": "app", "networkBindings": [{"containerPort": 99999, "hostPort": 1}]},
                    {"lastStatus": "RUNNING"}
                ]
            }
        });
        let Ok(Invocation::TaskStateChange(event)) = parse(&payload) else {
            panic!("not parsed");
        };
        assert_eq!(event.task.eni_ipv4.as_deref(), Some("10.1.2.3"));
        assert_eq!(event.task.containers.len(), 1);
        assert!(event.task.containers[0].bindings.is_empty());
        assert_eq!(event.task.version, None);
        assert_eq!(event.id, None);
    }

    #[test]
    fn wrong_types_in_optional_fields_are_dropped() {
        let payload = json!({
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "detail": {
                "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/abc",
                "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/c",
                "lastStatus": "RUNNING",
                "desiredStatus": "RUNNING",
                "version": "7",
                "group": 12,
                "stopCode": {"x": 1},
                "attachments": [
                    "not an object",
                    {"type": "eni", "details": [
                        {"name": "macAddress", "value": 5},
                        {"name": "privateIPv4Address", "value": "10.1.2.3"}
                    ]}
                ],
                "containers": [
                    {"name": "app", "networkBindings": [
                        {"containerPort": "80", "hostPort": 1},
                        {"containerPort": 8080, "hostPort": 32768}
                    ]},
                    {"name": ["not", "a", "name"]}
                ]
            }
        });
        let Ok(Invocation::TaskStateChange(event)) = parse(&payload) else {
            panic!("not parsed");
        };
        assert_eq!(event.task.version, Some(7));
        assert_eq!(event.task.group, None);
        assert_eq!(event.task.stop_code, None);
        assert_eq!(event.task.eni_ipv4.as_deref(), Some("10.1.2.3"));
        assert_eq!(event.task.containers.len(), 1);
        assert_eq!(event.task.containers[0].bindings.len(), 1);
        assert_eq!(event.task.containers[0].host_port(8080), Some(32768));
    }

    #[test]
    fn wrong_type_in_required_field_names_it() {
        let payload = json!({
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "detail": {"taskArn": "t", "clusterArn": "c", "lastStatus": 3, "desiredStatus": "RUNNING"}
        });
        let err = parse(&payload).expect_err("lastStatus is required");
        assert!(
            err.to_string().contains("detail.lastStatus: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn detail_that_is_not_an_object_is_named() {
        let payload =
            json!({"detail-type": "ECS Task State Change", "source": "aws.ecs", "detail": []});
        let err = parse(&payload).expect_err("rejected");
        assert!(
            err.to_string()
                .contains("detail: expected a JSON object, got an array"),
            "{err}"
        );
    }

    #[test]
    fn bad_envelope_time_is_named() {
        let payload = json!({"detail-type": "x", "source": "y", "time": "yesterday", "detail": {}});
        let err = parse(&payload).expect_err("rejected");
        assert!(err.to_string().contains("time: "), "{err}");
    }

    #[test]
    fn missing_detail_type_is_named() {
        let err =
            parse(&json!({"source": "aws.ecs", "detail": {}})).expect_err("should be rejected");
        assert!(matches!(err, PayloadError::NotEventBridge(_)));
        assert!(err.to_string().contains("detail-type"), "{err}");
    }

    #[test]
    fn missing_detail_is_named() {
        let err = parse(&json!({"source": "aws.ecs", "detail-type": "ECS Task State Change"}))
            .expect_err("should be rejected");
        assert!(err.to_string().contains("detail"), "{err}");
    }

    #[test]
    fn non_object_payload_is_rejected() {
        for payload in [json!(null), json!("RUNNING"), json!([1]), json!(3)] {
            let err = parse(&payload).expect_err("should be rejected");
            assert!(err.to_string().contains("expected a JSON object"), "{err}");
        }
    }

    #[test]
    fn task_detail_without_task_arn_is_named() {
        let payload = json!({
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "detail": {"clusterArn": "c", "lastStatus": "RUNNING", "desiredStatus": "RUNNING"}
        });
        let err = parse(&payload).expect_err("should be rejected");
        assert!(matches!(err, PayloadError::InvalidDetail(_)));
        assert!(err.to_string().contains("taskArn"), "{err}");
    }

    #[test]
    fn scheduled_event_is_other() {
        let payload = json!({
            "version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/r"], "detail": {}
        });
        assert_eq!(
            parse(&payload),
            Ok(Invocation::Other {
                source: "aws.events".into(),
                detail_type: "Scheduled Event".into()
            })
        );
    }
}
