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

/// Why waiting for a target ended without it becoming healthy.
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
    /// The error name the state machine fails with for this outcome.
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
            Failure::Deregistered => "target was deregistered meanwhile",
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
/// In order: `healthy` succeeds; `unused` fails at once (Target.NotInUse, Target.NotRegistered
/// or another reason); `draining` fails as deregistered; `unhealthy` fails once the elapsed
/// time reaches the grace period; anything else (`initial`, `unavailable`, `unhealthy` inside
/// the grace period, a state ELB may add) waits, until the last round, which times out.
pub fn judge(observation: &Observation, round: u32, timing: &Timing) -> Verdict {
    let reason = observation.reason.as_deref();
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

/// How the wait ended for one target.
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
    fn default_timing_suits_an_alb() {
        let timing = Timing::default();
        assert_eq!(timing.poll_interval_seconds, 10);
        assert_eq!(timing.elapsed_seconds(timing.max_rounds), 120);
    }
}
