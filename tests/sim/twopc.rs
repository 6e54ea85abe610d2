//! Two-phase commit, the checkout saga's baseline, in the same simulated world: every
//! invariant it can meet under proptest (knob seeds x fault plans), determinism, a
//! golden digest, coverage, the mutants, and the blocking a coordinator crash causes.

use crate::support::{assert_deterministic, assert_every_mark_hit, assert_mutants_caught, check};
use faultline::harness::Scenario;
use faultline::saga::checkout::SagaKnobs;
use faultline::saga::twopc::invariants::INVARIANTS;
use faultline::saga::twopc::pattern::TwoPcPattern;
use faultline::saga::twopc::world::{MARKS, TwoPcWorld, checkouts};
use faultline_sim::prelude::*;
use proptest::prelude::*;

fn plans(kinds: &'static [FaultKindTag]) -> BoxedStrategy<FaultPlan> {
    let profile = SagaKnobs::from_seed(0)
        .fault_profile()
        .kinds(kinds.iter().copied());
    FaultPlan::strategy(&profile)
}

const ALL: &[FaultKindTag] = &FaultKindTag::ALL;

fn run(seed: u64, plan: FaultPlan) -> (RunReport, TwoPcWorld) {
    TwoPcPattern
        .run_reference(seed, plan, TraceMode::Off)
        .unwrap()
}

proptest! {
    /// Every invariant under every kind of fault.
    #[test]
    fn every_invariant_holds(seed in any::<u64>(), plan in plans(ALL)) {
        check(&TwoPcPattern, "every_invariant_holds", seed, plan)?;
    }

    /// Coordinator crashes at any point: recovery from the log (and presumed abort)
    /// leaves every transaction decided, every participant agreeing, no lock held.
    #[test]
    fn coordinator_crashes_are_recovered_from_the_log(seed in any::<u64>(), plan in plans(&[FaultKindTag::Crash])) {
        let world = check(&TwoPcPattern, "coordinator_crashes_are_recovered_from_the_log", seed, plan)?;
        prop_assert_eq!(world.stats.inconsistent, 0);
        prop_assert!(world.participants.iter().all(|p| p.locks_held() == 0));
    }

    /// Duplicated, dropped and delayed messages and lost replies have no extra effect.
    #[test]
    fn duplicates_and_lost_replies_have_no_extra_effect(
        seed in any::<u64>(),
        plan in plans(&[FaultKindTag::Duplicate, FaultKindTag::Drop, FaultKindTag::Delay, FaultKindTag::Errors]),
    ) {
        let world = check(&TwoPcPattern, "duplicates_and_lost_replies_have_no_extra_effect", seed, plan)?;
        prop_assert!(world.participants.iter().all(|p| p.effects_max() <= 1));
    }

    /// Outages and slow participants: votes time out and abort, locks are released.
    #[test]
    fn outages_and_slowness_abort_and_release(
        seed in any::<u64>(),
        plan in plans(&[FaultKindTag::Outage, FaultKindTag::Slow]),
    ) {
        check(&TwoPcPattern, "outages_and_slowness_abort_and_release", seed, plan)?;
    }
}

#[test]
fn same_seed_same_digest() {
    assert_deterministic(&TwoPcPattern, 0..6);
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = TwoPcPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.committed),
        (15_544_091_593_019_406_705, 14_464, 48),
        "golden digest changed"
    );
}

/// The checkouts depend on the knobs alone, not on the fault plan: a crash-heavy run
/// starts exactly the customers a healthy one does.
#[test]
fn checkouts_come_from_the_knobs_alone() {
    let knobs = SagaKnobs::from_seed(3);
    let list = checkouts(&knobs);
    assert_eq!(list, checkouts(&knobs));
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        list.iter()
            .all(|(t, _, _)| *t < SimTime::from_millis(knobs.horizon_ms))
    );
    let (healthy, calm) = run(3, FaultPlan::healthy(knobs.horizon_ms));
    healthy.assert_pass();
    let (faulty, stormy) = run(3, knobs.fault_plan());
    faulty.assert_pass();
    assert_eq!(calm.stats.started, list.len() as u64);
    assert_eq!(stormy.stats.started, list.len() as u64);
}

#[test]
fn every_mark_is_hit_over_100_seeds() {
    assert_every_mark_hit(&TwoPcPattern, MARKS, 100);
}

/// Every mutant is caught by its expected invariant, and every invariant catches one.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&TwoPcPattern, &INVARIANTS, 200);
}

