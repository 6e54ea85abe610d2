//! The event bus in its simulated world: every invariant under proptest (knob seeds x
//! fault plans), determinism, a golden digest, coverage, the mutants, and a bus written
//! from scratch against the `EventBus` contract that must pass as the reference does.

use crate::support::ledger_bus::LedgerBus;
use crate::support::{
    assert_deterministic, assert_every_mark_hit, assert_mutants_caught, check, seed_and_plan,
};
use faultline::bus::invariants::{self, INVARIANTS};
use faultline::bus::pattern::BusPattern;
use faultline::bus::world::{BusKnobs, BusWorld, MARKS, run};
use faultline::harness::{Pattern, Scenario};
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
        (2_348_301_307_106_063_702, 3_862, 2_490),
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

/// The goroutine-per-publish mutant reorders publishes that land close together; the
/// bursts make that happen on a good share of seeds, and the ordering invariant is the
/// one that sees it. Prints the rate.
#[test]
fn publish_in_own_task_is_caught_by_fifo_on_a_fifth_of_seeds() {
    let seeds = 500;
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for seed in 0..seeds {
        let run = BusPattern
            .run(
                seed,
                &BusPattern.plan(seed),
                TraceMode::Off,
                Some("publish_in_own_task"),
            )
            .unwrap();
        let inv = run.report.outcome.invariant().unwrap_or("(passed)");
        *by.entry(inv.to_string()).or_default() += 1;
    }
    println!("publish_in_own_task over seeds 0..{seeds}: {by:?}");
    let by_fifo = by.get(invariants::FIFO).copied().unwrap_or(0);
    assert!(
        by_fifo * 5 >= seeds,
        "caught by {} on only {by_fifo} of {seeds} seeds",
        invariants::FIFO
    );
}

/// No false positives: the bus written from scratch passes every invariant over many
/// seeds (knobs and plan from each seed), bursts included.
#[test]
fn a_bus_written_from_scratch_passes() {
    let mut bursts = 0;
    for seed in 0..400 {
        let knobs = BusKnobs::from_seed(seed);
        let bus = LedgerBus::new(knobs.capacity, knobs.attempts_max, knobs.backoff_ms);
        let plan = knobs.fault_plan();
        let (report, world) = run(BusWorld::new(knobs, bus), plan, TraceMode::Off);
        if let Some(f) = report.failure() {
            panic!("seed {seed}: {}", f.outcome);
        }
        assert!(world.stats.published == 0 || world.stats.handled > 0);
        bursts += report.coverage.hits.get("bus.burst").copied().unwrap_or(0);
    }
    assert!(bursts > 0, "no burst in 400 seeds");
}

/// Settings of the bus's own, other than the knobs': twice the capacity or half of
/// it, two attempts more or (down to one) fewer, three times the backoff.
fn own_settings(knobs: &BusKnobs) -> (usize, u32, (u64, u64)) {
    let capacity = if knobs.seed.is_multiple_of(2) {
        knobs.capacity * 2
    } else {
        (knobs.capacity / 2).max(2)
    };
    let attempts = if knobs.seed.is_multiple_of(3) || knobs.attempts_max == 1 {
        knobs.attempts_max + 2
    } else {
        knobs.attempts_max - 1
    };
    let backoff = (knobs.backoff_ms.0 * 3, knobs.backoff_ms.1 * 3);
    (capacity, attempts, backoff)
}

/// Declared policies, no false positives: the bus written from scratch with a capacity,
/// attempts and backoff of its own (never the knobs'), declaring them truly, passes
/// every seed (before the bus declared a policy, the world judged it by the knobs and
/// reported it broken).
#[test]
fn a_bus_with_its_own_settings_declaring_them_passes() {
    for seed in 0..400 {
        let knobs = BusKnobs::from_seed(seed);
        let (capacity, attempts, backoff) = own_settings(&knobs);
        let bus = LedgerBus::new(capacity, attempts, backoff);
        let plan = knobs.fault_plan();
        let world = BusWorld::new(knobs, bus);
        assert_eq!(world.policy().capacity, capacity);
        assert_eq!(world.policy().attempts_max, attempts);
        let (report, _) = run(world, plan, TraceMode::Off);
        if let Some(f) = report.failure() {
            panic!("seed {seed}: {}", f.outcome);
        }
    }
}

