//! A stateful model of ECS, ELBv2 and Step Functions behind the registrar's `Ecs`,
//! `LoadBalancing` and `Workflows` traits.
//!
//! ECS holds a few task slots that move through the task lifecycle, take addresses from a
//! small pool (so a later task can get a stopped task's address) and emit one Task State
//! Change event per change. ELBv2 holds the target groups, and for each target the tasks it
//! belongs to, so a test can tell a live target from a left-over one.
//!
//! Every call first waits for a grant from the scheduler, so the test decides which pending
//! call goes next. A granted call takes effect in one step, the next time its invocation is
//! polled, and before ECS changes again.
//!
//! The fake also checks one invariant itself, at each DeregisterTargets of an event
//! invocation: the registrar never removes the target of a task that held that address
//! (desiredStatus RUNNING) when the invocation last read ECS about other tasks. A removal of a running task's target that the
//! registrar could not have known about (the address changed hands after its last read) is
//! recorded in [`World::stale_removals`] instead, because no ELBv2 call can make a removal
//! conditional on who holds the address.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use ecs_target_registrar::aws::{ApiError, Ecs, LoadBalancing, Started, TaskLookup, Workflows};
use ecs_target_registrar::decision::Target;
use ecs_target_registrar::health::Observation;
use ecs_target_registrar::task::{Container, Task, task_id};
use serde_json::{Value, json};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
pub const CLUSTER: &str = "web";
pub const CLUSTER_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/web";
/// Mapped only by the `web` service, by ARN.
pub const TG_WEB: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
/// Mapped by `web` under its name and by `api` under its ARN, on different ports.
pub const TG_SHARED_NAME: &str = "shared";
pub const TG_SHARED: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shared/fedcba9876543210";
pub const STATE_MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:health-wait";
pub const WEB_PORT: u16 = 8080;
pub const API_PORT: u16 = 9090;
/// The subnet's free addresses. Fewer addresses than task slots, so addresses are reused.
pub const ADDRESSES: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
/// The invocation id the sweep's calls run under.
pub const SWEEP: usize = usize::MAX;

thread_local! {
    /// The invocation whose future is being polled; calls record it when they are made.
    pub static CURRENT: Cell<usize> = const { Cell::new(SWEEP) };
}

/// The task definition family of a slot, and so the service mapping entry it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Web,
    Api,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Web => "web",
            Family::Api => "api",
        }
    }

    /// Returns the targets of a task of this family at `address`, per target group ARN.
    pub fn targets(self, address: &str) -> Vec<(&'static str, Target)> {
        let target = |port| Target {
            id: address.to_owned(),
            port,
        };
        match self {
            Family::Web => vec![(TG_WEB, target(WEB_PORT)), (TG_SHARED, target(WEB_PORT))],
            Family::Api => vec![(TG_SHARED, target(API_PORT))],
        }
    }

    fn stands_for(self, address: &str, group: &str, target: &Target) -> bool {
        self.targets(address)
            .iter()
            .any(|(g, t)| *g == group && t == target)
    }
}

/// One task as ECS holds it.
#[derive(Debug, Clone)]
pub struct EcsTask {
    pub family: Family,
    pub last_status: &'static str,
    pub desired_status: &'static str,
    pub version: i64,
    pub address: Option<&'static str>,
    /// False once ECS no longer describes the task (about an hour after it stopped).
    pub described: bool,
}

impl EcsTask {
    pub fn is_running(&self) -> bool {
        self.last_status == "RUNNING" && self.desired_status == "RUNNING"
    }

    /// Whether the task's network interface still holds its address.
    fn holds_address(&self) -> bool {
        self.address.is_some() && !matches!(self.last_status, "DEPROVISIONING" | "STOPPED")
    }

