//! CloudWatch metrics in Embedded Metric Format (EMF).
//!
//! The function prints one JSON document per dimension set to stdout. Lambda passes the line to
//! CloudWatch Logs unchanged, with the log format JSON as well as Text. CloudWatch Logs then
//! turns the values named under `_aws.CloudWatchMetrics` into metrics, so the function makes no
//! API call and needs no permission beyond writing its log.
//!
//! What is recorded, per invocation:
//!
//! | Metric | Unit | Dimensions |
//! |---|---|---|
//! | `TargetsRegistered` | Count | Service, TargetGroup |
//! | `TargetsDeregistered` | Count | Service, TargetGroup |
//! | `TargetsRolledBack` | Count | Service, TargetGroup |
//! | `TargetGroupChangeFailures` | Count | Service, TargetGroup |
//! | `TargetGroupChangeRejections` | Count | Service, TargetGroup |
//! | `RegistrationLatency` | Milliseconds | Service, TargetGroup |
//! | `IgnoredEvents` | Count | none |
//! | `Failures` | Count | ErrorClass |
//! | `SweepTargetsRegistered`, `SweepTargetsDeregistered` | Count | TargetGroup |
//! | `SweepFailures` | Count | TargetGroup |
//!
//! `RegistrationLatency` runs from the event's `time` (when ECS saw the change) to the end of
//! the registration. The health-wait state machine adds `TimeToHealthy` in seconds, with the
//! same dimensions, through PutMetricData. Tasks are never a dimension: every task would make
//! new metrics, and CloudWatch bills per metric.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::summary::{ChangeResult, Outcome, Summary};
use crate::sweep::SweepReport;

/// Namespace used when the configuration does not name one.
pub const DEFAULT_NAMESPACE: &str = "EcsTargetRegistrar";

/// CloudWatch's limit on the length of a dimension value.
const MAX_DIMENSION_VALUE: usize = 1024;

/// The unit CloudWatch stores a value in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

/// Values that share one set of dimension values; written as one EMF document.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Dimension names and values, in the order CloudWatch shows them.
    pub dimensions: Vec<(&'static str, String)>,
    pub data: Vec<Datum>,
}

impl Record {
    fn new(dimensions: Vec<(&'static str, String)>) -> Self {
        Record {
            dimensions,
            data: Vec::new(),
        }
    }

    /// Adds `value` to the metric `name`, creating it on first use.
    fn add(&mut self, name: &'static str, unit: Unit, value: f64) {
        match self.data.iter_mut().find(|datum| datum.name == name) {
            Some(datum) => datum.value += value,
            None => self.data.push(Datum { name, unit, value }),
        }
    }
}

/// Checks a namespace against CloudWatch's rules, so that a bad one fails start-up rather
/// than every metric silently.
///
/// # Errors
///
/// A message naming the namespace and the rule it breaks.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() > 255 {
        return Err(format!(
            "metrics namespace {namespace:?} is {} characters long; CloudWatch allows 255",
            namespace.len()
        ));
    }
    if namespace.starts_with("AWS/") {
        return Err(format!(
            "metrics namespace {namespace:?} starts with \"AWS/\", which CloudWatch keeps for AWS \
             services; pick another, such as {DEFAULT_NAMESPACE:?}"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if let Some(bad) = namespace.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "metrics namespace {namespace:?} contains {bad:?}; CloudWatch allows letters, digits, \
             spaces and . - _ / # :"
        ));
    }
    Ok(())
}

/// Writes EMF documents to a sink, stdout in the function.
pub struct Metrics {
    namespace: String,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Metrics {
    /// Metrics written to the process's stdout, where Lambda collects them.
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Metrics::to_writer(namespace, Box::new(std::io::stdout()))
    }

    /// Metrics written to any sink; tests pass a buffer.
    pub fn to_writer(namespace: impl Into<String>, sink: Box<dyn Write + Send>) -> Self {
        Metrics {
            namespace: namespace.into(),
            sink: Mutex::new(sink),
        }
    }

