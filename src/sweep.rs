//! The verify-and-repair sweep: brings every mapped target group in line with the tasks that
//! really run, for the events that were missed, and the status report.
//!
//! The sweep lists each cluster's running tasks (ListTasks, every page; DescribeTasks, 100 at a
//! time), forms the targets they stand for with the same rules as the event handler, reads each
//! group's targets once (DescribeTargetHealth), then registers what is missing and removes what
//! is stale, in chunks. It removes a target only when it can account for it: in a group declared
//! exclusive, any target no running mapped task stands for; elsewhere only a target whose
//! address a recently stopped task of a mapped service had, on that service's port. A cap on
//! removals per group holds back the rest.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::aws::{ApiError, Ecs, LoadBalancing, Workflows};
use crate::config::{ServiceMapping, TargetGroupRef};
use crate::decision::{self, Lifecycle, Target};
use crate::error::Error;
use crate::health::Observation;
use crate::registrar::Registrar;
use crate::task::Task;

/// Targets per RegisterTargets or DeregisterTargets call.
pub const WRITE_CHUNK: usize = 100;
/// Seconds between two looks at tasks that are still starting, when the sweep waits for them.
pub const STARTING_POLL: Duration = Duration::from_secs(5);

/// The scope of a sweep and whether it changes anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOptions {
    /// Mapping entries to sweep by name; empty means all.
    pub services: Vec<String>,
    /// Report the plan and change nothing.
    pub dry_run: bool,
    /// How long to wait for tasks that are still starting; zero reports them and moves on.
    pub max_wait: Duration,
}

/// One task the sweep looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLine {
    /// The mapping entry it matched.
    pub service: String,
    /// The task.
    pub task_arn: String,
    /// ECS's lastStatus.
    pub last_status: String,
    /// Its address, once it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The sweep's changes, made or planned, in one target group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReport {
    /// The group as the mapping names it.
    pub target_group: String,
    /// Its ARN, once resolved.
    pub target_group_arn: String,
    /// Whether the mapping declares it exclusively managed.
    pub exclusive: bool,
    /// Targets already in place.
    pub in_place: Vec<Target>,
    /// Targets registered (or, in a dry run, to be registered).
    pub register: Vec<Target>,
    /// Stale targets removed (or to be removed).
    pub deregister: Vec<Target>,
    /// Stale targets over the removal cap, left for a later sweep.
    pub held_back: Vec<Target>,
    /// Targets no mapped task accounts for, kept because the group is shared.
    pub kept: Vec<Target>,
    /// Failed calls, with their cause.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Everything one sweep saw, decided and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Running tasks of the swept services.
    pub running: Vec<TaskLine>,
    /// Tasks still starting when the sweep planned (not registered yet).
    pub starting: Vec<TaskLine>,
    /// Mapping entries that matched a task but formed no target, with the reason.
    pub unplaced: Vec<decision::Unplaced>,
    /// One report per target group.
    pub groups: Vec<GroupReport>,
}

impl SweepReport {
    /// Counts the targets the sweep registered and deregistered, or would in a dry run.
    pub fn changes(&self) -> usize {
        self.groups
            .iter()
            .map(|group| group.register.len() + group.deregister.len())
            .sum()
    }

    /// Returns whether any call failed.
    pub fn has_errors(&self) -> bool {
        self.groups.iter().any(|group| !group.errors.is_empty())
    }
}

/// The pure part of a sweep for one group: compares the targets that should be there with the
/// ones that are, and decides what to register, remove, hold back and keep.
///
/// `current` holds the group's targets as DescribeTargetHealth reports them; draining ones are
/// on their way out already and count as absent. `attributable` holds the stale targets the
/// sweep may remove in a shared group. At most `max_removal_percent` of the group's present
/// targets (rounded up) are removed.
pub fn plan_group(
    desired: &BTreeSet<Target>,
    current: &[(Target, Observation)],
    exclusive: bool,
    attributable: &HashSet<Target>,
    max_removal_percent: u8,
) -> GroupReport {
    let present: BTreeSet<Target> = current
        .iter()
        .filter(|(_, health)| health.state != "draining")
        .map(|(target, _)| target.clone())
        .collect();
    let mut report = GroupReport {
        exclusive,
        in_place: desired.intersection(&present).cloned().collect(),
        register: desired.difference(&present).cloned().collect(),
        ..GroupReport::default()
    };

    let allowed = (present.len() * usize::from(max_removal_percent)).div_ceil(100);
    for stale in present.difference(desired) {
        if !exclusive && !attributable.contains(stale) {
            report.kept.push(stale.clone());
        } else if report.deregister.len() < allowed {
            report.deregister.push(stale.clone());
        } else {
            report.held_back.push(stale.clone());
        }
    }
    report
}

