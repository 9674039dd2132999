//! The operator CLI: runs the Lambda function's handler on event files, against AWS or the
//! local emulator, and prints each decision and change; waits for targets to become healthy.

mod sweep;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecs_target_registrar::aws::{LoadBalancing, load_sdk_config};
use ecs_target_registrar::config::{self, CONFIG_ENV, CONFIG_FILE_ENV};
use ecs_target_registrar::decision::Target;
use ecs_target_registrar::health::{HealthSettings, OnFailure};
use ecs_target_registrar::summary::{ChangeResult, Summary};
use ecs_target_registrar::{Config, Environment, Error, Registrar};
use lambda_runtime::tracing::subscriber::EnvFilter;
use serde_json::Value;
use wait::WaitOptions;

/// Registers ECS tasks in ELBv2 target groups: the Lambda function's handler, run by hand.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Service mapping file; overrides REGISTRAR_CONFIG and REGISTRAR_CONFIG_FILE.
    #[arg(long, global = true, value_name = "FILE")]
    config_file: Option<PathBuf>,

    /// Send AWS calls to this endpoint instead of AWS, such as http://127.0.0.1:5000 for a
    /// local emulator. AWS_ENDPOINT_URL does the same.
    #[arg(long, global = true, value_name = "URL")]
    endpoint_url: Option<String>,

    /// AWS region; defaults to the usual chain (AWS_REGION, profile).
    #[arg(long, global = true)]
    region: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Handle event files as the Lambda function would, printing each decision and change.
    Handle {
        /// EventBridge event files (JSON), handled in order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,

        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,

        /// After each registration, wait until the registered targets are healthy, as the
        /// health-wait state machine would; exits 1 when any wait fails.
        #[arg(long)]
        wait_healthy: bool,

        #[command(flatten)]
        wait: WaitOptions,
    },
    /// Validate the service mapping and print what it maps.
    CheckConfig,
    /// Bring every mapped target group in line with the tasks that really run: register what
    /// is missing, deregister what is stale; asks before changing anything unless --force.
    Sweep(sweep::SweepArgs),
    /// Show, per service, each running task's target in each target group and its health;
    /// exits 1 when any is missing or not healthy.
    Status {
        /// Mapping entries to report on, comma-separated; all when left out.
        #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
        services: Vec<String>,

        /// Output format: an aligned table, or the report as JSON.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Wait until targets of a target group are healthy, printing each change of their
    /// health; exits 1 when any target ends unhealthy, unused, deregistered or timed out.
    WaitHealthy {
        /// Target group ARN or name.
        #[arg(long, value_name = "ARN_OR_NAME")]
        target_group: String,

        /// A target as ID:PORT, such as 10.0.1.5:8080; repeat for several.
        #[arg(long = "target", required = true, value_name = "ID:PORT", value_parser = wait::parse_target)]
        targets: Vec<Target>,

        #[command(flatten)]
        wait: WaitOptions,

        /// Output format: text lines, or the final result per target as JSON (progress then
        /// goes to standard error).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Lines for people: decisions, target group changes and health states.
    Text,
    /// JSON documents: the handler's summary per event file, the wait's result per target.
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    lambda_runtime::tracing::subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse();
    if let Command::WaitHealthy {
        ref target_group,
        ref targets,
        wait,
        output,
    } = cli.command
    {
        return wait_for_group(&cli, target_group, targets, &wait, output).await;
    }

    let (config, health) = match load_config(&cli) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            print_mapping(&config);
            print_health(&health);
            ExitCode::SUCCESS
        }
        Command::Handle {
            ref files,
            output,
            wait_healthy,
            wait,
        } => {
            let wait = wait_healthy.then_some(wait);
            handle_files(&cli, config, files, output, wait).await
        }
        Command::Sweep(ref args) => {
            let Some((registrar, elb, _)) = build_registrar(&cli, config).await else {
                return ExitCode::from(2);
            };
            ExitCode::from(sweep::run_sweep(&registrar, &elb, args, &health.timing).await)
        }
        Command::Status {
            ref services,
            output,
        } => {
            let Some((registrar, _, _)) = build_registrar(&cli, config).await else {
                return ExitCode::from(2);
            };
            ExitCode::from(sweep::run_status(&registrar, services, output).await)
        }
        Command::WaitHealthy { .. } => ExitCode::from(2),
    }
}

