//! Health confirmation rules: when a registered target counts as healthy, when to keep
//! waiting, and which failure ends the wait.
//!
//! The same rules drive the Step Functions wait loop (`statemachine/health-wait.asl.json`)
//! and the CLI's `wait-healthy` poller. Both are tested against the case table in
//! `statemachine/health-cases.json`, so the two cannot drift apart.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::sleep;

use crate::aws::{ApiError, LoadBalancing};
use crate::decision::Target;

/// How long and how often to wait for a target to become healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// Seconds to wait before the first DescribeTargetHealth.
    pub initial_delay_seconds: u32,
    /// Seconds between two DescribeTargetHealth calls.
    pub poll_interval_seconds: u32,
    /// Seconds during which `unhealthy` still means "keep waiting", counted from the first
    /// round: a new target often fails its first checks while the application starts.
    pub grace_period_seconds: u32,
    /// DescribeTargetHealth calls at most, the first included.
    pub max_rounds: u32,
}

impl Default for Timing {
    /// Values for an Application Load Balancer: a check every 10 s, the last one 120 s after
    /// the first. A Network Load Balancer often reports `initial` for one to two minutes, so
    /// give it more rounds or an initial delay.
    fn default() -> Self {
        Timing {
            initial_delay_seconds: 0,
            poll_interval_seconds: 10,
            grace_period_seconds: 30,
            max_rounds: 13,
        }
    }
}

impl Timing {
    /// Seconds since the wait began at the given round (1 for the first call).
    pub fn elapsed_seconds(&self, round: u32) -> u32 {
        self.initial_delay_seconds.saturating_add(
            round
                .saturating_sub(1)
                .saturating_mul(self.poll_interval_seconds),
        )
    }
}

/// The state machine's action when a wait fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Leave the target registered and only report the failure.
    #[default]
    None,
    /// Deregister the targets before failing.
    Deregister,
}

/// Environment variable with the health-wait state machine's ARN; unset turns the wait off.
pub const STATE_MACHINE_ENV: &str = "HEALTH_STATE_MACHINE_ARN";
/// Environment variable choosing the action on a failed wait: `none` or `deregister`.
pub const ON_FAILURE_ENV: &str = "HEALTH_ON_FAILURE";
/// Environment variables overriding [`Timing`]'s fields, in seconds and rounds.
pub const TIMING_ENV: [&str; 4] = [
    "HEALTH_INITIAL_DELAY_SECONDS",
    "HEALTH_POLL_INTERVAL_SECONDS",
    "HEALTH_GRACE_PERIOD_SECONDS",
    "HEALTH_MAX_ROUNDS",
];
/// The maximum number of rounds one wait may take. A Standard workflow keeps at most 25,000 history events,
/// and one round of one target costs about a dozen (Wait, Task and Choice states entered and
/// exited, the Task's scheduled, started and succeeded events, and a Pass for the counters).
/// 500 rounds leave room for a few targets per execution.
pub const MAX_ROUNDS_LIMIT: u32 = 500;

/// The health-wait state machine's `TimeoutSeconds`: an execution still running then ends as
/// TIMED_OUT, without the failure action. A configured wait must end well before it.
pub const STATE_MACHINE_TIMEOUT_SECONDS: u32 = 86_400;
/// Room kept under [`STATE_MACHINE_TIMEOUT_SECONDS`] for throttling retries and the failure
/// action.
const TIMEOUT_MARGIN_SECONDS: u32 = 3_600;

/// Settings for starting the health-wait state machine after a registration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthSettings {
    /// The state machine to start; `None` turns health confirmation off.
    pub state_machine_arn: Option<String>,
    /// The state machine's action when the wait fails.
    pub on_failure: OnFailure,
    /// How long and how often it waits.
    pub timing: Timing,
}

impl HealthSettings {
    /// Reads the settings from the environment through `lookup`, every value checked.
    ///
    /// # Errors
    ///
    /// One message per invalid variable, naming it and its value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut settings = HealthSettings::default();

