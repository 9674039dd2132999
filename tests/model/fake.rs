//! A stateful model of ECS and ELBv2 behind the registrar's `Ecs` and `LoadBalancing` traits.
//!
//! ECS holds a few task slots that move through the task lifecycle, take addresses from a
//! small pool (so a later task can get a stopped task's address) and emit one Task State
//! Change event per change. ELBv2 holds the target groups, and for each target the tasks on
//! whose behalf it was registered, so a test can tell a live target from a left-over one.
//!
//! Every call first waits for a grant from the scheduler, so the test decides which pending
//! call goes next. A call's effect is applied in one step once granted.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use ecs_target_registrar::aws::{ApiError, Ecs, LoadBalancing, TaskLookup};
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
pub const WEB_PORT: u16 = 8080;
pub const API_PORT: u16 = 9090;
/// The subnet's free addresses. Fewer addresses than task slots, so addresses are reused.
pub const ADDRESSES: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
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

    /// The targets a task of this family at `address` stands for, per target group ARN.
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
    /// Target group ARN to its targets, each with the task slots it was registered for.
    pub groups: BTreeMap<&'static str, BTreeMap<Target, BTreeSet<usize>>>,
    /// Every event ECS emitted, in order, with the slot it is about.
    pub events: Vec<(usize, Value)>,
    /// The task slot each invocation handles an event of.
    pub invocation_task: BTreeMap<usize, usize>,
    /// When false, calls proceed without waiting (the closing sweep).
    pub gated: bool,
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

    /// Lets one pending call proceed; with `fail` it returns a throttling error instead.
    pub fn grant(&mut self, index: usize, fail: bool) -> PendingCall {
        let call = self.pending.remove(index);
        self.granted.insert(call.id, fail);
        call
    }

    /// Starts a task in `slot` (PROVISIONING, no address yet), when the slot is free.
    pub fn start(&mut self, slot: usize, family: Family) {
        if self.tasks[slot].is_some() {
            return;
        }
        self.tasks[slot] = Some(EcsTask {
            family,
            last_status: "PROVISIONING",
            desired_status: "RUNNING",
            version: 1,
            address: None,
            described: true,
        });
        self.emit(slot);
    }

    /// Moves a task one lifecycle step on. A starting task takes the lowest free address when
    /// it reaches PENDING and waits when there is none; a stopping task gives its address
    /// back to the subnet at DEPROVISIONING.
    pub fn advance(&mut self, slot: usize) {
        let Some(task) = self.tasks[slot].clone() else {
            return;
        };
        let stopping = task.desired_status == "STOPPED";
        let (next, address) = match (task.last_status, stopping) {
            ("PROVISIONING", false) => match self.free_address() {
                Some(address) => ("PENDING", Some(address)),
                None => return,
            },
            ("PENDING", false) => ("RUNNING", task.address),
            ("PROVISIONING" | "PENDING" | "RUNNING", true) => ("STOPPING", task.address),
            ("STOPPING", _) => ("DEPROVISIONING", task.address),
            ("DEPROVISIONING", _) => ("STOPPED", task.address),
            _ => return,
        };
        if let Some(task) = self.tasks[slot].as_mut() {
            task.last_status = next;
            task.address = address;
            task.version += 1;
        }
        self.emit(slot);
    }

    /// Asks ECS to stop a task: desiredStatus becomes STOPPED before anything else changes.
    pub fn stop(&mut self, slot: usize) {
        match self.tasks[slot].as_mut() {
            Some(task) if task.desired_status == "RUNNING" => {
                task.desired_status = "STOPPED";
                task.version += 1;
            }
            _ => return,
        }
        self.emit(slot);
    }

    /// Makes ECS forget a stopped task, as it does about an hour after the stop.
    pub fn forget(&mut self, slot: usize) {
        if let Some(task) = self.tasks[slot].as_mut() {
            if task.last_status == "STOPPED" {
                task.described = false;
            }
        }
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

    /// The task slots that ECS reports RUNNING (lastStatus and desiredStatus).
    pub fn running(&self) -> impl Iterator<Item = (usize, &EcsTask)> {
        self.tasks
            .iter()
            .enumerate()
            .filter_map(|(slot, task)| Some((slot, task.as_ref()?)))
            .filter(|(_, task)| task.described && task.is_running())
    }

    /// The targets the running tasks stand for, per target group.
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

    /// The targets registered now, per target group.
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

    /// The slot a registration is made for: the handled event's task, or for the sweep the
    /// running task at that address.
    fn owner(&self, target: &Target) -> Option<usize> {
        let invocation = CURRENT.with(Cell::get);
        if let Some(slot) = self.invocation_task.get(&invocation) {
            return Some(*slot);
        }
        self.running()
            .find(|(_, task)| task.address == Some(target.id.as_str()))
            .map(|(slot, _)| slot)
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

/// The task as DescribeTasks returns it. ECS keeps listing a stopped task's ENI address.
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

/// The Task State Change event ECS emits for the task as it is now.
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

/// Both AWS services over one shared [`World`].
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

    /// Waits until the scheduler grants this call; fails it when the grant says so.
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
        let slots = self.lock().list(desired_status);
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
        let found = (cluster == CLUSTER)
            .then(|| slot_of(task_arn).and_then(|slot| self.lock().describe(slot)))
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
        let owners: Vec<Option<usize>> = targets.iter().map(|t| world.owner(t)).collect();
        let registered = world.groups.entry(arn).or_default();
        for (target, owner) in targets.iter().zip(owners) {
            let entry = registered.entry(target.clone()).or_default();
            entry.extend(owner);
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
            registered.remove(target);
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
