//! The verify-and-repair sweep: brings every mapped target group in line with the tasks that
//! really run, for the events that were missed, and the status report.
//!
//! The sweep first reads each group's targets once (DescribeTargetHealth). It then lists each
//! cluster's running tasks (ListTasks, every page; DescribeTasks, 100 at a time) and forms the
//! targets they stand for with the same rules as the event handler. Last, it registers what is
//! missing and removes what is stale, in chunks of 100.
//!
//! It removes a target only when it can account for it. In a group declared exclusive that is
//! any target no running mapped task stands for. Elsewhere it is only a target whose address a
//! recently stopped task of a service mapping that group had, on that service's port. A cap on
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
    /// Swept services that no running task matches: often a mapping mistake.
    pub unmatched: Vec<String>,
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

    /// Returns whether any call failed, or a running task of a swept service formed no target.
    pub fn has_errors(&self) -> bool {
        !self.unplaced.is_empty() || self.groups.iter().any(|group| !group.errors.is_empty())
    }
}

/// The pure part of a sweep for one group: compares the targets that should be there with the
/// ones that are, and decides what to register, remove, hold back and keep.
///
/// `current` is the group's targets as DescribeTargetHealth reports them; draining ones are on
/// their way out already and count as absent. `attributable` is the set of stale targets the
/// sweep may remove from a shared group. At most `max_removal_percent` of the group's present
/// targets (rounded down) are removed, and at least one when a running task stands for a
/// target in the group. When no running task does, nothing is removed: an empty desired set
/// more likely means a mapping that matches nothing, or a partial listing, than a service that
/// really stopped, and a stopped service's targets were removed by its stop events.
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

    let share = present.len() * usize::from(max_removal_percent) / 100;
    let allowed = if desired.is_empty() { 0 } else { share.max(1) };
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

/// One target group in a sweep's scope, under the first name the mapping gives it.
#[derive(Debug, Default)]
struct Scope {
    label: String,
    exclusive: bool,
    current: Vec<(Target, Observation)>,
    desired: BTreeSet<Target>,
    owners: BTreeMap<Target, (String, String)>,
}

/// A sweep's view before planning: its groups by ARN, and what the scan of tasks found.
#[derive(Debug, Default)]
struct Survey {
    groups: BTreeMap<String, Scope>,
    /// Each mapping name or ARN of a group in scope, resolved.
    arns: BTreeMap<TargetGroupRef, String>,
    /// Every mapping entry that maps a group in scope, selected or not: a group's desired
    /// targets come from all of them, or a filtered sweep would take other services' live
    /// targets for stale ones.
    services: Vec<ServiceMapping>,
    running: Vec<TaskLine>,
    starting: Vec<TaskLine>,
    unplaced: Vec<decision::Unplaced>,
    unmatched: Vec<String>,
}

impl<E: Ecs, L: LoadBalancing, W: Workflows> Registrar<E, L, W> {
    /// Runs a sweep over the chosen services: plans it, then, unless it is a dry run, makes
    /// the planned changes.
    ///
    /// # Errors
    ///
    /// As [`Registrar::plan_sweep`].
    pub async fn sweep(&self, options: &SweepOptions) -> Result<SweepReport, Error> {
        let plan = self.plan_sweep(options).await?;
        if options.dry_run {
            return Ok(plan);
        }
        Ok(self.apply_sweep(plan).await)
    }

