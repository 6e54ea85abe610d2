//! The circuit breaker in the simulated SMS world: every invariant under proptest
//! (knob seeds x fault plans), determinism, a golden digest, coverage, and the mutants.

use crate::support::{assert_deterministic, assert_every_mark_hit, assert_mutants_caught, check};
use faultline::breaker::invariants::INVARIANTS;
use faultline::breaker::pattern::BreakerPattern;
use faultline::breaker::world::{MARKS, SmsKnobs};
use faultline::harness::Scenario;
use faultline_sim::prelude::*;
use proptest::prelude::*;

/// The fault plans of the SMS world, narrowed to `kinds`.
fn plans(kinds: &[FaultKindTag], faults_min: usize) -> BoxedStrategy<FaultPlan> {
    let profile = SmsKnobs::from_seed(0)
        .fault_profile()
        .kinds(kinds.iter().copied())
        .faults(faults_min, 8);
    FaultPlan::strategy(&profile)
}

const ALL: &[FaultKindTag] = &[
    FaultKindTag::Outage,
    FaultKindTag::Slow,
    FaultKindTag::Errors,
];

proptest! {
    /// All seven invariants over swarm-free random plans of every kind.
    #[test]
    fn every_invariant_holds(seed in any::<u64>(), plan in plans(ALL, 0)) {
        check(&BreakerPattern, "every_invariant_holds", seed, plan)?;
    }

    /// 4. The API is never flooded: over each outage, calls stay within the bound.
    #[test]
    fn load_bound_holds_over_outages(seed in any::<u64>(), plan in plans(&[FaultKindTag::Outage], 1)) {
        let world = check(&BreakerPattern, "load_bound_holds_over_outages", seed, plan)?;
        prop_assert!(!world.checker.outage_loads.is_empty(), "an outage was checked");
    }

    /// 5. Callers get an answer within the timeout, however slow the API gets.
    #[test]
    fn callers_get_a_timely_answer_under_slowness(
        seed in any::<u64>(),
        plan in plans(&[FaultKindTag::Slow, FaultKindTag::Outage], 1),
    ) {
        let world = check(&BreakerPattern, "callers_get_a_timely_answer_under_slowness", seed, plan)?;
        let limit = world.knobs().timeout_ms + 1;
        prop_assert!(world.stats.answer_latency_ms_max <= limit);
    }

    /// 3. Bad requests (ignored outcomes) never trip the breaker on their own.
    #[test]
    fn bad_requests_never_trip_it(
        seed in any::<u64>().prop_filter("many bad requests", |s| SmsKnobs::from_seed(*s).invalid_number_percent >= 15),
        plan in plans(&[FaultKindTag::Errors], 0),
    ) {
        check(&BreakerPattern, "bad_requests_never_trip_it", seed, plan)?;
    }

    /// 2, 6, 7. Callers who give up mid-call never leave the breaker stuck in half-open,
    /// and every permit is accounted for.
    #[test]
    fn cancelled_calls_never_leave_it_stuck(
        seed in any::<u64>().prop_filter("many cancellations", |s| SmsKnobs::from_seed(*s).cancel_percent >= 8),
        plan in plans(ALL, 1),
    ) {
        let world = check(&BreakerPattern, "cancelled_calls_never_leave_it_stuck", seed, plan)?;
        prop_assert!(world.stats.time_to_close_ms.is_some());
    }
}

#[test]
fn same_seed_same_digest() {
    assert_deterministic(&BreakerPattern, 0..8);
}

/// Changes only on purpose (engine, knobs, plan generator, world or reference guard);
/// update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = BreakerPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.api_calls),
        (5_729_701_379_545_224_716, 3_138, 923),
        "golden digest changed"
    );
}

#[test]
fn every_mark_is_hit_over_1000_seeds() {
    assert_every_mark_hit(&BreakerPattern, MARKS, 1000);
}

/// Every mutant is caught, and every invariant catches at least one mutant. Prints the
/// table: mutant, first invariant to catch it, seeds (cases) it took, and how soon its
/// expected invariant caught it.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&BreakerPattern, &INVARIANTS, 500);
}
