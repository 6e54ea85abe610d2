//! Helpers shared by the property tests: one property check for every pattern (a failed
//! run becomes a message a user can act on: the invariant, the seed, the shrunk plan
//! written to `reports/failures/`, and the command that replays it), one determinism
//! check, and the mutant and coverage sweeps.

pub mod ledger_bus;

use faultline::harness::{Pattern, Scenario};
use faultline_sim::{Coverage, FaultKindTag, FaultPlan, RunReport, TraceMode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;

/// Where failing plans are written: `reports/failures/` at the repository root.
pub fn failures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("reports")
        .join("failures")
}

/// If `report` failed, writes `plan` to `reports/failures/<pattern>-<property>.json`
/// and returns the message to fail the property with. Proptest reruns the property on
/// ever smaller plans while it shrinks; the last failing run writes the file last, so
/// the file ends up holding the shrunk plan.
pub fn failure_message(
    pattern: &str,
    property: &str,
    seed: u64,
    plan: &FaultPlan,
    report: &RunReport,
) -> Option<String> {
    let failure = report.failure()?;
    let dir = failures_dir();
    let file = dir.join(format!("{pattern}-{property}.json"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, plan.clone().with_seed(seed).to_json()))
        .map(|()| format!("reports/failures/{pattern}-{property}.json"));
    let (plan_line, replay) = match written {
        Ok(rel) => (
            format!("  plan:   {rel}"),
            format!("cargo run --release -- replay {pattern} --seed {seed} --plan {rel}"),
        ),
        Err(e) => (
            format!(
                "  plan:   (could not write {}: {e})\n{}",
                file.display(),
                plan.to_json()
            ),
            format!("cargo run --release -- replay {pattern} --seed {seed}"),
        ),
    };
    Some(format!(
        "{}\n  seed:   {seed}\n{plan_line}\n  replay: {replay}",
        failure.outcome
    ))
}

/// Runs the reference of `scenario` for `seed`'s knobs under `plan` (the run the
/// harness makes); fails the property `property` with the invariant, the seed, the plan
/// file and the replay command. Returns the finished world for the property's own
/// assertions.
pub fn check<S: Scenario>(
    scenario: &S,
    property: &str,
    seed: u64,
    plan: FaultPlan,
) -> Result<S::World, TestCaseError> {
    let (report, world) = scenario
        .run_reference(seed, plan.clone(), TraceMode::Off)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    if let Some(msg) = failure_message(S::NAME, property, seed, &plan, &report) {
        return Err(TestCaseError::fail(msg));
    }
    Ok(world)
}

/// A seed, and a plan from the fault profile of that seed's world narrowed to `kinds`.
pub fn seed_and_plan<S: Scenario>(
    scenario: S,
    kinds: &'static [FaultKindTag],
) -> impl Strategy<Value = (u64, FaultPlan)> {
    any::<u64>().prop_flat_map(move |seed| {
        let profile = scenario
            .fault_profile(&scenario.seed_knobs(seed))
            .kinds(kinds.iter().copied());
        let plans: BoxedStrategy<FaultPlan> = FaultPlan::strategy(&profile);
        (Just(seed), plans)
    })
}

/// Runs the reference of `scenario` twice for each seed of `seeds` (knobs and plan from
/// the seed, the full trace kept) and requires the same digest and outcome; names the
/// first trace entry where the runs part otherwise.
pub fn assert_deterministic<S: Scenario>(scenario: &S, seeds: Range<u64>) {
    for seed in seeds {
        let run = || {
            scenario
                .run_seed(seed, TraceMode::Full)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
                .0
        };
        let (a, b) = (run(), run());
        if a.digest != b.digest || a.outcome != b.outcome {
            let first = (0..a.trace.len().max(b.trace.len()))
                .find(|i| a.trace.get(*i) != b.trace.get(*i))
                .map(|i| (a.trace.get(i).cloned(), b.trace.get(i).cloned()));
            panic!(
                "{} seed {seed} is not deterministic: digests {} and {}; first difference {first:?}",
                S::NAME,
                a.digest,
                b.digest
            );
        }
    }
}