    /// Plans a sweep without changing anything. Each group is read before the tasks are
    /// listed, so a task registered in between is not taken for a stale target.
    ///
    /// # Errors
    ///
    /// An unknown service name, or a failed read (DescribeTargetGroups, DescribeTargetHealth,
    /// ListTasks, DescribeTasks), since planning on a partial listing could remove live
    /// targets.
    pub async fn plan_sweep(&self, options: &SweepOptions) -> Result<SweepReport, Error> {
        let mut survey = self.survey(&options.services).await?;
        let deadline = tokio::time::Instant::now() + options.max_wait;
        while !survey.starting.is_empty() && tokio::time::Instant::now() < deadline {
            info!(
                starting = survey.starting.len(),
                "waiting for tasks that are still starting"
            );
            tokio::time::sleep(STARTING_POLL.min(options.max_wait)).await;
            survey = self.survey(&options.services).await?;
        }
        for name in &survey.unmatched {
            warn!(service = %name, "no running task matches the service");
        }

        let needs_attribution = survey.groups.values().any(|scope| {
            !scope.exclusive
                && scope
                    .current
                    .iter()
                    .any(|(t, _)| !scope.desired.contains(t))
        });
        let attributable = if needs_attribution {
            self.stopped_targets(&survey).await?
        } else {
            BTreeMap::new()
        };

        let mut report = SweepReport {
            dry_run: true,
            running: std::mem::take(&mut survey.running),
            starting: std::mem::take(&mut survey.starting),
            unplaced: std::mem::take(&mut survey.unplaced),
            unmatched: std::mem::take(&mut survey.unmatched),
            groups: Vec::new(),
        };
        let empty = HashSet::new();
        for (arn, scope) in &survey.groups {
            let mut plan = plan_group(
                &scope.desired,
                &scope.current,
                scope.exclusive,
                attributable.get(arn).unwrap_or(&empty),
                self.config().max_removal_percent,
            );
            plan.target_group = scope.label.clone();
            plan.target_group_arn = arn.clone();
            report.groups.push(plan);
        }
        Ok(report)
    }

