//! `make demo`: the registrar's main job on the local emulator.
//!
//! Starts moto on 127.0.0.1, creates a cluster, a running Fargate task and an ALB target group,
//! hands the Lambda handler a RUNNING event from `events/`, shows the registered target and its
//! health, then a stop event and the empty group, and stops moto again.

#[path = "../tests/support/mod.rs"]
mod support;

use aws_sdk_ecs::Client as EcsClient;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use ecs_target_registrar::{Config, Environment, Registrar, Summary};
use serde_json::json;
use support::Emulator;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    lambda_runtime::tracing::init_default_subscriber();

    println!("Starting the local AWS emulator (moto) on 127.0.0.1 ...");
    let emulator = Emulator::start();
    println!("  listening at {}", emulator.endpoint);
    let sdk = emulator.sdk_config();
    let ecs = EcsClient::new(&sdk);
    let elb = ElbClient::new(&sdk);

    let cluster = support::create_cluster(&ecs, "demo").await;
    let definition = support::register_task_definition(&ecs, "demo-web", "app", 8080).await;
    let load_balancer = support::create_load_balancer(&elb, "demo-alb", &emulator).await;
    let group = support::create_ip_target_group(&elb, "demo-tg", &emulator.vpc_id, 8080).await;
    support::add_listener(&elb, &load_balancer, 80, &group).await;
    let task = support::run_task(&ecs, &cluster, &definition, &emulator).await;
    println!("  cluster {cluster}");
    println!("  task {} running at {}", task.task_arn, task.ip);
    println!("  target group demo-tg behind an ALB listener on port 80");

    let mapping = json!({"services": [{
        "name": "demo", "cluster": "demo", "family": "demo-web",
        "container": "app", "containerPort": 8080, "targetGroups": ["demo-tg"]
    }]});
    println!("\nService mapping (REGISTRAR_CONFIG):\n{mapping}");
    let registrar = Registrar::new(Config::from_value(&mapping)?, ecs.clone(), elb.clone());
    let env = Environment {
        region: Some("us-east-1".into()),
        account: Some("123456789012".into()),
    };

    for (fixture, stop_first) in [
        ("fargate-running.json", false),
        ("fargate-stopped-same-task.json", true),
    ] {
        if stop_first {
            support::stop_task(&ecs, &cluster, &task.task_arn).await;
            println!("\nStopped the task with StopTask.");
        }
        let event = support::rewrite_event(
            support::fixture_event(fixture),
            &task,
            &cluster,
            &definition,
        );
        println!(
            "\nInvoking the handler with events/{fixture}, its ARNs and address rewritten to the demo \
             task (lastStatus {}, desiredStatus {}):",
            event["detail"]["lastStatus"], event["detail"]["desiredStatus"]
        );
        let summary = registrar.handle(&event, &env).await?;
        print_summary(&summary)?;
        print_group(&elb, &group).await;
    }

    emulator.stop();
    println!("\nStopped the emulator.");
    Ok(())
}

fn print_summary(summary: &Summary) -> Result<(), serde_json::Error> {
    println!(
        "Handler summary:\n{}",
        serde_json::to_string_pretty(summary)?
    );
    Ok(())
}

async fn print_group(elb: &ElbClient, group: &str) {
    let targets = support::registered_targets(elb, group).await;
    if targets.is_empty() {
        println!("Target group demo-tg: no targets");
    }
    for (id, port, state) in targets {
        println!("Target group demo-tg: {id}:{port} is {state}");
    }
}