    /// Returns the address of a task that is meant to run and has one. From PENDING on, the
    /// registrar's check for reused addresses finds such a task.
    fn claimed_address(&self) -> Option<&'static str> {
        let claims = self.described && self.desired_status == "RUNNING" && self.holds_address();
        self.address.filter(|_| claims)
    }

    fn can_advance(&self) -> bool {
        self.described && self.last_status != "STOPPED"
    }
}

/// A call waiting for its grant.
#[derive(Debug, Clone)]
pub struct PendingCall {
    pub id: u64,
    pub invocation: usize,
    pub operation: &'static str,
}

/// The whole model: ECS, ELBv2 and the scheduler of calls.
#[derive(Debug, Default)]
pub struct World {
    pub tasks: Vec<Option<EcsTask>>,
    /// Target group ARN to its targets, each with the task slots it belongs to: the tasks it
    /// was registered for, and the tasks that held its address and had it as their target
    /// while it was registered. Such a task's stop removes the target.
    pub groups: BTreeMap<&'static str, BTreeMap<Target, BTreeSet<usize>>>,
    /// Every event ECS emitted, in order, with the slot it is about.
    pub events: Vec<(usize, Value)>,
    /// The task slot each invocation handles an event of.
    pub invocation_task: BTreeMap<usize, usize>,
    /// When false, calls proceed without waiting (the closing sweep).
    pub gated: bool,
    /// Targets of tasks holding their address that a stale decision removed: the removing
    /// invocation last read ECS before the address changed hands. Registering them again
    /// clears them.
    pub stale_removals: BTreeSet<(&'static str, Target)>,
    /// Broken invariants the fake saw itself.
    pub violations: Vec<String>,
    /// Lines for the history's trace, taken by the test after each step.
    pub notes: Vec<String>,
    /// Counts of rare situations, so that the test can report what the histories reached.
    pub counts: BTreeMap<&'static str, u64>,
    /// Per invocation, the address each task meant to run held at its last ECS read that
    /// could tell it about other tasks (DescribeTasks of its own task, or ListTasks).
    last_read: BTreeMap<usize, BTreeMap<&'static str, usize>>,
    pending: Vec<PendingCall>,
    granted: BTreeMap<u64, bool>,
    next_call: u64,
}

impl World {
    pub fn new(slots: usize) -> Self {
        let mut groups = BTreeMap::new();
        groups.insert(TG_WEB, BTreeMap::new());
        groups.insert(TG_SHARED, BTreeMap::new());
        World {
            tasks: vec![None; slots],
            groups,
            gated: true,
            ..World::default()
        }
    }

    pub fn pending(&self) -> &[PendingCall] {
        &self.pending
    }

    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    /// Lets one pending call proceed; with `fail` it returns a throttling error instead.
    pub fn grant(&mut self, index: usize, fail: bool) -> PendingCall {
        let call = self.pending.remove(index);
        self.granted.insert(call.id, fail);
        call
    }

    /// Starts a task of `family` in the first free slot (PROVISIONING, no address yet).
    pub fn start(&mut self, family: Family) -> Option<usize> {
        let slot = self.tasks.iter().position(Option::is_none)?;
        self.tasks[slot] = Some(EcsTask {
            family,
            last_status: "PROVISIONING",
            desired_status: "RUNNING",
            version: 1,
            address: None,
            described: true,
        });
        self.emit(slot);
        Some(slot)
    }