/// Runs every mutant of `pattern`'s catalog over seeds `0..seeds` until its expected
/// invariant catches it, and prints the table: mutant, first invariant to catch it,
/// cases it took, and when the expected invariant did. Fails if a mutant survives, is
/// never caught by its expected invariant, or if an invariant of `invariants` catches
/// no mutant at all.
pub fn assert_mutants_caught(pattern: &dyn Pattern, invariants: &[&str], seeds: u64) {
    let mut catchers = BTreeSet::new();
    println!(
        "{:<28} {:<32} {:>6} {:>10}",
        "mutant", "caught by", "cases", "expected@"
    );
    for m in pattern.mutants() {
        let mut first: Option<(u64, String)> = None;
        let mut expected_at = None;
        for seed in 0..seeds {
            let run = pattern
                .run(seed, &pattern.plan(seed), TraceMode::Off, Some(m.name))
                .unwrap_or_else(|e| panic!("mutant {} at seed {seed}: {e}", m.name));
            if let Some(inv) = run.report.outcome.invariant() {
                catchers.insert(inv.to_string());
                first.get_or_insert((seed + 1, inv.to_string()));
                if inv == m.expected {
                    expected_at = Some(seed + 1);
                    break;
                }
            }
        }
        let (cases, inv) =
            first.unwrap_or_else(|| panic!("mutant {} survived {seeds} seeds", m.name));
        let expected = expected_at.unwrap_or_else(|| {
            panic!(
                "mutant {} was never caught by {} in {seeds} seeds",
                m.name, m.expected
            )
        });
        println!("{:<28} {:<32} {:>6} {:>10}", m.name, inv, cases, expected);
    }
    for inv in invariants {
        assert!(catchers.contains(*inv), "invariant {inv} caught no mutant");
    }
}

