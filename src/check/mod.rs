//! The check API: the whole harness for your own implementation, from a `#[test]`.
//!
//! Put your implementation into a built-in pattern's world with a
//! [`Plugin`](crate::harness::Plugin) (or check any [`Pattern`], the built-in ones
//! included) and call [`Check::run`]. It sweeps seeds in parallel (one thread per run,
//! results in seed order), shrinks the first failing seed's fault plan, writes the
//! shrunk plan to `reports/failures/<name>-seed-<seed>.json` and an HTML report of the
//! failing run to `reports/runs/<name>-seed-<seed>.html`, and panics with the invariant
//! broken, the seed, both paths and the line that replays it for *your* code:
//!
//! ```text
//! my-breaker: breaker.half_open_limit broken: ...
//!   seed:   17 (the first of 3 failing seeds in 0..1000)
//!   plan:   reports/failures/my-breaker-seed-17.json (1 fault, shrunk from 5)
//!   report: reports/runs/my-breaker-seed-17.html
//!   replay: FAULTLINE_REPLAY=reports/failures/my-breaker-seed-17.json cargo test my_breaker_keeps_its_promises
//! ```
//!
//! The environment steers it, like proptest's `PROPTEST_CASES`:
//!
//! - `FAULTLINE_SEEDS=0..5000` (or `A..=B`): the seeds to sweep; it wins over
//!   [`Check::seeds`], so CI can widen a sweep without a code change.
//! - `FAULTLINE_JOBS=2`: worker threads (default: all cores).
//! - `FAULTLINE_REPLAY=FILE`: instead of sweeping, replay exactly that plan and the seed
//!   it records (one run, with its report), and fail the same way if it still fails.
//!
//! A bad value fails the check with a message naming the variable. The same runs are
//! available without the environment (so parallel tests need not share it):
//! [`Check::sweep`] and [`Check::replay`] return a [`Verdict`] instead of panicking.
//!
//! ```no_run
//! use faultline::breaker::pattern::BreakerPattern;
//! use faultline::breaker::world::{SmsKnobs, SmsWorld};
//! use faultline::check::Check;
//! use faultline::harness::Plugin;
//!
//! #[test]
//! fn my_breaker_keeps_its_promises() {
//!     // Your `CallGuard` goes where the reference guard is.
//!     let mine = Plugin::new(BreakerPattern, "my-breaker", |knobs: &SmsKnobs| {
//!         SmsWorld::new(knobs.clone(), knobs.reference_guard()?)
//!     });
//!     Check::new(&mine).run();
//! }
//! ```

mod settings;

pub use settings::{JOBS_VAR, REPLAY_VAR, SEEDS_VAR, Settings};

use crate::harness::{HarnessError, Pattern, Run};
use faultline_sim::report::{ReportError, render_run};
use faultline_sim::shrink::shrink_plan;
use faultline_sim::sweep::{SeedResult, sweep_fold};
use faultline_sim::{FaultPlan, PlanError, SeedRange, Shard, TraceMode};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The seeds a check sweeps unless told otherwise.
pub const DEFAULT_SEEDS: SeedRange = SeedRange {
    start: 0,
    end: 1000,
};

/// Candidate plans tried while shrinking a failure.
const SHRINK_RUNS_MAX: usize = 400;

/// Why a check could not run (as opposed to a check that ran and found a violation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// An environment variable holds a value that makes no sense.
    #[error("{var}=`{value}`: {problem}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `jobs` was zero.
    #[error("a check needs at least 1 worker thread")]
    ZeroJobs,
    /// A plan file could not be read.
    #[error("cannot read plan {}: {source}", path.display())]
    ReadPlan {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plan file is not a valid plan.
    #[error("{}: {source}", path.display())]
    BadPlan {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (field, line and column).
        source: PlanError,
    },
    /// A plan file records no seed, and a replay needs one.
    #[error("{} records no seed; a replay needs the plan file a failing check wrote", path.display())]
    NoSeed {
        /// The file.
        path: PathBuf,
    },
    /// A failure's plan or report could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The harness could not build or run the world.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The run report could not be rendered.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What a check found.
#[derive(Debug)]
pub enum Verdict {
    /// Every invariant held on every seed run.
    Passed {
        /// Seeds run.
        runs: u64,
    },
    /// An invariant broke (or a run panicked); see the [`Failure`].
    Failed(Box<Failure>),
}

impl Verdict {
    /// True when every invariant held.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Passed { .. })
    }

    /// The failure, if the check failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Verdict::Passed { .. } => None,
            Verdict::Failed(f) => Some(f),
        }
    }
}

