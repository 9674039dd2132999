//! The handler: from one invocation payload to target group changes and a summary.
//!
//! The event only triggers the work. What is registered, and where, is decided from what
//! DescribeTasks returns, so a stale, duplicated, reordered or forged event cannot put an
//! address behind a load balancer that ECS does not report as a running task now.

use std::collections::{BTreeMap, HashMap};

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::aws::{ApiError, Ecs, LoadBalancing, NoWorkflows, Started, TaskLookup, Workflows};
use crate::config::{Config, ServiceMapping, TargetGroupRef};
use crate::decision::{self, Lifecycle, Placement, Plan, Target};
use crate::error::Error;
use crate::event::{self, Invocation, TaskEvent};
use crate::health::{self, HealthSettings, OnFailure};
use crate::summary::{
    Change, ChangeResult, HealthCheck, HealthCheckResult, Outcome, Status, Summary,
};
use crate::task::{Arn, Task};

/// Facts about the running function that an event cannot forge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// The function's region; events and clusters of other regions are ignored.
    pub region: Option<String>,
    /// The function's account, from its own ARN; events of other accounts are ignored.
    pub account: Option<String>,
}

impl Environment {
    /// Reads the account from an invoked function ARN (`arn:aws:lambda:REGION:ACCOUNT:...`).
    pub fn with_function_arn(mut self, function_arn: &str) -> Self {
        if let Some(arn) = Arn::parse(function_arn) {
            self.account = Some(arn.account.to_owned());
        }
        self
    }
}

/// Registers and deregisters ECS tasks' targets; one per process, shared by all invocations.
pub struct Registrar<E, L, W = NoWorkflows> {
    config: Config,
    ecs: E,
    elb: L,
    sfn: W,
    health: HealthSettings,
    /// Target group ARNs already looked up by name. A name resolves to the same ARN for the
    /// life of the group, so one DescribeTargetGroups per name per process is enough.
    resolved: Mutex<HashMap<String, String>>,
    /// CloudWatch namespace for the health waits' time-to-healthy metric; `None` for none.
    metrics_namespace: Option<String>,
}

impl<E: Ecs, L: LoadBalancing> Registrar<E, L> {
    /// Creates a registrar over a validated mapping and the two AWS seams, without health
    /// confirmation.
    pub fn new(config: Config, ecs: E, elb: L) -> Self {
        Registrar {
            config,
            ecs,
            elb,
            sfn: NoWorkflows,
            health: HealthSettings::default(),
            resolved: Mutex::new(HashMap::new()),
            metrics_namespace: None,
        }
    }
}

impl<E, L, W> Registrar<E, L, W> {
    /// Starts the health-wait state machine after each registration, when `health` names one.
    pub fn with_health_wait<S: Workflows>(
        self,
        sfn: S,
        health: HealthSettings,
    ) -> Registrar<E, L, S> {
        Registrar {
            config: self.config,
            ecs: self.ecs,
            elb: self.elb,
            sfn,
            health,
            resolved: self.resolved,
            metrics_namespace: self.metrics_namespace,
        }
    }

    /// Has the health waits put their time-to-healthy metric into `namespace`.
    pub fn with_metrics_namespace(mut self, namespace: Option<String>) -> Self {
        self.metrics_namespace = namespace;
        self
    }
}