/// Runs the reference implementation of `pattern` over seeds `0..seeds` (each must
/// pass) and checks that every declared mark was hit by some seed and no undeclared
/// one was.
pub fn assert_every_mark_hit(pattern: &dyn Pattern, marks: &[&str], seeds: u64) {
    let mut seen = Coverage::declare(marks.iter().copied());
    for seed in 0..seeds {
        let run = pattern
            .run(seed, &pattern.plan(seed), TraceMode::Off, None)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        run.report.assert_pass();
        for (mark, hits) in &run.report.coverage.hits {
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
        "never hit in {seeds} seeds: {:?}",
        seen.missed()
    );
}

/// A run's report view as JSON, without what names the pattern (its name and replay
/// command): what a plug-in holding the reference must show exactly as the reference.
fn view_content(pattern: &dyn Pattern, seed: u64, plan: &FaultPlan) -> serde_json::Value {
    let view = pattern
        .view(seed, plan, None)
        .unwrap_or_else(|e| panic!("{}: view of seed {seed}: {e}", pattern.name()));
    let mut json = serde_json::to_value(&view).expect("a run view serializes");
    for naming in ["pattern", "replay"] {
        json.as_object_mut()
            .expect("a run view is an object")
            .remove(naming);
    }
    json
}

/// Holds `plugin`, a [`Plugin`](faultline::harness::Plugin) around the reference of the
/// built-in `reference` under another name, to the built-in's metric readings and run
/// report content (verdicts with their notes, figures, timeline lanes and series,
/// trace) for every seed of `seeds`. Fails where a pattern's `Host` leaves
/// `metrics_in` or `describe_in` at their empty defaults, or describes a plug-in's
/// world otherwise than the reference's: the built-in shows metrics, figures and a
/// timeline (checked, so the comparison is never of two empty reports).
pub fn assert_plugin_reports_as_reference(
    reference: &dyn Pattern,
    plugin: &dyn Pattern,
    seeds: Range<u64>,
) {
    let (r, p) = (reference.name(), plugin.name());
    assert_ne!(r, p, "the plug-in goes under another name");
    assert!(!reference.metrics().is_empty(), "{r} has metrics");
    assert_eq!(
        plugin.metrics(),
        reference.metrics(),
        "{p}'s metrics are {r}'s, in order"
    );
    let (mut valued, mut figures, mut timeline) = (false, false, false);
    for seed in seeds {
        let plan = reference.plan(seed);
        assert_eq!(plugin.plan(seed), plan, "{p} seed {seed}: the same plan");
        let run = |pattern: &dyn Pattern| {
            pattern
                .run(seed, &plan, TraceMode::Off, None)
                .unwrap_or_else(|e| panic!("{}: seed {seed}: {e}", pattern.name()))
        };
        let (mine, theirs) = (run(plugin), run(reference));
        theirs.report.assert_pass();
        // Debug: NaN readings compare equal as text.
        assert_eq!(
            format!("{:?}", mine.metrics),
            format!("{:?}", theirs.metrics),
            "{p} seed {seed}: the metric readings of {r}"
        );
        valued |= theirs.metrics.iter().any(|m| m.value.is_some());
        let (mine, theirs) = (
            view_content(plugin, seed, &plan),
            view_content(reference, seed, &plan),
        );
        for part in ["verdicts", "figures", "timeline", "trace"] {
            assert_eq!(
                mine[part], theirs[part],
                "{p} seed {seed}: the {part} of {r}'s report"
            );
        }
        assert_eq!(mine, theirs, "{p} seed {seed}: {r}'s report");
        figures |= theirs["figures"].as_array().is_some_and(|f| !f.is_empty());
        timeline |= ["lanes", "series"].iter().any(|k| {
            theirs["timeline"][k]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        });
    }
    assert!(
        valued && figures && timeline,
        "{r} shows metric values ({valued}), figures ({figures}) and a timeline ({timeline})"
    );
}

/// The first run of a mutant of `scenario`'s catalog (mutants in catalog order, seeds
/// `seeds` for each) that stops on a violation with `stopped_early` true of it (the
/// test's own sign that it stopped before coming to rest, from what the world saw):
/// the mutant, the seed, its plan, the report and the world as it stopped. Panics if
/// none does, so a test over it cannot pass vacuously.
pub fn stopped_early<S: Scenario>(
    scenario: &S,
    seeds: Range<u64>,
    stopped_early: impl Fn(&RunReport, &S::World) -> bool,
) -> (&'static str, u64, FaultPlan, RunReport, S::World) {
    for mutant in S::MUTANTS {
        for seed in seeds.clone() {
            let knobs = scenario.seed_knobs(seed);
            let plan = scenario.fault_plan(&knobs);
            let world = scenario
                .world(&knobs, Some(mutant.name))
                .unwrap_or_else(|e| panic!("{} mutant {}: {e}", S::NAME, mutant.name));
            let (report, world) = scenario.simulate(world, plan.clone(), TraceMode::Off);
            if !report.outcome.is_pass() && stopped_early(&report, &world) {
                return (mutant.name, seed, plan, report, world);
            }
        }
    }
    panic!(
        "no mutant of {} stops early on seeds {seeds:?} as the test asks",
        S::NAME
    );
}

/// The figure called `label` on the run page of `pattern`'s `mutant` for `seed`.
pub fn figure(
    pattern: &dyn Pattern,
    seed: u64,
    plan: &FaultPlan,
    mutant: &str,
    label: &str,
) -> String {
    let view = pattern.view(seed, plan, Some(mutant)).unwrap();
    view.figures
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no figure {label} on the page of {mutant}"))
}

/// The value of the sweep metric called `name` in the run of `pattern`'s `mutant` for
/// `seed`.
pub fn metric(
    pattern: &dyn Pattern,
    seed: u64,
    plan: &FaultPlan,
    mutant: &str,
    name: &str,
) -> Option<f64> {
    let run = pattern
        .run(seed, plan, TraceMode::Off, Some(mutant))
        .unwrap();
    run.metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .value
}

/// From a saga world's swimlane notes: how many sagas started, and how many the world
/// saw come to rest Completed, Compensated and Failed (each saga's first ending).
pub fn lane_endings(
    lanes: &[(faultline::saga::SagaId, faultline_sim::SimTime, String)],
) -> [u64; 4] {
    let mut started = BTreeSet::new();
    let mut ended = std::collections::BTreeMap::new();
    for (saga, _, what) in lanes {
        if what == "started" {
            started.insert(*saga);
        } else if let Some(how) = what.strip_prefix("ended ") {
            ended.entry(*saga).or_insert_with(|| how.to_string());
        }
    }
    let count = |how: &str| ended.values().filter(|h| *h == how).count() as u64;
    [
        started.len() as u64,
        count("Completed"),
        count("Compensated"),
        count("Failed"),
    ]
}

/// True when the world saw some of the sagas it started come to rest, but not all: a
/// run stopped before rest, with endings to report.
pub fn some_not_all_ended(
    lanes: &[(faultline::saga::SagaId, faultline_sim::SimTime, String)],
) -> bool {
    let [started, c, p, f] = lane_endings(lanes);
    c + p + f > 0 && c + p + f < started
}
