//! Helpers shared by the property tests: turning a failed run into a message a user can
//! act on (the invariant, the seed, the shrunk plan written to `reports/failures/`, and
//! the command that replays it).

use faultline_sim::{FaultPlan, RunReport};
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

use faultline::harness::Pattern;
use faultline_sim::{Coverage, TraceMode};
use std::collections::BTreeSet;

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
    for (i, m) in pattern.mutants().iter().enumerate() {
        let mut first: Option<(u64, String)> = None;
        let mut expected_at = None;
        for seed in 0..seeds {
            let run = pattern
                .run(seed, &pattern.plan(seed), TraceMode::Off, Some(i))
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