/// A failing run, shrunk, with its plan file, its report and its replay line. Its
/// `Display` is the message [`Check::run`] panics with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The name of what was checked.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// The invariant (or engine bound, `sim.*`) that broke.
    pub invariant: String,
    /// What happened, in words.
    pub message: String,
    /// The shrunk plan, written with its seed.
    pub plan_file: PathBuf,
    /// The HTML report of the shrunk run (none for a run that panicked).
    pub report_file: Option<PathBuf>,
    /// Faults in the shrunk plan, and in the original one.
    pub faults: (usize, usize),
    /// How the failure was found: `the first of N failing seeds in A..B`, or
    /// `replayed from FILE`.
    pub found: String,
    /// The line that replays it.
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} broken: {}",
            self.name, self.invariant, self.message
        )?;
        writeln!(f, "  seed:   {} ({})", self.seed, self.found)?;
        let (after, before) = self.faults;
        let faults = |n: usize| format!("{n} fault{}", if n == 1 { "" } else { "s" });
        let shrunk = if after == before {
            faults(after)
        } else {
            format!("{}, shrunk from {before}", faults(after))
        };
        writeln!(f, "  plan:   {} ({shrunk})", self.plan_file.display())?;
        if let Some(report) = &self.report_file {
            writeln!(f, "  report: {}", report.display())?;
        }
        write!(f, "  replay: {}", self.replay)
    }
}

/// A check of one pattern (a plug-in or a built-in one). See the [module docs](self).
#[derive(Clone, Copy)]
pub struct Check<'a> {
    pattern: &'a dyn Pattern,
    seeds: SeedRange,
    out: &'a Path,
    test: Option<&'a str>,
    command: Option<&'a str>,
}

impl fmt::Debug for Check<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("pattern", &self.pattern.name())
            .field("seeds", &self.seeds)
            .field("out", &self.out)
            .field("test", &self.test)
            .field("command", &self.command)
            .finish()
    }
}

impl<'a> Check<'a> {
    /// A check of `pattern` over [`DEFAULT_SEEDS`], writing under `reports/` (relative to
    /// the working directory, which `cargo test` sets to the package's root).
    pub fn new(pattern: &'a dyn Pattern) -> Self {
        Check {
            pattern,
            seeds: DEFAULT_SEEDS,
            out: Path::new("reports"),
            test: None,
            command: None,
        }
    }

    /// The seeds to sweep when `FAULTLINE_SEEDS` is unset.
    pub fn seeds(mut self, seeds: SeedRange) -> Self {
        self.seeds = seeds;
        self
    }

    /// Where plan files (`failures/`) and reports (`runs/`) go (default `reports`).
    pub fn out(mut self, dir: &'a Path) -> Self {
        self.out = dir;
        self
    }

    /// The test name the replay line names (default: the name of the test thread,
    /// which is the test's path under libtest).
    pub fn test_name(mut self, name: &'a str) -> Self {
        self.test = Some(name);
        self
    }

    /// The whole command that runs this test again, for the replay line, when
    /// `cargo test TEST` is not it (e.g. a test inside an example:
    /// `"cargo test --release --example my_breaker my_breaker_keeps_its_promises"`).
    /// It replaces the default `cargo test` and the [test name](Check::test_name).
    pub fn test_command(mut self, command: &'a str) -> Self {
        self.command = Some(command);
        self
    }

    /// Runs the check as the environment says (a sweep, or the replay of
    /// `FAULTLINE_REPLAY`) and panics with the failure's message if an invariant broke,
    /// or with the error if the check could not run (a bad variable, an unreadable
    /// plan file).
    #[allow(clippy::panic)]
    pub fn run(&self) {
        match self.try_run() {
            Ok(Verdict::Passed { .. }) => {}
            Ok(Verdict::Failed(failure)) => panic!("{failure}"),
            Err(e) => panic!("{}: the check could not run: {e}", self.pattern.name()),
        }
    }

    /// Like [`run`](Check::run), returning the verdict instead of panicking.
    pub fn try_run(&self) -> Result<Verdict, CheckError> {
        let settings = Settings::from_env()?;
        if let Some(file) = &settings.replay {
            return self.replay(file);
        }
        let jobs = settings.jobs.unwrap_or_else(all_cores);
        self.sweep(settings.seeds.unwrap_or(self.seeds), jobs)
    }