    /// Picks, by `pick` modulo their number, one of the tasks that `filter` accepts.
    pub fn pick_task(&self, pick: usize, filter: impl Fn(&EcsTask) -> bool) -> Option<usize> {
        let slots: Vec<usize> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, task)| task.as_ref().is_some_and(&filter))
            .map(|(slot, _)| slot)
            .collect();
        (!slots.is_empty()).then(|| slots[pick % slots.len()])
    }

    /// Moves one of the tasks that are not STOPPED yet one lifecycle step on. A starting task
    /// takes the lowest free address when it reaches PENDING, and stays when there is none. A
    /// stopping task gives its address back to the subnet at DEPROVISIONING.
    pub fn advance(&mut self, pick: usize) -> Option<usize> {
        let slot = self.pick_task(pick, EcsTask::can_advance)?;
        let task = self.tasks[slot].clone()?;
        let stopping = task.desired_status == "STOPPED";
        let (next, address) = match (task.last_status, stopping) {
            ("PROVISIONING", false) => ("PENDING", Some(self.free_address()?)),
            ("PENDING", false) => ("RUNNING", task.address),
            ("PROVISIONING" | "PENDING" | "RUNNING", true) => ("STOPPING", task.address),
            ("STOPPING", _) => ("DEPROVISIONING", task.address),
            ("DEPROVISIONING", _) => ("STOPPED", task.address),
            _ => return None,
        };
        if let Some(task) = self.tasks[slot].as_mut() {
            task.last_status = next;
            task.address = address;
            task.version += 1;
        }
        if task.address.is_none() {
            if let Some(address) = address {
                self.adopt_targets(slot, task.family, address);
            }
        }
        self.emit(slot);
        Some(slot)
    }

    /// Makes a task that took `address` an owner of the registered targets that are its own
    /// targets: a stopped task's target at a reused address is the new task's target as well.
    fn adopt_targets(&mut self, slot: usize, family: Family, address: &str) {
        for (group, target) in family.targets(address) {
            if let Some(owners) = self.groups.get_mut(group).and_then(|g| g.get_mut(&target)) {
                owners.insert(slot);
                self.count("address reused while its target was registered");
            }
        }
    }

    /// Asks ECS to stop one of the tasks meant to run: desiredStatus becomes STOPPED before
    /// anything else changes.
    pub fn stop(&mut self, pick: usize) -> Option<usize> {
        let slot = self.pick_task(pick, |t| t.described && t.desired_status == "RUNNING")?;
        let task = self.tasks[slot].as_mut()?;
        task.desired_status = "STOPPED";
        task.version += 1;
        self.emit(slot);
        Some(slot)
    }

    /// Makes ECS forget one of the stopped tasks, as it does about an hour after the stop.
    pub fn forget(&mut self, pick: usize) -> Option<usize> {
        let slot = self.pick_task(pick, |t| t.described && t.last_status == "STOPPED")?;
        self.tasks[slot].as_mut()?.described = false;
        Some(slot)
    }

    fn free_address(&self) -> Option<&'static str> {
        ADDRESSES.iter().copied().find(|address| {
            !self
                .tasks
                .iter()
                .flatten()
                .any(|task| task.holds_address() && task.address == Some(address))
        })
    }

    fn emit(&mut self, slot: usize) {
        let Some(task) = &self.tasks[slot] else {
            return;
        };
        let event = event_json(slot, task);
        self.events.push((slot, event));
    }

    /// Returns the task slots that ECS reports RUNNING (lastStatus and desiredStatus).
    pub fn running(&self) -> impl Iterator<Item = (usize, &EcsTask)> {
        self.tasks
            .iter()
            .enumerate()
            .filter_map(|(slot, task)| Some((slot, task.as_ref()?)))
            .filter(|(_, task)| task.described && task.is_running())
    }

    /// Returns the targets of the running tasks, per target group.
    pub fn desired(&self) -> BTreeMap<&'static str, BTreeSet<Target>> {
        let mut desired: BTreeMap<&'static str, BTreeSet<Target>> = self
            .groups
            .keys()
            .map(|group| (*group, BTreeSet::new()))
            .collect();
        for (_, task) in self.running() {
            let Some(address) = task.address else {
                continue;
            };
            for (group, target) in task.family.targets(address) {
                desired.entry(group).or_default().insert(target);
            }
        }
        desired
    }

    /// Returns the tasks meant to run that hold the address of `target` and have it as their
    /// target in `group`.
    fn claimants(&self, group: &str, target: &Target) -> Vec<usize> {
        self.tasks
            .iter()
            .enumerate()
            .filter_map(|(slot, task)| Some((slot, task.as_ref()?)))
            .filter(|(_, task)| task.claimed_address() == Some(target.id.as_str()))
            .filter(|(_, task)| task.family.stands_for(&target.id, group, target))
            .map(|(slot, _)| slot)
            .collect()
    }

    /// Returns whether a task other than `except` claims `target` in `group` (see
    /// [`Self::claimants`]).
    pub fn claimed(&self, group: &str, target: &Target, except: Option<usize>) -> bool {
        self.claimants(group, target)
            .into_iter()
            .any(|slot| Some(slot) != except)
    }

    /// Returns the targets a sweep can attribute to a stopped task: a described stopped task's
    /// address on its service's port, in its service's groups.
    pub fn attributable(&self) -> BTreeSet<(&'static str, Target)> {
        self.tasks
            .iter()
            .flatten()
            .filter(|task| task.described && task.desired_status == "STOPPED")
            .filter_map(|task| Some(task.family.targets(task.address?)))
            .flatten()
            .collect()
    }

    /// Returns the targets registered now, per target group.
    pub fn registered(&self) -> BTreeMap<&'static str, BTreeSet<Target>> {
        self.groups
            .iter()
            .map(|(group, targets)| (*group, targets.keys().cloned().collect()))
            .collect()
    }

    fn enqueue(&mut self, operation: &'static str) -> u64 {
        let id = self.next_call;
        self.next_call += 1;
        self.pending.push(PendingCall {
            id,
            invocation: CURRENT.with(Cell::get),
            operation,
        });
        id
    }

    /// Records which task held which address at this read of the current invocation.
    fn record_read(&mut self) {
        let holders = self
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(slot, task)| Some((task.as_ref()?.claimed_address()?, slot)))
            .collect();
        self.last_read.insert(CURRENT.with(Cell::get), holders);
    }

    fn describe(&self, slot: usize) -> Option<Task> {
        let task = self.tasks.get(slot)?.as_ref()?;
        task.described.then(|| task_struct(slot, task))
    }

    fn list(&self, desired_status: &str) -> Vec<usize> {
        self.tasks
            .iter()
            .enumerate()
            .filter_map(|(slot, task)| Some((slot, task.as_ref()?)))
            .filter(|(_, task)| task.described && task.desired_status == desired_status)
            .map(|(slot, _)| slot)
            .collect()
    }

    /// Returns the slot a registration is made for: the handled event's task, or for the
    /// sweep the running task at that address.
    fn owner(&self, target: &Target) -> Option<usize> {
        let invocation = CURRENT.with(Cell::get);
        if let Some(slot) = self.invocation_task.get(&invocation) {
            return Some(*slot);
        }
        self.running()
            .find(|(_, task)| task.address == Some(target.id.as_str()))
            .map(|(slot, _)| slot)
    }

    /// Checks a removal against what the invocation last read from ECS, as the module docs
    /// describe, before the target goes.
    /// The sweep is not checked here: it plans against running tasks only, so it may remove a
    /// target whose address a starting task holds, and the test checks its result instead.
    fn check_removal(&mut self, group: &'static str, target: &Target) {
        let invocation = CURRENT.with(Cell::get);
        let Some(own) = self.invocation_task.get(&invocation).copied() else {
            return;
        };
        let own = Some(own);
        let holder = self
            .last_read
            .get(&invocation)
            .and_then(|read| read.get(target.id.as_str()))
            .copied()
            .filter(|slot| Some(*slot) != own);
        let stands_for = holder
            .and_then(|slot| self.tasks[slot].as_ref())
            .is_some_and(|task| task.family.stands_for(&target.id, group, target));
        if stands_for {
            self.violations.push(format!(
                "invocation #{invocation} removed {target} from {group}, the target of task {} \
                 that held the address when the invocation last read ECS",
                holder.map_or(0, |slot| slot)
            ));
        } else if self.claimed(group, target, own) {
            self.count("stale removal of a reused address");
            self.notes.push(format!(
                "#{invocation} removed {target} from {group} on a read made before another \
                 task took the address"
            ));
            self.stale_removals.insert((group, target.clone()));
        }
    }
}

