//! Sweeps: many seeds over all cores, shardable across machines, with results that
//! merge.
//!
//! Results come back in seed order whatever the thread count: each seed is one
//! independent single-threaded run, and threads only decide *when* a seed runs, never
//! what it computes. A sweep is split across machines with [`Shard`] `i/n` (seed
//! `start + k` belongs to shard `k mod n + 1`), and the shards' [`SweepSummary`]s merge
//! back into one.

use crate::rng::mix64;
use crate::run::RunReport;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// A half-open range of seeds `start..end`. Parses from `"A..B"` or `"A..=B"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRange {
    /// First seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
}

/// Why a seed range or a shard was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    /// Not of the form `A..B`.
    #[error("seed range `{0}` is not of the form A..B or A..=B (whole numbers, e.g. 0..1000)")]
    MalformedRange(String),
    /// `B` was not after `A`.
    #[error("seed range `{text}` is empty or inverted: the end must be after the start")]
    EmptyRange {
        /// The text given.
        text: String,
    },
    /// Not of the form `i/n`.
    #[error("shard `{0}` is not of the form I/N (whole numbers, e.g. 2/4)")]
    MalformedShard(String),
    /// `i` was not within `1..=n`.
    #[error("shard `{text}` is out of range: I must be between 1 and N, and N at least 1")]
    ShardOutOfRange {
        /// The text given.
        text: String,
    },
    /// `jobs` was zero.
    #[error("jobs must be at least 1")]
    ZeroJobs,
}

impl SeedRange {
    /// `start..end`, rejected when empty or inverted.
    pub fn new(start: u64, end: u64) -> Result<Self, SweepError> {
        if end <= start {
            return Err(SweepError::EmptyRange {
                text: format!("{start}..{end}"),
            });
        }
        Ok(SeedRange { start, end })
    }
    /// Number of seeds.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    /// True when the range holds no seed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl FromStr for SeedRange {
    type Err = SweepError;
    fn from_str(text: &str) -> Result<Self, SweepError> {
        let malformed = || SweepError::MalformedRange(text.to_string());
        let (a, b, inclusive) = if let Some((a, b)) = text.split_once("..=") {
            (a, b, true)
        } else if let Some((a, b)) = text.split_once("..") {
            (a, b, false)
        } else {
            return Err(malformed());
        };
        let start: u64 = a.trim().parse().map_err(|_| malformed())?;
        let end: u64 = b.trim().parse().map_err(|_| malformed())?;
        let end = if inclusive {
            end.checked_add(1).ok_or_else(malformed)?
        } else {
            end
        };
        SeedRange::new(start, end).map_err(|_| SweepError::EmptyRange {
            text: text.to_string(),
        })
    }
}

/// Shard `index` of `count` (1-based), written `index/count`. Read from JSON, it is
/// checked as [`Shard::new`] checks it: a summary labelled `5/3` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    /// Which shard, from 1.
    pub index: u32,
    /// How many shards in all.
    pub count: u32,
}

impl Shard {
    /// The whole sweep: shard 1/1.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Shard `index/count`, rejected unless `1 <= index <= count`.
    pub fn new(index: u32, count: u32) -> Result<Self, SweepError> {
        if count == 0 || index == 0 || index > count {
            return Err(SweepError::ShardOutOfRange {
                text: format!("{index}/{count}"),
            });
        }
        Ok(Shard { index, count })
    }

    /// The seeds of `range` that belong to this shard, in order (lazily: a range of
    /// 2⁶⁴ seeds costs nothing until walked). Empty when the shard's first seed lies past
    /// the range (or past `u64::MAX`), or when the shard is not valid (`index` 0,
    /// `count` 0, `index > count`: a deserialized value).
    pub fn seeds(self, range: SeedRange) -> impl Iterator<Item = u64> {
        (0..self.seed_count(range)).filter_map(move |k| self.nth(range, k))
    }