        if let Some(arn) = lookup(STATE_MACHINE_ENV).filter(|v| !v.trim().is_empty()) {
            let valid = crate::task::Arn::parse(&arn).is_some_and(|parts| {
                parts.service == "states"
                    && parts
                        .resource
                        .strip_prefix("stateMachine:")
                        .is_some_and(|name| !name.is_empty())
            });
            if valid {
                settings.state_machine_arn = Some(arn);
            } else {
                problems.push(format!(
                    "{STATE_MACHINE_ENV}: {arn:?} is not a state machine ARN \
                     (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME); unset it to turn health confirmation off"
                ));
            }
        }
        match lookup(ON_FAILURE_ENV).as_deref().map(str::trim) {
            None | Some("") | Some("none") => {}
            Some("deregister") => settings.on_failure = OnFailure::Deregister,
            Some(other) => problems.push(format!(
                "{ON_FAILURE_ENV}: {other:?} is not an action; use \"none\" or \"deregister\""
            )),
        }

        let timing = &mut settings.timing;
        let fields = [
            (&mut timing.initial_delay_seconds, 0, 3_600),
            (&mut timing.poll_interval_seconds, 1, 3_600),
            (&mut timing.grace_period_seconds, 0, 86_400),
            (&mut timing.max_rounds, 1, MAX_ROUNDS_LIMIT),
        ];
        for ((field, low, high), name) in fields.into_iter().zip(TIMING_ENV) {
            let Some(text) = lookup(name).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            match text.trim().parse::<u32>() {
                Ok(value) if (low..=high).contains(&value) => *field = value,
                _ => problems.push(format!(
                    "{name}: {text:?} is invalid; use a whole number from {low} to {high}"
                )),
            }
        }

        let last_round = settings.timing.elapsed_seconds(settings.timing.max_rounds);
        let budget = STATE_MACHINE_TIMEOUT_SECONDS - TIMEOUT_MARGIN_SECONDS;
        if problems.is_empty() && last_round > budget {
            problems.push(format!(
                "{}: the last check would come {last_round} s after the wait began, past the \
                 {budget} s a health-wait execution may use; lower the rounds or the interval",
                TIMING_ENV.join(", ")
            ));
        }

        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }
}

/// Names the health-wait execution for one registration, the same for every delivery of the
/// same event: the task id, the event's trigger tag (its task version, or a hash of its id),
/// and a hash of the target group ARN. A duplicate event then requests an execution that
/// already exists, so no second wait loop starts. Step Functions allows 80 characters from
/// `[A-Za-z0-9_-]`.
pub fn execution_name(task_id: &str, trigger: &str, target_group_arn: &str) -> String {
    let clean = |text: &str, max: usize| -> String {
        text.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(max)
            .collect()
    };
    format!(
        "{}-{}-{:016x}",
        clean(task_id, 40),
        clean(trigger, 20),
        fnv1a(target_group_arn)
    )
}

/// Returns the trigger tag of an event for [`execution_name`]: `v` and the task version when
/// the event carries one (duplicates carry the same version), else `e` and a hash of the
/// EventBridge event id, else `v0`.
pub fn trigger_tag(version: Option<i64>, event_id: Option<&str>) -> String {
    match (version, event_id) {
        (Some(version), _) => format!("v{version}"),
        (None, Some(id)) => format!("e{:016x}", fnv1a(id)),
        (None, None) => "v0".to_owned(),
    }
}

/// 64-bit FNV-1a: a short, stable hash for names, not for security.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One DescribeTargetHealth result for one target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Observation {
    /// ELB's state: initial, healthy, unhealthy, unused, draining or unavailable.
    pub state: String,
    /// ELB's reason code, such as `Target.FailedHealthChecks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ELB's description of the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.state)?;
        match (&self.reason, &self.description) {
            (Some(reason), Some(description)) => write!(f, " ({reason}: {description})"),
            (Some(reason), None) => write!(f, " ({reason})"),
            (None, Some(description)) => write!(f, " ({description})"),
            (None, None) => Ok(()),
        }
    }
}

