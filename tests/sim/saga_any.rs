//! The saga whose definition the seed generates (`saga-any`): every orchestrated saga
//! invariant over a seed sweep and under proptest, the definitions really spanning 2 to
//! 6 steps with refusals at every position, determinism, a golden digest, coverage, a
//! correct plug-in passing, and every mutant caught.

use crate::support::{assert_deterministic, assert_mutants_caught, check};
use faultline::harness::{Pattern, Plugin, Scenario};
use faultline::saga::generated::pattern::AnyPattern;
use faultline::saga::generated::pattern::AnyWorld;
use faultline::saga::generated::{
    AnyKnobs, Definition, Entry, Job, Ledgers, MARKS as ANY_MARKS, Reason, STEPS_MAX, STEPS_MIN,
};
use faultline::saga::invariants::ORCHESTRATED as INVARIANTS;
use faultline::saga::orchestrated::world::{MARKS, SagaWorld, run as run_world};
use faultline::saga::participants::Participants;
use faultline::saga::{Command, Orchestrator, Reply, SagaConfig, SagaId};
use faultline_sim::Coverage;
use faultline_sim::prelude::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Definitions are 2 to 6 distinct steps, every size drawn, and every position of a
/// 6-step definition may refuse.
#[test]
fn definitions_span_two_to_six_steps() {
    let mut sizes = BTreeMap::new();
    let mut refusing = BTreeSet::new();
    for seed in 0..2_000 {
        let d = Definition::from_seed(seed);
        let n = d.steps.len();
        assert!(
            (STEPS_MIN..=STEPS_MAX).contains(&n),
            "seed {seed}: {n} steps"
        );
        let names: BTreeSet<_> = d.steps.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), n, "seed {seed}: repeated names {d:?}");
        *sizes.entry(n).or_insert(0) += 1;
        for (i, s) in d.steps.iter().enumerate() {
            if s.refuse_percent > 0 {
                refusing.insert(i);
            }
        }
        assert_eq!(d, Definition::from_seed(seed));
    }
    assert_eq!(
        sizes.keys().copied().collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    assert!(sizes.values().all(|&c| c > 200), "{sizes:?}");
    assert_eq!(refusing.len(), STEPS_MAX);
}

/// A ledger applies each key once, leaves a tombstone for a compensation that came
/// first, refuses a late action, and adds up.
#[test]
fn ledgers_are_idempotent_and_add_up() {
    let knobs = AnyKnobs::from_seed(11);
    let mut l = Ledgers::new(11, &knobs.definition);
    let step = l.steps()[0];
    let job = Job {
        amount: 70,
        units: 1,
        region: 0,
        priority: 0,
    };
    // A saga this step does not refuse.
    let saga = (0..1_000)
        .map(SagaId)
        .find(|s| l.refusals(*s) & 1 == 0)
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..50 {
        answers.push(l.handle(&Command::action(saga, step, job)));
    }
    // Answers are Ok, or "failed, retry now" (sometimes after the work); one effect.
    assert!(
        answers
            .iter()
            .all(|r| *r == Reply::Ok || *r == Reply::Failed)
    );
    assert!(answers.contains(&Reply::Ok));
    assert_eq!(l.effects(Command::action(saga, step, job).key()), 1);
    assert_eq!(l.ledgers[0].entry(saga), Some(Entry::Held(70)));
    assert!(l.holding(saga, step).0);
    for _ in 0..50 {
        let _ = l.handle(&Command::compensation(saga, step, job));
    }
    assert_eq!(l.ledgers[0].entry(saga), Some(Entry::Released(70)));
    assert!(!l.holding(saga, step).0);
    assert!(l.check_conserved().is_ok());
    // Compensation first: a tombstone, and the late action is refused.
    let other = SagaId(saga.0 + 10_000);
    while l.handle(&Command::compensation(other, step, job)) != Reply::Ok {}
    assert_eq!(l.ledgers[0].entry(other), Some(Entry::Tombstone));
    let late = loop {
        let r = l.handle(&Command::action(other, step, job));
        if r != Reply::Failed {
            break r;
        }
    };
    assert_eq!(late, Reply::Refused(Reason::Compensated));
    assert_eq!(l.effects(Command::action(other, step, job).key()), 0);
}

