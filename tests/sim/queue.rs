//! The profile-sync task queue in its simulated world: a property per invariant
//! (knob seeds x fault plans narrowed to the faults that threaten it), determinism, a
//! golden digest, coverage, and the mutants (a) to (e) of the issue and more.

use crate::support::{
    assert_deterministic, assert_every_mark_hit, assert_mutants_caught, check, seed_and_plan,
};
use faultline::clock::Instant;
use faultline::harness::{Pattern, Scenario};
use faultline::queue::contract::{QueuePolicy, TaskQueue};
use faultline::queue::core::{
    DeadLetter, Enqueued, Fenced, Lease, LeaseToken, Nacked, ProfileId, Queue, QueueConfig,
    QueueCounts, TargetId, Task, TaskKey,
};
use faultline::queue::invariants::SINGLE_LEASE;
use faultline::queue::pattern::QueuePattern;
use faultline::queue::world::{INVARIANTS, MARKS, QueueKnobs, QueueWorld, run};
use faultline_sim::prelude::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

const ALL: &[FaultKindTag] = &FaultKindTag::ALL;

proptest! {
    /// All seven invariants under every kind of fault at once.
    #[test]
    fn every_invariant_holds((seed, plan) in seed_and_plan(QueuePattern, ALL)) {
        check(&QueuePattern, "every_invariant_holds", seed, plan)?;
    }

    /// 1. No lost update: through target outages, worker crashes and queue restarts,
    /// every target ends with the latest version of every profile, and it got there.
    #[test]
    fn no_update_is_lost_through_outages_and_restarts(
        (seed, plan) in seed_and_plan(QueuePattern, &[FaultKindTag::Outage, FaultKindTag::Crash, FaultKindTag::Errors]),
    ) {
        let world = check(&QueuePattern, "no_update_is_lost_through_outages_and_restarts", seed, plan)?;
        prop_assert!(world.stats.updates == 0 || world.stats.applied > 0);
    }

    /// 2, 3. Dropped, duplicated and delayed deliveries: versions never go backwards
    /// and each (update, target) takes effect once.
    #[test]
    fn repeated_and_reordered_deliveries_never_go_backwards_nor_apply_twice(
        (seed, plan) in seed_and_plan(QueuePattern, &[FaultKindTag::Duplicate, FaultKindTag::Delay, FaultKindTag::Drop]),
    ) {
        let world = check(&QueuePattern, "repeated_and_reordered_deliveries_never_go_backwards_nor_apply_twice", seed, plan)?;
        prop_assert!(world.stats.applied <= world.stats.accepted);
    }

    /// 4. Slow targets and crashing workers: one unexpired lease per task, and a
    /// crashed worker's task is released by its deadline.
    #[test]
    fn one_lease_per_task_and_crashed_workers_release_theirs(
        (seed, plan) in seed_and_plan(QueuePattern, &[FaultKindTag::Slow, FaultKindTag::Crash]),
    ) {
        check(&QueuePattern, "one_lease_per_task_and_crashed_workers_release_theirs", seed, plan)?;
    }

    /// 5. Queue restarts at any point: every task accepted is accounted for at every
    /// step.
    #[test]
    fn tasks_are_conserved_at_every_step_through_restarts(
        (seed, plan) in seed_and_plan(QueuePattern, &[FaultKindTag::Crash]),
    ) {
        let world = check(&QueuePattern, "tasks_are_conserved_at_every_step_through_restarts", seed, plan)?;
        prop_assert!(world.queue().counts().balanced());
    }

    /// 6. Failing targets: each retry waits within the backoff formula's bounds, and a
    /// task out of attempts is in the dead-letter queue.
    #[test]
    fn retries_back_off_within_bounds_then_dead_letter(
        (seed, plan) in seed_and_plan(QueuePattern, &[FaultKindTag::Errors, FaultKindTag::Outage]),
    ) {
        let world = check(&QueuePattern, "retries_back_off_within_bounds_then_dead_letter", seed, plan)?;
        prop_assert!(world.stats.dead_lettered as usize <= world.queue().dead_letters().len());
    }

    /// 7. Dead letters redriven during and after the faults keep each key's order.
    #[test]
    fn redrive_keeps_the_order_of_each_profile_and_target(
        (seed, plan) in seed_and_plan(QueuePattern, &[FaultKindTag::Outage, FaultKindTag::Errors, FaultKindTag::Crash]),
    ) {
        let world = check(&QueuePattern, "redrive_keeps_the_order_of_each_profile_and_target", seed, plan)?;
        prop_assert_eq!(world.stats.redriven, world.queue().counts().redriven);
    }
}

