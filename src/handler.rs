//! The Lambda entry point's logic, kept out of `main.rs` so that tests can call it.
//!
//! Three kinds of payload arrive: ECS Task State Change events from the EventBridge rule, the
//! scheduled rule's Scheduled Event (a sweep of every service), and action requests sent by
//! hand, such as `{"action": "sweep", "services": ["auth", "pdf"], "dryRun": true}` or
//! `{"action": "status"}`.

use std::time::Duration;

use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::Value;
use tracing::{error, info};

use crate::aws::{Ecs, LoadBalancing, Workflows};
use crate::error::Error;
use crate::event::PayloadError;
use crate::metrics::{self, Metrics};
use crate::registrar::{Environment, Registrar};
use crate::summary::{HealthCheck, Summary};
use crate::sweep::{StatusReport, SweepOptions, SweepReport};

/// A hand-made request for a sweep or a status report.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActionRequest {
    /// `sweep` or `status`.
    action: String,
    /// Mapping entries to cover; all when empty.
    #[serde(default)]
    services: Vec<String>,
    /// For a sweep: report the plan, change nothing.
    #[serde(default)]
    dry_run: bool,
    /// For a sweep: wait for tasks that are still starting, then register them too.
    #[serde(default)]
    wait_for_starting: bool,
    /// For a sweep that waits: the longest wait, in seconds (300 when left out).
    #[serde(default)]
    max_wait_seconds: Option<u64>,
    /// For a sweep: start no health-wait executions for the targets it registers.
    #[serde(default)]
    skip_health_check: bool,
}

/// How long a sweep that waits for starting tasks waits when the request does not say.
const DEFAULT_MAX_WAIT_SECONDS: u64 = 300;

/// The maximum time a sweep inside the function may wait for starting tasks. The template
/// gives the function 600 s, so this leaves half of it for the sweep's own calls.
const MAX_WAIT_LIMIT_SECONDS: u64 = 300;

/// Handles one Lambda invocation: reads the function's account from the invocation context,
/// routes the payload, logs a failure once before the runtime reports it, and writes the
/// invocation's metrics to `metrics` when given.
///
/// # Errors
///
/// As [`Registrar::handle`] for events and as [`Registrar::sweep`] for sweeps; a sweep whose
/// writes failed fails too. The runtime turns the error into a failed invocation, which Lambda
/// retries and then sends to the dead-letter queue.
pub async fn function_handler<E: Ecs, L: LoadBalancing, W: Workflows>(
    event: LambdaEvent<Value>,
    registrar: &Registrar<E, L, W>,
    env: &Environment,
    metrics: Option<&Metrics>,
) -> Result<Value, Error> {
    let env = env
        .clone()
        .with_function_arn(&event.context.invoked_function_arn);
    // Boxed so that the runtime's future stays shallow: the sweep, the event path and the
    // health waits nest deep enough that rustc's layout query otherwise overflows its depth
    // limit in `main`'s async block.
    let result = Box::pin(respond(registrar, &event.payload, &env)).await;
    if let Err(err) = &result {
        error!(kind = err.kind(), error = %err, "invocation failed");
    }
    if let Some(metrics) = metrics {
        metrics.emit(&invocation_records(&event.payload, &result));
    }
    result.map(|response| response.to_json())
}

/// The response of an invocation, before it becomes JSON.
#[derive(Debug)]
pub enum Response {
    /// The summary of one task event.
    Event(Summary),
    /// A sweep's report, with the health waits it started.
    Sweep(SweepReport, Vec<HealthCheck>),
    /// A status report.
    Status(StatusReport),
}

impl Response {
    /// Converts the response to the JSON the invoker receives.
    pub fn to_json(&self) -> Value {
        match self {
            Response::Event(summary) => to_json(summary),
            Response::Sweep(report, checks) => {
                let mut response = to_json(report);
                if !checks.is_empty() {
                    response["healthChecks"] = to_json(checks);
                }
                response
            }
            Response::Status(report) => to_json(report),
        }
    }
}

/// Builds the metrics of one invocation from the summary of an event, the report of a sweep,
/// or the class of the error. An error's summary counts too, because its successful changes
/// happened.
pub fn invocation_records(
    payload: &Value,
    result: &Result<Response, Error>,
) -> Vec<metrics::Record> {
    let age = || metrics::event_age(payload, std::time::SystemTime::now());
    match result {
        Ok(Response::Event(summary)) => metrics::summary_records(summary, age()),
        Ok(Response::Sweep(report, _)) => metrics::sweep_records(report),
        Ok(Response::Status(_)) => Vec::new(),
        Err(err) => {
            let mut records = vec![metrics::failure_record(err.kind())];
            if let Some(summary) = err.summary() {
                records.extend(metrics::summary_records(summary, age()));
            }
            records
        }
    }
}

