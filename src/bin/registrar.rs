//! The operator CLI: runs the Lambda function's handler on event files, against AWS or the
//! local emulator, and prints each decision and change.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecs_target_registrar::aws::load_sdk_config;
use ecs_target_registrar::config::{CONFIG_ENV, CONFIG_FILE_ENV};
use ecs_target_registrar::summary::{ChangeResult, Summary};
use ecs_target_registrar::{Config, Environment, Error, Registrar};
use lambda_runtime::tracing::subscriber::EnvFilter;
use serde_json::Value;

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
    },
    /// Validate the service mapping and print what it maps.
    CheckConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per decision and per target group change.
    Text,
    /// The handler's JSON summary, one document per file.
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
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };

    match cli.command {
        Command::CheckConfig => {
            print_mapping(&config);
            ExitCode::SUCCESS
        }
        Command::Handle { ref files, output } => handle_files(&cli, config, files, output).await,
    }
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    let loaded = match &cli.config_file {
        Some(path) => Config::from_file(&path.to_string_lossy()),
        None => Config::from_env(),
    };
    loaded.map_err(|err| {
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

async fn handle_files(cli: &Cli, config: Config, files: &[PathBuf], output: Output) -> ExitCode {
    let sdk = load_sdk_config(cli.endpoint_url.as_deref(), cli.region.as_deref()).await;
    let env = Environment {
        region: sdk.region().map(ToString::to_string),
        account: None,
    };
    let registrar = Registrar::new(
        config,
        aws_sdk_ecs::Client::new(&sdk),
        aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
    );

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
        match registrar.handle(&payload, &env).await {
            Ok(summary) => print_summary(&name.to_string(), &summary, output),
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
