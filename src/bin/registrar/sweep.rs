//! `sweep` and `status`: the verify-and-repair sweep and the status report, for people and CI
//! pipelines.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Args;
use ecs_target_registrar::Registrar;
use ecs_target_registrar::aws::{Ecs, LoadBalancing, Workflows};
use ecs_target_registrar::health::Timing;
use ecs_target_registrar::sweep::{GroupReport, StatusReport, SweepOptions, SweepReport};

use crate::Output;
use crate::wait::{WaitOptions, wait_and_report};

/// Options of `sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Mapping entries to sweep, comma-separated; all when left out.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub services: Vec<String>,

    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Seconds to wait for tasks that are still starting (PROVISIONING, PENDING, ACTIVATING)
    /// before planning; 0 reports them and goes on.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub max_wait: u64,

    /// Seconds to wait for registered targets to become healthy after the changes.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub health_wait: u32,

    /// Do not wait for registered targets to become healthy.
    #[arg(long)]
    pub skip_health_check: bool,

    /// Apply the changes without asking first.
    #[arg(long, visible_alias = "yes", short = 'y')]
    pub force: bool,

    /// Output format: text lines and a summary table, or the sweep report as JSON.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `sweep`: plans, asks, applies exactly the plan shown, confirms health. Returns the
/// exit code: 0 when the groups are in order, 1 when a call failed, a running task formed no
/// target, a target ended unhealthy, the service names were unknown, or the prompt was
/// declined.
pub async fn run_sweep<E: Ecs, L: LoadBalancing, W: Workflows>(
    registrar: &Registrar<E, L, W>,
    elb: &L,
    args: &SweepArgs,
    health: &Timing,
) -> u8 {
    let json = args.output == Output::Json;
    let plan_options = SweepOptions {
        services: args.services.clone(),
        dry_run: true,
        max_wait: Duration::from_secs(args.max_wait),
    };
    let plan = match registrar.plan_sweep(&plan_options).await {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("error: {err}");
            return 1;
        }
    };
    print_progress(&plan, json);

    if args.dry_run || plan.changes() == 0 {
        finish(&plan, json);
        if !json && plan.changes() == 0 {
            say(json, "nothing to change".to_owned());
        }
        return u8::from(plan.has_errors());
    }
    if !args.force && !confirm(plan.changes(), json) {
        eprintln!("aborted: nothing was changed (pass --force to skip this question)");
        return 1;
    }

    let applied = registrar.apply_sweep(plan).await;
    let mut healthy = true;
    if !args.skip_health_check {
        let wait = WaitOptions {
            initial_delay: 0,
            poll_interval: health.poll_interval_seconds,
            grace_period: health.grace_period_seconds,
            timeout: args.health_wait,
        };
        for group in applied
            .groups
            .iter()
            .filter(|group| !group.register.is_empty())
        {
            match wait_and_report(
                elb,
                &group.target_group,
                &group.target_group_arn,
                &group.register,
                &wait,
                json,
            )
            .await
            {
                Ok(results) => healthy &= results.iter().all(|result| result.failure.is_none()),
                Err(message) => {
                    eprintln!("error: {message}");
                    healthy = false;
                }
            }
        }
    }
    finish(&applied, json);
    if applied.has_errors() || !healthy {
        1
    } else {
        0
    }
}

fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Prints one line per task and per planned change, with its state.
fn print_progress(plan: &SweepReport, json: bool) {
    for task in &plan.running {
        say(
            json,
            format!(
                "task {} ({}): {} at {}",
                task.task_arn,
                task.service,
                task.last_status,
                task.address.as_deref().unwrap_or("no address")
            ),
        );
    }
    for task in &plan.starting {
        say(
            json,
            format!(
                "task {} ({}): {}, still starting: not registered yet",
                task.task_arn, task.service, task.last_status
            ),
        );
    }
    for unplaced in &plan.unplaced {
        say(
            json,
            format!("no target for {}: {}", unplaced.service, unplaced.reason),
        );
    }
    for service in &plan.unmatched {
        say(
            json,
            format!(
                "service {service}: no running task matches it; check its cluster, family and group"
            ),
        );
    }
    for group in &plan.groups {
        let lines = [
            ("missing, to register", &group.register),
            ("stale, to deregister", &group.deregister),
            ("stale, held back by the removal cap", &group.held_back),
            ("unknown, kept (shared group)", &group.kept),
        ];
        for (what, targets) in lines {
            for target in targets {
                say(json, format!("{target} in {}: {what}", group.target_group));
            }
        }
    }
}

/// Asks on the terminal, or on standard error when standard output carries JSON.
fn confirm(changes: usize, json: bool) -> bool {
    let question = format!("Apply the {changes} target changes listed above? [y/N] ");
    if json {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
    } else {
        print!("{question}");
        let _ = std::io::stdout().flush();
    }
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// Prints the JSON report, or a summary table with a row per group.
fn finish(report: &SweepReport, json: bool) {
    if json {
        crate::print_json(report);
        return;
    }
    let verb = if report.dry_run { "would" } else { "did" };
    println!(
        "\nsweep summary ({verb} change {} targets):",
        report.changes()
    );
    let header = [
        "TARGET GROUP",
        "IN PLACE",
        "REGISTER",
        "DEREGISTER",
        "HELD BACK",
        "KEPT",
        "ERRORS",
    ];
    let rows: Vec<[String; 7]> = report.groups.iter().map(row).collect();
    print_table(&header, &rows);
}

fn row(group: &GroupReport) -> [String; 7] {
    [
        group.target_group.clone(),
        group.in_place.len().to_string(),
        group.register.len().to_string(),
        group.deregister.len().to_string(),
        group.held_back.len().to_string(),
        group.kept.len().to_string(),
        group.errors.join("; "),
    ]
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Runs `status`: prints the report and returns 0 when every running task's target is
/// registered and healthy, 1 otherwise.
pub async fn run_status<E: Ecs, L: LoadBalancing, W: Workflows>(
    registrar: &Registrar<E, L, W>,
    services: &[String],
    output: Output,
) -> u8 {
    let report: StatusReport = match registrar.status(services).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err}");
            return 1;
        }
    };
    if output == Output::Json {
        crate::print_json(&report);
    } else {
        let header = [
            "SERVICE",
            "TASK",
            "TARGET GROUP",
            "TARGET",
            "HEALTH",
            "REASON",
        ];
        let mut rows: Vec<[String; 6]> = report
            .targets
            .iter()
            .map(|line| {
                [
                    line.service.clone().unwrap_or_else(|| "-".into()),
                    line.task_arn
                        .as_deref()
                        .map(short_task)
                        .unwrap_or("-")
                        .to_owned(),
                    line.target_group.clone(),
                    line.target.to_string(),
                    line.state.clone(),
                    line.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        for task in &report.starting {
            rows.push([
                task.service.clone(),
                short_task(&task.task_arn).to_owned(),
                "-".into(),
                task.address.clone().unwrap_or_else(|| "-".into()),
                task.last_status.to_lowercase(),
                "still starting".into(),
            ]);
        }
        print_table(&header, &rows);
        for unplaced in &report.unplaced {
            println!("no target for {}: {}", unplaced.service, unplaced.reason);
        }
        println!(
            "{}",
            if report.ok {
                "all targets healthy"
            } else {
                "NOT all targets healthy"
            }
        );
    }
    if report.ok { 0 } else { 1 }
}

fn short_task(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}
