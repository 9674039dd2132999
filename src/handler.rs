//! The Lambda entry point's logic, kept out of `main.rs` so that tests can call it.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::error;

use crate::aws::{Ecs, LoadBalancing, Workflows};
use crate::error::Error;
use crate::registrar::{Environment, Registrar};
use crate::summary::Summary;

/// Handles one Lambda invocation: reads the function's account from the invocation context,
/// runs the registrar, and logs a failure once before the runtime reports it.
///
/// # Errors
///
/// As [`Registrar::handle`]; the runtime turns the error into a failed invocation, which
/// Lambda retries and then sends to the dead-letter queue.
pub async fn function_handler<E: Ecs, L: LoadBalancing, W: Workflows>(
    event: LambdaEvent<Value>,
    registrar: &Registrar<E, L, W>,
    env: &Environment,
) -> Result<Summary, Error> {
    let env = env
        .clone()
        .with_function_arn(&event.context.invoked_function_arn);
    registrar
        .handle(&event.payload, &env)
        .await
        .inspect_err(|err| error!(kind = err.kind(), error = %err, "invocation failed"))
}
