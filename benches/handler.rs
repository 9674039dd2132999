//! Handler CPU per event, without network: the recorded events in `events/` go through the same
//! path as in the function (JSON bytes to `Value`, [`invoke`], response to JSON bytes), with
//! in-memory ECS and ELBv2 that return at once and agree with each event.
//!
//! Groups: `parse` (bytes to the parsed event only), `handle` (the whole path, no log
//! subscriber) and `handle_logged` (the whole path with the function's own log subscriber,
//! writing to a sink). Run with `cargo bench --bench handler`.
//!
//! Criterion measures the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: on a shared machine, time the thread spends waiting for a core is not handler cost.
//! Everything runs on that thread, because the runtime is a current-thread one.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;

use std::time::Duration;

use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ecs_target_registrar::aws::{ApiError, Ecs, LoadBalancing, TaskLookup};
use ecs_target_registrar::decision::Target;
use ecs_target_registrar::event::{self, Invocation};
use ecs_target_registrar::handler::invoke;
use ecs_target_registrar::health::Observation;
use ecs_target_registrar::task::Task;
use ecs_target_registrar::{Config, Environment, Registrar};
use serde_json::{Value, json};

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }

    fn end(&self, started: ThreadTime) -> Duration {
        started.elapsed()
    }

    fn add(&self, first: &Duration, second: &Duration) -> Duration {
        *first + *second
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_secs_f64() * 1e9
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuTimeFormatter
    }
}

/// Prints CPU nanoseconds in ns, µs or ms.
struct CpuTimeFormatter;

impl ValueFormatter for CpuTimeFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (divisor, unit) = if typical_ns < 1e3 {
            (1.0, "ns (CPU)")
        } else if typical_ns < 1e6 {
            (1e3, "µs (CPU)")
        } else {
            (1e6, "ms (CPU)")
        };
        for value in values.iter_mut() {
            *value /= divisor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        _typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match throughput {
            Throughput::Bytes(count)
            | Throughput::BytesDecimal(count)
            | Throughput::Elements(count)
            | Throughput::Bits(count) => *count as f64,
        };
        for value in values.iter_mut() {
            *value = per_iteration * 1e9 / *value;
        }
        "per CPU second"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// The recorded events the function can receive from EventBridge.
const FIXTURES: &[&str] = &[
    "fargate-running.json",
    "fargate-pending.json",
    "fargate-provisioning.json",
    "fargate-stop-requested.json",
    "fargate-stopped.json",
    "fargate-stopped-same-task.json",
    "external-bridge-running.json",
    "ec2-running-no-attachments.json",
    "service-action.json",
    "container-instance-state-change.json",
];

/// ECS that describes each task as its event does, and lists no running tasks.
struct RecordedEcs {
    tasks: HashMap<String, Task>,
}

impl Ecs for RecordedEcs {
    async fn describe_task(&self, _cluster: &str, task_arn: &str) -> Result<TaskLookup, ApiError> {
        Ok(match self.tasks.get(task_arn) {
            Some(task) => TaskLookup::Found(Box::new(task.clone())),
            None => TaskLookup::Missing {
                reason: "MISSING".to_owned(),
            },
        })
    }

    async fn running_tasks(&self, _cluster: &str) -> Result<Vec<Task>, ApiError> {
        Ok(Vec::new())
    }

    async fn stopped_tasks(&self, _cluster: &str) -> Result<Vec<Task>, ApiError> {
        Ok(Vec::new())
    }

    async fn ec2_instance_id(
        &self,
        _cluster: &str,
        _arn: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(Some("i-0123456789abcdef0".to_owned()))
    }
}

/// ELBv2 that accepts every change.
struct AcceptingElb;

impl LoadBalancing for AcceptingElb {
    async fn register_targets(&self, _group: &str, _targets: &[Target]) -> Result<(), ApiError> {
        Ok(())
    }

    async fn deregister_targets(&self, _group: &str, _targets: &[Target]) -> Result<(), ApiError> {
        Ok(())
    }

    async fn describe_target_health(
        &self,
        _group: &str,
        _targets: &[Target],
    ) -> Result<Vec<(Target, Observation)>, ApiError> {
        Ok(Vec::new())
    }

    async fn target_group_arn(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(Some(format!(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{name}/0123456789abcdef"
        )))
    }
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// Builds a registrar whose mapping matches every task event among the fixtures, with two
/// target groups per entry, and whose ECS agrees with the events.
fn registrar(fixtures: &[(&str, Vec<u8>)]) -> Registrar<RecordedEcs, AcceptingElb> {
    let mut services: Vec<Value> = Vec::new();
    let mut tasks = HashMap::new();
    for (_, bytes) in fixtures {
        let payload: Value = serde_json::from_slice(bytes).expect("fixtures are JSON");
        let Ok(Invocation::TaskStateChange(event)) = event::parse(&payload) else {
            continue;
        };
        let task = event.task;
        let family = task.family().unwrap_or("none").to_owned();
        let container = task.containers.first().map(|c| c.name.clone());
        let port = task
            .containers
            .first()
            .and_then(|c| c.bindings.first())
            .map_or(8080, |binding| binding.container_port);
        let entry = json!({
            "name": format!("service-{}", services.len()),
            "cluster": task.cluster_arn,
            "family": family,
            "container": container.unwrap_or_else(|| "app".to_owned()),
            "containerPort": port,
            "targetGroups": ["web-tg", "internal-tg"],
        });
        let known = services
            .iter()
            .any(|s| s["cluster"] == entry["cluster"] && s["family"] == entry["family"]);
        if !known {
            services.push(entry);
        }
        tasks.insert(task.task_arn.clone(), task);
    }
    let config = Config::from_value(&json!({ "services": services }))
        .expect("the mapping built from the fixtures is valid");
    Registrar::new(config, RecordedEcs { tasks }, AcceptingElb)
}

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    FIXTURES
        .iter()
        .map(|name| (*name, read_fixture(name)))
        .collect()
}

fn bench_parse(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("parse");
    for (name, bytes) in fixtures() {
        group.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| {
                let payload: Value = serde_json::from_slice(black_box(&bytes)).expect("JSON");
                black_box(event::parse(&payload).is_ok())
            });
        });
    }
    group.finish();
}

fn bench_handle(c: &mut Criterion<ThreadCpuTime>, group_name: &str) {
    let fixtures = fixtures();
    let registrar = registrar(&fixtures);
    let env = Environment::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut group = c.benchmark_group(group_name);
    for (name, bytes) in &fixtures {
        group.bench_function(name.trim_end_matches(".json"), |b| {
            b.iter(|| {
                let payload: Value = serde_json::from_slice(black_box(bytes)).expect("JSON");
                let response = runtime.block_on(invoke(&registrar, &payload, &env));
                let body = match response {
                    Ok(value) => serde_json::to_vec(&value),
                    Err(err) => serde_json::to_vec(&err.to_string()),
                };
                black_box(body.map(|bytes| bytes.len()))
            });
        });
    }
    group.finish();
}

fn bench_handle_quiet(c: &mut Criterion<ThreadCpuTime>) {
    bench_handle(c, "handle");
}

/// The same with the log subscriber the function installs (text format, INFO), writing to a
/// sink. It is global, so this group runs last.
fn bench_handle_logged(c: &mut Criterion<ThreadCpuTime>) {
    lambda_runtime::tracing::init_default_subscriber_with_writer(std::io::sink);
    bench_handle(c, "handle_logged");
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_parse, bench_handle_quiet, bench_handle_logged
}
criterion_main!(benches);