impl<E: Ecs, L: LoadBalancing, W: Workflows> Registrar<E, L, W> {
    /// Returns the mapping in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn ecs(&self) -> &E {
        &self.ecs
    }

    pub(crate) fn elb(&self) -> &L {
        &self.elb
    }

    /// Returns a target group's ARN, looking a name up once per process.
    pub(crate) async fn resolve_group(&self, group: &TargetGroupRef) -> Result<String, String> {
        self.resolve(group).await.map_err(|err| err.message)
    }

    /// Forms the targets a running task stands for under `services`.
    pub(crate) async fn plan_targets(
        &self,
        task: &Task,
        cluster: &str,
        services: &[&ServiceMapping],
    ) -> Result<Plan, Error> {
        self.plan(task, cluster, services, Lifecycle::Register)
            .await
    }

    /// Handles one invocation payload.
    ///
    /// Returns a summary for events that were acted on or deliberately ignored.
    ///
    /// # Errors
    ///
    /// Fails when the payload is unreadable, when ECS cannot be asked about the task, when a
    /// running task matched the mapping but yields no target, and when any target group change
    /// failed (after the other target groups were still tried). Each of these should fail the
    /// invocation so that Lambda retries it and the dead-letter queue keeps it.
    pub async fn handle(&self, payload: &Value, env: &Environment) -> Result<Summary, Error> {
        match event::parse(payload)? {
            Invocation::Other {
                source,
                detail_type,
            } => {
                info!(%source, %detail_type, "ignored event: not an ECS Task State Change");
                Ok(Summary::new(
                    Outcome::Ignored,
                    format!("{detail_type} from {source} is not an ECS Task State Change"),
                ))
            }
            Invocation::TaskStateChange(event) => self.handle_task_event(&event, env).await,
        }
    }

    async fn handle_task_event(
        &self,
        event: &TaskEvent,
        env: &Environment,
    ) -> Result<Summary, Error> {
        let task = &event.task;
        let mut summary = Summary::new(Outcome::Ignored, "");
        summary.task_arn = Some(task.task_arn.clone());
        summary.event_status = Some(Status::from(task));

        if let Some(reason) = foreign_origin(event, env) {
            warn!(task_arn = %task.task_arn, %reason, "ignored event from outside this function's account or region");
            summary.reason = reason;
            return Ok(summary);
        }

        let services = self.config.matching(task, env.region.as_deref());
        let cluster_mapped = self.config.services.iter().any(|service| {
            service
                .cluster
                .matches(&task.cluster_arn, env.region.as_deref())
        });
        if !cluster_mapped {
            // The EventBridge rule sends the mapped clusters only, so this event was sent by
            // hand or the rule and the mapping disagree.
            warn!(
                task_arn = %task.task_arn,
                cluster = %task.cluster_arn,
                "ignored event: no service mapping names the task's cluster"
            );
            summary.reason = format!("no service mapping names cluster {}", task.cluster_arn);
            return Ok(summary);
        }
        if services.is_empty() {
            info!(
                task_arn = %task.task_arn,
                cluster = %task.cluster_arn,
                family = task.family().unwrap_or(""),
                group = task.group.as_deref().unwrap_or(""),
                "ignored event: no service mapping matches the task"
            );
            summary.reason =
                "no service mapping matches the task's cluster, family and group".into();
            return Ok(summary);
        }

        let action = decision::lifecycle(&task.last_status, &task.desired_status);
        if action == Lifecycle::Wait {
            info!(
                task_arn = %task.task_arn,
                last_status = %task.last_status,
                desired_status = %task.desired_status,
                "waiting: task is not running yet"
            );
            summary.outcome = Outcome::Waiting;
            summary.reason = format!(
                "task is {} (desired {}); it is registered once ECS reports it RUNNING",
                task.last_status, task.desired_status
            );
            return Ok(summary);
        }

        // Every mapped entry of one task names the same cluster, by name or by ARN.
        let cluster = services[0].cluster.as_str().to_owned();
        let lookup = self
            .ecs
            .describe_task(&cluster, &task.task_arn)
            .await
            .map_err(|source| Error::DescribeTask {
                task_arn: task.task_arn.clone(),
                cluster: cluster.clone(),
                source,
            })?;

        match lookup {
            TaskLookup::Missing { reason } => {
                self.on_missing_task(event, action, &services, &reason, summary)
                    .await
            }
            TaskLookup::Found(current) => {
                self.on_described_task(event, action, &current, &cluster, env, summary)
                    .await
            }
        }
    }

    /// Handles a task that DescribeTasks does not return. Nothing is registered for it. A stop
    /// event still removes the address the event carries, because ECS stops describing a task
    /// about an hour after it stopped.
    async fn on_missing_task(
        &self,
        event: &TaskEvent,
        action: Lifecycle,
        services: &[&ServiceMapping],
        reason: &str,
        summary: Summary,
    ) -> Result<Summary, Error> {
        let task = &event.task;
        if action == Lifecycle::Register {
            // A task ECS does not know is not running. An earlier attempt of this event may
            // have registered it before failing, so its address is cleaned up like a stop's.
            warn!(task_arn = %task.task_arn, %reason, "nothing registered: ECS does not know the task");
        } else {
            info!(task_arn = %task.task_arn, %reason, "ECS no longer knows the task; deregistering the address the event carries");
        }
        // NOTE: no instance lookup here: a bridge-mode task unknown to ECS keeps its targets
        // until a sweep removes them, because its container instance may be gone too.
        let plan = decision::plan(task, services, None, Lifecycle::Deregister);
        let plan = self.keep_reused_addresses(task, plan, services).await?;
        let mut summary = self.deregister(task, plan, summary).await?;
        if action == Lifecycle::Register {
            let removed = summary
                .changes
                .iter()
                .any(|change| change.result == ChangeResult::Deregistered);
            summary.outcome = if removed {
                Outcome::Deregistered
            } else {
                Outcome::Skipped
            };
            summary.reason = if removed {
                format!(
                    "ECS does not know the task ({reason}); nothing registered, and the address \
                     an earlier attempt registered is removed"
                )
            } else {
                format!("ECS does not know the task ({reason}); nothing registered")
            };
        }
        Ok(summary)
    }

    async fn on_described_task(
        &self,
        event: &TaskEvent,
        action: Lifecycle,
        current: &Task,
        cluster: &str,
        env: &Environment,
        mut summary: Summary,
    ) -> Result<Summary, Error> {
        let task = &event.task;
        summary.ecs_status = Some(Status::from(current));

        if let (Some(event_version), Some(ecs_version)) = (task.version, current.version) {
            if ecs_version < event_version {
                return Err(Error::EcsBehindEvent {
                    task_arn: task.task_arn.clone(),
                    event_version,
                    ecs_version,
                });
            }
        }

        let truth = decision::lifecycle(&current.last_status, &current.desired_status);
        // Match again on what ECS reports: an event's family or group may be forged.
        let services = self.config.matching(current, env.region.as_deref());
        if services.is_empty() {
            warn!(
                task_arn = %task.task_arn,
                family = current.family().unwrap_or(""),
                group = current.group.as_deref().unwrap_or(""),
                "nothing changed: the task ECS describes matches no service mapping"
            );
            summary.outcome = Outcome::Skipped;
            summary.reason =
                "the event matched a mapping but the task ECS describes does not".into();
            return Ok(summary);
        }

        match (action, truth) {
            (_, Lifecycle::Deregister) => {
                let note = if action == Lifecycle::Register {
                    "deregistering: the RUNNING event is stale, ECS reports the task stopping"
                } else {
                    "deregistering: ECS reports the task stopping"
                };
                info!(task_arn = %task.task_arn, last_status = %current.last_status, desired_status = %current.desired_status, "{note}");
                let plan = self
                    .plan(current, cluster, &services, Lifecycle::Deregister)
                    .await?;
                // An address taken from the event, not from ECS, is unverified: check it like
                // a released one, so a forged or replayed stop cannot remove a live target.
                let from_event = plan.placements.is_empty() && task.ipv4().is_some();
                let mut plan = with_event_address(plan, task, &services);
                if current.address_released() || from_event {
                    plan = self.keep_reused_addresses(task, plan, &services).await?;
                }
                self.deregister(task, plan, summary).await
            }
            (Lifecycle::Register, Lifecycle::Register) => {
                info!(task_arn = %task.task_arn, last_status = %current.last_status, desired_status = %current.desired_status, "registering: ECS confirms the task is running");
                if let (Some(claimed), Some(real)) = (task.ipv4(), current.ipv4()) {
                    if claimed != real {
                        warn!(task_arn = %task.task_arn, event_address = %claimed, ecs_address = %real, "event address differs from ECS's; using ECS's");
                    }
                }
                let plan = self
                    .plan(current, cluster, &services, Lifecycle::Register)
                    .await?;
                let trigger = health::trigger_tag(task.version, event.id.as_deref());
                self.register(current, cluster, &services, plan, &trigger, summary)
                    .await
            }
            (_, Lifecycle::Register) => {
                warn!(task_arn = %task.task_arn, "nothing deregistered: the event reports the task stopping but ECS reports it running");
                summary.outcome = Outcome::Skipped;
                summary.reason = "the event says the task is stopping but ECS reports it RUNNING; nothing changed".into();
                Ok(summary)
            }
            (_, Lifecycle::Wait) => {
                info!(task_arn = %task.task_arn, last_status = %current.last_status, "waiting: ECS reports the task not running yet");
                summary.outcome = Outcome::Waiting;
                summary.reason = format!(
                    "ECS reports the task {} (desired {}); nothing changed",
                    current.last_status, current.desired_status
                );
                Ok(summary)
            }
        }
    }

    /// Forms the targets of a described task, asking ECS for the instance id first when the
    /// task runs in bridge or host network mode.
    async fn plan(
        &self,
        task: &Task,
        cluster: &str,
        services: &[&ServiceMapping],
        action: Lifecycle,
    ) -> Result<Plan, Error> {
        let mut instance_id = None;
        if decision::needs_instance_id(task) {
            if let Some(arn) = task.container_instance_arn.as_deref() {
                instance_id = self
                    .ecs
                    .ec2_instance_id(cluster, arn)
                    .await
                    .map_err(|source| Error::DescribeContainerInstance {
                        task_arn: task.task_arn.clone(),
                        container_instance_arn: arn.to_owned(),
                        source,
                    })?;
            }
        }
        Ok(decision::plan(
            task,
            services,
            instance_id.as_deref(),
            action,
        ))
    }

    /// Removes from a deregistration plan the targets of the other running tasks of the mapped
    /// clusters (see [`decision::keep_reused_addresses`]). Called only once ECS has released
    /// the stopped task's address, since no other task can hold it before that.
    async fn keep_reused_addresses(
        &self,
        task: &Task,
        plan: Plan,
        services: &[&ServiceMapping],
    ) -> Result<Plan, Error> {
        if plan.placements.is_empty() {
            return Ok(plan);
        }
        let in_use = self
            .targets_in_use(task, &plan.placements, services)
            .await?;
        Ok(decision::keep_reused_addresses(plan, &in_use))
    }

    /// Lists the IP targets of the running tasks other than `task` under the mapping, each with
    /// its task's ARN, in every cluster that could pass `task`'s address on to a new task.
    ///
    // NOTE: only IP targets are checked. A bridge-mode target (instance id and host port) whose
    // static host port a new task on the same instance took over is still deregistered.
    async fn targets_in_use(
        &self,
        task: &Task,
        placements: &[Placement],
        services: &[&ServiceMapping],
    ) -> Result<HashMap<Target, String>, Error> {
        // A task of any cluster whose entries share one of these target groups may hold the
        // address now: clusters that share subnets can hand an address from one to the other.
        let groups: Vec<&TargetGroupRef> = placements
            .iter()
            .flat_map(|placement| &placement.target_groups)
            .collect();
        let sharing = self
            .config
            .services
            .iter()
            .filter(|service| service.target_groups.iter().any(|g| groups.contains(&g)));
        let mut clusters: Vec<&str> = services
            .iter()
            .copied()
            .chain(sharing)
            .map(|service| service.cluster.as_str())
            .collect();
        clusters.sort_unstable();
        clusters.dedup();

        let mut in_use = HashMap::new();
        for cluster in clusters {
            let running = self.ecs.running_tasks(cluster).await.map_err(|source| {
                Error::ListRunningTasks {
                    task_arn: task.task_arn.clone(),
                    cluster: cluster.to_owned(),
                    source,
                }
            })?;
            let others = running
                .iter()
                .filter(|other| other.id() != task.id() && other.ipv4().is_some());
            for other in others {
                let mapped = self.config.matching(other, None);
                let plan = decision::plan(other, &mapped, None, Lifecycle::Deregister);
                for placement in plan.placements {
                    in_use.insert(placement.target, other.task_arn.clone());
                }
            }
        }
        Ok(in_use)
    }

    /// Registers the planned targets, then closes the race with a concurrent stop.
    ///
    /// ECS sets desiredStatus to STOPPED before it emits the stop event, and the stop event's
    /// invocation deregisters only after receiving it. So if a stop invocation deregistered
    /// before our RegisterTargets, ECS was already reporting the stop before our
    /// RegisterTargets, and the DescribeTasks made after RegisterTargets sees it and removes
    /// what was just registered. If the stop invocation deregistered after our RegisterTargets,
    /// it removed our targets itself. Either way no stopped task stays registered.
    ///
    /// By the time of that DescribeTasks the task may have released its address, and a new
    /// task may hold it and be registered already. So the rollback, like a stop, leaves alone
    /// the targets of other running tasks.
    async fn register(
        &self,
        task: &Task,
        cluster: &str,
        services: &[&ServiceMapping],
        plan: Plan,
        trigger: &str,
        mut summary: Summary,
    ) -> Result<Summary, Error> {
        for unplaced in &plan.unplaced {
            warn!(task_arn = %task.task_arn, service = %unplaced.service, reason = %unplaced.reason, "no target for mapping entry");
        }
        summary.unplaced = plan.unplaced.clone();
        summary.changes = self
            .apply(task, Lifecycle::Register, &plan.placements)
            .await;

        if summary
            .changes
            .iter()
            .any(|c| c.result == ChangeResult::Registered)
        {
            let after = self
                .ecs
                .describe_task(cluster, &task.task_arn)
                .await
                .map_err(|source| Error::DescribeTask {
                    task_arn: task.task_arn.clone(),
                    cluster: cluster.to_owned(),
                    source,
                })?;
            let still_running = matches!(&after, TaskLookup::Found(now)
                if decision::lifecycle(&now.last_status, &now.desired_status) == Lifecycle::Register);
            if !still_running {
                info!(task_arn = %task.task_arn, "task stopped while it was being registered; removing its targets again");
                let released = match &after {
                    TaskLookup::Found(now) => now.address_released(),
                    TaskLookup::Missing { .. } => true,
                };
                let in_use = if released {
                    self.targets_in_use(task, &plan.placements, services)
                        .await?
                } else {
                    HashMap::new()
                };
                self.roll_back(task, &mut summary.changes, &in_use).await;
                summary.outcome = Outcome::RolledBack;
                summary.reason = "the task stopped while it was being registered; its targets were removed again, except those that are another running task's targets now".into();
                return finish(summary, task, Lifecycle::Register);
            }
        }

        summary.outcome = Outcome::Registered;
        summary.reason = "ECS reports the task RUNNING; its targets are registered".into();
        summary.health_checks = self
            .start_health_waits(task, trigger, &summary.changes)
            .await;
        let mut summary = finish(summary, task, Lifecycle::Register)?;
        if summary.unplaced.is_empty() {
            return Ok(summary);
        }
        let reasons: Vec<_> = summary
            .unplaced
            .iter()
            .map(|unplaced| format!("{}: {}", unplaced.service, unplaced.reason))
            .collect();
        summary.outcome = Outcome::Failed;
        summary.reason = format!("no target for {} mapping entries", reasons.len());
        Err(Error::Unplaceable {
            task_arn: task.task_arn.clone(),
            reasons: reasons.join("; "),
            summary: Box::new(summary),
        })
    }

    /// Starts one health-wait execution per target group that was just registered, when a
    /// state machine is configured. Duplicate events ask for the same execution names, so they
    /// start no second loop.
    async fn start_health_waits(
        &self,
        task: &Task,
        trigger: &str,
        changes: &[Change],
    ) -> Vec<HealthCheck> {
        let Some(state_machine) = self.health.state_machine_arn.as_deref() else {
            return Vec::new();
        };
        let starts = changes
            .iter()
            .filter(|change| change.result == ChangeResult::Registered)
            .filter_map(|change| {
                let group = change.target_group_arn.as_deref()?;
                Some((group, &change.targets, change.services.join(",")))
            })
            .map(|(group, targets, service)| {
                let name = health::execution_name(task.id(), trigger, group);
                let wait = HealthWait {
                    state_machine,
                    task_arn: &task.task_arn,
                    service,
                    target_group_arn: group,
                };
                self.start_health_wait(wait, name, targets)
            });
        join_all(starts).await
    }

    /// Starts health-wait executions for the targets a sweep registered, when a state machine
    /// is configured; `run` names the sweep run (its start time). A sweep's targets in one
    /// group belong to many tasks, so with the deregister action each target gets its own
    /// execution: one unhealthy task must not take the others out of the group.
    pub(crate) async fn start_sweep_health_waits(
        &self,
        run: &str,
        groups: &[(String, Vec<Target>)],
    ) -> Vec<HealthCheck> {
        let Some(state_machine) = self.health.state_machine_arn.as_deref() else {
            return Vec::new();
        };
        let per_target = self.health.on_failure == OnFailure::Deregister;
        let waits: Vec<(String, &str, Vec<Target>)> = groups
            .iter()
            .flat_map(|(group, targets)| {
                if per_target {
                    targets
                        .iter()
                        .map(|target| {
                            let key = format!("{group}/{target}");
                            let name = health::execution_name("sweep", run, &key);
                            (name, group.as_str(), vec![target.clone()])
                        })
                        .collect::<Vec<_>>()
                } else {
                    let name = health::execution_name("sweep", run, group);
                    vec![(name, group.as_str(), targets.clone())]
                }
            })
            .collect();
        let starts = waits.iter().map(|(name, group, targets)| {
            let wait = HealthWait {
                state_machine,
                task_arn: "sweep",
                service: "sweep".to_owned(),
                target_group_arn: group,
            };
            self.start_health_wait(wait, name.clone(), targets)
        });
        join_all(starts).await
    }

    async fn start_health_wait(
        &self,
        wait: HealthWait<'_>,
        name: String,
        targets: &[Target],
    ) -> HealthCheck {
        let HealthWait {
            state_machine,
            task_arn,
            service,
            target_group_arn,
        } = wait;
        let input = json!({
            "targetGroupArn": target_group_arn,
            "targets": targets.iter().map(|t| json!({"Id": t.id, "Port": t.port})).collect::<Vec<_>>(),
            "taskArn": task_arn,
            "timing": self.health.timing,
            "onFailure": self.health.on_failure,
            "metrics": {
                "namespace": self.metrics_namespace.as_deref().unwrap_or(""),
                "service": service,
                "targetGroup": crate::metrics::group_name(target_group_arn),
            },
        });
        let mut check = HealthCheck {
            target_group_arn: target_group_arn.to_owned(),
            execution_name: name.clone(),
            execution_arn: None,
            result: HealthCheckResult::Failed,
            error: None,
        };
        match self
            .sfn
            .start_execution(state_machine, &name, &input.to_string())
            .await
        {
            Ok(Started::Execution { execution_arn }) => {
                info!(%task_arn, target_group = %target_group_arn, target = %list_targets(targets), execution = %execution_arn, "started health wait");
                check.execution_arn = Some(execution_arn);
                check.result = HealthCheckResult::Started;
            }
            Ok(Started::AlreadyExists) => {
                info!(%task_arn, target_group = %target_group_arn, execution = %name, "health wait already started for this event");
                check.result = HealthCheckResult::AlreadyStarted;
            }
            Err(err) => {
                error!(%task_arn, target_group = %target_group_arn, execution = %name, error = %err, "StartExecution failed");
                check.error = Some(format!("StartExecution of {name} failed: {err}"));
            }
        }
        check
    }

    async fn deregister(
        &self,
        task: &Task,
        plan: Plan,
        mut summary: Summary,
    ) -> Result<Summary, Error> {
        for unplaced in &plan.unplaced {
            info!(task_arn = %task.task_arn, service = %unplaced.service, reason = %unplaced.reason, "nothing to deregister for mapping entry");
        }
        summary.unplaced = plan.unplaced;
        summary.changes = self
            .apply(task, Lifecycle::Deregister, &plan.placements)
            .await;
        if summary.changes.is_empty() {
            summary.outcome = Outcome::Skipped;
            summary.reason = match summary.unplaced.first() {
                Some(unplaced) => format!(
                    "the task is stopping; nothing deregistered: {}",
                    unplaced.reason
                ),
                None => "the task is stopping but has no address to deregister".into(),
            };
        } else {
            summary.outcome = Outcome::Deregistered;
            summary.reason = "the task is stopping; its targets are deregistered".into();
        }
        finish(summary, task, Lifecycle::Deregister)
    }

    /// Sends one call per target group, all target groups at once, and records each result.
    /// A failure in one group does not stop the others.
    ///
    /// Names are resolved first, so that a group one entry names by name and another by ARN
    /// gets one call with the targets of both.
    async fn apply(&self, task: &Task, action: Lifecycle, placements: &[Placement]) -> Vec<Change> {
        let by_reference = group_placements(placements);
        let lookups = by_reference.into_iter().map(|(group, members)| async move {
            let arn = self.resolve(&group).await;
            (group, members, arn)
        });
        let mut pending: Vec<(TargetGroupRef, String, Vec<String>, Vec<Target>)> = Vec::new();
        let mut failed = Vec::new();
        for (group, (services, targets), arn) in join_all(lookups).await {
            let arn = match arn {
                Ok(arn) => arn,
                Err(err) => {
                    failed.push(lookup_failed(task, group, action, services, targets, &err));
                    continue;
                }
            };
            match pending.iter_mut().find(|(_, known, _, _)| *known == arn) {
                Some((_, _, known_services, known_targets)) => {
                    for service in services {
                        if !known_services.contains(&service) {
                            known_services.push(service);
                        }
                    }
                    for target in targets {
                        if !known_targets.contains(&target) {
                            known_targets.push(target);
                        }
                    }
                }
                None => pending.push((group, arn, services, targets)),
            }
        }
        let calls = pending.into_iter().map(|(group, arn, services, targets)| {
            self.apply_group(task, action, group, arn, services, targets)
        });
        let mut changes = join_all(calls).await;
        changes.extend(failed);
        changes
    }

    async fn apply_group(
        &self,
        task: &Task,
        action: Lifecycle,
        group: TargetGroupRef,
        arn: String,
        services: Vec<String>,
        targets: Vec<Target>,
    ) -> Change {
        let mut change = Change {
            target_group: group.to_string(),
            target_group_arn: Some(arn.clone()),
            services,
            action,
            targets,
            result: ChangeResult::Failed,
            error: None,
            permanent: false,
        };
        let listed = list_targets(&change.targets);

        let outcome = match action {
            Lifecycle::Register => self
                .elb
                .register_targets(&arn, &change.targets)
                .await
                .map(|()| ChangeResult::Registered),
            _ => self.deregister_targets(&arn, &change.targets).await,
        };
        match outcome {
            Ok(result) => {
                info!(task_arn = %task.task_arn, target_group = %arn, target = %listed, ?result, "target group updated");
                change.result = result;
            }
            Err(err) => {
                let step = step_name(action);
                let class = failure_class(&err);
                error!(task_arn = %task.task_arn, target_group = %arn, target = %listed, class, error = %err, "{step} failed");
                if let TargetGroupRef::Name(name) = &group {
                    if err.is("TargetGroupNotFound") {
                        // The group was deleted, perhaps recreated under the same name with a
                        // new ARN: look the name up again on the retry.
                        self.resolved.lock().await.remove(name);
                    }
                }
                change.permanent = err.is_permanent();
                change.error = Some(format!("{step} failed: {err}"));
            }
        }
        change
    }

    /// Deregisters what [`Registrar::register`] just registered, marking each change. The
    /// targets in `in_use` are another running task's targets now and stay. A change whose
    /// targets all stay keeps its `registered` result.
    async fn roll_back(
        &self,
        task: &Task,
        changes: &mut [Change],
        in_use: &HashMap<Target, String>,
    ) {
        let rollbacks = changes.iter().map(|change| async move {
            if change.result != ChangeResult::Registered {
                return None;
            }
            let (kept, removed): (Vec<Target>, Vec<Target>) = change
                .targets
                .iter()
                .cloned()
                .partition(|target| in_use.contains_key(target));
            for target in &kept {
                let owner = in_use.get(target).map_or("", String::as_str);
                info!(task_arn = %task.task_arn, target_group = %change.target_group, %target, %owner, "rollback left the target in place: it is another running task's target now");
            }
            if removed.is_empty() {
                return None;
            }
            let arn = change.target_group_arn.as_deref().unwrap_or_default();
            Some(self.deregister_targets(arn, &removed).await)
        });
        // One result per change, in order: two changes may name the same group (once by name,
        // once by ARN), so results are not keyed by group.
        let results = join_all(rollbacks).await;
        for (change, result) in changes.iter_mut().zip(results) {
            let Some(result) = result else {
                continue;
            };
            let listed = list_targets(&change.targets);
            match result {
                Ok(_) => {
                    info!(task_arn = %task.task_arn, target_group = %change.target_group, target = %listed, "rolled back registration");
                    change.result = ChangeResult::RolledBack;
                }
                Err(err) => {
                    error!(task_arn = %task.task_arn, target_group = %change.target_group, target = %listed, error = %err, "rollback DeregisterTargets failed");
                    change.result = ChangeResult::Failed;
                    change.error = Some(format!(
                        "DeregisterTargets (rollback after the task stopped) failed: {err}"
                    ));
                }
            }
        }
    }

    /// Deregisters targets from one group. ELBv2 (and the emulator) return InvalidTarget for a
    /// target that is not registered, which is where a stop wants it. Because that error may
    /// cover a whole batch, a batch that gets it is sent again one target at a time, so a
    /// registered target in it is still removed.
    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<ChangeResult, ApiError> {
        match self.elb.deregister_targets(target_group_arn, targets).await {
            Ok(()) => return Ok(ChangeResult::Deregistered),
            Err(err) if !err.is("InvalidTarget") => return Err(err),
            Err(_) if targets.len() == 1 => return Ok(ChangeResult::NotRegistered),
            Err(_) => {}
        }
        let mut result = ChangeResult::NotRegistered;
        for target in targets {
            match self
                .elb
                .deregister_targets(target_group_arn, std::slice::from_ref(target))
                .await
            {
                Ok(()) => result = ChangeResult::Deregistered,
                Err(err) if err.is("InvalidTarget") => {}
                Err(err) => return Err(err),
            }
        }
        Ok(result)
    }

    /// Returns a target group's ARN, looking a name up once per process. A name that no group
    /// has is a `TargetGroupNotFound` error, as ELBv2 returns for an unknown ARN.
    async fn resolve(&self, group: &TargetGroupRef) -> Result<String, ApiError> {
        let name = match group {
            TargetGroupRef::Arn(arn) => return Ok(arn.clone()),
            TargetGroupRef::Name(name) => name,
        };
        if let Some(arn) = self.resolved.lock().await.get(name) {
            return Ok(arn.clone());
        }
        match self.elb.target_group_arn(name).await {
            Ok(Some(arn)) => {
                self.resolved.lock().await.insert(name.clone(), arn.clone());
                Ok(arn)
            }
            Ok(None) => Err(ApiError::service(
                "TargetGroupNotFound",
                &format!("target group {name:?} not found; check \"targetGroups\" in the mapping"),
            )),
            Err(err) => Err(ApiError {
                message: format!("DescribeTargetGroups failed for {name:?}: {err}"),
                ..err
            }),
        }
    }
}