    /// How many seeds of `range` belong to this shard, computed without iterating (a
    /// shard of a 64-bit range counts as fast as one of ten seeds); 0 for an invalid shard.
    pub fn seed_count(self, range: SeedRange) -> u64 {
        if self.count == 0 || self.index == 0 || self.index > self.count {
            return 0;
        }
        let offset = u64::from(self.index - 1);
        let span = range.len();
        if span <= offset {
            return 0;
        }
        (span - offset - 1) / u64::from(self.count) + 1
    }

    /// The `k`-th seed (from 0) of `range` in this shard, if it has that many.
    pub fn nth(self, range: SeedRange, k: u64) -> Option<u64> {
        if k >= self.seed_count(range) {
            return None;
        }
        let step = k.checked_mul(u64::from(self.count.max(1)))?;
        range
            .start
            .checked_add(u64::from(self.index.saturating_sub(1)))?
            .checked_add(step)
    }

    /// True when `seed` of `range` belongs to this shard.
    pub fn contains(self, range: SeedRange, seed: u64) -> bool {
        self.count > 0
            && self.index > 0
            && seed >= range.start
            && seed < range.end
            && (seed - range.start) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

/// A shard as JSON holds it, before [`Shard::new`] checks it.
#[derive(Deserialize)]
struct ShardFields {
    index: u32,
    count: u32,
}

impl TryFrom<ShardFields> for Shard {
    type Error = SweepError;
    fn try_from(f: ShardFields) -> Result<Self, SweepError> {
        Shard::new(f.index, f.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = SweepError;
    fn from_str(text: &str) -> Result<Self, SweepError> {
        let malformed = || SweepError::MalformedShard(text.to_string());
        let (a, b) = text.split_once('/').ok_or_else(malformed)?;
        let index: u32 = a.trim().parse().map_err(|_| malformed())?;
        let count: u32 = b.trim().parse().map_err(|_| malformed())?;
        Shard::new(index, count).map_err(|_| SweepError::ShardOutOfRange {
            text: text.to_string(),
        })
    }
}

/// Progress of a running sweep, passed to the progress callback after each seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepProgress {
    /// Seeds finished so far.
    pub done: u64,
    /// Seeds in this shard.
    pub total: u64,
    /// Seeds that failed so far.
    pub failed: u64,
}

/// One seed's result. A run that panicked is reported with its message, not lost.
#[derive(Debug)]
pub struct SeedResult<R> {
    /// The seed.
    pub seed: u64,
    /// What the run returned, or the panic's message.
    pub result: Result<R, String>,
}

/// Runs `run` for every seed of `range` in `shard` on `jobs` threads and returns the
/// results in seed order. `failed` tells whether a result counts as a failure for the
/// progress callback; `progress` is called after each seed.
///
/// This keeps every result; a sweep of many seeds folds them instead with
/// [`sweep_fold`], whose memory does not grow with the number of seeds.
pub fn sweep<R, F, P>(
    range: SeedRange,
    shard: Shard,
    jobs: usize,
    run: F,
    failed: impl Fn(&R) -> bool + Sync,
    progress: P,
) -> Result<Vec<SeedResult<R>>, SweepError>
where
    R: Send,
    F: Fn(u64) -> R + Sync,
    P: Fn(SweepProgress) + Sync,
{
    let total = shard.seed_count(range);
    let mut out = Vec::new();
    let mut failures = 0;
    let stop = AtomicBool::new(false);
    sweep_fold(range, shard, 0, jobs, &stop, run, |r: SeedResult<R>| {
        if r.result.as_ref().map_or(true, &failed) {
            failures += 1;
        }
        out.push(r);
        progress(SweepProgress {
            done: out.len() as u64,
            total,
            failed: failures,
        });
    })?;
    Ok(out)
}

/// How far ahead of the next seed to fold the workers may run, per thread: results
/// waiting to be folded in order are bounded by `jobs * AHEAD_PER_JOB`.
const AHEAD_PER_JOB: u64 = 64;

/// What a [`sweep_fold`] covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldEnd {
    /// Seeds of the shard folded, counting the `skip` ones before: the covered seeds
    /// are the shard's first `done` seeds of the range.
    pub done: u64,
    /// True when `stop` cut the sweep short.
    pub stopped: bool,
}

/// Runs `run` for the seeds of `range` in `shard` after its first `skip` ones, on
/// `jobs` threads, and hands each result to `fold` on the calling thread, in seed
/// order, as soon as it and every seed before it have finished. Nothing is allocated
/// per seed: results wait to be folded in a window bounded by the thread count (a
/// thread that gets too far ahead waits), so memory does not grow with the seed count,
/// and a range of 2⁶⁴ seeds is walked lazily.
///
/// Setting `stop` (from a signal handler, or `fold` itself) stops the sweep at once:
/// threads take no new seed, and nothing more is folded (runs under way finish and are
/// dropped), so the folded seeds are a prefix of the shard's, which [`FoldEnd::done`]
/// counts, ending where the stop came.
pub fn sweep_fold<R, F, G>(
    range: SeedRange,
    shard: Shard,
    skip: u64,
    jobs: usize,
    stop: &AtomicBool,
    run: F,
    mut fold: G,
) -> Result<FoldEnd, SweepError>
where
    R: Send,
    F: Fn(u64) -> R + Sync,
    G: FnMut(SeedResult<R>),
{
    if jobs == 0 {
        return Err(SweepError::ZeroJobs);
    }
    let total = shard.seed_count(range);
    let window = (jobs as u64).saturating_mul(AHEAD_PER_JOB);
    let threads = (jobs as u64).min(total.saturating_sub(skip).max(1)) as usize;
    let next = AtomicU64::new(skip);
    struct Pending<R> {
        ready: BTreeMap<u64, Result<R, String>>,
        folded: u64,
        alive: usize,
    }
    let state = Mutex::new(Pending {
        ready: BTreeMap::new(),
        folded: skip,
        alive: threads,
    });
    let arrived = Condvar::new();
    let room = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let mut done = skip;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(seed) = (k < total).then(|| shard.nth(range, k)).flatten() else {
                        break;
                    };
                    {
                        let mut s = lock();
                        while k >= s.folded.saturating_add(window) && !stop.load(Ordering::SeqCst) {
                            s = room.wait(s).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let result = catch_unwind(AssertUnwindSafe(|| run(seed))).map_err(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "run panicked".to_string());
                        format!("seed {seed} panicked: {msg}")
                    });
                    lock().ready.insert(k, result);
                    arrived.notify_all();
                }
                lock().alive -= 1;
                arrived.notify_all();
            });
        }
        loop {
            // Once stopped, nothing more is folded, not even a result that is ready: the
            // covered seeds end where the stop came (a resumed sweep runs the rest).
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let result = {
                let mut s = lock();
                loop {
                    if let Some(r) = s.ready.remove(&done) {
                        s.folded = done + 1;
                        break Some(r);
                    }
                    if s.alive == 0 {
                        break None;
                    }
                    s = arrived.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            };
            room.notify_all();
            let Some(result) = result else { break };
            let seed = shard.nth(range, done).unwrap_or(range.start);
            done += 1;
            fold(SeedResult { seed, result });
        }
        // Threads waiting for room see the stop and leave.
        room.notify_all();
    });
    Ok(FoldEnd {
        done,
        stopped: done < total,
    })
}

