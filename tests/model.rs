//! Model-based test of event orderings: generated histories of several tasks run through the
//! real `Registrar::handle` and `Registrar::sweep` against a stateful fake of ECS and ELBv2.
//!
//! A history mixes ECS's own changes (start, address taken, running, stop requested, address
//! released, task forgotten) with deliveries of any event ECS emitted so far (so events are
//! duplicated, reordered or lost) and grants of pending AWS calls, chosen by the history, so
//! concurrent invocations for one task interleave at every call. A granted call may fail with
//! throttling; Lambda's retry is modelled by running the failed event again. After the
//! history, every pending call is let through, then one sweep runs.
//!
//! Invariants, checked whenever no invocation is in flight and at the end:
//! - no left-over target: every registered target is one a task ECS reports RUNNING stands
//!   for, or was registered for a task whose stop has not been processed yet;
//! - no lost target: a running task whose registration succeeded is still registered;
//! - after the sweep, each target group holds exactly the running tasks' targets. The one
//!   exception is by design: a sweep removes nothing from a group no running task maps, so
//!   there the targets of tasks whose stop events were all lost stay (the first invariant
//!   still holds).

#[path = "model/fake.rs"]
mod fake;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ecs_target_registrar::summary::Outcome;
use ecs_target_registrar::sweep::SweepOptions;
use ecs_target_registrar::{Config, Environment, Error, Registrar, Summary};
use fake::{
    ACCOUNT, CURRENT, Fake, Family, REGION, SWEEP, TG_SHARED, TG_SHARED_NAME, TG_WEB, World,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};

/// Task slots per history.
const SLOTS: usize = 4;
/// Cases of the property in a normal test run; `PROPTEST_CASES` overrides it.
const DEFAULT_CASES: u32 = 10_000;

/// One step of a history.
#[derive(Debug, Clone)]
enum Step {
    /// ECS starts a task in a free slot.
    Start(usize, Family),
    /// ECS moves a task one lifecycle step on.
    Advance(usize),
    /// Someone asks ECS to stop a task.
    Stop(usize),
    /// ECS forgets a stopped task.
    Forget(usize),
    /// EventBridge delivers one of the events emitted so far (index modulo their number).
    Deliver(usize),
    /// One pending AWS call proceeds (index modulo their number), failing when `fail` is set.
    Grant(usize, bool),
}

type Invocation<'r> = Pin<Box<dyn Future<Output = Result<Summary, Error>> + 'r>>;

struct InFlight<'r> {
    id: usize,
    slot: usize,
    event: Value,
    future: Invocation<'r>,
}

/// A history being run: the fake, the registrar and what the invariants need to know.
struct Run<'r> {
    fake: Fake,
    registrar: &'r Registrar<Fake, Fake>,
    in_flight: Vec<InFlight<'r>>,
    next_id: usize,
    /// Slots whose stop was processed: an invocation for them ended `deregistered`.
    stop_processed: [bool; SLOTS],
    /// Slots for which an invocation ended `registered`.
    registered_ok: [bool; SLOTS],
    trace: Vec<String>,
}