/// Reports the summary and turns failed changes into an invocation error.
fn finish(mut summary: Summary, task: &Task, action: Lifecycle) -> Result<Summary, Error> {
    if !summary.has_failures() {
        return Ok(summary);
    }
    let mut failures: Vec<String> = summary
        .changes
        .iter()
        .filter(|change| change.result == ChangeResult::Failed)
        .map(|change| {
            format!(
                "target group {} (targets {}): {}",
                change.target_group,
                list_targets(&change.targets),
                change.error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    let failed_groups = failures.len();
    let permanent = summary
        .changes
        .iter()
        .filter(|change| change.result == ChangeResult::Failed)
        .all(|change| change.permanent);
    failures.extend(
        summary
            .health_checks
            .iter()
            .filter(|check| check.result == HealthCheckResult::Failed)
            .map(|check| {
                format!(
                    "health wait for target group {}: {}",
                    check.target_group_arn,
                    check.error.as_deref().unwrap_or("failed")
                )
            }),
    );
    summary.outcome = Outcome::Failed;
    if failed_groups == 0 {
        let message = format!(
            "task {} is registered, but its health wait could not be started: {}",
            task.task_arn,
            failures.join("; ")
        );
        summary.reason = message.clone();
        return Err(Error::HealthWait {
            message,
            summary: Box::new(summary),
        });
    }
    let message = format!(
        "{} of task {} failed in {} of {} target groups: {}",
        step_name(action),
        task.task_arn,
        failed_groups,
        summary.changes.len(),
        failures.join("; ")
    );
    summary.reason = message.clone();
    Err(Error::TargetGroups {
        message,
        permanent,
        summary: Box::new(summary),
    })
}

/// Names a failure's class in log lines: `permanent` failures need a fix to the account, group
/// or mapping, `transient` ones may pass on Lambda's retry.
fn failure_class(err: &ApiError) -> &'static str {
    if err.is_permanent() {
        "permanent"
    } else {
        "transient"
    }
}

fn step_name(action: Lifecycle) -> &'static str {
    match action {
        Lifecycle::Register => "RegisterTargets",
        _ => "DeregisterTargets",
    }
}

fn list_targets(targets: &[Target]) -> String {
    let listed: Vec<String> = targets.iter().map(Target::to_string).collect();
    listed.join(",")
}

/// Records a target group whose name could not be resolved as a failed change.
fn lookup_failed(
    task: &Task,
    group: TargetGroupRef,
    action: Lifecycle,
    services: Vec<String>,
    targets: Vec<Target>,
    err: &ApiError,
) -> Change {
    let class = failure_class(err);
    error!(task_arn = %task.task_arn, target_group = %group, target = %list_targets(&targets), class, error = %err, "target group lookup failed");
    Change {
        target_group: group.to_string(),
        target_group_arn: None,
        services,
        action,
        targets,
        result: ChangeResult::Failed,
        error: Some(err.message.clone()),
        permanent: err.is_permanent(),
    }
}

/// Groups placements by target group, so each group gets one call with all its targets.
fn group_placements(
    placements: &[Placement],
) -> BTreeMap<TargetGroupRef, (Vec<String>, Vec<Target>)> {
    let mut by_group: BTreeMap<TargetGroupRef, (Vec<String>, Vec<Target>)> = BTreeMap::new();
    for placement in placements {
        for group in &placement.target_groups {
            let (services, targets) = by_group.entry(group.clone()).or_default();
            if !services.contains(&placement.service) {
                services.push(placement.service.clone());
            }
            if !targets.contains(&placement.target) {
                targets.push(placement.target.clone());
            }
        }
    }
    by_group
}

/// Adds the event's address to a deregistration plan when DescribeTasks returns none (the ENI
/// can be gone from DescribeTasks once the task stopped), so the stop still removes it.
fn with_event_address(plan: Plan, event_task: &Task, services: &[&ServiceMapping]) -> Plan {
    if !plan.placements.is_empty() || event_task.ipv4().is_none() {
        return plan;
    }
    decision::plan(event_task, services, None, Lifecycle::Deregister)
}

/// Returns why an event must not be acted on here, when its account or region is not the
/// function's own. Missing fields pass: a hand-made test event often leaves them out, and
/// DescribeTasks in the function's own account and region still has the last word.
fn foreign_origin(event: &TaskEvent, env: &Environment) -> Option<String> {
    let cluster = Arn::parse(&event.task.cluster_arn);
    // An old-format task ARN has no cluster but still carries region and account.
    let task = Arn::parse(&event.task.task_arn);
    let regions = [
        event.region.as_deref(),
        cluster.map(|arn| arn.region),
        task.map(|arn| arn.region),
    ];
    if let Some(own) = env.region.as_deref() {
        if let Some(other) = regions.into_iter().flatten().find(|region| *region != own) {
            return Some(format!(
                "the event is from region {other} but the function runs in {own}"
            ));
        }
    }
    let accounts = [
        event.account.as_deref(),
        cluster.map(|arn| arn.account),
        task.map(|arn| arn.account),
    ];
    if let Some(own) = env.account.as_deref() {
        if let Some(other) = accounts
            .into_iter()
            .flatten()
            .find(|account| *account != own)
        {
            return Some(format!(
                "the event is from account {other} but the function runs in {own}"
            ));
        }
    }
    None
}

/// The subject of one health-wait execution: the task, its service and target group.
struct HealthWait<'a> {
    state_machine: &'a str,
    task_arn: &'a str,
    /// The mapping entries behind the targets, for the metric's Service dimension.
    service: String,
    target_group_arn: &'a str,
}