    /// Runs every seed of `seeds` on `jobs` threads (the environment is not read); on a
    /// failure, shrinks the first failing seed's plan and writes its plan file and
    /// report.
    pub fn sweep(&self, seeds: SeedRange, jobs: usize) -> Result<Verdict, CheckError> {
        if jobs == 0 {
            return Err(CheckError::ZeroJobs);
        }
        let pattern = self.pattern;
        // Folded as the seeds finish, in seed order: memory does not grow with the
        // seed count, and the first failure is the least failing seed.
        let mut first: Option<(u64, Result<String, String>)> = None;
        let mut failing = 0u64;
        let mut error: Option<HarnessError> = None;
        // Set on a harness error: no later seed is needed.
        let stop = AtomicBool::new(false);
        sweep_fold(
            seeds,
            Shard::ALL,
            0,
            jobs,
            &stop,
            |seed| pattern.run(seed, &pattern.plan(seed), TraceMode::Off, None),
            |r: SeedResult<Result<Run, HarnessError>>| {
                let failure = match r.result {
                    Ok(Ok(run)) => run.report.outcome.invariant().map(|i| Ok(i.to_string())),
                    Ok(Err(e)) => {
                        error.get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                        None
                    }
                    Err(panic) => Some(Err(panic)),
                };
                if let Some(f) = failure {
                    failing += 1;
                    first.get_or_insert((r.seed, f));
                }
            },
        )
        .map_err(|_| CheckError::ZeroJobs)?;
        if let Some(e) = error {
            return Err(e.into());
        }
        let Some((seed, failure)) = first else {
            return Ok(Verdict::Passed { runs: seeds.len() });
        };
        let found = format!(
            "the first of {failing} failing seed{} in {seeds}",
            if failing == 1 { "" } else { "s" }
        );
        let original = pattern.plan(seed);
        match failure {
            Ok(invariant) => {
                let same_failure = |p: &FaultPlan| {
                    pattern
                        .run(seed, p, TraceMode::Off, None)
                        .is_ok_and(|r| r.report.outcome.invariant() == Some(invariant.as_str()))
                };
                let shrunk = shrink_plan(&original, same_failure, SHRINK_RUNS_MAX);
                let plan = shrunk.plan.with_seed(seed);
                let file = self.write_plan(seed, &plan)?;
                self.report(seed, &plan, file, shrunk.faults_before, found)
            }
            Err(panic) => {
                let plan = original.with_seed(seed);
                let file = self.write_plan(seed, &plan)?;
                let faults = plan.faults.len();
                Ok(Verdict::Failed(Box::new(Failure {
                    name: pattern.name().to_string(),
                    seed,
                    invariant: "sim.panic".to_string(),
                    message: panic,
                    replay: self.replay_line(&file),
                    plan_file: file,
                    report_file: None,
                    faults: (faults, faults),
                    found,
                })))
            }
        }
    }

    /// Replays exactly the plan in `plan_file` and the seed it records (the environment
    /// is not read): one run, with its report written to `runs/`.
    pub fn replay(&self, plan_file: &Path) -> Result<Verdict, CheckError> {
        let text = std::fs::read_to_string(plan_file).map_err(|source| CheckError::ReadPlan {
            path: plan_file.to_path_buf(),
            source,
        })?;
        let plan = FaultPlan::from_json(&text).map_err(|source| CheckError::BadPlan {
            path: plan_file.to_path_buf(),
            source,
        })?;
        let seed = plan.seed.ok_or_else(|| CheckError::NoSeed {
            path: plan_file.to_path_buf(),
        })?;
        let faults = plan.faults.len();
        let found = format!("replayed from {}", plan_file.display());
        self.report(seed, &plan, plan_file.to_path_buf(), faults, found)
    }

    /// Runs `seed` under `plan` once with a trace, writes the run's report, and gives the
    /// verdict.
    fn report(
        &self,
        seed: u64,
        plan: &FaultPlan,
        plan_file: PathBuf,
        faults_before: usize,
        found: String,
    ) -> Result<Verdict, CheckError> {
        let name = self.pattern.name();
        let mut view = self.pattern.view(seed, plan, None)?;
        let replay = self.replay_line(&plan_file);
        view.replay = replay.clone();
        let report_file = self
            .out
            .join("runs")
            .join(format!("{name}-seed-{seed}.html"));
        write(&report_file, &render_run(&view)?)?;
        let Some(invariant) = view.outcome.invariant() else {
            return Ok(Verdict::Passed { runs: 1 });
        };
        Ok(Verdict::Failed(Box::new(Failure {
            name: name.to_string(),
            seed,
            invariant: invariant.to_string(),
            message: view.outcome.to_string(),
            plan_file,
            report_file: Some(report_file),
            faults: (plan.faults.len(), faults_before),
            found,
            replay,
        })))
    }

    fn write_plan(&self, seed: u64, plan: &FaultPlan) -> Result<PathBuf, CheckError> {
        let file = self
            .out
            .join("failures")
            .join(format!("{}-seed-{seed}.json", self.pattern.name()));
        write(&file, &plan.to_json())?;
        Ok(file)
    }

    /// `FAULTLINE_REPLAY=FILE cargo test TEST`.
    fn replay_line(&self, plan_file: &Path) -> String {
        let file = shell_word(&plan_file.display().to_string());
        if let Some(command) = self.command {
            return format!("{REPLAY_VAR}={file} {command}");
        }
        let thread = std::thread::current();
        let test = self
            .test
            .or_else(|| thread.name().filter(|n| *n != "main"))
            .unwrap_or("<your test's name>");
        format!("{REPLAY_VAR}={file} cargo test {test}")
    }
}

/// `word`, quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn write(path: &Path, contents: &str) -> Result<(), CheckError> {
    let fail = |source| CheckError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, contents).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("reports/failures/a-seed-1.json"),
            "reports/failures/a-seed-1.json"
        );
        assert_eq!(shell_word("/tmp/my dir/x.json"), "'/tmp/my dir/x.json'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