async fn wait_for_group(
    cli: &Cli,
    target_group: &str,
    targets: &[Target],
    wait: &WaitOptions,
    output: Output,
) -> ExitCode {
    let sdk = match sdk_config(cli).await {
        Ok(sdk) => sdk,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    let arn = if target_group.starts_with("arn:") {
        target_group.to_owned()
    } else {
        match elb.target_group_arn(target_group).await {
            Ok(Some(arn)) => arn,
            Ok(None) => {
                eprintln!("error: target group {target_group:?} not found");
                return ExitCode::FAILURE;
            }
            Err(err) => {
                eprintln!("error: DescribeTargetGroups failed for {target_group:?}: {err}");
                return ExitCode::FAILURE;
            }
        }
    };
    let json = output == Output::Json;
    match wait::wait_and_report(&elb, target_group, &arn, targets, wait, json).await {
        Ok(results) => {
            if json {
                print_json(&results);
            }
            if results.iter().all(|result| result.failure.is_none()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A registrar on the SDK clients, its ELBv2 client for health waits, and the region.
type Clients = (
    Registrar<aws_sdk_ecs::Client, aws_sdk_elasticloadbalancingv2::Client>,
    aws_sdk_elasticloadbalancingv2::Client,
    Option<String>,
);

/// Builds a registrar on the SDK clients, or prints why it cannot and returns `None`.
async fn build_registrar(cli: &Cli, config: Config) -> Option<Clients> {
    let sdk = match sdk_config(cli).await {
        Ok(sdk) => sdk,
        Err(message) => {
            eprintln!("error: {message}");
            return None;
        }
    };
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    let registrar = Registrar::new(config, aws_sdk_ecs::Client::new(&sdk), elb.clone());
    Some((registrar, elb, sdk.region().map(ToString::to_string)))
}

/// Loads the SDK configuration, checking up front what would otherwise fail only at the first
/// call: the endpoint's form and the presence of a region.
async fn sdk_config(cli: &Cli) -> Result<aws_config::SdkConfig, String> {
    if let Some(url) = &cli.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--endpoint-url {url:?} is not an http:// or https:// URL, such as http://127.0.0.1:5000"
            ));
        }
    }
    let sdk = load_sdk_config(cli.endpoint_url.as_deref(), cli.region.as_deref()).await;
    if sdk.region().is_none() {
        return Err("no AWS region: pass --region or set AWS_REGION".to_owned());
    }
    Ok(sdk)
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(json) => println!("{json}"),
        Err(err) => eprintln!("error: cannot print JSON: {err}"),
    }
}

/// Reads the mapping and the health settings as the Lambda function does, with
/// `--config-file` in place of the mapping variables, so that `check-config` rejects exactly
/// what the function's start-up rejects.
fn load_config(cli: &Cli) -> Result<(Config, HealthSettings), String> {
    let file = cli
        .config_file
        .as_ref()
        .map(|path| path.to_string_lossy().into_owned());
    let lookup = |name: &str| match (&file, name) {
        (Some(path), CONFIG_FILE_ENV) => Some(path.clone()),
        (Some(_), CONFIG_ENV) => None,
        _ => std::env::var(name).ok(),
    };
    config::load(lookup).map_err(|err| {
        if cli.config_file.is_none()
            && std::env::var_os(CONFIG_ENV).is_none()
            && std::env::var_os(CONFIG_FILE_ENV).is_none()
        {
            format!("{err} (or pass --config-file)")
        } else {
            err.to_string()
        }
    })
}

fn print_health(health: &HealthSettings) {
    let Some(state_machine) = &health.state_machine_arn else {
        println!("health confirmation: off (HEALTH_STATE_MACHINE_ARN is not set)");
        return;
    };
    let timing = &health.timing;
    println!(
        "health confirmation: {state_machine}, a check every {} s after {} s, {} checks, \
         {} s grace, on failure {}",
        timing.poll_interval_seconds,
        timing.initial_delay_seconds,
        timing.max_rounds,
        timing.grace_period_seconds,
        match health.on_failure {
            OnFailure::None => "none",
            OnFailure::Deregister => "deregister",
        }
    );
}

