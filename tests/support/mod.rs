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