    /// Makes the changes of a planned sweep, exactly those, in chunks; failed calls are
    /// recorded in the report.
    pub async fn apply_sweep(&self, mut plan: SweepReport) -> SweepReport {
        plan.dry_run = false;
        for group in &mut plan.groups {
            self.apply_plan(group).await;
        }
        plan
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
            return Err(Error::Sweep(crate::event::shorten(format!(
                "unknown service {unknown:?}; the mapping has {known:?}"
            ))));
        }
        Ok(services
            .iter()
            .filter(|s| names.is_empty() || names.contains(&s.name))
            .collect())
    }

    async fn resolve_all(
        &self,
        groups: impl IntoIterator<Item = &TargetGroupRef>,
        arns: &mut BTreeMap<TargetGroupRef, String>,
    ) -> Result<(), Error> {
        for group in groups {
            if arns.contains_key(group) {
                continue;
            }
            let arn = self
                .resolve_group(group)
                .await
                .map_err(|message| Error::Sweep(format!("target group {group}: {message}")))?;
            arns.insert(group.clone(), arn);
        }
        Ok(())
    }

    /// Resolves the groups in scope, reads them, then lists and describes the running tasks
    /// of every mapping entry that maps one of them.
    async fn survey(&self, names: &[String]) -> Result<Survey, Error> {
        let selected = self.select(names)?;
        let mut survey = Survey::default();
        let mut all_arns = BTreeMap::new();
        self.resolve_all(
            selected.iter().flat_map(|s| &s.target_groups),
            &mut all_arns,
        )
        .await?;
        let in_scope: BTreeSet<String> = all_arns.values().cloned().collect();
        for service in &self.config().services {
            self.resolve_all(&service.target_groups, &mut all_arns)
                .await?;
            let maps_scope = service
                .target_groups
                .iter()
                .any(|g| all_arns.get(g).is_some_and(|arn| in_scope.contains(arn)));
            if maps_scope {
                survey.services.push(service.clone());
            }
        }
        for (group, arn) in &all_arns {
            if !in_scope.contains(arn) {
                continue;
            }
            survey.arns.insert(group.clone(), arn.clone());
            let scope = survey.groups.entry(arn.clone()).or_default();
            if scope.label.is_empty() {
                scope.label = group.to_string();
            }
            scope.exclusive |= self.config().exclusive_target_groups.contains(group);
        }
        for (arn, scope) in &mut survey.groups {
            scope.current = self
                .elb()
                .describe_target_health(arn, &[])
                .await
                .map_err(|err| {
                    Error::Sweep(format!(
                        "DescribeTargetHealth failed for {}: {err}",
                        scope.label
                    ))
                })?;
        }

        let services: Vec<ServiceMapping> = survey.services.clone();
        let scanned: Vec<&ServiceMapping> = services.iter().collect();
        let mut matched_names = BTreeSet::new();
        for cluster in clusters(&scanned) {
            let tasks = self.ecs().running_tasks(cluster).await.map_err(|err| {
                Error::Sweep(format!(
                    "listing the running tasks of cluster {cluster} failed: {err}"
                ))
            })?;
            for task in &tasks {
                self.scan_task(task, cluster, &scanned, &mut survey, &mut matched_names)
                    .await?;
            }
        }
        survey.unmatched = selected
            .iter()
            .filter(|s| !matched_names.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        Ok(survey)
    }

    async fn scan_task(
        &self,
        task: &Task,
        cluster: &str,
        services: &[&ServiceMapping],
        survey: &mut Survey,
        matched_names: &mut BTreeSet<String>,
    ) -> Result<(), Error> {
        let matched: Vec<&ServiceMapping> = services
            .iter()
            .copied()
            .filter(|s| s.cluster.as_str() == cluster && s.matches(task, None))
            .collect();
        let Some(first) = matched.first() else {
            return Ok(());
        };
        matched_names.extend(matched.iter().map(|s| s.name.clone()));
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
                        let Some(arn) = survey.arns.get(group) else {
                            continue;
                        };
                        let Some(scope) = survey.groups.get_mut(arn) else {
                            continue;
                        };
                        scope.desired.insert(placement.target.clone());
                        let owner = (placement.service.clone(), task.task_arn.clone());
                        scope.owners.insert(placement.target.clone(), owner);
                    }
                }
                survey.unplaced.extend(plan.unplaced);
                survey.running.push(line);
            }
            Lifecycle::Wait => survey.starting.push(line),
            Lifecycle::Deregister => {}
        }
        Ok(())
    }

    /// Collects, per group, the targets that recently stopped tasks of the services mapping
    /// that group had, on those services' ports: the stale targets a sweep may remove from a
    /// shared group.
    async fn stopped_targets(
        &self,
        survey: &Survey,
    ) -> Result<BTreeMap<String, HashSet<Target>>, Error> {
        let services: Vec<&ServiceMapping> = survey.services.iter().collect();
        let mut targets: BTreeMap<String, HashSet<Target>> = BTreeMap::new();
        for cluster in clusters(&services) {
            let stopped = self.ecs().stopped_tasks(cluster).await.map_err(|err| {
                Error::Sweep(format!(
                    "listing the stopped tasks of cluster {cluster} failed: {err}"
                ))
            })?;
            for task in &stopped {
                let Some(address) = task.ipv4() else {
                    continue;
                };
                let owners = services
                    .iter()
                    .filter(|s| s.cluster.as_str() == cluster && s.matches(task, None));
                for service in owners {
                    for group in &service.target_groups {
                        let Some(arn) = survey.arns.get(group) else {
                            continue;
                        };
                        targets.entry(arn.clone()).or_default().insert(Target {
                            id: address.to_owned(),
                            port: service.container_port,
                        });
                    }
                }
            }
        }
        Ok(targets)
    }

    /// Makes the planned changes of one group in chunks, recording failures in the report.
    // NOTE: unlike the event path, no DescribeTasks follows the registrations. A task that
    // stopped after the scan is registered anyway, and its stop event or the next sweep removes
    // it again.
    async fn apply_plan(&self, plan: &mut GroupReport) {
        let arn = plan.target_group_arn.clone();
        for chunk in plan.register.chunks(WRITE_CHUNK) {
            match self.elb().register_targets(&arn, chunk).await {
                Ok(()) => {
                    info!(target_group = %arn, targets = chunk.len(), "sweep registered missing targets")
                }
                Err(err) => plan.errors.push(plan_error(&arn, "RegisterTargets", &err)),
            }
        }
        for chunk in plan.deregister.chunks(WRITE_CHUNK) {
            match self.elb().deregister_targets(&arn, chunk).await {
                Ok(()) => {
                    info!(target_group = %arn, targets = chunk.len(), "sweep deregistered stale targets")
                }
                Err(err) if err.is("InvalidTarget") => {}
                Err(err) => plan
                    .errors
                    .push(plan_error(&arn, "DeregisterTargets", &err)),
            }
        }
        if !plan.held_back.is_empty() {
            warn!(target_group = %arn, held_back = plan.held_back.len(), "removal cap reached; stale targets left for a later sweep");
        }
    }
}

fn plan_error(arn: &str, step: &str, err: &ApiError) -> String {
    error!(target_group = %arn, error = %err, "sweep {step} failed");
    format!("{step} failed: {err}")
}

