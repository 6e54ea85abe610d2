//! The event bus in its simulated world: every invariant under proptest (knob seeds x
//! fault plans), determinism, a golden digest, coverage, and the mutants.

use crate::support::{
    assert_deterministic, assert_every_mark_hit, assert_mutants_caught, check, seed_and_plan,
};
use faultline::bus::invariants::INVARIANTS;
use faultline::bus::pattern::BusPattern;
use faultline::bus::world::MARKS;
use faultline::harness::Scenario;
use faultline_sim::prelude::*;
use proptest::prelude::*;

const ALL: &[FaultKindTag] = &[
    FaultKindTag::Errors,
    FaultKindTag::Slow,
    FaultKindTag::Crash,
];

proptest! {
    /// All seven invariants under every kind of subscriber fault.
    #[test]
    fn every_invariant_holds((seed, plan) in seed_and_plan(BusPattern, ALL)) {
        check(&BusPattern, "every_invariant_holds", seed, plan)?;
    }

    /// 1, 7. Handler error bursts: every failed event is retried, then dead-lettered, and
    /// at rest handled + dead-lettered = owed.
    #[test]
    fn failing_handlers_lose_nothing((seed, plan) in seed_and_plan(BusPattern, &[FaultKindTag::Errors])) {
        let world = check(&BusPattern, "failing_handlers_lose_nothing", seed, plan)?;
        prop_assert!(world.stats.published == 0 || world.stats.handled > 0);
    }

    /// 1, 2. Crashes and restarts: a subscriber resumes from its last acknowledged
    /// event, in order, and nothing is handed to it twice as new.
    #[test]
    fn crashed_subscribers_resume_where_they_left((seed, plan) in seed_and_plan(BusPattern, &[FaultKindTag::Crash])) {
        check(&BusPattern, "crashed_subscribers_resume_where_they_left", seed, plan)?;
    }

    /// 4, 5. A slow subscriber: retention stays within the capacity and the others are
    /// never held back.
    #[test]
    fn a_slow_subscriber_holds_nobody_back((seed, plan) in seed_and_plan(BusPattern, &[FaultKindTag::Slow])) {
        let world = check(&BusPattern, "a_slow_subscriber_holds_nobody_back", seed, plan)?;
        prop_assert!(world.stats.retained_max <= world.knobs().capacity);
    }
}

#[test]
fn same_seed_same_digest() {
    assert_deterministic(&BusPattern, 0..8);
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = BusPattern.run_seed(7, TraceMode::Full).unwrap();
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