/// A failed seed in a summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// The invariant or bound that failed.
    pub invariant: String,
    /// What happened, in words.
    pub message: String,
    /// The command that replays it.
    pub replay: String,
}

/// How often a coverage mark was reached across a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkSummary {
    /// Seeds that hit the mark at least once.
    pub seeds_hit: u64,
    /// Hits over all seeds.
    pub hits: u64,
}

/// Why two summaries could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The summaries cover different seed ranges or shard counts.
    #[error(
        "cannot merge: one summary covers seeds {a} in {a_count} shards, the other {b} in {b_count}"
    )]
    Mismatch {
        /// First range.
        a: SeedRange,
        /// Its shard count.
        a_count: u32,
        /// Second range.
        b: SeedRange,
        /// Its shard count.
        b_count: u32,
    },
    /// Both summaries contain the same shard.
    #[error("cannot merge: shard {0} appears twice")]
    Overlap(Shard),
    /// A counter's sum does not fit in 64 bits: one of the summaries is not what a
    /// sweep wrote.
    #[error(
        "cannot merge: the sum of `{0}` overflows 64 bits; a summary was not written by a sweep"
    )]
    Overflow(&'static str),
}

/// Failing seeds a summary keeps, at least: the first ones by seed order; the rest
/// are counted ([`SweepSummary::failed`]), not kept.
pub const FAILURES_KEPT_MIN: u64 = 200;