impl<E: Ecs, L: LoadBalancing, W: Workflows> Registrar<E, L, W> {
    /// Runs a sweep over the chosen services.
    ///
    /// # Errors
    ///
    /// An unknown service name, or a failed read (ListTasks, DescribeTasks,
    /// DescribeTargetHealth), since planning on a partial answer could remove live targets.
    /// Failed writes do not stop the sweep: they are reported per group.
    pub async fn sweep(&self, options: &SweepOptions) -> Result<SweepReport, Error> {
        let services = self.select(&options.services)?;
        let mut seen = self.scan(&services).await?;
        let deadline = tokio::time::Instant::now() + options.max_wait;
        while !seen.starting.is_empty() && tokio::time::Instant::now() < deadline {
            info!(
                starting = seen.starting.len(),
                "waiting for tasks that are still starting"
            );
            tokio::time::sleep(STARTING_POLL.min(options.max_wait)).await;
            seen = self.scan(&services).await?;
        }

        let mut report = SweepReport {
            dry_run: options.dry_run,
            running: seen.running,
            starting: seen.starting,
            unplaced: seen.unplaced,
            groups: Vec::new(),
        };
        let mut attributable: Option<HashSet<Target>> = None;
        for (group, desired) in &seen.desired {
            let exclusive = self.config().exclusive_target_groups.contains(group);
            let arn = self
                .resolve_group(group)
                .await
                .map_err(|message| Error::Sweep(format!("target group {group}: {message}")))?;
            let current = self
                .elb()
                .describe_target_health(&arn, &[])
                .await
                .map_err(|err| {
                    Error::Sweep(format!("DescribeTargetHealth failed for {group}: {err}"))
                })?;

            let needs_attribution =
                !exclusive && current.iter().any(|(target, _)| !desired.contains(target));
            if needs_attribution && attributable.is_none() {
                attributable = Some(self.stopped_targets(&services).await?);
            }
            let empty = HashSet::new();
            let mut plan = plan_group(
                desired,
                &current,
                exclusive,
                attributable.as_ref().unwrap_or(&empty),
                self.config().max_removal_percent,
            );
            plan.target_group = group.to_string();
            plan.target_group_arn = arn;
            if !options.dry_run {
                self.apply_plan(&mut plan).await;
            }
            report.groups.push(plan);
        }
        Ok(report)
    }

