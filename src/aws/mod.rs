//! The seam between the registrar and AWS.
//!
//! [`Ecs`] and [`LoadBalancing`] name the few calls the registrar makes, in the registrar's own
//! types. `ecs.rs` and `elbv2.rs` implement them on the SDK clients; tests can put a fake behind
//! the same traits. Errors cross the seam as [`ApiError`], which keeps the service's error code
//! so that callers can tell "not registered" from a real failure without SDK types.

mod ecs;
mod elbv2;
mod sfn;

use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::decision::Target;
use crate::health::Observation;
use crate::task::Task;

/// Attempts per AWS call, the first included. ELBv2 throttles per account and region, so a
/// burst of task starts needs more than the SDK default of three.
pub const MAX_ATTEMPTS: u32 = 5;
/// Time allowed for one attempt of one call.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one call, retries and backoff included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Error codes of ECS and ELBv2 that no retry can cure. Throttling, 5xx responses and
/// time-outs are transient, and so is any code not listed here.
const PERMANENT_CODES: &[&str] = &[
    // IAM: the function's role lacks the action.
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    // ELBv2: the group is full, gone, or rejects the target (for an IP address outside the
    // group's VPC ELBv2 returns ValidationError).
    "TooManyTargets",
    "TooManyRegistrationsForTargetId",
    "TargetGroupNotFound",
    "ValidationError",
    // ECS: the request names something that does not exist or is malformed.
    "ClusterNotFoundException",
    "InvalidParameterException",
];

/// An error returned by an AWS call, reduced to what the registrar reports and classifies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The service's error code, such as `TargetGroupNotFound` or `Throttling`; `None` for
    /// transport failures and time-outs.
    pub code: Option<String>,
    /// The code and message, or the transport failure with its causes.
    pub message: String,
}

impl ApiError {
    /// Builds an error from a service error code and message.
    pub fn service(code: &str, message: &str) -> Self {
        ApiError {
            code: Some(code.to_owned()),
            message: format!("{code}: {message}"),
        }
    }

    /// Returns whether the service returned this error code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Returns whether the error is permanent: the same call fails the same way until someone
    /// changes the account, the target group or the mapping (a missing permission, a full or
    /// missing group, a target outside the group's VPC). The SDK does not retry these, and
    /// Lambda's retries of the invocation only repeat them.
    pub fn is_permanent(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| PERMANENT_CODES.contains(&code))
    }

    /// Sets the code when the SDK matched the error to a modeled type but left its metadata
    /// without one.
    fn with_code(mut self, code: &str, matched: bool) -> Self {
        if matched && self.code.is_none() {
            self.code = Some(code.to_owned());
        }
        self
    }
}

/// The result of DescribeTasks for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskLookup {
    /// The task's current state, as DescribeTasks returned it.
    Found(Box<Task>),
    /// ECS does not know the task (never existed, or stopped more than about an hour ago).
    Missing {
        /// The failure reason ECS gave, such as MISSING, or a note that it gave none.
        reason: String,
    },
}

/// The ECS calls the registrar makes.
pub trait Ecs: Send + Sync {
    /// Describes one task in `cluster` (DescribeTasks).
    fn describe_task(
        &self,
        cluster: &str,
        task_arn: &str,
    ) -> impl Future<Output = Result<TaskLookup, ApiError>> + Send;

    /// Lists the tasks of `cluster` whose desiredStatus is RUNNING (ListTasks, every page),
    /// described in batches of 100, the DescribeTasks limit.
    fn running_tasks(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Task>, ApiError>> + Send;

    /// Lists the tasks of `cluster` that ECS stopped recently (desiredStatus STOPPED; ECS
    /// keeps them for about an hour), described like [`Ecs::running_tasks`].
    fn stopped_tasks(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Task>, ApiError>> + Send;

    /// Returns the EC2 instance id behind a container instance (DescribeContainerInstances),
    /// or `None` when ECS lists no instance id, as for ECS Anywhere instances.
    fn ec2_instance_id(
        &self,
        cluster: &str,
        container_instance_arn: &str,
    ) -> impl Future<Output = Result<Option<String>, ApiError>> + Send;
}

/// The Elastic Load Balancing v2 calls the registrar makes.
pub trait LoadBalancing: Send + Sync {
    /// Registers targets in a target group (RegisterTargets, idempotent).
    fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Deregisters targets from a target group (DeregisterTargets). Each target carries its
    /// exact port, because a target registered on another port than the group's default is
    /// otherwise left in place.
    fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Returns the health of the given targets (DescribeTargetHealth), one entry per target
    /// that ELB reports on; an empty `targets` requests every target of the group.
    fn describe_target_health(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> impl Future<Output = Result<Vec<(Target, Observation)>, ApiError>> + Send;

    /// Looks up a target group's ARN by name (DescribeTargetGroups); `None` when there is no
    /// such group.
    fn target_group_arn(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, ApiError>> + Send;
}

/// The result of starting a state machine execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new execution, or the same one again: for a repeated StartExecution with the same
    /// name and input, Step Functions returns the first execution.
    Execution {
        /// The execution's ARN.
        execution_arn: String,
    },
    /// An execution of that name exists already with another input, or has ended.
    AlreadyExists,
}

/// The Step Functions call the registrar makes.
pub trait Workflows: Send + Sync {
    /// Starts an execution named `name` with a JSON `input` (StartExecution).
    fn start_execution(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> impl Future<Output = Result<Started, ApiError>> + Send;
}

/// A [`Workflows`] for a registrar without health confirmation; it is never called.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWorkflows;

impl Workflows for NoWorkflows {
    async fn start_execution(&self, _: &str, _: &str, _: &str) -> Result<Started, ApiError> {
        Err(ApiError::service(
            "HealthWaitNotConfigured",
            "no Step Functions client was given to the registrar",
        ))
    }
}

/// Loads the shared SDK configuration: the default credential and region chain, with retries
/// and time-outs set explicitly rather than left to SDK defaults.
///
/// `endpoint_url` sends every call to that address instead of AWS (the local emulator);
/// `AWS_ENDPOINT_URL` in the environment does the same. `region` overrides the region chain.
pub async fn load_sdk_config(endpoint_url: Option<&str>, region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// Returns the retry settings of every client: standard mode (exponential backoff with jitter,
/// throttling errors, 5xx responses and time-outs retried) and [`MAX_ATTEMPTS`] attempts.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(5))
}

/// Returns the time-outs of every client: connect, one attempt, and one call with its retries.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Converts an SDK error, keeping the service's code when there is one.
// Every SDK crate re-exports the same smithy error types, so the ECS crate's paths serve for
// ELBv2 errors too.
fn api_error<E, R>(err: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (err.code(), err.as_service_error()) {
        (Some(code), _) => ApiError::service(code, err.message().unwrap_or("no message")),
        (None, Some(service)) => ApiError {
            code: None,
            message: service.to_string(),
        },
        (None, None) => ApiError {
            code: None,
            message: DisplayErrorContext(&err).to_string(),
        },
    }
}