/// 2PC blocks: a coordinator crash right after a transaction's participants voted Yes
/// leaves them in doubt, holding their locks for the whole crash. Without the crash the
/// same seed's locks are held for a few round trips.
#[test]
fn coordinator_crash_after_prepare_holds_locks_for_the_crash() {
    const SEED: u64 = 7;
    const CRASH_MS: u64 = 3_000;
    let horizon = SagaKnobs::from_seed(SEED).horizon_ms;
    let (healthy, calm) = run(SEED, FaultPlan::healthy(horizon));
    healthy.assert_pass();
    // A lock taken at a Yes vote some seconds in: crash the coordinator 1 ms later.
    let hold = calm
        .stats
        .lock_holds
        .iter()
        .find(|h| h.from >= SimTime::from_secs(5) && h.duration() > SimDuration::from_millis(1))
        .copied()
        .unwrap();
    let at = hold.from.as_millis() + 1;
    let mut plan = FaultPlan::healthy(horizon);
    plan.faults
        .push(Fault::new(FaultKind::Crash, "orchestrator", at, at + CRASH_MS).unwrap());
    let (crashed, blocked) = run(SEED, plan);
    crashed.assert_pass();

    let crash = SimDuration::from_millis(CRASH_MS);
    let calm_longest = calm.stats.longest_lock_hold;
    let blocked_longest = blocked.stats.longest_lock_hold;
    println!(
        "longest lock hold: {calm_longest} without a crash, {blocked_longest} with a {crash} crash; \
         lock-held time inside the crash: {}",
        blocked.stats.locked_during_crash
    );
    assert_eq!(calm.stats.locked_during_crash, SimDuration::ZERO);
    assert!(
        calm_longest < SimDuration::from_millis(CRASH_MS / 4),
        "{calm_longest}"
    );
    // The in-doubt transaction held its locks through the whole crash.
    let through = blocked
        .stats
        .lock_holds
        .iter()
        .find(|h| h.tx == hold.tx)
        .unwrap();
    assert!(through.duration() >= crash, "{through:?}");
    assert!(blocked_longest >= crash);
    assert!(blocked.stats.locked_during_crash >= crash);
    assert_eq!(blocked.stats.inconsistent, 0);
}

/// The orchestrated, choreographed and 2PC worlds see the same customers for a seed,
/// so the saga-vs-2PC comparison compares like with like.
#[test]
fn all_three_worlds_see_the_same_checkouts() {
    use faultline::saga::checkout::SagaKnobs;
    use faultline::saga::choreographed::world::{self as choreo_world, ChoreoWorld};
    use faultline::saga::orchestrated::world::{self as saga_world, SagaWorld};
    use faultline::saga::twopc::world::checkouts;
    for seed in 0..4 {
        let knobs = SagaKnobs::from_seed(seed);
        let expected: Vec<(u64, SimTime)> = checkouts(&knobs)
            .into_iter()
            .map(|(t, s, _)| (s.0, t))
            .collect();
        let healthy = FaultPlan::healthy(knobs.horizon_ms);
        let started =
            |lanes: &[(faultline::saga::SagaId, SimTime, String)]| -> Vec<(u64, SimTime)> {
                lanes
                    .iter()
                    .filter(|(_, _, w)| w == "started")
                    .map(|(s, t, _)| (s.0, *t))
                    .collect()
            };
        let (_, o) = saga_world::run(
            SagaWorld::new(knobs.clone()).unwrap(),
            healthy.clone(),
            TraceMode::Off,
        );
        let (_, c) = choreo_world::run(
            ChoreoWorld::new(knobs.clone()).unwrap(),
            healthy,
            TraceMode::Off,
        );
        assert_eq!(started(&o.lanes), expected, "orchestrated, seed {seed}");
        assert_eq!(started(&c.lanes), expected, "choreographed, seed {seed}");
    }
}

/// Your own coordinator plugs in through `TwoPcCoordinator`: here one that wraps the
/// reference. Faithful, it runs exactly as the reference does; sending a decision before
/// it is durable, or forgetting the log at recovery, the world catches it.
mod plug_in {
    use faultline::clock::Instant;
    use faultline::harness::Scenario;
    use faultline::saga::checkout::SagaKnobs;
    use faultline::saga::twopc::core::{
        Coordinator, CoordinatorOutput, CoordinatorTotals, ToCoordinator, TxRecord, TxState,
    };
    use faultline::saga::twopc::pattern::TwoPcPattern;
    use faultline::saga::twopc::world::{TwoPcWorld, config_of, run as run_world};
    use faultline::saga::{Order, SagaId, TwoPcCoordinator};
    use faultline_sim::prelude::*;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Defect {
        None,
        /// Moves the first `Send` after a decision's `Append` ahead of it.
        Eager,
        /// Recovers from an empty log, whatever the durable one holds.
        Amnesiac,
    }

    /// Delegates everything to the reference, but for its `defect`.
    struct Mine {
        inner: Coordinator,
        defect: Defect,
        held: Option<CoordinatorOutput>,
    }