/// The reason a wait for a target ended without it becoming healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failure {
    /// Still `unhealthy` after the grace period.
    Unhealthy,
    /// `unused` with Target.NotInUse: no listener forwards to the target group.
    NotInUse,
    /// `draining`, or `unused` with Target.NotRegistered: the target was removed meanwhile.
    Deregistered,
    /// `unused` for another reason, such as an address ELB cannot use.
    Unusable,
    /// The rounds ran out before any other outcome.
    TimedOut,
}

impl Failure {
    /// Returns the error name the state machine fails with for this outcome.
    pub fn error_name(self) -> &'static str {
        match self {
            Failure::Unhealthy => "TargetUnhealthy",
            Failure::NotInUse => "TargetGroupNotInUse",
            Failure::Deregistered => "TargetDeregistered",
            Failure::Unusable => "TargetUnusable",
            Failure::TimedOut => "HealthWaitTimedOut",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Unhealthy => "unhealthy after the grace period",
            Failure::NotInUse => "target group not in use (no listener forwards to it)",
            Failure::Deregistered => {
                "target is not registered (removed meanwhile, or never registered)"
            }
            Failure::Unusable => "target cannot be used by the load balancer",
            Failure::TimedOut => "timed out waiting for healthy",
        })
    }
}

/// The decision after one round for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target is healthy: stop waiting for it.
    Healthy,
    /// Not decided yet: wait a poll interval and ask again.
    Again,
    /// Stop waiting: the target will not become healthy on its own.
    Failed(Failure),
}

/// Judges one observation made in `round` (1 for the first call).
///
/// In order: reason Target.NotRegistered fails as deregistered, whatever the state; `healthy`
/// succeeds; `unused` fails at once (Target.NotInUse, or another reason); `draining` fails as
/// deregistered; `unhealthy` fails once the elapsed
/// time reaches the grace period; anything else (`initial`, `unavailable`, `unhealthy` inside
/// the grace period, a state ELB may add) waits, until the last round, which times out.
pub fn judge(observation: &Observation, round: u32, timing: &Timing) -> Verdict {
    let reason = observation.reason.as_deref();
    // ELB reports a target it does not have as `unused`, and some emulators as `unavailable`;
    // the reason code is the same in both.
    if reason == Some("Target.NotRegistered") {
        return Verdict::Failed(Failure::Deregistered);
    }
    match observation.state.as_str() {
        "healthy" => return Verdict::Healthy,
        "unused" => {
            return Verdict::Failed(match reason {
                Some("Target.NotInUse") => Failure::NotInUse,
                Some("Target.NotRegistered") => Failure::Deregistered,
                _ => Failure::Unusable,
            });
        }
        "draining" => return Verdict::Failed(Failure::Deregistered),
        "unhealthy" if timing.elapsed_seconds(round) >= timing.grace_period_seconds => {
            return Verdict::Failed(Failure::Unhealthy);
        }
        _ => {}
    }
    if round >= timing.max_rounds {
        Verdict::Failed(Failure::TimedOut)
    } else {
        Verdict::Again
    }
}

/// The end of the wait for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetResult {
    /// The target waited for.
    pub target: Target,
    /// DescribeTargetHealth rounds made for it.
    pub rounds: u32,
    /// Seconds from the start of the wait to its last round.
    pub elapsed_seconds: u32,
    /// The last health ELB reported.
    pub last: Observation,
    /// `None` when the target became healthy, otherwise why the wait failed.
    pub failure: Option<Failure>,
}