#[test]
fn same_seed_same_digest() {
    assert_deterministic(&QueuePattern, 0..8);
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = QueuePattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.updates),
        (9_411_495_114_951_963_576, 1_588, 81),
        "golden digest changed"
    );
}

#[test]
fn every_mark_is_hit_over_500_seeds() {
    assert_every_mark_hit(&QueuePattern, MARKS, 500);
}

/// Every mutant is caught by its expected invariant, and every invariant catches one.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&QueuePattern, &INVARIANTS, 300);
}

/// A queue of your own, plugged in through the contract: here one that delegates to the
/// reference, so the run must be the reference's, byte for byte.
struct Yours(Queue);

impl TaskQueue for Yours {
    fn policy(&self) -> QueuePolicy {
        QueuePolicy::from(self.0.config())
    }
    fn enqueue(&mut self, task: Task, now: Instant) -> Enqueued {
        self.0.enqueue(task, now)
    }
    fn lease(&mut self, now: Instant) -> Option<Lease> {
        self.0.lease(now)
    }
    fn heartbeat(&mut self, token: &LeaseToken, now: Instant) -> Result<Instant, Fenced> {
        self.0.heartbeat(token, now)
    }
    fn ack(&mut self, token: &LeaseToken, now: Instant) -> Result<(), Fenced> {
        self.0.ack(token, now)
    }
    fn nack(&mut self, token: &LeaseToken, now: Instant) -> Result<Nacked, Fenced> {
        self.0.nack(token, now)
    }
    fn lease_of(&self, key: TaskKey, now: Instant) -> Option<LeaseToken> {
        self.0.lease_of(key, now)
    }
    fn counts(&self) -> QueueCounts {
        self.0.counts()
    }
    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.0.dead_letters().to_vec()
    }
    fn redrive(&mut self, now: Instant) -> usize {
        self.0.redrive(now)
    }
    fn restart(&mut self, _now: Instant) {
        self.0 = Queue::recover(*self.0.config(), self.0.store().clone());
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
}

#[test]
fn a_queue_plugged_in_through_the_contract_gets_the_same_run() {
    for seed in [3, 7, 11] {
        let knobs = QueueKnobs::from_seed(seed);
        let (reference, _) = QueuePattern.run_seed(seed, TraceMode::Off).unwrap();
        let yours = Yours(knobs.reference_queue().unwrap());
        let world = QueueWorld::new(knobs.clone(), yours).unwrap();
        let (report, _) = run(world, knobs.fault_plan(), TraceMode::Off);
        report.assert_pass();
        assert_eq!(report.digest, reference.digest, "seed {seed}");
    }
}

