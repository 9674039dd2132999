//! ecs-target-registrar: puts ECS tasks into Elastic Load Balancing target groups once ECS
//! reports them RUNNING, and takes them out again when they stop.
//!
//! An EventBridge rule delivers ECS Task State Change events to the Lambda function; the
//! operator CLI (`registrar`) runs the same handler on event files. Modules:
//!
//! - [`config`]: the service mapping, validated once at start-up.
//! - [`event`]: parsing of the invocation payload and the task event's detail.
//! - [`task`]: the registrar's own view of a task, from an event or from DescribeTasks.
//! - [`decision`]: pure decisions: wait, register or deregister, and which targets.
//! - [`health`]: when a registered target counts as healthy, and the CLI's wait for it.
//! - [`registrar`]: the handler logic: confirm with ECS, change target groups, summarise.
//! - [`aws`]: the seam to ECS and ELBv2, and the SDK configuration.
//! - [`handler`]: the Lambda entry point's logic.
//! - [`sweep`]: the verify-and-repair sweep over every mapped target group.
//! - [`summary`] and [`error`]: what an invocation returns or fails with.

pub mod aws;
pub mod config;
pub mod decision;
pub mod error;
pub mod event;
pub mod handler;
pub mod health;
pub mod metrics;
pub mod registrar;
pub mod summary;
pub mod sweep;
pub mod task;

pub use config::Config;
pub use error::Error;
pub use registrar::{Environment, Registrar};
pub use summary::Summary;