fn failures_kept_default() -> u64 {
    FAILURES_KEPT_MIN
}

/// How far one shard of a summary got: its first `runs` seeds of the range (in seed
/// order) are folded in, of `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardProgress {
    /// The shard.
    pub shard: Shard,
    /// Its seeds folded in: the first `runs` of the shard's seeds.
    pub runs: u64,
    /// Its seeds in the range.
    pub total: u64,
}

impl ShardProgress {
    /// True when every seed of the shard is folded in.
    pub fn is_finished(&self) -> bool {
        self.runs >= self.total
    }
}

/// What a sweep (or a shard of one) found: serializable, and mergeable across shards.
/// Its size does not grow with the number of seeds: failures are kept up to a cap
/// ([`failures_kept_max`](Self::failures_kept_max)) and counted beyond it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// The seed range swept.
    pub range: SeedRange,
    /// The shards this summary covers (all of one shard count).
    pub shards: BTreeSet<Shard>,
    /// Seeds run.
    pub runs: u64,
    /// Seeds that passed.
    pub passed: u64,
    /// Simulated events over all seeds.
    pub events: u64,
    /// Seeds that failed (kept in [`failures`](Self::failures) or not).
    #[serde(default)]
    pub failed: u64,
    /// The first failed seeds, in seed order, at most
    /// [`failures_kept_max`](Self::failures_kept_max) of them.
    pub failures: Vec<SeedFailure>,
    /// Failed seeds per invariant (all of them, kept or not).
    #[serde(default)]
    pub failed_by_invariant: BTreeMap<String, u64>,
    /// How many failed seeds [`failures`](Self::failures) keeps.
    #[serde(default = "failures_kept_default")]
    pub failures_kept_max: u64,
    /// How far each shard got; a shard whose seeds were all folded in is finished. A
    /// sweep stopped early (interrupted) has an unfinished one.
    #[serde(default)]
    pub progress: Vec<ShardProgress>,
    /// Coverage per mark.
    pub coverage: BTreeMap<String, MarkSummary>,
    /// Marks hit without being declared.
    pub undeclared_marks: BTreeSet<String>,
    /// Order-independent digest of every seed's digest: equal for the same seeds,
    /// whatever the thread count or the shard split.
    pub digest: u64,
    /// Wall-clock time spent, milliseconds (summed over shards; outside any run).
    pub wall_ms: u64,
}

impl SweepSummary {
    /// An empty summary for `shard` of `range`.
    pub fn new(range: SeedRange, shard: Shard) -> Self {
        SweepSummary {
            range,
            shards: BTreeSet::from([shard]),
            runs: 0,
            passed: 0,
            events: 0,
            failed: 0,
            failures: Vec::new(),
            failed_by_invariant: BTreeMap::new(),
            failures_kept_max: FAILURES_KEPT_MIN,
            progress: vec![ShardProgress {
                shard,
                runs: 0,
                total: shard.seed_count(range),
            }],
            coverage: BTreeMap::new(),
            undeclared_marks: BTreeSet::new(),
            digest: 0,
            wall_ms: 0,
        }
    }

    /// Keeps up to `n` failed seeds (never fewer than [`FAILURES_KEPT_MIN`]).
    pub fn keep_failures(mut self, n: u64) -> Self {
        self.failures_kept_max = n.max(FAILURES_KEPT_MIN);
        self
    }