    /// Returns the namespace the documents name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Writes one document per record, each on its own line. A failed write is logged and
    /// dropped: losing a metric must not fail a registration that succeeded.
    pub fn emit(&self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        let timestamp = now_millis();
        let mut text = String::new();
        for record in records.iter().filter(|record| !record.data.is_empty()) {
            text.push_str(&document(&self.namespace, timestamp, record).to_string());
            text.push('\n');
        }
        let mut sink = match self.sink.lock() {
            Ok(sink) => sink,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(err) = sink.write_all(text.as_bytes()).and_then(|()| sink.flush()) {
            tracing::warn!(error = %err, "metrics could not be written");
        }
    }
}

/// Builds one EMF document: the metric directive under `_aws`, then the dimension values and
/// the metric values as top-level members.
pub fn document(namespace: &str, timestamp_millis: u64, record: &Record) -> Value {
    let dimension_names: Vec<&str> = record.dimensions.iter().map(|(name, _)| *name).collect();
    let metrics: Vec<Value> = record
        .data
        .iter()
        .map(|datum| json!({"Name": datum.name, "Unit": datum.unit.as_str()}))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimension_names],
                "Metrics": metrics,
            }],
        }),
    );
    for (name, value) in &record.dimensions {
        root.insert((*name).into(), Value::String(dimension_value(value)));
    }
    for datum in &record.data {
        root.insert(datum.name.into(), json!(datum.value));
    }
    Value::Object(root)
}

/// Builds the records for one event's summary. `latency` is the time from the event's
/// timestamp to now, when the event had one.
pub fn summary_records(summary: &Summary, latency: Option<Duration>) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    if summary.outcome == Outcome::Ignored {
        let mut record = Record::new(Vec::new());
        record.add("IgnoredEvents", Unit::Count, 1.0);
        records.push(record);
    }
    for change in &summary.changes {
        let group = group_name(
            change
                .target_group_arn
                .as_deref()
                .unwrap_or(&change.target_group),
        );
        for service in &change.services {
            let dimensions = vec![("Service", service.clone()), ("TargetGroup", group.clone())];
            let index = match records.iter().position(|r| r.dimensions == dimensions) {
                Some(index) => index,
                None => {
                    records.push(Record::new(dimensions));
                    records.len() - 1
                }
            };
            let record = &mut records[index];
            let count = change.targets.len() as f64;
            match change.result {
                ChangeResult::Registered => {
                    record.add("TargetsRegistered", Unit::Count, count);
                    if let Some(latency) = latency {
                        record.add(
                            "RegistrationLatency",
                            Unit::Milliseconds,
                            latency.as_millis() as f64,
                        );
                    }
                }
                ChangeResult::Deregistered => {
                    record.add("TargetsDeregistered", Unit::Count, count);
                }
                ChangeResult::NotRegistered => {}
                ChangeResult::RolledBack => record.add("TargetsRolledBack", Unit::Count, count),
                ChangeResult::Failed => {
                    record.add("TargetGroupChangeFailures", Unit::Count, 1.0);
                    if change.permanent {
                        record.add("TargetGroupChangeRejections", Unit::Count, 1.0);
                    }
                }
            }
        }
    }
    records
}

/// Builds the record for a failed invocation, by the error's class.
pub fn failure_record(error_class: &str) -> Record {
    let mut record = Record::new(vec![("ErrorClass", error_class.to_owned())]);
    record.add("Failures", Unit::Count, 1.0);
    record
}

/// Builds the records for a sweep that changed target groups. A dry run changes nothing and
/// records nothing.
pub fn sweep_records(report: &SweepReport) -> Vec<Record> {
    if report.dry_run {
        return Vec::new();
    }
    let mut records = Vec::new();
    for group in &report.groups {
        let mut record = Record::new(vec![("TargetGroup", group_name(&group.target_group_arn))]);
        if group.errors.is_empty() {
            if !group.register.is_empty() {
                record.add(
                    "SweepTargetsRegistered",
                    Unit::Count,
                    group.register.len() as f64,
                );
            }
            if !group.deregister.is_empty() {
                record.add(
                    "SweepTargetsDeregistered",
                    Unit::Count,
                    group.deregister.len() as f64,
                );
            }
        } else {
            record.add("SweepFailures", Unit::Count, group.errors.len() as f64);
        }
        if !record.data.is_empty() {
            records.push(record);
        }
    }
    records
}

