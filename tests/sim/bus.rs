//! The event bus in its simulated world: every invariant under proptest (knob seeds x
//! fault plans), determinism, a golden digest, coverage, and the mutants.

use crate::support::{assert_every_mark_hit, assert_mutants_caught, failure_message};
use faultline::bus::core::Bus;
use faultline::bus::invariants::INVARIANTS;
use faultline::bus::pattern::BusPattern;
use faultline::bus::world::{BusKnobs, BusWorld, MARKS, run, run_seed};
use faultline_sim::check_determinism;
use faultline_sim::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The fault plans of the bus world for `seed`'s subscribers, narrowed to `kinds`.
fn plans(seed: u64, kinds: &[FaultKindTag]) -> BoxedStrategy<FaultPlan> {
    let profile = BusKnobs::from_seed(seed)
        .fault_profile()
        .kinds(kinds.iter().copied());
    FaultPlan::strategy(&profile)
}

fn seed_and_plan(kinds: &'static [FaultKindTag]) -> impl Strategy<Value = (u64, FaultPlan)> {
    any::<u64>().prop_flat_map(move |seed| (Just(seed), plans(seed, kinds)))
}

const ALL: &[FaultKindTag] = &[
    FaultKindTag::Errors,
    FaultKindTag::Slow,
    FaultKindTag::Crash,
];

fn check(property: &str, seed: u64, plan: FaultPlan) -> Result<BusWorld<Bus<u64>>, TestCaseError> {
    let knobs = BusKnobs::from_seed(seed);
    let bus = knobs
        .reference_bus()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (report, world) = run(&knobs, plan.clone(), bus, TraceMode::Off);
    if let Some(msg) = failure_message("bus", property, seed, &plan, &report) {
        return Err(TestCaseError::fail(msg));
    }
    Ok(world)
}

proptest! {
    /// All seven invariants under every kind of subscriber fault.
    #[test]
    fn every_invariant_holds((seed, plan) in seed_and_plan(ALL)) {
        check("every_invariant_holds", seed, plan)?;
    }

    /// 1, 7. Handler error bursts: every failed event is retried, then dead-lettered, and
    /// at rest handled + dead-lettered = owed.
    #[test]
    fn failing_handlers_lose_nothing((seed, plan) in seed_and_plan(&[FaultKindTag::Errors])) {
        let world = check("failing_handlers_lose_nothing", seed, plan)?;
        prop_assert!(world.stats.published == 0 || world.stats.handled > 0);
    }

    /// 1, 2. Crashes and restarts: a subscriber resumes from its last acknowledged
    /// event, in order, and nothing is handed to it twice as new.
    #[test]
    fn crashed_subscribers_resume_where_they_left((seed, plan) in seed_and_plan(&[FaultKindTag::Crash])) {
        check("crashed_subscribers_resume_where_they_left", seed, plan)?;
    }

    /// 4, 5. A slow subscriber: retention stays within the capacity and the others are
    /// never held back.
    #[test]
    fn a_slow_subscriber_holds_nobody_back((seed, plan) in seed_and_plan(&[FaultKindTag::Slow])) {
        let world = check("a_slow_subscriber_holds_nobody_back", seed, plan)?;
        prop_assert!(world.stats.retained_max <= world.knobs().capacity);
    }
}

#[test]
fn same_seed_same_digest() {
    for seed in 0..8 {
        let knobs = BusKnobs::from_seed(seed);
        let sim = Simulation::new(seed).plan(knobs.fault_plan());
        check_determinism(&sim, || {
            BusWorld::new(knobs.clone(), knobs.reference_bus().unwrap())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.handled),
        (518_749_721_754_395_778, 3_578, 2_465),
        "golden digest changed"
    );
}

#[test]
fn every_mark_is_hit_over_1000_seeds() {
    assert_every_mark_hit(&BusPattern, MARKS, 1000);
}

/// Every mutant is caught, by its expected invariant too, and every invariant catches
/// at least one mutant. Prints the table.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&BusPattern, &INVARIANTS, 300);
}