/// Waits until every target in `targets` is healthy or has failed, polling DescribeTargetHealth
/// for the undecided ones once a round, and calls `on_change` whenever a target's reported
/// health differs from the round before (and on the first round).
///
/// # Errors
///
/// A DescribeTargetHealth failure that the SDK's retries did not absorb, such as
/// TargetGroupNotFound, ends the wait.
pub async fn wait_healthy<L: LoadBalancing>(
    elb: &L,
    target_group_arn: &str,
    targets: &[Target],
    timing: &Timing,
    mut on_change: impl FnMut(&Target, &Observation, u32),
) -> Result<Vec<TargetResult>, ApiError> {
    let mut pending: Vec<Target> = targets.to_vec();
    let mut last_seen: HashMap<Target, Observation> = HashMap::new();
    let mut results = Vec::new();
    let max_rounds = timing.max_rounds.max(1);

    sleep(Duration::from_secs(u64::from(timing.initial_delay_seconds))).await;
    for round in 1..=max_rounds {
        let reported = elb
            .describe_target_health(target_group_arn, &pending)
            .await?;
        let mut undecided = Vec::new();
        for target in pending {
            // ELB lists every target asked for; one it leaves out is not registered.
            let observation = reported
                .iter()
                .find(|(seen, _)| *seen == target)
                .map(|(_, observation)| observation.clone())
                .unwrap_or_else(|| Observation {
                    state: "unused".into(),
                    reason: Some("Target.NotRegistered".into()),
                    description: Some("not listed by DescribeTargetHealth".into()),
                });
            if last_seen.get(&target) != Some(&observation) {
                on_change(&target, &observation, round);
            }
            let failure = match judge(&observation, round, timing) {
                Verdict::Again => {
                    last_seen.insert(target.clone(), observation);
                    undecided.push(target);
                    continue;
                }
                Verdict::Healthy => None,
                Verdict::Failed(failure) => Some(failure),
            };
            results.push(TargetResult {
                target,
                rounds: round,
                elapsed_seconds: timing.elapsed_seconds(round),
                last: observation,
                failure,
            });
        }
        pending = undecided;
        if pending.is_empty() {
            break;
        }
        sleep(Duration::from_secs(u64::from(timing.poll_interval_seconds))).await;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: &str, reason: Option<&str>) -> Observation {
        Observation {
            state: state.into(),
            reason: reason.map(str::to_owned),
            description: None,
        }
    }

    const TIMING: Timing = Timing {
        initial_delay_seconds: 5,
        poll_interval_seconds: 10,
        grace_period_seconds: 30,
        max_rounds: 6,
    };

    #[test]
    fn elapsed_counts_initial_delay_and_intervals() {
        assert_eq!(TIMING.elapsed_seconds(1), 5);
        assert_eq!(TIMING.elapsed_seconds(4), 35);
    }

    #[test]
    fn healthy_and_unused_decide_at_once() {
        assert_eq!(judge(&seen("healthy", None), 1, &TIMING), Verdict::Healthy);
        let not_in_use = seen("unused", Some("Target.NotInUse"));
        assert_eq!(
            judge(&not_in_use, 1, &TIMING),
            Verdict::Failed(Failure::NotInUse)
        );
        let not_registered = seen("unused", Some("Target.NotRegistered"));
        assert_eq!(
            judge(&not_registered, 1, &TIMING),
            Verdict::Failed(Failure::Deregistered)
        );
        let reserved = seen("unused", Some("Target.IpUnusable"));
        assert_eq!(
            judge(&reserved, 1, &TIMING),
            Verdict::Failed(Failure::Unusable)
        );
        let draining = seen("draining", Some("Target.DeregistrationInProgress"));
        assert_eq!(
            judge(&draining, 1, &TIMING),
            Verdict::Failed(Failure::Deregistered)
        );
    }

    #[test]
    fn unhealthy_waits_out_the_grace_period() {
        let unhealthy = seen("unhealthy", Some("Target.FailedHealthChecks"));
        assert_eq!(judge(&unhealthy, 3, &TIMING), Verdict::Again);
        assert_eq!(
            judge(&unhealthy, 4, &TIMING),
            Verdict::Failed(Failure::Unhealthy)
        );
    }

    #[test]
    fn last_round_times_out() {
        let initial = seen("initial", Some("Elb.InitialHealthChecking"));
        assert_eq!(judge(&initial, 5, &TIMING), Verdict::Again);
        assert_eq!(
            judge(&initial, 6, &TIMING),
            Verdict::Failed(Failure::TimedOut)
        );
        assert_eq!(
            judge(&seen("unavailable", None), 6, &TIMING),
            Verdict::Failed(Failure::TimedOut)
        );
    }

    #[test]
    fn execution_names_are_stable_and_valid() {
        let tg =
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
        let name = execution_name("c13b4cb40f1f4fe4a2971f76ae5a47ad", "v4", tg);
        assert_eq!(
            name,
            execution_name("c13b4cb40f1f4fe4a2971f76ae5a47ad", "v4", tg)
        );
        assert_ne!(
            name,
            execution_name("c13b4cb40f1f4fe4a2971f76ae5a47ad", "v5", tg)
        );
        assert_ne!(
            name,
            execution_name("c13b4cb40f1f4fe4a2971f76ae5a47ad", "v4", "arn:other")
        );
        assert!(name.len() <= 80, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let odd = execution_name(&"x:y/z".repeat(30), &"#".repeat(30), tg);
        assert!(odd.len() <= 80, "{odd}");
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn trigger_prefers_the_task_version() {
        assert_eq!(trigger_tag(Some(4), Some("abc")), "v4");
        assert_eq!(
            trigger_tag(None, Some("abc")),
            trigger_tag(None, Some("abc"))
        );
        assert!(trigger_tag(None, Some("abc")).starts_with('e'));
        assert_eq!(trigger_tag(None, None), "v0");
    }

    #[test]
    fn settings_must_fit_the_execution_timeout() {
        let values = std::collections::HashMap::from([
            ("HEALTH_POLL_INTERVAL_SECONDS", "3600"),
            ("HEALTH_MAX_ROUNDS", "100"),
        ]);
        let problems =
            HealthSettings::from_lookup(|name| values.get(name).map(|v| (*v).to_owned()))
                .expect_err("too long");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("356400 s after the wait began"),
            "{problems:?}"
        );
    }

    #[test]
    fn settings_default_to_off() {
        let settings = HealthSettings::from_lookup(|_| None).expect("valid");
        assert_eq!(settings, HealthSettings::default());
        assert_eq!(settings.state_machine_arn, None);
    }

    #[test]
    fn settings_read_every_variable() {
        let values = std::collections::HashMap::from([
            (
                STATE_MACHINE_ENV,
                "arn:aws:states:us-east-1:123456789012:stateMachine:health-wait",
            ),
            (ON_FAILURE_ENV, "deregister"),
            ("HEALTH_INITIAL_DELAY_SECONDS", "30"),
            ("HEALTH_POLL_INTERVAL_SECONDS", "15"),
            ("HEALTH_GRACE_PERIOD_SECONDS", "60"),
            ("HEALTH_MAX_ROUNDS", "24"),
        ]);
        let settings =
            HealthSettings::from_lookup(|name| values.get(name).map(|v| (*v).to_owned()))
                .expect("valid");
        assert_eq!(settings.on_failure, OnFailure::Deregister);
        assert_eq!(
            settings.timing,
            Timing {
                initial_delay_seconds: 30,
                poll_interval_seconds: 15,
                grace_period_seconds: 60,
                max_rounds: 24
            }
        );
    }

    #[test]
    fn settings_report_every_bad_value() {
        let values = std::collections::HashMap::from([
            (
                STATE_MACHINE_ENV,
                "arn:aws:lambda:us-east-1:123456789012:function:x",
            ),
            (ON_FAILURE_ENV, "panic"),
            ("HEALTH_POLL_INTERVAL_SECONDS", "0"),
            ("HEALTH_MAX_ROUNDS", "25000"),
        ]);
        let problems =
            HealthSettings::from_lookup(|name| values.get(name).map(|v| (*v).to_owned()))
                .expect_err("invalid");
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("is not a state machine ARN"));
        assert!(problems[1].contains("\"panic\" is not an action"));
        assert!(problems[2].contains("HEALTH_POLL_INTERVAL_SECONDS: \"0\" is invalid"));
        assert!(problems[3].contains("from 1 to 500"));
    }

    #[test]
    fn default_timing_suits_an_alb() {
        let timing = Timing::default();
        assert_eq!(timing.poll_interval_seconds, 10);
        assert_eq!(timing.elapsed_seconds(timing.max_rounds), 120);
    }
}