fn config() -> Config {
    Config::from_value(&json!({
        "services": [
            {"name": "web", "cluster": "web", "family": "web", "container": "app",
             "containerPort": fake::WEB_PORT, "targetGroups": [TG_WEB, TG_SHARED_NAME]},
            {"name": "api", "cluster": "web", "family": "api", "container": "app",
             "containerPort": fake::API_PORT, "targetGroups": [TG_SHARED]}
        ],
        "exclusiveTargetGroups": [TG_WEB, TG_SHARED_NAME, TG_SHARED],
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
    fn start(&mut self, slot: usize, event: Value) {
        let id = self.next_id;
        self.next_id += 1;
        self.fake.lock().invocation_task.insert(id, slot);
        let registrar = self.registrar;
        let payload = event.clone();
        let future = Box::pin(async move { registrar.handle(&payload, &env()).await });
        self.in_flight.push(InFlight {
            id,
            slot,
            event,
            future,
        });
    }

    fn deliver(&mut self, pick: usize) {
        let chosen = {
            let world = self.fake.lock();
            let count = world.events.len();
            (count > 0).then(|| world.events[pick % count].clone())
        };
        if let Some((slot, event)) = chosen {
            let detail = &event["detail"];
            self.trace.push(format!(
                "deliver #{} for task {slot}: {}/{} v{}",
                self.next_id, detail["lastStatus"], detail["desiredStatus"], detail["version"]
            ));
            self.start(slot, event);
        }
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
        match result {
            Ok(summary) => {
                self.trace.push(format!(
                    "#{} for task {} ended {:?}",
                    done.id, done.slot, summary.outcome
                ));
                match summary.outcome {
                    Outcome::Deregistered => self.stop_processed[done.slot] = true,
                    Outcome::Registered => self.registered_ok[done.slot] = true,
                    _ => {}
                }
                Ok(())
            }
            // Only the injected throttling may fail an invocation; Lambda retries it.
            Err(err) if err.to_string().contains("Throttling") => {
                self.trace
                    .push(format!("#{} failed, retried as #{}", done.id, self.next_id));
                self.start(done.slot, done.event);
                Ok(())
            }
            Err(err) => Err(format!("invocation #{} failed: {err}", done.id)),
        }
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

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Start(slot, family) => self.ecs_change(slot, |w| w.start(slot, family)),
            Step::Advance(slot) => self.ecs_change(slot, |w| w.advance(slot)),
            Step::Stop(slot) => self.ecs_change(slot, |w| w.stop(slot)),
            Step::Forget(slot) => self.ecs_change(slot, |w| w.forget(slot)),
            Step::Deliver(pick) => self.deliver(pick),
            Step::Grant(pick, fail) => self.grant(pick, fail),
        }
        self.settle()?;
        if self.in_flight.is_empty() {
            self.check_quiet()?;
        }
        Ok(())
    }

    fn ecs_change(&mut self, slot: usize, change: impl FnOnce(&mut World)) {
        let mut world = self.fake.lock();
        let before = world.tasks[slot].clone();
        change(&mut world);
        let after = &world.tasks[slot];
        if let Some(task) = after.as_ref().filter(|_| {
            before
                .as_ref()
                .map(|t| (t.last_status, t.desired_status, t.described))
                != after
                    .as_ref()
                    .map(|t| (t.last_status, t.desired_status, t.described))
        }) {
            self.trace.push(format!(
                "ECS: task {slot} ({}) {}/{} v{} at {:?}{}",
                task.family.name(),
                task.last_status,
                task.desired_status,
                task.version,
                task.address,
                if task.described { "" } else { ", forgotten" }
            ));
        }
    }

    /// Lets every pending call through, in order, until no invocation is left.
    fn drain(&mut self) -> Result<(), String> {
        self.settle()?;
        while !self.fake.lock().pending().is_empty() {
            self.grant(0, false);
            self.settle()?;
        }
        Ok(())
    }

    /// The invariants that hold whenever no invocation is in flight.
    fn check_quiet(&self) -> Result<(), String> {
        let world = self.fake.lock();
        let desired = world.desired();
        for (group, targets) in &world.groups {
            for (target, owners) in targets {
                let running_owner = desired[group].contains(target);
                let live_owner = owners.iter().any(|slot| !self.stop_processed[*slot]);
                if !running_owner && !live_owner {
                    return Err(format!(
                        "left-over target {target} in {group}: registered for tasks {owners:?}, \
                         whose stops were all processed, and no running task stands for it"
                    ));
                }
            }
        }
        for (slot, task) in world.running() {
            if !self.registered_ok[slot] {
                continue;
            }
            let Some(address) = task.address else {
                continue;
            };
            for (group, target) in task.family.targets(address) {
                if !world.groups[group].contains_key(&target) {
                    return Err(format!(
                        "lost target {target} in {group}: task {slot} runs and was registered"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs one sweep with every call let through at once, and checks the groups after it.
    fn sweep_and_check(&mut self) -> Result<(), String> {
        self.fake.lock().gated = false;
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
        self.trace
            .push(format!("sweep: {} changes", report.changes()));

        let world = self.fake.lock();
        let desired = world.desired();
        let registered = world.registered();
        for (group, want) in &desired {
            let have = &registered[group];
            if !have.is_superset(want) {
                return Err(format!(
                    "after the sweep {group} misses {:?}",
                    want.difference(have).collect::<Vec<_>>()
                ));
            }
            if !want.is_empty() && have != want {
                return Err(format!(
                    "after the sweep {group} still holds {:?}",
                    have.difference(want).collect::<Vec<_>>()
                ));
            }
        }
        drop(world);
        self.check_quiet()
    }
}

/// Runs a history and checks the invariants; the error names the broken one, with a trace.
fn run_history(steps: &[Step]) -> Result<(), String> {
    let fake = Fake {
        world: std::sync::Arc::new(std::sync::Mutex::new(World::new(SLOTS))),
    };
    let registrar = Registrar::new(config(), fake.clone(), fake.clone());
    let mut run = Run {
        fake,
        registrar: &registrar,
        in_flight: Vec::new(),
        next_id: 0,
        stop_processed: [false; SLOTS],
        registered_ok: [false; SLOTS],
        trace: Vec::new(),
    };
    let result = steps
        .iter()
        .try_for_each(|step| run.apply(step))
        .and_then(|()| run.drain())
        .and_then(|()| run.check_quiet())
        .and_then(|()| run.sweep_and_check());
    result.map_err(|problem| format!("{problem}\nhistory:\n  {}", run.trace.join("\n  ")))
}

fn step() -> impl Strategy<Value = Step> {
    let slot = 0..SLOTS;
    let family = prop_oneof![Just(Family::Web), Just(Family::Api)];
    prop_oneof![
        2 => (slot.clone(), family).prop_map(|(s, f)| Step::Start(s, f)),
        4 => slot.clone().prop_map(Step::Advance),
        2 => slot.clone().prop_map(Step::Stop),
        1 => slot.prop_map(Step::Forget),
        4 => any::<usize>().prop_map(Step::Deliver),
        8 => (any::<usize>(), prop::bool::weighted(0.08)).prop_map(|(p, f)| Step::Grant(p, f)),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any history of starts, stops, duplicated, reordered and lost events, interleaved calls
    /// and throttled calls leaves the target groups correct.
    #[test]
    fn histories_keep_target_groups_correct(steps in prop::collection::vec(step(), 0..70)) {
        if let Err(problem) = run_history(&steps) {
            return Err(TestCaseError::fail(problem));
        }
    }
}