/// Returns the time from an event's RFC 3339 `time` to `now`. It is `None` when the event has
/// no readable time, or when the time lies ahead of `now` because a clock is skewed.
pub fn event_age(payload: &Value, now: SystemTime) -> Option<Duration> {
    let time = payload.get("time")?.as_str()?;
    let parsed = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    let millis = u64::try_from(parsed.timestamp_millis()).ok()?;
    let event = UNIX_EPOCH.checked_add(Duration::from_millis(millis))?;
    now.duration_since(event).ok()
}

/// Returns the short name of a target group: `NAME` from `arn:...:targetgroup/NAME/ID`, or
/// the reference unchanged when it is a name already.
pub fn group_name(reference: &str) -> String {
    reference
        .split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(reference)
        .to_owned()
}

fn dimension_value(value: &str) -> String {
    if value.is_empty() {
        return "unknown".into();
    }
    let mut end = value.len().min(MAX_DIMENSION_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Lifecycle, Target};
    use crate::summary::Change;
    use std::sync::Arc;

    const GROUP_ARN: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/auth-tg/0123456789abcdef";

    fn change(result: ChangeResult, services: &[&str], targets: usize) -> Change {
        Change {
            target_group: "auth-tg".into(),
            target_group_arn: Some(GROUP_ARN.into()),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            action: Lifecycle::Register,
            targets: (0..targets)
                .map(|i| Target {
                    id: format!("10.0.0.{i}"),
                    port: 8080,
                })
                .collect(),
            result,
            error: None,
            permanent: false,
        }
    }

    /// A sink the test can read after the writer has used it.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn document_follows_embedded_metric_format() {
        let mut record = Record::new(vec![
            ("Service", "auth".into()),
            ("TargetGroup", "auth-tg".into()),
        ]);
        record.add("TargetsRegistered", Unit::Count, 1.0);
        record.add("RegistrationLatency", Unit::Milliseconds, 1500.0);
        let doc = document("EcsTargetRegistrar", 1_700_000_000_000, &record);
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000_u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "EcsTargetRegistrar",
                        "Dimensions": [["Service", "TargetGroup"]],
                        "Metrics": [
                            {"Name": "TargetsRegistered", "Unit": "Count"},
                            {"Name": "RegistrationLatency", "Unit": "Milliseconds"}
                        ]
                    }]
                },
                "Service": "auth",
                "TargetGroup": "auth-tg",
                "TargetsRegistered": 1.0,
                "RegistrationLatency": 1500.0
            })
        );
    }

    #[test]
    fn every_named_member_of_a_document_is_present() {
        // CloudWatch drops a whole document whose directive names a member that is missing.
        let mut record = Record::new(vec![("ErrorClass", "DescribeTasksFailed".into())]);
        record.add("Failures", Unit::Count, 1.0);
        let doc = document("ns", 1, &record);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        for name in directive["Dimensions"][0]
            .as_array()
            .expect("dimension set")
        {
            assert!(doc.get(name.as_str().expect("name")).is_some(), "{name}");
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(doc[name].is_number(), "{name}");
        }
    }

    #[test]
    fn registration_counts_targets_and_latency() {
        let mut summary = Summary::new(Outcome::Registered, "registered");
        summary.changes = vec![change(ChangeResult::Registered, &["auth", "auth-admin"], 2)];
        let records = summary_records(&summary, Some(Duration::from_millis(2500)));
        assert_eq!(records.len(), 2);
        for (record, service) in records.iter().zip(["auth", "auth-admin"]) {
            assert_eq!(
                record.dimensions,
                vec![
                    ("Service", service.to_owned()),
                    ("TargetGroup", "auth-tg".to_owned())
                ]
            );
            assert_eq!(
                record.data,
                vec![
                    Datum {
                        name: "TargetsRegistered",
                        unit: Unit::Count,
                        value: 2.0
                    },
                    Datum {
                        name: "RegistrationLatency",
                        unit: Unit::Milliseconds,
                        value: 2500.0
                    },
                ]
            );
        }
    }

    #[test]
    fn each_change_result_has_its_own_metric() {
        let mut summary = Summary::new(Outcome::Failed, "mixed");
        summary.changes = vec![
            change(ChangeResult::Deregistered, &["auth"], 1),
            change(ChangeResult::RolledBack, &["auth"], 1),
            change(ChangeResult::Failed, &["auth"], 3),
            change(ChangeResult::NotRegistered, &["auth"], 1),
        ];
        let records = summary_records(&summary, None);
        assert_eq!(records.len(), 1, "one dimension set, one document");
        let names: Vec<_> = records[0]
            .data
            .iter()
            .map(|d| (d.name, d.value as u32))
            .collect();
        assert_eq!(
            names,
            vec![
                ("TargetsDeregistered", 1),
                ("TargetsRolledBack", 1),
                ("TargetGroupChangeFailures", 1),
            ]
        );
    }

    #[test]
    fn permanent_failure_also_counts_as_rejection() {
        let mut summary = Summary::new(Outcome::Failed, "rejected");
        let mut rejected = change(ChangeResult::Failed, &["auth"], 1);
        rejected.permanent = true;
        summary.changes = vec![rejected];
        let records = summary_records(&summary, None);
        let names: Vec<_> = records[0].data.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            vec!["TargetGroupChangeFailures", "TargetGroupChangeRejections"]
        );
    }

    #[test]
    fn ignored_event_has_no_dimensions() {
        let summary = Summary::new(Outcome::Ignored, "not mapped");
        let records = summary_records(&summary, None);
        assert_eq!(records.len(), 1);
        assert!(records[0].dimensions.is_empty());
        assert_eq!(records[0].data[0].name, "IgnoredEvents");
        let doc = document("ns", 1, &records[0]);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
    }

    #[test]
    fn waiting_event_records_nothing() {
        let summary = Summary::new(Outcome::Waiting, "pending");
        assert!(summary_records(&summary, None).is_empty());
    }

    #[test]
    fn failures_carry_their_class() {
        let record = failure_record("EcsBehindEvent");
        assert_eq!(
            record.dimensions,
            vec![("ErrorClass", "EcsBehindEvent".to_owned())]
        );
        assert_eq!(record.data[0].name, "Failures");
    }

    #[test]
    fn event_age_comes_from_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_610);
        let payload = json!({"time": "2026-01-01T00:00:00Z"});
        assert_eq!(event_age(&payload, now), Some(Duration::from_secs(10)));
        assert_eq!(event_age(&json!({"time": "yesterday"}), now), None);
        assert_eq!(event_age(&json!({}), now), None);
        assert_eq!(
            event_age(&json!({"time": "2027-01-01T00:00:00Z"}), now),
            None,
            "an event from the future has no age"
        );
    }

    #[test]
    fn group_names_come_from_arns() {
        assert_eq!(group_name(GROUP_ARN), "auth-tg");
        assert_eq!(group_name("auth-tg"), "auth-tg");
    }

    #[test]
    fn namespaces_follow_cloudwatch_rules() {
        assert!(validate_namespace("EcsTargetRegistrar").is_ok());
        assert!(validate_namespace("Team/Registrar-1.0").is_ok());
        let err = validate_namespace("AWS/ECS").expect_err("reserved");
        assert!(err.contains("\"AWS/ECS\""), "{err}");
        let err = validate_namespace("bad{name}").expect_err("brace");
        assert!(err.contains("'{'"), "{err}");
        assert!(validate_namespace(&"x".repeat(256)).is_err());
    }

    #[test]
    fn dimension_values_are_cut_at_cloudwatch_limit_on_a_char_boundary() {
        let long = "é".repeat(600);
        let cut = dimension_value(&long);
        assert!(cut.len() <= MAX_DIMENSION_VALUE);
        assert_eq!(dimension_value(""), "unknown");
    }

    #[test]
    fn emit_writes_one_line_per_record() {
        let buffer = Buffer::default();
        let metrics = Metrics::to_writer("ns", Box::new(buffer.clone()));
        metrics.emit(&[failure_record("A"), failure_record("B")]);
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["ErrorClass"], "B");
    }
}