pub fn task_arn(slot: usize) -> String {
    format!(
        "arn:aws:ecs:{REGION}:{ACCOUNT}:task/{CLUSTER}/{:032x}",
        slot + 1
    )
}

fn slot_of(task_arn: &str) -> Option<usize> {
    usize::from_str_radix(task_id(task_arn), 16)
        .ok()?
        .checked_sub(1)
}

fn task_definition(family: Family) -> String {
    format!(
        "arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{}:1",
        family.name()
    )
}

/// Builds the task as DescribeTasks returns it. ECS keeps listing a stopped task's ENI address.
fn task_struct(slot: usize, task: &EcsTask) -> Task {
    Task {
        task_arn: task_arn(slot),
        cluster_arn: CLUSTER_ARN.into(),
        last_status: task.last_status.into(),
        desired_status: task.desired_status.into(),
        version: Some(task.version),
        task_definition_arn: Some(task_definition(task.family)),
        group: Some(format!("family:{}", task.family.name())),
        launch_type: Some("FARGATE".into()),
        eni_ipv4: task.address.map(str::to_owned),
        containers: vec![Container {
            name: "app".into(),
            ..Container::default()
        }],
        ..Task::default()
    }
}

/// Builds the Task State Change event that ECS emits for the task as it is now.
fn event_json(slot: usize, task: &EcsTask) -> Value {
    let attachments = match task.address {
        Some(address) => json!([{"type": "eni", "status": "ATTACHED", "details": [
            {"name": "privateIPv4Address", "value": address}]}]),
        None => json!([]),
    };
    json!({
        "version": "0", "id": format!("event-{slot}-{}", task.version),
        "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": ACCOUNT, "time": "2026-12-01T10:00:00Z", "region": REGION,
        "resources": [task_arn(slot)],
        "detail": {
            "taskArn": task_arn(slot), "clusterArn": CLUSTER_ARN,
            "lastStatus": task.last_status, "desiredStatus": task.desired_status,
            "version": task.version, "group": format!("family:{}", task.family.name()),
            "taskDefinitionArn": task_definition(task.family),
            "attachments": attachments,
            "containers": [{"name": "app"}]
        }
    })
}

