//! The orchestrated checkout saga in its simulated world: every invariant under
//! proptest (knob seeds x fault plans), determinism, a golden digest, coverage, and the
//! mutants.

use crate::support::{assert_every_mark_hit, assert_mutants_caught, failure_message};
use faultline::saga::pattern::SagaPattern;
use faultline::saga::world::{INVARIANTS, MARKS, SagaKnobs, SagaWorld, run_seed};
use faultline_sim::check_determinism;
use faultline_sim::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn plans(kinds: &'static [FaultKindTag]) -> BoxedStrategy<FaultPlan> {
    let profile = SagaKnobs::from_seed(0)
        .fault_profile()
        .kinds(kinds.iter().copied());
    FaultPlan::strategy(&profile)
}

const ALL: &[FaultKindTag] = &FaultKindTag::ALL;

fn check(property: &str, seed: u64, plan: FaultPlan) -> Result<SagaWorld, TestCaseError> {
    let knobs = SagaKnobs::from_seed(seed);
    let world = SagaWorld::new(knobs).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut world = world;
    let report = Simulation::new(seed)
        .plan(plan.clone())
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .run(&mut world);
    if let Some(msg) = failure_message("saga", property, seed, &plan, &report) {
        return Err(TestCaseError::fail(msg));
    }
    Ok(world)
}

proptest! {
    /// Every invariant under every kind of fault.
    #[test]
    fn every_invariant_holds(seed in any::<u64>(), plan in plans(ALL)) {
        check("every_invariant_holds", seed, plan)?;
    }

    /// Orchestrator crashes at any point: recovery from the log leaves every saga at
    /// rest, stock and money conserved.
    #[test]
    fn orchestrator_crashes_are_recovered_from_the_log(seed in any::<u64>(), plan in plans(&[FaultKindTag::Crash])) {
        check("orchestrator_crashes_are_recovered_from_the_log", seed, plan)?;
    }

    /// Duplicated, dropped and delayed messages and lost replies have no extra effect.
    #[test]
    fn duplicates_and_lost_replies_have_no_extra_effect(
        seed in any::<u64>(),
        plan in plans(&[FaultKindTag::Duplicate, FaultKindTag::Drop, FaultKindTag::Delay, FaultKindTag::Errors]),
    ) {
        let world = check("duplicates_and_lost_replies_have_no_extra_effect", seed, plan)?;
        prop_assert!(world.services.effects_max() <= 1);
    }
}

#[test]
fn same_seed_same_digest() {
    for seed in 0..6 {
        let knobs = SagaKnobs::from_seed(seed);
        let sim = Simulation::new(seed)
            .plan(knobs.fault_plan())
            .liveness_max(SimDuration::from_secs(3_600));
        check_determinism(&sim, || SagaWorld::new(knobs.clone()).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.completed),
        (16_066_983_235_679_128_140, 5_781, 44),
        "golden digest changed"
    );
}

#[test]
fn every_mark_is_hit_over_500_seeds() {
    assert_every_mark_hit(&SagaPattern, MARKS, 500);
}

/// Every mutant is caught by its expected invariant, and every invariant catches one.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&SagaPattern, &INVARIANTS, 200);
}