    fn count_run(&mut self, seed: u64) {
        self.runs += 1;
        // Seeds come in seed order: the shard's progress is the seeds counted so far.
        if let Some(p) = self
            .progress
            .iter_mut()
            .find(|p| p.shard.contains(self.range, seed))
        {
            p.runs += 1;
        }
    }

    fn push_failure(&mut self, failure: SeedFailure) {
        self.failed += 1;
        *self
            .failed_by_invariant
            .entry(failure.invariant.clone())
            .or_default() += 1;
        if (self.failures.len() as u64) < self.failures_kept_max {
            self.failures.push(failure);
        }
    }

    /// Adds one run's report.
    pub fn add(&mut self, report: &RunReport) {
        self.count_run(report.seed);
        self.events += report.events;
        self.digest = self
            .digest
            .wrapping_add(mix64(mix64(report.seed) ^ report.digest));
        match report.failure() {
            None => self.passed += 1,
            Some(f) => self.push_failure(SeedFailure {
                seed: report.seed,
                invariant: f.outcome.invariant().unwrap_or("unknown").to_string(),
                message: f.outcome.to_string(),
                replay: f.replay,
            }),
        }
        for (mark, hits) in &report.coverage.hits {
            let m = self.coverage.entry(mark.clone()).or_default();
            m.hits += hits;
            if *hits > 0 {
                m.seeds_hit += 1;
            }
        }
        self.undeclared_marks
            .extend(report.coverage.undeclared.iter().cloned());
    }

    /// Adds a seed whose run panicked.
    pub fn add_panic(&mut self, seed: u64, message: String, replay: String) {
        self.count_run(seed);
        self.push_failure(SeedFailure {
            seed,
            invariant: "sim.panic".into(),
            message,
            replay,
        });
    }

    /// The shard count this summary belongs to.
    pub fn shard_count(&self) -> u32 {
        self.shards.iter().next().map_or(1, |s| s.count)
    }

    /// True when every shard of the split is present.
    pub fn is_complete(&self) -> bool {
        self.shards.len() as u32 == self.shard_count()
    }

    /// True when every shard present ran all its seeds (no sweep was stopped early).
    pub fn is_finished(&self) -> bool {
        self.progress.iter().all(ShardProgress::is_finished)
    }

    /// Which seeds this summary covers, in words: the range when every shard of it
    /// finished, else each shard's covered prefix (`shard 1/1: seeds 0..5120 of
    /// 0..1000000 (5120 of 1000000)`).
    pub fn covered(&self) -> String {
        if self.is_finished() {
            return if self.shard_count() == 1 {
                format!("seeds {}", self.range)
            } else {
                let shards: Vec<String> = self.shards.iter().map(|s| s.to_string()).collect();
                format!("seeds {} of shards {}", self.range, shards.join(", "))
            };
        }
        let parts: Vec<String> = self
            .progress
            .iter()
            .map(|p| {
                let end = p.shard.nth(self.range, p.runs).unwrap_or(self.range.end);
                let every = if p.shard.count > 1 {
                    format!(
                        " (every {}th from {})",
                        p.shard.count,
                        p.shard.nth(self.range, 0).unwrap_or(self.range.start)
                    )
                } else {
                    String::new()
                };
                format!(
                    "shard {}: seeds {}..{end}{every} of {}, {} of {} seeds{}",
                    p.shard,
                    self.range.start,
                    self.range,
                    p.runs,
                    p.total,
                    if p.is_finished() {
                        ""
                    } else {
                        " (stopped early)"
                    }
                )
            })
            .collect();
        parts.join("; ")
    }

