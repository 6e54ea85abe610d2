//! The determinism self-check: run a seed twice and fail loudly, naming the first trace
//! entry that differs, when the digests differ.

use crate::run::{RunReport, Simulation};
use crate::trace::{TraceEntry, TraceMode};
use crate::world::World;
use std::fmt;

/// Two runs of the same seed disagreed.
#[derive(Debug, Clone)]
pub struct DeterminismError {
    /// The seed.
    pub seed: u64,
    /// Digest of the first run.
    pub digest_first: u64,
    /// Digest of the second run.
    pub digest_second: u64,
    /// The first entry where the traces part (`None` on a side that ended first).
    pub first_difference: Option<(Option<TraceEntry>, Option<TraceEntry>)>,
    /// The command that replays the seed.
    pub replay: String,
}

impl fmt::Display for DeterminismError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "NONDETERMINISM: seed {} gave two different runs (digest {:016x} then {:016x})",
            self.seed, self.digest_first, self.digest_second
        )?;
        match &self.first_difference {
            Some((a, b)) => {
                let show = |e: &Option<TraceEntry>| {
                    e.as_ref()
                        .map_or_else(|| "<trace ended>".to_string(), |e| e.to_string())
                };
                writeln!(f, "  first difference:")?;
                writeln!(f, "    run 1: {}", show(a))?;
                writeln!(f, "    run 2: {}", show(b))?;
            }
            None => writeln!(
                f,
                "  the traces are equal entry by entry; the difference is in event timing or count"
            )?,
        }
        writeln!(
            f,
            "  look for a wall clock, an unseeded RNG, HashMap iteration or shared state between runs"
        )?;
        write!(f, "  replay: {}", self.replay)
    }
}

impl std::error::Error for DeterminismError {}

/// Runs `sim` twice on fresh worlds from `make` with the full trace on, and returns the
/// first report when both agree. The error is boxed: it carries two trace entries.
pub fn check_determinism<W: World>(
    sim: &Simulation,
    mut make: impl FnMut() -> W,
) -> Result<RunReport, Box<DeterminismError>> {
    let sim = sim.clone().trace(TraceMode::Full);
    let a = sim.run(&mut make());
    let b = sim.run(&mut make());
    compare_runs(&a, &b)?;
    Ok(a)
}

/// Compares two runs of one seed: `Ok` when their digests and outcomes agree, else the
/// error naming the first trace entry where they part (as far as their traces were
/// kept: run them with [`TraceMode::Full`] to name it).
pub fn compare_runs(a: &RunReport, b: &RunReport) -> Result<(), Box<DeterminismError>> {
    if a.digest == b.digest && a.outcome == b.outcome {
        return Ok(());
    }
    Err(Box::new(DeterminismError {
        seed: a.seed,
        digest_first: a.digest,
        digest_second: b.digest,
        first_difference: first_difference(&a.trace, &b.trace),
        replay: a.replay.clone(),
    }))
}

fn first_difference(
    a: &[TraceEntry],
    b: &[TraceEntry],
) -> Option<(Option<TraceEntry>, Option<TraceEntry>)> {
    let n = a.len().max(b.len());
    (0..n).find_map(|i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) if x == y => None,
        (x, y) => Some((x.cloned(), y.cloned())),
    })
}