    fn select(&self, names: &[String]) -> Result<Vec<&ServiceMapping>, Error> {
        let services = &self.config().services;
        let unknown: Vec<&str> = names
            .iter()
            .filter(|name| !services.iter().any(|s| &s.name == *name))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Sweep(format!(
                "unknown service {unknown:?}; the mapping has {known:?}"
            )));
        }
        Ok(services
            .iter()
            .filter(|s| names.is_empty() || names.contains(&s.name))
            .collect())
    }

    /// Lists and describes the running tasks of the services' clusters and forms the targets
    /// every group should hold.
    async fn scan(&self, services: &[&ServiceMapping]) -> Result<Scan, Error> {
        let mut scan = Scan::default();
        for service in services {
            for group in &service.target_groups {
                scan.desired.entry(group.clone()).or_default();
            }
        }
        for cluster in clusters(services) {
            let tasks = self.ecs().running_tasks(cluster).await.map_err(|err| {
                Error::Sweep(format!(
                    "listing the running tasks of cluster {cluster} failed: {err}"
                ))
            })?;
            for task in &tasks {
                self.scan_task(task, cluster, services, &mut scan).await?;
            }
        }
        Ok(scan)
    }

    async fn scan_task(
        &self,
        task: &Task,
        cluster: &str,
        services: &[&ServiceMapping],
        scan: &mut Scan,
    ) -> Result<(), Error> {
        let matched: Vec<&ServiceMapping> = services
            .iter()
            .copied()
            .filter(|s| s.cluster.as_str() == cluster && s.matches(task, None))
            .collect();
        let Some(first) = matched.first() else {
            return Ok(());
        };
        let line = TaskLine {
            service: first.name.clone(),
            task_arn: task.task_arn.clone(),
            last_status: task.last_status.clone(),
            address: task.ipv4().map(str::to_owned),
        };
        match decision::lifecycle(&task.last_status, &task.desired_status) {
            Lifecycle::Register => {
                let plan = self.plan_targets(task, cluster, &matched).await?;
                for placement in plan.placements {
                    for group in &placement.target_groups {
                        let desired = scan.desired.entry(group.clone()).or_default();
                        desired.insert(placement.target.clone());
                        let owner = (placement.service.clone(), task.task_arn.clone());
                        scan.owners
                            .insert((group.clone(), placement.target.clone()), owner);
                    }
                }
                scan.unplaced.extend(plan.unplaced);
                scan.running.push(line);
            }
            Lifecycle::Wait => scan.starting.push(line),
            Lifecycle::Deregister => {}
        }
        Ok(())
    }

    /// Collects the targets that recently stopped tasks of the services had, on their own
    /// ports: the stale targets a sweep may remove from a shared group.
    async fn stopped_targets(
        &self,
        services: &[&ServiceMapping],
    ) -> Result<HashSet<Target>, Error> {
        let mut targets = HashSet::new();
        for cluster in clusters(services) {
            let stopped = self.ecs().stopped_tasks(cluster).await.map_err(|err| {
                Error::Sweep(format!(
                    "listing the stopped tasks of cluster {cluster} failed: {err}"
                ))
            })?;
            for task in &stopped {
                let Some(address) = task.ipv4() else { continue };
                for service in services
                    .iter()
                    .filter(|s| s.cluster.as_str() == cluster && s.matches(task, None))
                {
                    targets.insert(Target {
                        id: address.to_owned(),
                        port: service.container_port,
                    });
                }
            }
        }
        Ok(targets)
    }

    /// Makes the planned changes in chunks, recording failures in the report.
    async fn apply_plan(&self, plan: &mut GroupReport) {
        let arn = plan.target_group_arn.clone();
        for chunk in plan.register.chunks(WRITE_CHUNK) {
            match self.elb().register_targets(&arn, chunk).await {
                Ok(()) => {
                    info!(target_group = %arn, targets = chunk.len(), "sweep registered missing targets")
                }
                Err(err) => record(plan_errors(&arn, "RegisterTargets", &err), &mut plan.errors),
            }
        }
        for chunk in plan.deregister.chunks(WRITE_CHUNK) {
            match self.elb().deregister_targets(&arn, chunk).await {
                Ok(()) => {
                    info!(target_group = %arn, targets = chunk.len(), "sweep deregistered stale targets")
                }
                Err(err) if err.is("InvalidTarget") => {}
                Err(err) => record(
                    plan_errors(&arn, "DeregisterTargets", &err),
                    &mut plan.errors,
                ),
            }
        }
        if !plan.held_back.is_empty() {
            warn!(target_group = %arn, held_back = plan.held_back.len(), "removal cap reached; stale targets left for a later sweep");
        }
    }
}

fn plan_errors(arn: &str, step: &str, err: &ApiError) -> String {
    error!(target_group = %arn, error = %err, "sweep {step} failed");
    format!("{step} failed: {err}")
}

fn record(message: String, errors: &mut Vec<String>) {
    errors.push(message);
}

fn clusters<'a>(services: &[&'a ServiceMapping]) -> Vec<&'a str> {
    let mut clusters: Vec<&str> = services.iter().map(|s| s.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters
}

/// The result of one look at the clusters.
#[derive(Debug, Default)]
struct Scan {
    running: Vec<TaskLine>,
    starting: Vec<TaskLine>,
    unplaced: Vec<decision::Unplaced>,
    desired: BTreeMap<TargetGroupRef, BTreeSet<Target>>,
    /// The mapping entry and task behind each desired target of each group.
    owners: BTreeMap<(TargetGroupRef, Target), (String, String)>,
}

/// One line of the status report: a target a running task stands for, or a target in a group
/// that no running task accounts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusLine {
    /// The mapping entry, when a task accounts for the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The task, when one accounts for the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// The target group as the mapping names it.
    pub target_group: String,
    /// The target.
    pub target: Target,
    /// ELB's state, or `missing` when a running task's target is not registered.
    pub state: String,
    /// ELB's reason code and description, or why the line is listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the line is in order: a registered, healthy target of a running task.
    pub ok: bool,
}

/// The status of the chosen services: every target group's targets, with their tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// One line per target.
    pub targets: Vec<StatusLine>,
    /// Tasks still starting, not expected in a group yet.
    pub starting: Vec<TaskLine>,
    /// Whether every running task's target is registered and healthy.
    pub ok: bool,
}