/// Every invariant holds over a sweep of seeds, each with its own definition and fault
/// plan, and the sweep reached every mark: each number of steps, a refusal at each
/// position, "failed, retry now" answers, and the orchestrated saga's own marks.
#[test]
fn every_invariant_holds_over_a_sweep_and_every_mark_is_hit() {
    let mut seen = Coverage::declare(MARKS.iter().chain(ANY_MARKS).copied());
    for seed in 0..400 {
        let run = Pattern::run(
            &AnyPattern,
            seed,
            &Pattern::plan(&AnyPattern, seed),
            TraceMode::Off,
            None,
        )
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        run.report.assert_pass();
        for (mark, hits) in &run.report.coverage.hits {
            if *hits > 0 {
                seen.hit(mark);
            }
        }
    }
    let missed = seen.missed();
    assert!(missed.is_empty(), "never hit in 400 seeds: {missed:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any seed, with its own definition and fault plan: every invariant holds.
    #[test]
    fn any_seed_keeps_every_invariant(seed in any::<u64>()) {
        let plan = AnyKnobs::from_seed(seed).fault_plan();
        check(&AnyPattern, "any_seed_keeps_every_invariant", seed, plan)?;
    }

    /// Any seed's definition under any fault plan over its nodes (drawn and shrunk by
    /// proptest): every invariant holds.
    #[test]
    fn any_definition_under_any_plan_keeps_every_invariant(
        (seed, plan) in any::<u64>().prop_flat_map(|seed| {
            (Just(seed), FaultPlan::strategy(&AnyKnobs::from_seed(seed).fault_profile()))
        })
    ) {
        check(&AnyPattern, "any_definition_under_any_plan_keeps_every_invariant", seed, plan)?;
    }
}

#[test]
fn same_seed_same_digest() {
    assert_deterministic(&AnyPattern, 0..6);
}

/// Changes only on purpose; update it in the same commit and say why.
#[test]
fn golden_digest() {
    let (report, world) = AnyPattern.run_seed(7, TraceMode::Full).unwrap();
    report.assert_pass();
    assert_eq!(
        (report.digest, report.events, world.stats.completed),
        (5_557_493_379_912_688_004, 11_445, 238),
        "golden digest changed"
    );
}

/// A correct plug-in (the reference orchestrator built by hand from the definition,
/// judged by its declared policy alone, conformance off), registered as a [`Plugin`]
/// the way a user's own coordinator would be, passes: no false positives; and its run
/// view is the reference's.
#[test]
fn a_correct_plug_in_passes() {
    let plugin: Plugin<AnyPattern, AnyWorld<Orchestrator<Job, Reason>>> =
        Plugin::new(AnyPattern, "my-saga-any", |knobs: &AnyKnobs| {
            let config = SagaConfig::builder()
                .step_timeout(Duration::from_millis(knobs.base.step_timeout_ms))
                .attempts_max(knobs.base.attempts_max)
                .compensation_attempts_max(knobs.base.compensation_attempts_max)
                .backoff(
                    Duration::from_millis(knobs.base.backoff_ms.0),
                    Duration::from_millis(knobs.base.backoff_ms.1),
                )
                .seed(knobs.base.seed)
                .deadline_from_sent(true)
                .steps(&knobs.definition.step_ids())
                .build()?;
            SagaWorld::with_participants(
                knobs.base.clone(),
                Orchestrator::new(config),
                knobs.ledgers(),
            )
        });
    for seed in 0..40 {
        let run = Pattern::run(
            &plugin,
            seed,
            &Pattern::plan(&plugin, seed),
            TraceMode::Off,
            None,
        )
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        run.report.assert_pass();
    }
    // The hand-built world runs as the reference's does, seed for seed.
    let knobs = AnyKnobs::from_seed(5);
    let reference = AnyPattern.reference(&knobs).unwrap();
    let (a, _) = run_world(reference, knobs.fault_plan(), TraceMode::Full);
    let mine = plugin.world(&knobs).unwrap();
    let (b, _) = run_world(mine, knobs.fault_plan(), TraceMode::Full);
    assert_eq!(a.digest, b.digest);
}

/// Every mutant is caught by its expected invariant, and every invariant catches one.
#[test]
fn mutants_are_caught() {
    assert_mutants_caught(&AnyPattern, &INVARIANTS, 200);
}
