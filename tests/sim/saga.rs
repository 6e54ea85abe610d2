//! The orchestrated checkout saga in its simulated world: every invariant under
//! proptest (knob seeds x fault plans), determinism, a golden digest, coverage, and the
//! mutants.

use crate::support::failure_message;
use faultline::saga::mutants::CATALOG;
use faultline::saga::world::{INVARIANTS, MARKS, SagaKnobs, SagaWorld, run_seed};
use faultline_sim::prelude::*;
use faultline_sim::{Coverage, check_determinism};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn plans(kinds: &'static [FaultKindTag]) -> BoxedStrategy<FaultPlan> {
    let profile = SagaKnobs::from_seed(0)
        .fault_profile()
        .kinds(kinds.iter().copied());
    FaultPlan::strategy(&profile)
}

const ALL: &[FaultKindTag] = &[
    FaultKindTag::Outage,
    FaultKindTag::Slow,
    FaultKindTag::Errors,
    FaultKindTag::Crash,
    FaultKindTag::Drop,
    FaultKindTag::Duplicate,
    FaultKindTag::Delay,
];

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
    let mut seen = Coverage::declare(MARKS.iter().copied());
    for seed in 0..500 {
        let (report, _) = run_seed(seed, TraceMode::Off).unwrap();
        report.assert_pass();
        for (mark, hits) in &report.coverage.hits {
            if *hits > 0 {
                seen.hit(mark);
            }
        }
    }
    assert!(
        seen.undeclared.is_empty(),
        "undeclared marks: {:?}",
        seen.undeclared
    );
    assert!(
        seen.missed().is_empty(),
        "never hit in 500 seeds: {:?}",
        seen.missed()
    );
}

/// Every mutant is caught by its expected invariant, and every invariant catches one.
#[test]
fn mutants_are_caught() {
    const SEEDS: u64 = 200;
    let mut catchers = std::collections::BTreeSet::new();
    println!(
        "{:<28} {:<28} {:>6} {:>10}",
        "mutant", "caught by", "cases", "expected@"
    );
    for m in CATALOG {
        let mut first: Option<(u64, String)> = None;
        let mut expected_at = None;
        for seed in 0..SEEDS {
            let (report, _) = m.run(seed, TraceMode::Off).unwrap();
            if let Some(inv) = report.outcome.invariant() {
                catchers.insert(inv.to_string());
                first.get_or_insert((seed + 1, inv.to_string()));
                if inv == m.expected {
                    expected_at = Some(seed + 1);
                    break;
                }
            }
        }
        let (cases, inv) =
            first.unwrap_or_else(|| panic!("mutant {} survived {SEEDS} seeds", m.name));
        let expected = expected_at.unwrap_or_else(|| {
            panic!(
                "mutant {} never caught by {} in {SEEDS} seeds",
                m.name, m.expected
            )
        });
        println!("{:<28} {:<28} {:>6} {:>10}", m.name, inv, cases, expected);
    }
    for inv in INVARIANTS {
        assert!(catchers.contains(inv), "invariant {inv} caught no mutant");
    }
}
