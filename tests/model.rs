//! Model-based test of event orderings: generated histories of several tasks run through the
//! real `Registrar::handle` and `Registrar::sweep` against a stateful fake of ECS, ELBv2 and
//! Step Functions behind the `Ecs`, `LoadBalancing` and `Workflows` traits.
//!
//! A history mixes ECS's own changes (start, address taken, running, stop requested, address
//! released, task forgotten) with deliveries of any event ECS emitted so far, and grants of
//! pending AWS calls. Events are therefore duplicated, reordered or lost, a stop event may
//! never come, and invocations for one task interleave at every call they make. A granted
//! call may fail with throttling, and Lambda's retry is modelled by running the failed event
//! again. After the history every pending call is let through, then one sweep runs. ECS
//! forgets a stopped task only while no invocation is in flight, as it does an hour after the
//! stop, when every invocation that read the task and every retry of it has ended.
//!
//! Invariants, checked after every step:
//! - No left-over target: each registered target is the target of a task that holds its
//!   address and is meant to run, or belongs to a task whose stop was not processed yet. A
//!   target belongs to the tasks it was registered for, and to each task that held its
//!   address and had it as its own target while it was registered, because that task's stop
//!   removes it. A stop counts as processed when an invocation for the task ended
//!   `deregistered`. The design allows one window: an invocation that started before the stop
//!   was processed may still register, because it read ECS before the stop. It reads ECS
//!   again after RegisterTargets and removes what it registered, so the target lasts only
//!   while that invocation, or Lambda's retry of it, is in flight.
//! - No lost target: a running task whose registration succeeded keeps its targets, with one
//!   exception that no ELBv2 call can close. An invocation for a stopped task reads ECS, then
//!   deregisters its old address. If that address passes to a new task of the same service,
//!   and the new task is registered between that read and the call, the call removes the new
//!   task's target. The fake checks that the registrar never does this on a read made after
//!   the new task took the address, and records the earlier case as a stale removal.
//!
//! After the sweep, each target group holds exactly the running tasks' targets, and a second
//! sweep changes nothing. Two exceptions are deliberate in the sweep. It removes nothing from
//! a group that no running task has a target in. In a group that is not declared exclusive,
//! it keeps a target it cannot attribute to a stopped task that ECS still describes. There,
//! the target of a task whose stop event never came and which ECS has forgotten stays.
//!
//! A failure prints the broken invariant, the trace of the shrunk history and the history
//! itself, in the form the regression tests at the end of this file use. `PROPTEST_CASES`
//! sets the number of histories (10,000 by default).
//!
// NOTE: the fake ECS answers every read with its current state, so a DescribeTasks that lags
// behind an event is not modelled. All tasks use awsvpc networking in one cluster, and the
// sweep runs alone after the history, not alongside invocations.

#[path = "model/fake.rs"]
mod fake;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ecs_target_registrar::health::HealthSettings;
use ecs_target_registrar::summary::Outcome;
use ecs_target_registrar::sweep::SweepOptions;
use ecs_target_registrar::{Config, Environment, Error, Registrar, Summary};
use fake::{
    ACCOUNT, CURRENT, Fake, Family, REGION, STATE_MACHINE, SWEEP, TG_SHARED, TG_SHARED_NAME,
    TG_WEB, World,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Task slots per history.
const SLOTS: usize = 3;
/// Steps per history at most.
const MAX_STEPS: usize = 80;
/// Cases of the property in a normal test run; `PROPTEST_CASES` overrides it.
const DEFAULT_CASES: u32 = 10_000;

/// Which emitted event a delivery picks.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The one emitted this many events before the latest, or the first when there are fewer.
    Recent(usize),
    /// Any one, by index modulo their number.
    Any(usize),
}

/// One step of a history. Indices pick among the tasks or calls that the step applies to,
/// modulo their number, so that every step does something and shrinking keeps it valid.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// ECS starts a task of a family in the first free slot.
    Start(Family),
    /// ECS moves a task that is not STOPPED one lifecycle step on.
    Advance(usize),
    /// Someone asks ECS to stop a task that is meant to run.
    Stop(usize),
    /// ECS forgets a STOPPED task.
    Forget(usize),
    /// EventBridge delivers one of the events emitted so far.
    Deliver(Pick),
    /// One pending AWS call proceeds, failing with throttling when the flag is set.
    Grant(usize, bool),
}