/// Routes one payload: an action request, a Scheduled Event, or an event for the handler,
/// and returns the JSON the invoker receives.
///
/// # Errors
///
/// As [`function_handler`].
pub async fn invoke<E: Ecs, L: LoadBalancing, W: Workflows>(
    registrar: &Registrar<E, L, W>,
    payload: &Value,
    env: &Environment,
) -> Result<Value, Error> {
    respond(registrar, payload, env)
        .await
        .map(|response| response.to_json())
}

/// Routes one payload, as [`invoke`], and returns the typed response.
///
/// # Errors
///
/// As [`function_handler`].
pub async fn respond<E: Ecs, L: LoadBalancing, W: Workflows>(
    registrar: &Registrar<E, L, W>,
    payload: &Value,
    env: &Environment,
) -> Result<Response, Error> {
    if payload.get("action").is_some() {
        let request = ActionRequest::deserialize(payload)
            .map_err(|err| PayloadError::InvalidAction(crate::event::shorten(err.to_string())))?;
        return run_action(registrar, request).await;
    }
    let scheduled = payload.get("source").and_then(Value::as_str) == Some("aws.events")
        && payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if scheduled {
        info!("scheduled sweep of every mapped service");
        let request = ActionRequest {
            action: "sweep".into(),
            services: Vec::new(),
            dry_run: false,
            wait_for_starting: false,
            max_wait_seconds: None,
            skip_health_check: false,
        };
        return run_action(registrar, request).await;
    }
    Ok(Response::Event(registrar.handle(payload, env).await?))
}

async fn run_action<E: Ecs, L: LoadBalancing, W: Workflows>(
    registrar: &Registrar<E, L, W>,
    request: ActionRequest,
) -> Result<Response, Error> {
    match request.action.as_str() {
        "sweep" => {
            let max_wait = request.max_wait_seconds.unwrap_or(DEFAULT_MAX_WAIT_SECONDS);
            if request.wait_for_starting && max_wait > MAX_WAIT_LIMIT_SECONDS {
                return Err(PayloadError::InvalidAction(format!(
                    "maxWaitSeconds {max_wait} is over {MAX_WAIT_LIMIT_SECONDS}, the most that fits \
                     in the function's timeout; use the CLI's sweep --max-wait for longer waits"
                ))
                .into());
            }
            let options = SweepOptions {
                services: request.services,
                dry_run: request.dry_run,
                max_wait: if request.wait_for_starting {
                    Duration::from_secs(max_wait)
                } else {
                    Duration::ZERO
                },
            };
            let report = registrar.sweep(&options).await?;
            info!(
                dry_run = report.dry_run,
                changes = report.changes(),
                "sweep done"
            );
            if report.has_errors() {
                let failures: Vec<String> = report
                    .groups
                    .iter()
                    .flat_map(|group| {
                        group
                            .errors
                            .iter()
                            .map(move |err| format!("{}: {err}", group.target_group))
                    })
                    .collect();
                return Err(Error::Sweep(failures.join("; ")));
            }
            let mut checks = Vec::new();
            if !report.dry_run && !request.skip_health_check {
                let registered: Vec<_> = report
                    .groups
                    .iter()
                    .filter(|group| !group.register.is_empty())
                    .map(|group| (group.target_group_arn.clone(), group.register.clone()))
                    .collect();
                let run = format!("s{}", unix_seconds());
                checks = registrar.start_sweep_health_waits(&run, &registered).await;
                let failed = checks
                    .iter()
                    .filter_map(|check| check.error.clone())
                    .collect::<Vec<_>>();
                if !failed.is_empty() {
                    return Err(Error::Sweep(format!(
                        "the sweep made its changes, but health waits could not be started: {}",
                        failed.join("; ")
                    )));
                }
            }
            Ok(Response::Sweep(report, checks))
        }
        "status" => Ok(Response::Status(registrar.status(&request.services).await?)),
        other => Err(PayloadError::InvalidAction(format!(
            "unknown action {other:?}; use \"sweep\" or \"status\""
        ))
        .into()),
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|err| {
        serde_json::json!({"error": format!("the result could not be written as JSON: {err}")})
    })
}