fn print_mapping(config: &Config) {
    for service in &config.services {
        let recognised_by = [
            service
                .family
                .as_ref()
                .map(|family| format!("family {family}")),
            service.group.as_ref().map(|group| format!("group {group}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ");
        let groups: Vec<String> = service
            .target_groups
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "{}: tasks of cluster {} with {}, container {} port {} -> {}",
            service.name,
            service.cluster.as_str(),
            recognised_by,
            service.container,
            service.container_port,
            groups.join(", ")
        );
    }
}

/// Names the CLI command that does what a payload requests of the function, when the payload is
/// an action request or a Scheduled Event (on which the function runs a full sweep).
fn cli_command_for(payload: &serde_json::Value) -> Option<String> {
    if let Some(action) = payload.get("action") {
        return Some(match action.as_str() {
            Some("status") => "status".to_owned(),
            _ => "sweep".to_owned(),
        });
    }
    let scheduled = payload.get("source").and_then(|source| source.as_str()) == Some("aws.events")
        && payload.get("detail-type").and_then(|kind| kind.as_str()) == Some("Scheduled Event");
    scheduled.then(|| "sweep".to_owned())
}

async fn handle_files(
    cli: &Cli,
    config: Config,
    files: &[PathBuf],
    output: Output,
    wait: Option<WaitOptions>,
) -> ExitCode {
    let Some((registrar, elb, region)) = build_registrar(cli, config).await else {
        return ExitCode::from(2);
    };
    let env = Environment {
        region,
        account: None,
    };

    let mut failed = false;
    for file in files {
        let name = file.display();
        let payload = match read_event(file) {
            Ok(payload) => payload,
            Err(message) => {
                eprintln!("{name}: error: {message}");
                failed = true;
                continue;
            }
        };
        if let Some(command) = cli_command_for(&payload) {
            eprintln!(
                "{name}: error: this payload asks the function for a sweep or a status report, \
                 not about one task; run `registrar {command}` to do the same from here"
            );
            failed = true;
            continue;
        }
        match registrar.handle(&payload, &env).await {
            Ok(summary) => {
                print_summary(&name.to_string(), &summary, output);
                if let Some(wait) = &wait {
                    failed |= !wait_for_changes(&elb, &summary, wait, output).await;
                }
            }
            Err(err) => {
                failed = true;
                print_error(&name.to_string(), &err, output);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Waits for the targets of every registered change of `summary`; returns whether all became
/// healthy.
async fn wait_for_changes(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    summary: &Summary,
    wait: &WaitOptions,
    output: Output,
) -> bool {
    let json = output == Output::Json;
    let mut healthy = true;
    let registered = summary
        .changes
        .iter()
        .filter(|change| change.result == ChangeResult::Registered);
    for change in registered {
        let Some(arn) = change.target_group_arn.as_deref() else {
            continue;
        };
        match wait::wait_and_report(elb, &change.target_group, arn, &change.targets, wait, json)
            .await
        {
            Ok(results) => {
                if json {
                    print_json(&results);
                }
                healthy &= results.iter().all(|result| result.failure.is_none());
            }
            Err(message) => {
                eprintln!("error: {message}");
                healthy = false;
            }
        }
    }
    healthy
}

fn read_event(file: &PathBuf) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(file).map_err(|err| format!("cannot read the file: {err}"))?;
    serde_json::from_str(&text).map_err(|err| format!("not valid JSON: {err}"))
}

fn print_summary(name: &str, summary: &Summary, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(summary) {
            Ok(json) => println!("{json}"),
            Err(err) => eprintln!("{name}: error: cannot print the summary: {err}"),
        },
        Output::Text => {
            let outcome = serde_json::to_value(summary.outcome)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            println!("{name}: {outcome}: {}", summary.reason);
            for change in &summary.changes {
                let targets: Vec<String> = change.targets.iter().map(ToString::to_string).collect();
                let result = match change.result {
                    ChangeResult::Registered => "registered",
                    ChangeResult::Deregistered => "deregistered",
                    ChangeResult::NotRegistered => "was not registered",
                    ChangeResult::RolledBack => "registered, then removed again",
                    ChangeResult::Failed => "FAILED",
                };
                print!(
                    "  {result} {} in {} ({})",
                    targets.join(", "),
                    change.target_group,
                    change.services.join(", ")
                );
                match &change.error {
                    Some(error) => println!(": {error}"),
                    None => println!(),
                }
            }
            for unplaced in &summary.unplaced {
                println!("  no target for {}: {}", unplaced.service, unplaced.reason);
            }
        }
    }
}

fn print_error(name: &str, err: &Error, output: Output) {
    if let Some(summary) = err.summary() {
        print_summary(name, summary, output);
    }
    eprintln!("{name}: error ({}): {err}", err.kind());
}
