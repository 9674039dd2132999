//! The task state change rule's event pattern, read from `template.yaml` itself, against real
//! events in the emulator's EventBridge.
//!
//! moto's TestEventPattern is a stub, but `put_events` does route events through each rule's
//! pattern to the rule's targets. So the test creates the rule with the template's pattern and
//! an SQS queue as its target, sends every ECS fixture in `events/` plus events the rule must
//! not take (another source, another cluster), and reads back which ones arrived. Each event
//! carries its name in `resources`, so each queue message names the fixture it came from.

mod support;

use std::collections::BTreeSet;

use aws_sdk_eventbridge::Client as EventsClient;
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, Target};
use aws_sdk_sqs::Client as SqsClient;
use serde_json::{Map, Value};
use serde_norway::value::TaggedValue;
use support::Emulator;

/// The emulator's account: EventBridge stamps it on every event put there.
const ACCOUNT: &str = "123456789012";

/// An account the function does not run in.
const OTHER_ACCOUNT: &str = "111122223333";

/// A cluster missing from the function's watched clusters.
const OTHER_CLUSTER: &str = "arn:aws:ecs:us-west-2:123456789012:cluster/not-watched";

/// Fixtures whose events the function acts on, so the rule must pass them.
const MUST_REACH: &[&str] = &[
    "ec2-running-no-attachments.json",
    "external-bridge-running.json",
    "fargate-running.json",
    "fargate-stop-requested.json",
    "fargate-stopped-same-task.json",
    "fargate-stopped.json",
];

/// Fixtures the function would only report as "waiting" or "ignored".
const MUST_NOT_REACH: &[&str] = &[
    "fargate-pending.json",
    "fargate-provisioning.json",
    "container-instance-state-change.json",
    "service-action.json",
    "deployment-state-change.json",
    "scheduled-event.json",
];

/// One event to send, named for the report.
struct Probe {
    name: String,
    event: Value,
}

/// Reads the rule's `EventPattern` from `template.yaml`, with its `!Ref`s resolved: `ClusterArns` to
/// `clusters`, `AWS::AccountId` to `account`.
fn template_pattern(clusters: &[String], account: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let template: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"));
    let pattern =
        template["Resources"]["TaskStateChangeRule"]["Properties"]["EventPattern"].clone();
    assert!(
        !pattern.is_null(),
        "{path} has no Resources.TaskStateChangeRule.Properties.EventPattern"
    );
    resolve(pattern, clusters, account)
}

/// Turns the YAML pattern into JSON, replacing each `!Ref` with the value CloudFormation would
/// put there. Any other tag fails the test, since this resolver would not know its value.
fn resolve(value: serde_norway::Value, clusters: &[String], account: &str) -> Value {
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(flag),
        Yaml::Number(number) => serde_json::to_value(number).expect("a YAML number is JSON"),
        Yaml::String(text) => Value::String(text),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|item| resolve(item, clusters, account))
                .collect(),
        ),
        Yaml::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, item) in mapping {
                let Yaml::String(key) = key else {
                    panic!("non-string key {key:?} in the event pattern")
                };
                object.insert(key, resolve(item, clusters, account));
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => resolve_ref(*tagged, clusters, account),
    }
}

fn resolve_ref(tagged: TaggedValue, clusters: &[String], account: &str) -> Value {
    let serde_norway::Value::String(name) = &tagged.value else {
        panic!("unexpected {tagged:?} in the event pattern")
    };
    match (tagged.tag.to_string().as_str(), name.as_str()) {
        ("!Ref", "ClusterArns") => Value::from(clusters.to_vec()),
        ("!Ref", "AWS::AccountId") => Value::from(account),
        _ => panic!("the test cannot resolve {tagged:?} in the event pattern"),
    }
}

/// Loads the ECS and EventBridge fixtures in `events/`, by file name. Hand-made action requests
/// (no `source`) are not events and are left out.
fn fixtures() -> Vec<Probe> {
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
    let mut probes: Vec<Probe> = std::fs::read_dir(directory)
        .unwrap_or_else(|err| panic!("{directory}: {err}"))
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".json"))
        .map(|name| Probe {
            event: support::fixture_event(&name),
            name,
        })
        .filter(|probe| probe.event.get("source").is_some())
        .collect();
    probes.sort_by(|a, b| a.name.cmp(&b.name));
    probes
}