/// A generated history and the mapping it runs under.
#[derive(Clone)]
struct Case {
    /// Whether the mapping declares both target groups exclusive.
    exclusive: bool,
    steps: Vec<Step>,
}

/// Prints a case on one line per step, in the form a regression test below writes it.
impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Case {{ exclusive: {}, steps: vec![", self.exclusive)?;
        for step in &self.steps {
            writeln!(f, "    {step:?},")?;
        }
        write!(f, "] }}")
    }
}

type Invocation<'r> = Pin<Box<dyn Future<Output = Result<Summary, Error>> + 'r>>;

struct InFlight<'r> {
    id: usize,
    slot: usize,
    event: Value,
    /// The step at which the event was first delivered; a retry keeps it.
    delivered_at: usize,
    future: Invocation<'r>,
}

type Model = Registrar<Fake, Fake, Fake>;

/// A history being run: the fake, the registrar and what the invariants need to know.
struct Run<'r> {
    fake: Fake,
    registrar: &'r Model,
    exclusive: bool,
    in_flight: Vec<InFlight<'r>>,
    next_id: usize,
    step: usize,
    /// Per slot, the step at which an invocation for it first ended `deregistered`.
    stop_processed_at: [Option<usize>; SLOTS],
    /// Slots for which an invocation ended `registered`.
    registered_ok: [bool; SLOTS],
    counts: BTreeMap<&'static str, u64>,
    trace: Vec<String>,
}

fn config(exclusive: bool) -> Config {
    let exclusive_groups = if exclusive {
        json!([TG_WEB, TG_SHARED_NAME, TG_SHARED])
    } else {
        json!([])
    };
    Config::from_value(&json!({
        "services": [
            {"name": "web", "cluster": "web", "family": "web", "container": "app",
             "containerPort": fake::WEB_PORT, "targetGroups": [TG_WEB, TG_SHARED_NAME]},
            {"name": "api", "cluster": "web", "family": "api", "container": "app",
             "containerPort": fake::API_PORT, "targetGroups": [TG_SHARED]}
        ],
        "exclusiveTargetGroups": exclusive_groups,
        "maxRemovalPercent": 100
    }))
    .expect("the model's mapping is valid")
}

fn env() -> Environment {
    Environment {
        region: Some(REGION.into()),
        account: Some(ACCOUNT.into()),
    }
}

impl<'r> Run<'r> {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn start(&mut self, slot: usize, event: Value, delivered_at: usize) {
        let id = self.next_id;
        self.next_id += 1;
        self.fake.lock().invocation_task.insert(id, slot);
        if self.in_flight.iter().any(|other| other.slot == slot) {
            self.count("invocations of one task in flight together");
        }
        let registrar = self.registrar;
        let payload = event.clone();
        let future = Box::pin(async move { registrar.handle(&payload, &env()).await });
        self.in_flight.push(InFlight {
            id,
            slot,
            event,
            delivered_at,
            future,
        });
    }

    fn deliver(&mut self, pick: Pick) {
        let chosen = {
            let world = self.fake.lock();
            let count = world.events.len();
            let index = match pick {
                _ if count == 0 => None,
                Pick::Recent(back) => Some(count - 1 - back.min(count - 1)),
                Pick::Any(index) => Some(index % count),
            };
            index.map(|index| world.events[index].clone())
        };
        let Some((slot, event)) = chosen else {
            return;
        };
        let detail = &event["detail"];
        self.trace.push(format!(
            "deliver #{} for task {slot}: {}/{} v{}",
            self.next_id, detail["lastStatus"], detail["desiredStatus"], detail["version"]
        ));
        self.start(slot, event, self.step);
    }

