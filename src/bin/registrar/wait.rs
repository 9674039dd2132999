//! `wait-healthy` and `handle --wait-healthy`: the health-wait state machine's rules, run
//! directly against DescribeTargetHealth, with a line for every change of a target's health.

use clap::Args;
use ecs_target_registrar::aws::LoadBalancing;
use ecs_target_registrar::decision::Target;
use ecs_target_registrar::health::{TargetResult, Timing, wait_healthy};

/// How long and how often to wait for targets to become healthy.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitOptions {
    /// Seconds to wait before the first health check.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub initial_delay: u32,

    /// Seconds between two health checks.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub poll_interval: u32,

    /// Seconds during which an unhealthy target is still given time, counted from the first
    /// check.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub grace_period: u32,

    /// Seconds after the first check at which to give up. 120 suits an ALB; NLB targets often
    /// stay "initial" for one to two minutes, so give them 240 or more.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u32,
}

impl WaitOptions {
    /// The rounds that fit: one check at the start, then one per interval up to the time-out.
    pub fn timing(&self) -> Timing {
        Timing {
            initial_delay_seconds: self.initial_delay,
            poll_interval_seconds: self.poll_interval,
            grace_period_seconds: self.grace_period,
            max_rounds: (self.timeout / self.poll_interval.max(1)).saturating_add(1),
        }
    }
}

/// Waits for `targets` in one target group, printing each change, then one verdict line per
/// target. The lines go to standard error when standard output carries JSON.
///
/// # Errors
///
/// When DescribeTargetHealth fails past the SDK's retries, such as for a missing group.
pub async fn wait_and_report<L: LoadBalancing>(
    elb: &L,
    group_label: &str,
    target_group_arn: &str,
    targets: &[Target],
    options: &WaitOptions,
    json: bool,
) -> Result<Vec<TargetResult>, String> {
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let timing = options.timing();
    let listed: Vec<String> = targets.iter().map(ToString::to_string).collect();
    say(format!(
        "waiting for {} in {group_label}: {} checks, {} s apart, the last {} s after the first",
        listed.join(", "),
        timing.max_rounds,
        timing.poll_interval_seconds,
        timing.elapsed_seconds(timing.max_rounds)
    ));
    let results = wait_healthy(
        elb,
        target_group_arn,
        targets,
        &timing,
        |target, seen, round| {
            say(format!(
                "  [{:>4} s] {target} in {group_label}: {seen}",
                timing.elapsed_seconds(round)
            ));
        },
    )
    .await
    .map_err(|err| format!("DescribeTargetHealth failed for {group_label}: {err}"))?;

    for result in &results {
        match result.failure {
            None => say(format!(
                "  {} in {group_label}: healthy after {} checks ({} s)",
                result.target, result.rounds, result.elapsed_seconds
            )),
            Some(failure) => say(format!(
                "  {} in {group_label}: FAILED ({}): {failure}; last seen {} after {} checks ({} s)",
                result.target,
                failure.error_name(),
                result.last,
                result.rounds,
                result.elapsed_seconds
            )),
        }
    }
    Ok(results)
}

/// Parses `ID:PORT`, such as `10.0.1.5:8080` or `i-0abc:32768`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (id, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not a target; write ID:PORT, such as 10.0.1.5:8080"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("{text:?} has an invalid port; use 1 to 65535"))?;
    if id.is_empty() {
        return Err(format!("{text:?} has no target id before the port"));
    }
    Ok(Target {
        id: id.to_owned(),
        port,
    })
}