fn clusters<'a>(services: &[&'a ServiceMapping]) -> Vec<&'a str> {
    let mut clusters: Vec<&str> = services.iter().map(|s| s.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters
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
    /// Mapping entries that matched a running task but formed no target, with the reason.
    pub unplaced: Vec<decision::Unplaced>,
    /// Whether every running task has its targets, all registered and healthy.
    pub ok: bool,
}

impl<E: Ecs, L: LoadBalancing, W: Workflows> Registrar<E, L, W> {
    /// Reports, per target group of the chosen services, which running task stands for which
    /// target and the health ELB reports for it, without changing anything.
    ///
    /// # Errors
    ///
    /// An unknown service name, or a failed ListTasks, DescribeTasks or DescribeTargetHealth.
    pub async fn status(&self, names: &[String]) -> Result<StatusReport, Error> {
        let survey = self.survey(names).await?;
        let mut report = StatusReport {
            starting: survey.starting,
            unplaced: survey.unplaced,
            ..StatusReport::default()
        };
        for scope in survey.groups.values() {
            for target in &scope.desired {
                let owner = scope.owners.get(target);
                let health = scope.current.iter().find(|(seen, _)| seen == target);
                let (state, reason) = match health {
                    Some((_, health)) => (health.state.clone(), describe(health)),
                    None => ("missing".to_owned(), Some("not registered".to_owned())),
                };
                report.targets.push(StatusLine {
                    service: owner.map(|(service, _)| service.clone()),
                    task_arn: owner.map(|(_, task)| task.clone()),
                    target_group: scope.label.clone(),
                    target: target.clone(),
                    ok: state == "healthy",
                    state,
                    reason,
                });
            }
            let others = scope
                .current
                .iter()
                .filter(|(t, _)| !scope.desired.contains(t));
            for (target, health) in others {
                report.targets.push(StatusLine {
                    service: None,
                    task_arn: None,
                    target_group: scope.label.clone(),
                    target: target.clone(),
                    state: health.state.clone(),
                    reason: Some("no running mapped task has this target".to_owned()),
                    ok: true,
                });
            }
        }
        report.ok = report.targets.iter().all(|line| line.ok) && report.unplaced.is_empty();
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
        let live = BTreeSet::from([target("10.0.1.1", 80)]);
        let plan = plan_group(&live, &current, false, &attributable, 100);
        assert_eq!(plan.deregister, [target("10.0.0.7", 80)]);
        assert_eq!(plan.kept, [target("10.9.9.9", 80)]);
    }

    #[test]
    fn exclusive_group_removes_unknown_targets() {
        let desired = BTreeSet::from([target("10.0.0.1", 80)]);
        let current = [seen(target("10.9.9.9", 80), "healthy")];
        let plan = plan_group(&desired, &current, true, &HashSet::new(), 100);
        assert_eq!(plan.deregister, [target("10.9.9.9", 80)]);
        assert_eq!(plan.register, [target("10.0.0.1", 80)]);
    }

    #[test]
    fn group_without_running_tasks_is_never_emptied() {
        let current = [seen(target("10.9.9.9", 80), "healthy")];
        let plan = plan_group(&BTreeSet::new(), &current, true, &HashSet::new(), 100);
        assert!(plan.deregister.is_empty());
        assert_eq!(plan.held_back, [target("10.9.9.9", 80)]);
    }

    #[test]
    fn removal_cap_holds_back_the_rest() {
        let live = BTreeSet::from([target("10.0.1.1", 80)]);
        let current: Vec<_> = (1..=4)
            .map(|i| seen(target(&format!("10.0.0.{i}"), 80), "healthy"))
            .collect();
        let plan = plan_group(&live, &current, true, &HashSet::new(), 50);
        assert_eq!(plan.deregister.len(), 2);
        assert_eq!(plan.held_back.len(), 2);
        let low = plan_group(&live, &current, true, &HashSet::new(), 1);
        assert_eq!(
            low.deregister.len(),
            1,
            "one while a live task replaces them"
        );
        let one = [seen(target("10.0.0.1", 80), "healthy")];
        let single = plan_group(&live, &one, true, &HashSet::new(), 50);
        assert_eq!(single.deregister.len(), 1);
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
