//! The event bus in its simulated world: every invariant under proptest (knob seeds x
//! fault plans), determinism, a golden digest, coverage, and the mutants.

use crate::support::failure_message;
use faultline::bus::core::Bus;
use faultline::bus::invariants::INVARIANTS;
use faultline::bus::mutants::CATALOG;
use faultline::bus::world::{BusKnobs, BusWorld, MARKS, run, run_seed};
use faultline_sim::prelude::*;
use faultline_sim::{Coverage, check_determinism};
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
    let mut seen = Coverage::declare(MARKS.iter().copied());
    for seed in 0..1000 {
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
        "never hit in 1000 seeds: {:?}",
        seen.missed()
    );
}

/// Every mutant is caught, by its expected invariant too, and every invariant catches
/// at least one mutant. Prints the table.
#[test]
fn mutants_are_caught() {
    const SEEDS: u64 = 300;
    let mut catchers = std::collections::BTreeSet::new();
    println!(
        "{:<24} {:<32} {:>6} {:>10}",
        "mutant", "caught by", "cases", "expected@"
    );
    for m in CATALOG {
        let mut first: Option<(u64, String)> = None;
        let mut expected_at = None;
        for seed in 0..SEEDS {
            let knobs = BusKnobs::from_seed(seed);
            let (report, _) = run(
                &knobs,
                knobs.fault_plan(),
                m.bus(&knobs).unwrap(),
                TraceMode::Off,
            );
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
        println!("{:<24} {:<32} {:>6} {:>10}", m.name, inv, cases, expected);
    }
    for inv in INVARIANTS {
        assert!(catchers.contains(inv), "invariant {inv} caught no mutant");
    }
}
