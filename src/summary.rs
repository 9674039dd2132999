//! The JSON summary an invocation returns: what was decided, and what changed where.
//!
//! It is what a person sees when invoking the function by hand, what the operator CLI prints,
//! and what a failed invocation carries in its error.

use serde::Serialize;

use crate::decision::{Lifecycle, Target, Unplaced};
use crate::task::Task;

/// The overall result of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Not an event the registrar acts on (other detail-type, unmapped task, foreign origin).
    Ignored,
    /// The task is not running yet; nothing changed.
    Waiting,
    /// Targets were registered.
    Registered,
    /// Targets were deregistered, or were already absent.
    Deregistered,
    /// The event was acted on, but DescribeTasks called for no change.
    Skipped,
    /// Targets were registered, then removed again because the task stopped meanwhile.
    RolledBack,
    /// At least one target group change failed.
    Failed,
}

/// A task's state as one source reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// ECS's lastStatus.
    pub last_status: String,
    /// ECS's desiredStatus.
    pub desired_status: String,
    /// The task's version counter, when the source gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

impl From<&Task> for Status {
    fn from(task: &Task) -> Self {
        Status {
            last_status: task.last_status.clone(),
            desired_status: task.desired_status.clone(),
            version: task.version,
        }
    }
}

/// The result of one call on one target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeResult {
    /// RegisterTargets succeeded (the targets may have been registered already).
    Registered,
    /// DeregisterTargets succeeded.
    Deregistered,
    /// The targets were not registered, which counts as deregistered.
    NotRegistered,
    /// Registered, then deregistered because ECS reported the task stopping afterwards.
    RolledBack,
    /// The call failed, and `error` gives the reason.
    Failed,
}

/// One target group change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The target group as the mapping names it (name or ARN).
    pub target_group: String,
    /// The resolved ARN, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// The mapping entries that put these targets here.
    pub services: Vec<String>,
    /// `register` or `deregister`.
    pub action: Lifecycle,
    /// The targets sent.
    pub targets: Vec<Target>,
    /// What happened.
    pub result: ChangeResult,
    /// The failed step and the service's error, when `result` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the failure is permanent (see [`crate::aws::ApiError::is_permanent`]): a retry
    /// of the event fails the same way until the account, group or mapping is fixed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
}

/// The result of starting one health-wait execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HealthCheckResult {
    /// The execution was started (or the same start was repeated).
    Started,
    /// An execution of that name existed already: a duplicate event.
    AlreadyStarted,
    /// StartExecution failed, and `error` gives the reason.
    Failed,
}

/// One health-wait execution started for one target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// The target group whose targets the execution waits for.
    pub target_group_arn: String,
    /// The execution's deterministic name.
    pub execution_name: String,
    /// The execution's ARN, when Step Functions returned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    /// What happened.
    pub result: HealthCheckResult,
    /// The service's error, when `result` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything one invocation decided and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The overall result.
    pub outcome: Outcome,
    /// Why, in one sentence.
    pub reason: String,
    /// The task concerned, for task events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// The task's state as the event reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_status: Option<Status>,
    /// The task's state as DescribeTasks reported it, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_status: Option<Status>,
    /// Target group changes, one per target group and action.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Mapping entries that matched but yielded no target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unplaced: Vec<Unplaced>,
    /// Health-wait executions started after the registration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
}

impl Summary {
    /// Starts a summary with no changes.
    pub fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Summary {
            outcome,
            reason: reason.into(),
            task_arn: None,
            event_status: None,
            ecs_status: None,
            changes: Vec::new(),
            unplaced: Vec::new(),
            health_checks: Vec::new(),
        }
    }

    /// Returns whether any target group change, or any start of a health wait, failed.
    pub fn has_failures(&self) -> bool {
        self.changes
            .iter()
            .any(|change| change.result == ChangeResult::Failed)
            || self
                .health_checks
                .iter()
                .any(|check| check.result == HealthCheckResult::Failed)
    }
}