    /// Merges another shard's summary into this one.
    pub fn merge(&mut self, other: SweepSummary) -> Result<(), MergeError> {
        if self.range != other.range || self.shard_count() != other.shard_count() {
            return Err(MergeError::Mismatch {
                a: self.range,
                a_count: self.shard_count(),
                b: other.range,
                b_count: other.shard_count(),
            });
        }
        if let Some(s) = other.shards.iter().find(|s| self.shards.contains(s)) {
            return Err(MergeError::Overlap(*s));
        }
        let sum =
            |a: u64, b: u64, name: &'static str| a.checked_add(b).ok_or(MergeError::Overflow(name));
        // Every sum is checked before anything changes: a refused merge leaves `self`
        // as it was.
        let runs = sum(self.runs, other.runs, "runs")?;
        let passed = sum(self.passed, other.passed, "passed")?;
        let events = sum(self.events, other.events, "events")?;
        let wall_ms = sum(self.wall_ms, other.wall_ms, "wall_ms")?;
        let mut coverage = self.coverage.clone();
        for (mark, m) in other.coverage {
            let e = coverage.entry(mark).or_default();
            e.hits = sum(e.hits, m.hits, "coverage hits")?;
            e.seeds_hit = sum(e.seeds_hit, m.seeds_hit, "coverage seeds_hit")?;
        }
        let failed = sum(self.failed, other.failed, "failed")?;
        let mut failed_by_invariant = self.failed_by_invariant.clone();
        for (invariant, n) in other.failed_by_invariant {
            let e = failed_by_invariant.entry(invariant).or_default();
            *e = sum(*e, n, "failed_by_invariant")?;
        }
        self.shards.extend(other.shards);
        self.runs = runs;
        self.passed = passed;
        self.events = events;
        self.wall_ms = wall_ms;
        self.coverage = coverage;
        self.failed = failed;
        self.failed_by_invariant = failed_by_invariant;
        // Each side kept its first failures: the first of the union are among them.
        self.failures_kept_max = self.failures_kept_max.min(other.failures_kept_max);
        self.failures.extend(other.failures);
        self.failures.sort_by_key(|f| f.seed);
        self.failures
            .truncate(usize::try_from(self.failures_kept_max).unwrap_or(usize::MAX));
        self.progress.extend(other.progress);
        self.progress.sort_by_key(|p| p.shard);
        self.undeclared_marks.extend(other.undeclared_marks);
        // The digest is a sum modulo 2^64 by design (order-independent), not a count.
        self.digest = self.digest.wrapping_add(other.digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_shards_with_clear_errors() {
        assert_eq!("0..10".parse::<SeedRange>(), SeedRange::new(0, 10));
        assert_eq!("5..=5".parse::<SeedRange>(), SeedRange::new(5, 6));
        assert!(matches!(
            "10..3".parse::<SeedRange>(),
            Err(SweepError::EmptyRange { .. })
        ));
        assert!(matches!(
            "x".parse::<SeedRange>(),
            Err(SweepError::MalformedRange(_))
        ));
        assert_eq!("2/4".parse::<Shard>(), Shard::new(2, 4));
        for bad in ["0/0", "3/2", "0/3"] {
            assert!(
                matches!(
                    bad.parse::<Shard>(),
                    Err(SweepError::ShardOutOfRange { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn shards_partition_the_range() {
        let range = SeedRange::new(10, 47).unwrap();
        let mut all: Vec<u64> = (1..=4)
            .flat_map(|i| Shard::new(i, 4).unwrap().seeds(range).collect::<Vec<_>>())
            .collect();
        all.sort();
        assert_eq!(all, (10..47).collect::<Vec<_>>());
        assert!(Shard::new(2, 4).unwrap().contains(range, 11));
        assert!(!Shard::new(2, 4).unwrap().contains(range, 12));
        for (len, n) in [(37, 4), (1, 3), (3, 3), (10, 1), (5, 7)] {
            let range = SeedRange::new(100, 100 + len).unwrap();
            for i in 1..=n {
                let shard = Shard::new(i, n).unwrap();
                assert_eq!(
                    shard.seed_count(range),
                    shard.seeds(range).count() as u64,
                    "{shard} of {range}"
                );
            }
        }
        let whole = SeedRange::new(0, u64::MAX).unwrap();
        assert_eq!(Shard::ALL.seed_count(whole), u64::MAX);
        assert_eq!(Shard::new(2, 2).unwrap().seed_count(whole), u64::MAX / 2);
    }

    #[test]
    fn shard_labels_read_from_json_are_checked() {
        let ok: Shard = serde_json::from_str(r#"{"index":2,"count":3}"#).unwrap();
        assert_eq!(ok, Shard::new(2, 3).unwrap());
        for bad in [
            r#"{"index":5,"count":3}"#,
            r#"{"index":0,"count":3}"#,
            r#"{"index":1,"count":0}"#,
        ] {
            let e = serde_json::from_str::<Shard>(bad).unwrap_err();
            assert!(e.to_string().contains("out of range"), "{bad}: {e}");
        }
    }

    #[test]
    fn merged_counters_that_overflow_are_refused_and_change_nothing() {
        let range = SeedRange::new(0, 10).unwrap();
        let mut a = SweepSummary::new(range, Shard::new(1, 2).unwrap());
        let mut b = SweepSummary::new(range, Shard::new(2, 2).unwrap());
        a.runs = 5;
        a.events = u64::MAX - 1;
        b.runs = 5;
        b.events = 2;
        let before = a.clone();
        assert_eq!(a.merge(b.clone()), Err(MergeError::Overflow("events")));
        assert_eq!(a, before);
        b.events = 1;
        a.merge(b).unwrap();
        assert_eq!((a.runs, a.events), (10, u64::MAX));
        assert!(a.is_complete());
    }

    /// Shard arithmetic at the top of the seed space neither overflows nor iterates:
    /// `18446744073709551614..18446744073709551615` in shard 3/3 panicked (`start + 2`).
    #[test]
    fn shards_at_the_end_of_the_seed_space_do_not_overflow() {
        let top = SeedRange::new(u64::MAX - 1, u64::MAX).unwrap();
        for (i, expected) in [(1, vec![u64::MAX - 1]), (2, vec![]), (3, vec![])] {
            let shard = Shard::new(i, 3).unwrap();
            assert_eq!(shard.seeds(top).collect::<Vec<_>>(), expected, "{shard}");
            assert_eq!(shard.seed_count(top), expected.len() as u64, "{shard}");
        }
        let all = SeedRange::new(0, u64::MAX).unwrap();
        assert_eq!(Shard::ALL.seed_count(all), u64::MAX);
        assert_eq!(Shard::new(1, 2).unwrap().seed_count(all), u64::MAX / 2 + 1);
        assert_eq!(Shard::new(2, 2).unwrap().seed_count(all), u64::MAX / 2);
        let big = Shard::new(u32::MAX, u32::MAX).unwrap();
        assert_eq!(big.seeds(top).count(), 0);
        assert_eq!(big.seed_count(top), 0);
        // A shard deserialized without validation is empty, not a panic.
        let broken = Shard { index: 0, count: 0 };
        assert_eq!(broken.seeds(top).count(), 0);
        assert_eq!(broken.seed_count(top), 0);
        assert!(!broken.contains(top, u64::MAX - 1));
        // The count agrees with the iterator everywhere on small ranges.
        for n in 1..9 {
            for i in 1..=n {
                let shard = Shard::new(i, n).unwrap();
                for (a, b) in [(0, 1), (3, 20), (5, 6), (7, 100)] {
                    let range = SeedRange::new(a, b).unwrap();
                    assert_eq!(
                        shard.seed_count(range),
                        shard.seeds(range).count() as u64,
                        "{shard} {range}"
                    );
                }
            }
        }
    }

    #[test]
    fn results_are_in_seed_order_and_panics_are_kept() {
        let range = SeedRange::new(0, 50).unwrap();
        let r = sweep(
            range,
            Shard::ALL,
            2,
            |s| {
                if s == 13 {
                    panic!("unlucky");
                }
                s * 2
            },
            |_| false,
            |_| {},
        )
        .unwrap();
        assert_eq!(r.len(), 50);
        for (i, res) in r.iter().enumerate() {
            assert_eq!(res.seed, i as u64);
            if i == 13 {
                let msg = res.result.as_ref().unwrap_err();
                assert!(msg.contains("seed 13") && msg.contains("unlucky"), "{msg}");
            } else {
                assert_eq!(res.result.as_ref().ok(), Some(&(i as u64 * 2)));
            }
        }
    }
}