impl<E: Ecs, L: LoadBalancing, W: Workflows> Registrar<E, L, W> {
    /// Reports, per target group of the chosen services, which running task stands for which
    /// target and what ELB says of it, without changing anything.
    ///
    /// # Errors
    ///
    /// An unknown service name, or a failed ListTasks, DescribeTasks or DescribeTargetHealth.
    pub async fn status(&self, names: &[String]) -> Result<StatusReport, Error> {
        let services = self.select(names)?;
        let scan = self.scan(&services).await?;
        let mut report = StatusReport {
            starting: scan.starting,
            ..StatusReport::default()
        };
        for (group, desired) in &scan.desired {
            let arn = self
                .resolve_group(group)
                .await
                .map_err(|message| Error::Sweep(format!("target group {group}: {message}")))?;
            let current = self
                .elb()
                .describe_target_health(&arn, &[])
                .await
                .map_err(|err| {
                    Error::Sweep(format!("DescribeTargetHealth failed for {group}: {err}"))
                })?;
            for target in desired {
                let owner = scan.owners.get(&(group.clone(), target.clone()));
                let health = current
                    .iter()
                    .find(|(seen, _)| seen == target)
                    .map(|(_, h)| h);
                let (state, reason) = match health {
                    Some(health) => (health.state.clone(), describe(health)),
                    None => ("missing".to_owned(), Some("not registered".to_owned())),
                };
                report.targets.push(StatusLine {
                    service: owner.map(|(service, _)| service.clone()),
                    task_arn: owner.map(|(_, task)| task.clone()),
                    target_group: group.to_string(),
                    target: target.clone(),
                    ok: state == "healthy",
                    state,
                    reason,
                });
            }
            for (target, health) in current.iter().filter(|(t, _)| !desired.contains(t)) {
                report.targets.push(StatusLine {
                    service: None,
                    task_arn: None,
                    target_group: group.to_string(),
                    target: target.clone(),
                    state: health.state.clone(),
                    reason: Some("no running mapped task has this target".to_owned()),
                    ok: true,
                });
            }
        }
        report.ok = report.targets.iter().all(|line| line.ok);
        Ok(report)
    }
}

fn describe(health: &Observation) -> Option<String> {
    match (&health.reason, &health.description) {
        (Some(reason), Some(description)) => Some(format!("{reason}: {description}")),
        (Some(reason), None) => Some(reason.clone()),
        (None, Some(description)) => Some(description.clone()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, port: u16) -> Target {
        Target {
            id: id.into(),
            port,
        }
    }

    fn seen(target: Target, state: &str) -> (Target, Observation) {
        (
            target,
            Observation {
                state: state.into(),
                ..Observation::default()
            },
        )
    }

    #[test]
    fn missing_targets_are_registered_and_present_ones_kept() {
        let desired = BTreeSet::from([target("10.0.0.1", 80), target("10.0.0.2", 80)]);
        let current = [seen(target("10.0.0.1", 80), "healthy")];
        let plan = plan_group(&desired, &current, false, &HashSet::new(), 50);
        assert_eq!(plan.register, [target("10.0.0.2", 80)]);
        assert_eq!(plan.in_place, [target("10.0.0.1", 80)]);
        assert!(plan.deregister.is_empty());
    }

    #[test]
    fn shared_group_removes_only_attributable_targets() {
        let current = [
            seen(target("10.0.0.7", 80), "healthy"),
            seen(target("10.9.9.9", 80), "healthy"),
        ];
        let attributable = HashSet::from([target("10.0.0.7", 80)]);
        let plan = plan_group(&BTreeSet::new(), &current, false, &attributable, 100);
        assert_eq!(plan.deregister, [target("10.0.0.7", 80)]);
        assert_eq!(plan.kept, [target("10.9.9.9", 80)]);
    }

    #[test]
    fn exclusive_group_removes_unknown_targets() {
        let current = [seen(target("10.9.9.9", 80), "healthy")];
        let plan = plan_group(&BTreeSet::new(), &current, true, &HashSet::new(), 100);
        assert_eq!(plan.deregister, [target("10.9.9.9", 80)]);
    }

    #[test]
    fn removal_cap_holds_back_the_rest() {
        let current: Vec<_> = (1..=4)
            .map(|i| seen(target(&format!("10.0.0.{i}"), 80), "healthy"))
            .collect();
        let plan = plan_group(&BTreeSet::new(), &current, true, &HashSet::new(), 50);
        assert_eq!(plan.deregister.len(), 2);
        assert_eq!(plan.held_back.len(), 2);
        let one = [seen(target("10.0.0.1", 80), "healthy")];
        assert_eq!(
            plan_group(&BTreeSet::new(), &one, true, &HashSet::new(), 50)
                .deregister
                .len(),
            1
        );
    }

    #[test]
    fn draining_targets_count_as_absent() {
        let desired = BTreeSet::from([target("10.0.0.1", 80)]);
        let current = [
            seen(target("10.0.0.1", 80), "draining"),
            seen(target("10.0.0.2", 80), "draining"),
        ];
        let plan = plan_group(&desired, &current, true, &HashSet::new(), 100);
        assert_eq!(plan.register, [target("10.0.0.1", 80)]);
        assert!(plan.deregister.is_empty());
    }
}