/// The same bus declaring the knobs' settings while it keeps its own is caught: by
/// `bus.bounded_retention` (it retains more than it declares) or `bus.exactly_once`
/// (it dead-letters before or after the declared attempts). Prints the rate.
#[test]
fn a_bus_declaring_the_knobs_settings_while_keeping_others_is_caught() {
    let seeds = 400;
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for seed in 0..seeds {
        let knobs = BusKnobs::from_seed(seed);
        let (capacity, attempts, backoff) = own_settings(&knobs);
        let bus = LedgerBus::new(capacity, attempts, backoff)
            .declaring(knobs.reference_policy().unwrap());
        let plan = knobs.fault_plan();
        let (report, _) = run(BusWorld::new(knobs, bus), plan, TraceMode::Off);
        let inv = report.outcome.invariant().unwrap_or("(passed)");
        *by.entry(inv.to_string()).or_default() += 1;
    }
    println!("ledger bus declaring the knobs' settings over seeds 0..{seeds}: {by:?}");
    let caught = seeds - by.get("(passed)").copied().unwrap_or(0);
    assert!(
        caught * 2 >= seeds,
        "caught on only {caught} of {seeds} seeds: {by:?}"
    );
    for inv in [invariants::BOUNDED_RETENTION, invariants::EXACTLY_ONCE] {
        assert!(by.contains_key(inv), "never caught by {inv}: {by:?}");
    }
}

/// The mutant that declares one attempt more than it makes (judged by its declaration
/// alone) is caught by `bus.exactly_once` on every seed where the reference
/// dead-letters an event (292 of seeds 0..500), and only there. Prints the rate.
#[test]
fn declares_more_attempts_is_caught_by_exactly_once() {
    let seeds = 500;
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut dead_lettering = 0;
    for seed in 0..seeds {
        let reference = BusPattern
            .run(seed, &BusPattern.plan(seed), TraceMode::Off, None)
            .unwrap();
        let dead = reference
            .report
            .coverage
            .hits
            .get("bus.dead_letter")
            .is_some_and(|n| *n > 0);
        dead_lettering += u64::from(dead);
        let run = BusPattern
            .run(
                seed,
                &BusPattern.plan(seed),
                TraceMode::Off,
                Some("declares_more_attempts"),
            )
            .unwrap();
        let inv = run.report.outcome.invariant().unwrap_or("(passed)");
        if dead {
            assert_eq!(inv, invariants::EXACTLY_ONCE, "seed {seed}");
        }
        *by.entry(inv.to_string()).or_default() += 1;
    }
    println!(
        "declares_more_attempts over seeds 0..{seeds}: {by:?}; the reference dead-letters on {dead_lettering}"
    );
    let by_exactly_once = by.get(invariants::EXACTLY_ONCE).copied().unwrap_or(0);
    assert!(dead_lettering > 0);
    assert_eq!(by_exactly_once, dead_lettering, "{by:?}");
}

/// `bus.conformance` is the reference's check: the reference declares exactly the
/// knobs' settings, and the reference built with other settings, declaring them
/// honestly, is caught by it on every seed (a plug-in's world, `BusWorld::new`, leaves
/// it off: see `a_bus_with_its_own_settings_declaring_them_passes`).
#[test]
fn conformance_holds_the_reference_to_the_knobs_settings() {
    for seed in 0..50 {
        let knobs = BusKnobs::from_seed(seed);
        let bus = knobs.reference_bus().unwrap();
        assert_eq!(
            faultline::bus::contract::EventBus::policy(&bus),
            knobs.reference_policy().unwrap()
        );
        let run = BusPattern
            .run(
                seed,
                &BusPattern.plan(seed),
                TraceMode::Off,
                Some("misconfigured"),
            )
            .unwrap();
        assert_eq!(
            run.report.outcome.invariant(),
            Some(invariants::CONFORMANCE),
            "seed {seed}"
        );
    }
}

/// A run stopped early reports its longest delivery lag up to the stop, from the
/// deliveries the checker saw: it was filled only at rest, so such a run said "longest
/// delivery lag 0.0 ms" beside lag charts of its deliveries.
#[test]
fn a_run_stopped_early_reports_its_lag_up_to_the_stop() {
    use crate::support::{figure, stopped_early};
    let lag = |w: &BusWorld<_>| {
        w.checker
            .lags
            .values()
            .flatten()
            .map(|(_, l)| *l)
            .reduce(f64::max)
    };
    let (mutant, seed, plan, _, world) = stopped_early(&BusPattern, 0..60, |r, w| {
        r.end < r.horizon && lag(w).is_some_and(|l| l > 0.0)
    });
    let longest = lag(&world).unwrap();
    assert_eq!(world.stats.lag_ms_max, longest, "{mutant} seed {seed}");
    assert_eq!(
        figure(&BusPattern, seed, &plan, mutant, "longest delivery lag"),
        format!("{longest:.1} ms")
    );
}