/// One step of a producer, the workers and the operator against the core.
#[derive(Clone, Debug)]
enum Op {
    Enqueue(u64, u32),
    Lease,
    Ack(usize),
    Nack(usize),
    Heartbeat(usize),
    Advance(u64),
    Redrive,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u64, 0..2u32).prop_map(|(p, t)| Op::Enqueue(p, t)),
        3 => Just(Op::Lease),
        2 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Nack),
        1 => any::<usize>().prop_map(Op::Heartbeat),
        2 => (0..400u64).prop_map(Op::Advance),
        1 => Just(Op::Redrive),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    /// Durability: a queue restarted from its store at any points answers every later
    /// call exactly as one that never restarted, and stays balanced at every step.
    #[test]
    fn a_restart_from_the_store_changes_nothing(ops in proptest::collection::vec(op(), 1..200)) {
        let config = QueueConfig::builder()
            .visibility_timeout(Duration::from_millis(300))
            .attempts_max(3)
            .backoff(Duration::from_millis(10), Duration::from_millis(200))
            .build()
            .unwrap();
        let mut a = Queue::new(config);
        let mut b = Queue::new(config);
        let mut now = Instant::ZERO;
        let mut versions: BTreeMap<(u64, u32), u64> = BTreeMap::new();
        let mut leases: Vec<LeaseToken> = Vec::new();
        for op in ops {
            match op {
                Op::Enqueue(p, t) => {
                    let v = versions.entry((p, t)).or_insert(0);
                    *v += 1;
                    let task = Task {
                        key: TaskKey { profile: ProfileId(p), target: TargetId(t) },
                        version: *v,
                    };
                    prop_assert_eq!(a.enqueue(task, now), b.enqueue(task, now));
                }
                Op::Lease => {
                    let (la, lb) = (a.lease(now), b.lease(now));
                    prop_assert_eq!(la, lb);
                    if let Some(l) = la {
                        leases.push(l.token);
                    }
                }
                Op::Ack(i) if !leases.is_empty() => {
                    let t = leases[i % leases.len()];
                    prop_assert_eq!(a.ack(&t, now), b.ack(&t, now));
                }
                Op::Nack(i) if !leases.is_empty() => {
                    let t = leases[i % leases.len()];
                    prop_assert_eq!(a.nack(&t, now), b.nack(&t, now));
                }
                Op::Heartbeat(i) if !leases.is_empty() => {
                    let t = leases[i % leases.len()];
                    prop_assert_eq!(a.heartbeat(&t, now), b.heartbeat(&t, now));
                }
                Op::Advance(ms) => now = now + Duration::from_millis(ms),
                Op::Redrive => prop_assert_eq!(a.redrive(now), b.redrive(now)),
                Op::Restart => b = Queue::recover(config, b.store().clone()),
                _ => {}
            }
            prop_assert_eq!(a.counts(), b.counts());
            prop_assert!(a.counts().balanced(), "{:?}", a.counts());
            prop_assert_eq!(a.dead_letters(), b.dead_letters());
        }
    }
}

/// The first violation a mutant of the catalog shows over the default seeds `0..300`.
fn first_violation(mutant: &str) -> (u64, String, String) {
    for seed in 0..300 {
        let run = Pattern::run(
            &QueuePattern,
            seed,
            &Pattern::plan(&QueuePattern, seed),
            TraceMode::Off,
            Some(mutant),
        )
        .unwrap();
        if let Some(inv) = run.report.outcome.invariant() {
            return (seed, inv.to_string(), run.report.outcome.to_string());
        }
    }
    panic!("mutant {mutant} survived 300 seeds");
}

/// `queue.single_lease` is judged from what the world observes: a queue that takes no
/// lease and honestly says so is caught by the comparison of its reported deadline
/// with the declared one; a queue that reports honest-looking deadlines but hides
/// nothing (`due_without_leases`) or does not really extend on a heartbeat is caught by
/// the world's own record of who holds which delivery since when.
#[test]
fn single_lease_is_judged_from_what_the_world_observes() {
    let (_, inv, msg) = first_violation("no_lease_reports_none");
    assert_eq!(inv, SINGLE_LEASE);
    assert!(msg.contains("reports its deadline as"), "{msg}");
    assert!(msg.contains("declared visibility timeout"), "{msg}");
    for mutant in ["due_without_leases", "heartbeat_not_extended"] {
        let (_, inv, msg) = first_violation(mutant);
        assert_eq!(inv, SINGLE_LEASE, "{mutant}: {msg}");
        assert!(
            msg.contains("two workers deliver the same task"),
            "{mutant}: {msg}"
        );
        assert!(
            msg.contains("worker-"),
            "{mutant}: names the workers: {msg}"
        );
    }
}
