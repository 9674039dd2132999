//! The errors that fail an invocation.
//!
//! Each variant names the step that failed and the identifiers an operator needs to act on it.
//! A failed invocation is retried by Lambda and then kept by the dead-letter queue, so an error
//! here means "this event is not done", never "this event was bad and can be dropped".

use lambda_runtime::Diagnostic;

use crate::aws::ApiError;
use crate::event::PayloadError;
use crate::summary::Summary;

/// The reason an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload is not an event the function can read.
    #[error(transparent)]
    Payload(#[from] PayloadError),

    /// DescribeTasks failed, so the task's real state is unknown.
    #[error("DescribeTasks failed for task {task_arn} in cluster {cluster}: {source}")]
    DescribeTask {
        /// The task asked for.
        task_arn: String,
        /// The cluster asked in.
        cluster: String,
        /// The service's error.
        source: ApiError,
    },

    /// DescribeContainerInstances failed, so a bridge-mode task's instance id is unknown.
    #[error(
        "DescribeContainerInstances failed for {container_instance_arn} of task {task_arn}: {source}"
    )]
    DescribeContainerInstance {
        /// The task concerned.
        task_arn: String,
        /// The container instance asked for.
        container_instance_arn: String,
        /// The service's error.
        source: ApiError,
    },

    /// Listing a cluster's running tasks failed, so a released address may have a new owner.
    #[error(
        "ListTasks or DescribeTasks failed for cluster {cluster} while checking whether another \
         task now holds the address of stopped task {task_arn}: {source}"
    )]
    ListRunningTasks {
        /// The stopped task whose address was checked.
        task_arn: String,
        /// The cluster listed.
        cluster: String,
        /// The service's error.
        source: ApiError,
    },

    /// DescribeTasks returned an older version of the task than the event carries.
    #[error(
        "ECS has not caught up with the event for task {task_arn}: the event is version \
         {event_version} but DescribeTasks returned version {ecs_version}; the retry will \
         read it again"
    )]
    EcsBehindEvent {
        /// The task concerned.
        task_arn: String,
        /// The version in the event.
        event_version: i64,
        /// The version DescribeTasks returned.
        ecs_version: i64,
    },

    /// A running task matched a mapping entry but no target could be formed for it.
    #[error("task {task_arn} cannot be registered: {reasons}")]
    Unplaceable {
        /// The task concerned.
        task_arn: String,
        /// One reason per mapping entry, joined.
        reasons: String,
        /// What was decided and done before giving up.
        summary: Box<Summary>,
    },

    /// The targets were registered but a health-wait execution could not be started; the
    /// retry registers again (harmlessly) and starts it under the same name.
    #[error("{message}")]
    HealthWait {
        /// Every failed start, with target group and cause.
        message: String,
        /// What was decided and done.
        summary: Box<Summary>,
    },

    /// A sweep could not read what it needs to plan, or was asked for an unknown service.
    #[error("sweep failed: {0}")]
    Sweep(String),

    /// One or more target group changes failed; the others were still made.
    #[error("{message}")]
    TargetGroups {
        /// Every failed change: step, task, target group, targets and cause.
        message: String,
        /// Whether every failure is permanent (see [`ApiError::is_permanent`]), so that a retry
        /// of the event cannot succeed until the account, group or mapping is fixed.
        permanent: bool,
        /// What was decided and done, failures included.
        summary: Box<Summary>,
    },
}

impl Error {
    /// Returns a short, stable name for the kind of failure, used as Lambda's `errorType`.
    /// `TargetGroupChangeRejected` is a target group change that failed with permanent errors
    /// only; `TargetGroupChangeFailed` is one that a retry may still complete.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Payload(PayloadError::NotEventBridge(_)) => "InvalidPayload",
            Error::Payload(PayloadError::InvalidDetail(_)) => "InvalidTaskDetail",
            Error::Payload(PayloadError::InvalidAction(_)) => "InvalidAction",
            Error::DescribeTask { .. } => "DescribeTasksFailed",
            Error::DescribeContainerInstance { .. } => "DescribeContainerInstancesFailed",
            Error::ListRunningTasks { .. } => "ListTasksFailed",
            Error::EcsBehindEvent { .. } => "EcsBehindEvent",
            Error::Unplaceable { .. } => "NoTargetForTask",
            Error::TargetGroups {
                permanent: true, ..
            } => "TargetGroupChangeRejected",
            Error::TargetGroups { .. } => "TargetGroupChangeFailed",
            Error::HealthWait { .. } => "StartExecutionFailed",
            Error::Sweep(_) => "SweepFailed",
        }
    }

    /// Returns whether the failure is permanent: retrying the same event fails the same way
    /// until someone changes the account, a target group or the mapping.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::TargetGroups {
                permanent: true,
                ..
            }
        )
    }

    /// Returns the summary of what was done before the failure, when the failure came that late.
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Error::Unplaceable { summary, .. }
            | Error::TargetGroups { summary, .. }
            | Error::HealthWait { summary, .. } => Some(summary),
            _ => None,
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Self {
        Diagnostic {
            error_type: error.kind().to_owned(),
            error_message: error.to_string(),
        }
    }
}