    impl TwoPcCoordinator for Mine {
        fn start(&mut self, tx: SagaId, order: Order, now: Instant) {
            self.inner.start(tx, order, now);
        }
        fn on_answer(&mut self, answer: &ToCoordinator, now: Instant) {
            self.inner.on_answer(answer, now);
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.inner.handle_timeout(now);
        }
        fn poll_output(&mut self) -> Option<CoordinatorOutput> {
            if let Some(out) = self.held.take() {
                return Some(out);
            }
            let out = self.inner.poll_output()?;
            if self.defect == Defect::Eager
                && matches!(out, CoordinatorOutput::Append(TxRecord::Decision { .. }))
            {
                match self.inner.poll_output() {
                    Some(next @ CoordinatorOutput::Send(..)) => {
                        self.held = Some(out);
                        return Some(next);
                    }
                    other => self.held = other,
                }
            }
            Some(out)
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.inner.poll_timeout()
        }
        fn state(&self, tx: SagaId) -> Option<TxState> {
            self.inner.state(tx)
        }
        fn totals(&self) -> CoordinatorTotals {
            self.inner.totals()
        }
        fn is_at_rest(&self) -> bool {
            self.held.is_none() && self.inner.is_at_rest()
        }
        fn recovered(&self, log: &[TxRecord], now: Instant) -> Self {
            let log = if self.defect == Defect::Amnesiac {
                &[]
            } else {
                log
            };
            Mine {
                inner: Coordinator::recover(self.inner.config().clone(), log, now),
                defect: self.defect,
                held: None,
            }
        }
    }

    fn run(seed: u64, defect: Defect) -> RunReport {
        run_plan(seed, defect, SagaKnobs::from_seed(seed).fault_plan())
    }

    fn run_plan(seed: u64, defect: Defect, plan: FaultPlan) -> RunReport {
        let knobs = SagaKnobs::from_seed(seed);
        let mine = Mine {
            inner: Coordinator::new(config_of(&knobs).unwrap()),
            defect,
            held: None,
        };
        let world = TwoPcWorld::with_coordinator(knobs, mine).unwrap();
        run_world(world, plan, TraceMode::Off).0
    }

    #[test]
    fn a_faithful_coordinator_runs_as_the_reference_does() {
        for seed in 0..8 {
            let report = run(seed, Defect::None);
            report.assert_pass();
            let (reference, _) = TwoPcPattern.run_seed(seed, TraceMode::Off).unwrap();
            assert_eq!(
                (report.digest, report.events),
                (reference.digest, reference.events),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_decision_sent_before_it_is_durable_is_caught() {
        let report = run(0, Defect::Eager);
        assert_eq!(
            report.outcome.invariant(),
            Some("twopc.write_ahead"),
            "{}",
            report.outcome
        );
    }

    /// A plan that leaves the payment in doubt on a durable Commit across a
    /// coordinator crash: seed 7's first commit after 1 s, its `Commit` to the payment
    /// dropped, and the coordinator crashed 1 ms later for a second.
    fn commit_in_doubt_across_a_crash(seed: u64) -> FaultPlan {
        let horizon = SagaKnobs::from_seed(seed).horizon_ms;
        let (healthy, calm) = run_world(
            TwoPcWorld::new(SagaKnobs::from_seed(seed)).unwrap(),
            FaultPlan::healthy(horizon),
            TraceMode::Off,
        );
        healthy.assert_pass();
        let (_, decided, _) = calm
            .lanes
            .iter()
            .find(|(_, t, what)| *t >= SimTime::from_secs(1) && what == "decided Commit")
            .unwrap();
        let at = decided.as_millis();
        let mut plan = FaultPlan::healthy(horizon);
        plan.faults.push(
            Fault::new(
                FaultKind::Drop { ratio: Ratio::ONE },
                "to-payment",
                at,
                at + 1,
            )
            .unwrap(),
        );
        plan.faults
            .push(Fault::new(FaultKind::Crash, "orchestrator", at + 1, at + 1_001).unwrap());
        plan
    }

    #[test]
    fn a_recovery_that_forgets_the_log_is_caught() {
        const SEED: u64 = 7;
        let plan = commit_in_doubt_across_a_crash(SEED);
        // The reference recovers the Commit from its log and re-sends it.
        run_plan(SEED, Defect::None, plan.clone()).assert_pass();
        // Recovered from nothing, it answers the payment's renewed vote with a presumed
        // Abort while its log holds Commit.
        let report = run_plan(SEED, Defect::Amnesiac, plan);
        assert_eq!(
            report.outcome.invariant(),
            Some("twopc.write_ahead"),
            "{}",
            report.outcome
        );
        let why = report.outcome.to_string();
        assert!(
            why.contains("Abort payment") && why.contains("Some(Commit)"),
            "{why}"
        );
    }
}