/// All three AWS services over one shared [`World`].
#[derive(Clone)]
pub struct Fake {
    pub world: Arc<Mutex<World>>,
}

impl Fake {
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the scheduler grants this call, and fails it when the grant is a failure.
    async fn gate(&self, operation: &'static str) -> Result<(), ApiError> {
        let id = {
            let mut world = self.lock();
            if !world.gated {
                return Ok(());
            }
            world.enqueue(operation)
        };
        let fail = poll_fn(|_| match self.lock().granted.remove(&id) {
            Some(fail) => Poll::Ready(fail),
            None => Poll::Pending,
        })
        .await;
        if fail {
            return Err(ApiError::service("Throttling", "Rate exceeded"));
        }
        Ok(())
    }

    fn group_arn(group: &str) -> Result<&'static str, ApiError> {
        [TG_WEB, TG_SHARED]
            .into_iter()
            .find(|arn| *arn == group)
            .ok_or_else(|| ApiError::service("TargetGroupNotFound", group))
    }

    /// Lists one desired status, then describes the listed tasks in a second call, as the
    /// SDK implementation does: a task can change or be forgotten between the two.
    async fn list_and_describe(&self, desired_status: &str) -> Result<Vec<Task>, ApiError> {
        self.gate("ListTasks").await?;
        let slots = {
            let mut world = self.lock();
            world.record_read();
            world.list(desired_status)
        };
        self.gate("DescribeTasks").await?;
        let world = self.lock();
        Ok(slots
            .into_iter()
            .filter_map(|slot| world.describe(slot))
            .collect())
    }
}