/// Creates a queue and a rule with `pattern` that targets it; returns the queue's URL.
async fn rule_to_queue(events: &EventsClient, sqs: &SqsClient, pattern: &Value) -> String {
    let name = support::unique("pattern");
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("CreateQueue");
    let queue_url = queue.queue_url().expect("queue URL").to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes");
    let queue_arn = attributes
        .attributes()
        .and_then(|map| map.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue ARN")
        .clone();
    events
        .put_rule()
        .name(&name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("PutRule");
    events
        .put_targets()
        .rule(&name)
        .targets(
            Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("PutTargets");
    queue_url
}

/// Puts every probe on the default bus, ten to a call (the PutEvents limit).
async fn put(events: &EventsClient, probes: &[Probe]) {
    for batch in probes.chunks(10) {
        let mut request = events.put_events();
        for probe in batch {
            let event = &probe.event;
            let text = |key: &str| event[key].as_str().map(str::to_owned);
            request = request.entries(
                PutEventsRequestEntry::builder()
                    .set_source(text("source"))
                    .set_detail_type(text("detail-type"))
                    .detail(event["detail"].to_string())
                    .resources(format!("probe:{}", probe.name))
                    .build(),
            );
        }
        let output = request.send().await.expect("PutEvents");
        assert_eq!(output.failed_entry_count(), 0, "{output:?}");
    }
}

/// Returns the names of the probes that reached the queue.
async fn arrived(sqs: &SqsClient, queue_url: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("ReceiveMessage");
        if received.messages().is_empty() {
            return names;
        }
        for message in received.messages() {
            let body: Value =
                serde_json::from_str(message.body().unwrap_or("null")).expect("JSON event");
            let resource = body["resources"][0].as_str().unwrap_or_default();
            let name = resource
                .strip_prefix("probe:")
                .unwrap_or_else(|| panic!("a message that is not a probe: {body}"));
            assert!(names.insert(name.to_owned()), "{name} arrived twice");
        }
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

#[tokio::test]
async fn rule_passes_only_acted_on_events() {
    let emulator = Emulator::shared();
    let sdk = emulator.sdk_config();
    let events = EventsClient::new(&sdk);
    let sqs = SqsClient::new(&sdk);

    let mut probes = fixtures();
    let fixture_names: BTreeSet<String> = probes.iter().map(|probe| probe.name.clone()).collect();
    let classified: BTreeSet<String> = names(MUST_REACH)
        .union(&names(MUST_NOT_REACH))
        .cloned()
        .collect();
    assert_eq!(
        fixture_names, classified,
        "every event fixture must be listed in MUST_REACH or MUST_NOT_REACH"
    );

    // The operator lists every cluster the fixtures come from.
    let clusters: Vec<String> = probes
        .iter()
        .filter_map(|probe| probe.event["detail"]["clusterArn"].as_str())
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // A running task in an unwatched cluster, and a running task's event from a source that
    // only imitates ECS.
    let running = support::fixture_event("fargate-running.json");
    let mut other_cluster = running.clone();
    other_cluster["detail"]["clusterArn"] = Value::from(OTHER_CLUSTER);
    probes.push(Probe {
        name: "other-cluster".into(),
        event: other_cluster,
    });
    let mut other_source = running.clone();
    other_source["source"] = Value::from("custom.ecs");
    probes.push(Probe {
        name: "other-source".into(),
        event: other_source,
    });

    let own_account = rule_to_queue(&events, &sqs, &template_pattern(&clusters, ACCOUNT)).await;
    // The same pattern deployed for another account: events of this account must not match.
    let other_account =
        rule_to_queue(&events, &sqs, &template_pattern(&clusters, OTHER_ACCOUNT)).await;
    put(&events, &probes).await;

    assert_eq!(arrived(&sqs, &own_account).await, names(MUST_REACH));
    assert_eq!(arrived(&sqs, &other_account).await, BTreeSet::new());
}