    /// Polls every invocation until none can move without a grant.
    fn settle(&mut self) -> Result<(), String> {
        let mut context = Context::from_waker(Waker::noop());
        loop {
            let mut moved = false;
            let mut index = 0;
            while index < self.in_flight.len() {
                let before = self.fake.lock().pending().len();
                CURRENT.with(|current| current.set(self.in_flight[index].id));
                let poll = self.in_flight[index].future.as_mut().poll(&mut context);
                CURRENT.with(|current| current.set(SWEEP));
                match poll {
                    Poll::Ready(result) => {
                        let done = self.in_flight.remove(index);
                        self.finish(done, result)?;
                        moved = true;
                    }
                    Poll::Pending => {
                        moved |= self.fake.lock().pending().len() != before;
                        index += 1;
                    }
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    fn finish(&mut self, done: InFlight<'r>, result: Result<Summary, Error>) -> Result<(), String> {
        let summary = match result {
            Ok(summary) => summary,
            // Only the injected throttling may fail an invocation; Lambda retries it.
            Err(err) if err.to_string().contains("Throttling") => {
                self.count("retry after throttling");
                self.trace
                    .push(format!("#{} failed, retried as #{}", done.id, self.next_id));
                self.start(done.slot, done.event, done.delivered_at);
                return Ok(());
            }
            Err(err) => return Err(format!("invocation #{} failed: {err}", done.id)),
        };
        self.trace.push(format!(
            "#{} for task {} ended {:?}",
            done.id, done.slot, summary.outcome
        ));
        match summary.outcome {
            Outcome::Deregistered => {
                self.stop_processed_at[done.slot].get_or_insert(self.step);
                if summary.ecs_status.is_none() {
                    self.count("stop of a task ECS no longer describes");
                } else {
                    self.count("outcome deregistered");
                }
            }
            Outcome::Registered => {
                self.registered_ok[done.slot] = true;
                self.count("outcome registered");
            }
            Outcome::RolledBack => self.count("outcome rolled back"),
            Outcome::Skipped => self.count("outcome skipped"),
            Outcome::Waiting => self.count("outcome waiting"),
            Outcome::Ignored | Outcome::Failed => {
                return Err(format!(
                    "invocation #{} ended {:?}: {}",
                    done.id, summary.outcome, summary.reason
                ));
            }
        }
        Ok(())
    }

    fn grant(&mut self, pick: usize, fail: bool) {
        let mut world = self.fake.lock();
        let count = world.pending().len();
        if count == 0 {
            return;
        }
        let call = world.grant(pick % count, fail);
        let slot = world.invocation_task.get(&call.invocation).copied();
        drop(world);
        let outcome = if fail { " (throttled)" } else { "" };
        self.trace.push(format!(
            "grant {} of #{} (task {}){outcome}",
            call.operation,
            call.invocation,
            slot.map_or("?".into(), |s| s.to_string())
        ));
    }

    fn apply(&mut self, step: Step) -> Result<(), String> {
        self.step += 1;
        match step {
            Step::Start(family) => self.ecs_change(|world| world.start(family)),
            Step::Advance(pick) => self.ecs_change(|world| world.advance(pick)),
            Step::Stop(pick) => self.ecs_change(|world| world.stop(pick)),
            // ECS forgets a stopped task about an hour after the stop. By then every
            // invocation that could have read the task has ended, its retries included: the
            // function times out after 600 s and the template drops events older than an hour.
            Step::Forget(pick) if self.in_flight.is_empty() => {
                self.ecs_change(|world| world.forget(pick))
            }
            Step::Forget(_) => {}
            Step::Deliver(pick) => self.deliver(pick),
            Step::Grant(pick, fail) => self.grant(pick, fail),
        }
        self.settle()?;
        self.check()
    }

    fn ecs_change(&mut self, change: impl FnOnce(&mut World) -> Option<usize>) {
        let mut world = self.fake.lock();
        let Some(slot) = change(&mut world) else {
            return;
        };
        let Some(task) = world.tasks[slot].as_ref() else {
            return;
        };
        let line = format!(
            "ECS: task {slot} ({}) {}/{} v{} at {}{}",
            task.family.name(),
            task.last_status,
            task.desired_status,
            task.version,
            task.address.unwrap_or("no address"),
            if task.described { "" } else { ", forgotten" }
        );
        drop(world);
        self.trace.push(line);
    }

    /// Lets every pending call through, oldest first, until no invocation is left.
    fn drain(&mut self) -> Result<(), String> {
        self.settle()?;
        while !self.fake.lock().pending().is_empty() {
            self.grant(0, false);
            self.settle()?;
            self.check()?;
        }
        Ok(())
    }

    /// Checks the invariants of the module docs that hold after every step.
    fn check(&mut self) -> Result<(), String> {
        let mut world = self.fake.lock();
        let notes = std::mem::take(&mut world.notes);
        let violations = std::mem::take(&mut world.violations);
        drop(world);
        self.trace.extend(notes);
        if let Some(violation) = violations.into_iter().next() {
            return Err(violation);
        }
        self.check_left_over()?;
        self.check_lost()
    }

    fn check_left_over(&self) -> Result<(), String> {
        let world = self.fake.lock();
        for (group, targets) in &world.groups {
            for (target, owners) in targets {
                if world.claimed(group, target, None) {
                    continue;
                }
                let mut processed = Vec::new();
                for owner in owners {
                    let Some(stopped_at) = self.stop_processed_at[*owner] else {
                        break;
                    };
                    let racing = self
                        .in_flight
                        .iter()
                        .any(|f| f.slot == *owner && f.delivered_at <= stopped_at);
                    if racing {
                        break;
                    }
                    processed.push(*owner);
                }
                if processed.len() == owners.len() {
                    return Err(format!(
                        "left-over target {target} in {group}: it belongs to tasks {owners:?}, \
                         whose stops were processed, and no invocation that read ECS before \
                         those stops is still in flight"
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_lost(&self) -> Result<(), String> {
        let world = self.fake.lock();
        for (slot, task) in world.running() {
            let Some(address) = task.address.filter(|_| self.registered_ok[slot]) else {
                continue;
            };
            for (group, target) in task.family.targets(address) {
                let present = world.groups[group].contains_key(&target);
                let excused = world.stale_removals.contains(&(group, target.clone()));
                if !present && !excused {
                    return Err(format!(
                        "lost target {target} in {group}: task {slot} runs and was registered"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs one sweep with every call let through at once.
    fn sweep(&mut self) -> Result<usize, String> {
        let options = SweepOptions::default();
        let mut sweep = Box::pin(self.registrar.sweep(&options));
        let poll = sweep.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let Poll::Ready(report) = poll else {
            return Err("the sweep waited on something other than a fake call".into());
        };
        let report = report.map_err(|err| format!("sweep failed: {err}"))?;
        if report.has_errors() {
            return Err(format!("sweep reported errors: {report:?}"));
        }
        Ok(report.changes())
    }

    /// Runs the closing sweep and checks the groups after it, then sweeps once more.
    fn sweep_and_check(&mut self) -> Result<(), String> {
        self.fake.lock().gated = false;
        let changes = self.sweep()?;
        self.trace.push(format!("sweep: {changes} changes"));
        if changes > 0 {
            self.count("sweep repaired something");
        }
        self.check()?;

        let world = self.fake.lock();
        let desired = world.desired();
        let registered = world.registered();
        let attributable = world.attributable();
        for (group, want) in &desired {
            let have = &registered[group];
            if let Some(missing) = want.difference(have).next() {
                return Err(format!("after the sweep {group} misses {missing}"));
            }
            for extra in have.difference(want) {
                let kept_by_design = want.is_empty()
                    || (!self.exclusive && !attributable.contains(&(*group, extra.clone())));
                if !kept_by_design {
                    return Err(format!("after the sweep {group} still holds {extra}"));
                }
            }
        }
        drop(world);

        let again = self.sweep()?;
        if again > 0 {
            return Err(format!("a second sweep made {again} more changes"));
        }
        Ok(())
    }
}

/// Situations that a run of at least [`MIN_CASES_FOR_REACH`] histories reaches many times
/// over (a few hundred times or more in 10,000). The test fails when one is never reached, so
/// that a change that weakens the generator shows.
const MUST_REACH: &[&str] = &[
    "invocations of one task in flight together",
    "outcome deregistered",
    "outcome registered",
    "outcome rolled back",
    "retry after throttling",
    "stop of a task ECS no longer describes",
    "sweep repaired something",
];
const MIN_CASES_FOR_REACH: u32 = 1_000;

/// What the histories reached over a whole test run, so that a weaker generator shows.
static REACHED: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

fn record_reached(counts: impl IntoIterator<Item = (&'static str, u64)>) {
    let mut reached = REACHED.lock().unwrap_or_else(|p| p.into_inner());
    for (what, count) in counts {
        *reached.entry(what).or_default() += count;
    }
}

/// Runs a history and checks the invariants; the error names the broken one, with a trace.
fn run_history(case: &Case) -> Result<(), String> {
    let fake = Fake {
        world: Arc::new(Mutex::new(World::new(SLOTS))),
    };
    let health = HealthSettings {
        state_machine_arn: Some(STATE_MACHINE.into()),
        ..HealthSettings::default()
    };
    let registrar = Registrar::new(config(case.exclusive), fake.clone(), fake.clone())
        .with_health_wait(fake.clone(), health);
    let mut run = Run {
        fake,
        registrar: &registrar,
        exclusive: case.exclusive,
        in_flight: Vec::new(),
        next_id: 0,
        step: 0,
        stop_processed_at: [None; SLOTS],
        registered_ok: [false; SLOTS],
        counts: BTreeMap::new(),
        trace: Vec::new(),
    };
    let result = case
        .steps
        .iter()
        .try_for_each(|step| run.apply(*step))
        .and_then(|()| run.drain())
        .and_then(|()| run.sweep_and_check());
    let world_counts = std::mem::take(&mut run.fake.lock().counts);
    record_reached(world_counts.into_iter().chain(run.counts.clone()));
    result.map_err(|problem| format!("{problem}\nhistory:\n  {}", run.trace.join("\n  ")))
}

/// Generates one step. Indices are small, so that a shrunk history shows `Advance(0)` rather
/// than a large number that picks the same task; a pick reaches every task and, while at most
/// 16 calls wait, every call.
fn step() -> impl Strategy<Value = Step> {
    let family = prop_oneof![Just(Family::Web), Just(Family::Api)];
    let task = 0..SLOTS;
    let pick = prop_oneof![
        3 => (0..4usize).prop_map(Pick::Recent),
        1 => (0..64usize).prop_map(Pick::Any),
    ];
    prop_oneof![
        2 => family.prop_map(Step::Start),
        5 => task.clone().prop_map(Step::Advance),
        2 => task.clone().prop_map(Step::Stop),
        1 => task.prop_map(Step::Forget),
        4 => pick.prop_map(Step::Deliver),
        8 => (0..16usize, prop::bool::weighted(0.08)).prop_map(|(p, f)| Step::Grant(p, f)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (any::<bool>(), prop::collection::vec(step(), 0..MAX_STEPS))
        .prop_map(|(exclusive, steps)| Case { exclusive, steps })
}

/// Any history of starts, stops, duplicated, reordered and lost events, interleaved calls
/// and throttled calls keeps the invariants of the module docs.
#[test]
fn histories_keep_target_groups_correct() {
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        run_history(&case).map_err(TestCaseError::fail)
    });
    let reached = std::mem::take(&mut *REACHED.lock().unwrap_or_else(|p| p.into_inner()));
    println!("{cases} histories reached: {reached:#?}");
    if let Err(failure) = result {
        panic!("{failure}");
    }
    if cases >= MIN_CASES_FOR_REACH {
        for what in MUST_REACH {
            assert!(
                reached.contains_key(what),
                "no history reached {what:?}; the generator has become weaker"
            );
        }
    }
}

fn assert_history_holds(case: &Case) {
    if let Err(problem) = run_history(case) {
        panic!("{problem}");
    }
}

/// A registration of task 0 rolls back after task 0 released its address, and task 1 of
/// the same service holds it: the rollback leaves task 1's targets alone.
#[test]
fn rollback_keeps_reused_target() {
    use Step::*;
    assert_history_holds(&Case {
        exclusive: false,
        steps: vec![
            Start(Family::Web),
            Advance(0),
            Advance(0),
            Deliver(Pick::Recent(0)),
            Grant(0, false),
            Stop(0),
            Start(Family::Web),
            Advance(0),
            Advance(0),
            Advance(1),
            Deliver(Pick::Recent(0)),
        ],
    });
}

/// The only stop event of an api task arrives once a web task holds its old address: the
/// api target on the api port goes, because the web task does not stand for it.
#[test]
fn stop_removes_reused_address_on_another_port() {
    use Step::*;
    assert_history_holds(&Case {
        exclusive: false,
        steps: vec![
            Start(Family::Api),
            Advance(0),
            Advance(0),
            Deliver(Pick::Recent(0)),
            Grant(0, false),
            Grant(0, false),
            Grant(0, false),
            Grant(0, false),
            Stop(0),
            Advance(0),
            Advance(0),
            Deliver(Pick::Recent(0)),
            Start(Family::Web),
            Advance(1),
        ],
    });
}