impl Ecs for Fake {
    async fn describe_task(&self, cluster: &str, task_arn: &str) -> Result<TaskLookup, ApiError> {
        self.gate("DescribeTasks").await?;
        let mut world = self.lock();
        world.record_read();
        let found = (cluster == CLUSTER)
            .then(|| slot_of(task_arn).and_then(|slot| world.describe(slot)))
            .flatten();
        Ok(match found {
            Some(task) => TaskLookup::Found(Box::new(task)),
            None => TaskLookup::Missing {
                reason: "MISSING".into(),
            },
        })
    }

    async fn running_tasks(&self, _: &str) -> Result<Vec<Task>, ApiError> {
        self.list_and_describe("RUNNING").await
    }

    async fn stopped_tasks(&self, _: &str) -> Result<Vec<Task>, ApiError> {
        self.list_and_describe("STOPPED").await
    }

    async fn ec2_instance_id(&self, _: &str, _: &str) -> Result<Option<String>, ApiError> {
        Err(ApiError::service(
            "Unexpected",
            "awsvpc tasks need no container instance",
        ))
    }
}

impl LoadBalancing for Fake {
    async fn register_targets(&self, group: &str, targets: &[Target]) -> Result<(), ApiError> {
        self.gate("RegisterTargets").await?;
        let arn = Self::group_arn(group)?;
        let mut world = self.lock();
        for target in targets {
            let owner = world.owner(target);
            let holders = world.claimants(arn, target);
            world.stale_removals.remove(&(arn, target.clone()));
            let registered = world.groups.entry(arn).or_default();
            let owners = registered.entry(target.clone()).or_default();
            owners.extend(owner);
            owners.extend(holders);
        }
        Ok(())
    }

    /// Fails with InvalidTarget, changing nothing, when a target is not registered.
    async fn deregister_targets(&self, group: &str, targets: &[Target]) -> Result<(), ApiError> {
        self.gate("DeregisterTargets").await?;
        let arn = Self::group_arn(group)?;
        let mut world = self.lock();
        let registered = world.groups.entry(arn).or_default();
        if let Some(absent) = targets.iter().find(|t| !registered.contains_key(*t)) {
            return Err(ApiError::service(
                "InvalidTarget",
                &format!("target {absent} is not registered"),
            ));
        }
        for target in targets {
            world.check_removal(arn, target);
            world.groups.entry(arn).or_default().remove(target);
        }
        Ok(())
    }

    async fn describe_target_health(
        &self,
        group: &str,
        _: &[Target],
    ) -> Result<Vec<(Target, Observation)>, ApiError> {
        self.gate("DescribeTargetHealth").await?;
        let arn = Self::group_arn(group)?;
        let world = self.lock();
        let healthy = Observation {
            state: "healthy".into(),
            reason: None,
            description: None,
        };
        Ok(world.groups[arn]
            .keys()
            .map(|target| (target.clone(), healthy.clone()))
            .collect())
    }

    async fn target_group_arn(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.gate("DescribeTargetGroups").await?;
        Ok((name == TG_SHARED_NAME).then(|| TG_SHARED.to_owned()))
    }
}

impl Workflows for Fake {
    /// Starts nothing: the model checks target groups, not health waits, but the call is
    /// still an await point that other invocations can overtake.
    async fn start_execution(
        &self,
        state_machine_arn: &str,
        name: &str,
        _: &str,
    ) -> Result<Started, ApiError> {
        self.gate("StartExecution").await?;
        Ok(Started::Execution {
            execution_arn: format!("{state_machine_arn}:{name}"),
        })
    }
}
