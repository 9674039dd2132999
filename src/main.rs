//! The Lambda function: reads its configuration, builds the AWS clients once, then serves
//! ECS Task State Change events until the runtime shuts it down.

use ecs_target_registrar::aws::load_sdk_config;
use ecs_target_registrar::config;
use ecs_target_registrar::handler::function_handler;
use ecs_target_registrar::metrics::Metrics;
use ecs_target_registrar::{Environment, Registrar};
use lambda_runtime::{LambdaEvent, service_fn, tracing};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing::init_default_subscriber();

    // A bad configuration fails the init phase, before any event is taken, with every problem
    // listed.
    let (mapping, health) = config::load(|name| std::env::var(name).ok())
        .inspect_err(|err| tracing::error!(error = %err, "invalid configuration"))?;

    // config::load has checked this variable already, so `?` only passes on what it reported.
    let namespace = config::metrics_namespace(|name| std::env::var(name).ok())?;
    let metrics = namespace.clone().map(Metrics::stdout);

    let sdk = load_sdk_config(None, None).await;
    let env = Environment {
        region: sdk.region().map(ToString::to_string),
        account: None,
    };
    let registrar = Registrar::new(
        mapping,
        aws_sdk_ecs::Client::new(&sdk),
        aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
    )
    .with_health_wait(aws_sdk_sfn::Client::new(&sdk), health)
    .with_metrics_namespace(namespace);

    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        function_handler(event, &registrar, &env, metrics.as_ref())
    }))
    .await
}
