//! The `faultline` command as a library function, so you can build your own `faultline`
//! binary that registers your implementations next to the built-in patterns: `run`,
//! `replay`, `sweep`, `merge` and `mutants`, the HTML reports and `summary.json` then
//! work for them as for the reference.
//!
//! ```no_run
//! use faultline::breaker::pattern::BreakerPattern;
//! use faultline::breaker::world::{SmsKnobs, SmsWorld};
//! use faultline::harness::{Pattern, Plugin};
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     // Your `CallGuard` goes where the reference guard is.
//!     let mine = Plugin::new(BreakerPattern, "my-breaker", |knobs: &SmsKnobs| {
//!         SmsWorld::new(knobs.clone(), knobs.reference_guard()?)
//!     });
//!     let mut patterns: Vec<&dyn Pattern> = faultline::registry::patterns();
//!     patterns.push(&mine);
//!     faultline::cli::main(&patterns)
//! }
//! ```
//!
//! Exit codes: 0 every invariant held; 1 a violation was found (printed with the
//! command that replays it); 2 bad usage or bad input. A mutant's sweep (`sweep
//! PATTERN --mutant NAME`, and the merge of its shards) turns the first two around, as
//! `mutants` does: 0 some seed caught the mutant, 1 it survived every seed.
//!
//! The replay commands it prints name the binary that is running: `cargo run --release
//! [--bin NAME | --example NAME] --` when it runs from a cargo target directory (the
//! `faultline` binary needs no `--bin`), its path as invoked otherwise; they keep `--out`
//! when one was given. A run's HTML report leaves `--out` out of its replay command, so
//! the same run writes the same bytes wherever its report goes.

// `println!` and `eprintln!` panic when the other end of the pipe is gone (`faultline
// list | head`). In this module and those below, they write through `say`, which
// drops what cannot be written: a command whose reader left still finishes its work
// and writes its files.
macro_rules! println {
    ($($arg:tt)*) => { $crate::cli::say(&mut ::std::io::stdout(), format_args!($($arg)*)) };
}
macro_rules! eprintln {
    ($($arg:tt)*) => { $crate::cli::say(&mut ::std::io::stderr(), format_args!($($arg)*)) };
}

mod auto_shard;
mod input;
mod merge;

/// Writes one line of `args` to `to`, dropping it when it cannot be written (a closed
/// pipe, a full disk behind a redirect): what the program prints is for a reader, what
/// it does must not depend on one.
pub(crate) fn say(to: &mut dyn std::io::Write, args: std::fmt::Arguments<'_>) {
    let _ = writeln!(to, "{args}");
}

use crate::harness::{HarnessError, Pattern, build_info, shell_quote};
use crate::registry;
use auto_shard::ShardArg;
use clap::{Parser, Subcommand};
use faultline_sim::report::model::{
    FailureView, Histogram, MutantRow, MutationScore, PatternSweep, SweepView, SweptMutant,
};
use faultline_sim::report::{render_index, render_run};
use faultline_sim::shrink::shrink_plan;
use faultline_sim::sweep::{SeedRange, Shard, SweepProgress, SweepSummary, sweep_fold};
use faultline_sim::{FaultPlan, TraceMode};
use indicatif::{ProgressBar, ProgressStyle};
use input::tty;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant as WallClock;

/// Where reports go unless `--out` says otherwise.
const OUT_DEFAULT: &str = "reports";

#[derive(Parser, Debug)]
#[command(
    name = "faultline",
    version,
    about = "Deterministic chaos tests for resilience patterns: run, replay, sweep, merge, mutants, list.",
    after_help = "Exit codes: 0 every invariant held, 1 a violation was found, 2 bad usage or input.\nsweep --mutant (and its merge): 0 some seed caught the mutant, 1 it survived every seed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one seed of a pattern: print the knobs, the plan and the verdicts, and write
    /// the run's HTML report.
    Run {
        /// The pattern (e.g. `breaker`).
        pattern: String,
        /// The seed: it expands into every knob and, without --plan, the fault plan.
        #[arg(long)]
        seed: u64,
        /// A fault plan (JSON) to use instead of the seed's.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Run this mutant of the pattern's catalog instead of the reference.
        #[arg(long)]
        mutant: Option<String>,
        /// Refuse a plan with a fault that can never fire (else a warning).
        #[arg(long)]
        strict: bool,
        /// Where reports go [default: reports].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Reproduce a run exactly (from a seed, a plan file, or both) and write its report.
    Replay {
        /// The pattern.
        pattern: String,
        /// The seed (optional when the plan file records one).
        #[arg(long)]
        seed: Option<u64>,
        /// The fault plan to replay (failures are written to reports/failures/).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Replay this mutant of the pattern's catalog instead of the reference.
        #[arg(long)]
        mutant: Option<String>,
        /// Refuse a plan with a fault that can never fire (else a warning).
        #[arg(long)]
        strict: bool,
        /// Where reports go [default: reports].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run many seeds on all cores; shrink failures; write index.html and summary.json.
    Sweep {
        /// Patterns to sweep (default: all).
        patterns: Vec<String>,
        /// Seeds as A..B or A..=B (default: each pattern's own range).
        #[arg(long)]
        seeds: Option<SeedRange>,
        /// Worker threads (default: all cores; at most 4 per core, and 256).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run only shard I of N (1-based), e.g. 2/4; merge the shards' summary.json
        /// files with `faultline merge`. `auto` reads it from the batch engine's
        /// environment: a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with
        /// --shard-count or FAULTLINE_SHARD_COUNT), a Slurm job array
        /// (SLURM_ARRAY_TASK_ID/_MIN/_STEP/_COUNT), an AWS Batch array job
        /// (AWS_BATCH_JOB_ARRAY_INDEX/_SIZE), or FAULTLINE_SHARD_INDEX (from 1) with
        /// FAULTLINE_SHARD_COUNT (e.g. from a GitHub Actions matrix).
        #[arg(long, value_name = "I/N|auto")]
        shard: Option<ShardArg>,
        /// With --shard auto: how many shards, where the engine does not say
        /// (Kubernetes); must agree with the engine where it does.
        #[arg(long, value_name = "N")]
        shard_count: Option<u32>,
        /// Failing seeds to shrink and report per pattern.
        #[arg(long, default_value_t = 10)]
        shrink_max: usize,
        /// Sweep this mutant of the pattern's catalog instead of the reference, to see
        /// on how many seeds the invariants catch it (one pattern only). Exits 0 when
        /// some seed caught it, 1 when it survived every seed.
        #[arg(long)]
        mutant: Option<String>,
        /// Continue the sweep whose checkpoint (summary.json) is in `--out`, from the
        /// first seed it did not cover; the same patterns, seeds, shard and mutant.
        #[arg(long)]
        resume: bool,
        /// Where reports go [default: reports].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the patterns this program knows: name, what it is, its default seeds, its
    /// invariants with what each promises, its mutants with what each breaks, and the
    /// fault targets and kinds its plans may use.
    List {
        /// Only this pattern (default: all).
        pattern: Option<String>,
    },
    /// Merge shard summaries (summary.json files of `sweep --shard`) into one report,
    /// copying each shard's failure reports and plans (the files its summary links to,
    /// looked for beside it) into --out. Exits 2 when the shards do not make up the
    /// whole sweep: a shard missing or interrupted (unless --allow-incomplete), the same
    /// shard twice, or shards of different splits, seed ranges or mutants.
    Merge {
        /// The summary.json files.
        #[arg(required = true)]
        summaries: Vec<PathBuf>,
        /// Merge even when shards are missing or ran fewer seeds than they have (the
        /// report says which shards it holds), and drop links to failure files that
        /// are not there. Never merges the same shard twice or different splits.
        #[arg(long)]
        allow_incomplete: bool,
        /// Where the merged report goes [default: reports].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Merge summaries written by different faultline builds (version or commit)
        /// or whose plans differ; refused without it, since their seeds may mean
        /// different runs.
        #[arg(long)]
        allow_mismatch: bool,
    },
    /// Run every mutant of the patterns' catalogs until an invariant catches it; exit 1
    /// if any survives.
    Mutants {
        /// Patterns (default: all).
        patterns: Vec<String>,
        /// Seeds to try per mutant.
        #[arg(long, default_value = "0..500")]
        seeds: SeedRange,
        /// Where reports go [default: reports].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Bad usage or input: printed, exit code 2.
#[derive(Debug)]
struct UsageError(String);

impl<E: std::error::Error> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.to_string())
    }
}

type CliResult = Result<bool, UsageError>;

/// The `faultline` command over `patterns`, with the process's arguments: parses them,
/// runs the subcommand, prints, writes the reports, and gives the exit code.
pub fn main(patterns: &[&dyn Pattern]) -> ExitCode {
    run(patterns, std::env::args_os())
}

/// The `faultline` command over `patterns`, with `args` (the program's path first, as
/// in [`std::env::args_os`]).
pub fn run<I, T>(patterns: &[&dyn Pattern], args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let program = args
        .first()
        .map(|a| program_name(Path::new(a)))
        .unwrap_or_else(|| "faultline".to_string());
    let command = std::iter::once("faultline".to_string())
        .chain(
            args.iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let cx = Context { patterns, program };
    let result = match cli.command {
        Command::Run {
            pattern,
            seed,
            plan,
            mutant,
            strict,
            out,
        } => run_one(
            &cx,
            &pattern,
            Some(seed),
            plan.as_deref(),
            mutant.as_deref(),
            out.as_deref(),
            RunMode {
                replay: false,
                strict,
            },
        ),
        Command::Replay {
            pattern,
            seed,
            plan,
            mutant,
            strict,
            out,
        } => run_one(
            &cx,
            &pattern,
            seed,
            plan.as_deref(),
            mutant.as_deref(),
            out.as_deref(),
            RunMode {
                replay: true,
                strict,
            },
        ),
        Command::Sweep {
            patterns,
            seeds,
            jobs,
            shard,
            shard_count,
            shrink_max,
            mutant,
            resume,
            out,
        } => sweep_cmd(
            &cx,
            &command,
            &patterns,
            SweepArgs {
                seeds,
                jobs,
                shard,
                shard_count,
                shrink_max,
                mutant,
                resume,
            },
            out.as_deref(),
        ),
        Command::List { pattern } => list_cmd(&cx, pattern.as_deref()),
        Command::Merge {
            summaries,
            allow_incomplete,
            out,
            allow_mismatch,
        } => merge_cmd(
            &cx,
            &command,
            &summaries,
            allow_incomplete,
            out.as_deref().unwrap_or(Path::new(OUT_DEFAULT)),
            allow_mismatch,
        ),
        Command::Mutants {
            patterns,
            seeds,
            out,
        } => mutants_cmd(&cx, &command, &patterns, seeds, out.as_deref()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(UsageError(message)) => {
            eprintln!("error: {}", tty(&message));
            ExitCode::from(2)
        }
    }
}

/// How the program that is running is invoked again: `cargo run --release [--bin NAME
/// | --example NAME] --` for a binary in a cargo target directory, the path as given
/// otherwise.
fn program_name(argv0: &Path) -> String {
    let name = argv0
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "faultline".to_string());
    let dirs: Vec<String> = argv0
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let Some(t) = dirs.iter().rposition(|d| d == "target") else {
        return shell_quote(&argv0.display().to_string()).into_owned();
    };
    let name = shell_quote(&name);
    // target/<profile>/NAME or target/<triple>/<profile>/NAME, and examples/ below.
    let rest: Vec<&str> = dirs[t + 1..].iter().map(String::as_str).collect();
    match rest.as_slice() {
        [_, "examples"] | [_, _, "examples"] => format!("cargo run --release --example {name} --"),
        [_] | [_, _] if name == "faultline" => "cargo run --release --".to_string(),
        [_] | [_, _] => format!("cargo run --release --bin {name} --"),
        _ => shell_quote(&argv0.display().to_string()).into_owned(),
    }
}

/// The patterns the command knows and how it is invoked.
struct Context<'a> {
    patterns: &'a [&'a dyn Pattern],
    program: String,
}

impl<'a> Context<'a> {
    /// The command that replays a run of `pattern`, by seed (and plan file), of the
    /// reference or of a mutant, writing under `out` when one was given.
    fn replay(
        &self,
        pattern: &str,
        seed: u64,
        plan_file: Option<&str>,
        mutant: Option<&str>,
        out: Option<&Path>,
    ) -> String {
        let mut cmd =
            crate::harness::replay_command_of(&self.program, pattern, seed, plan_file, mutant);
        if let Some(dir) = out {
            cmd.push_str(" --out ");
            cmd.push_str(&shell_quote(&dir.display().to_string()));
        }
        cmd
    }

    /// The pattern called `name`.
    fn find(&self, name: &str) -> Result<&'a dyn Pattern, UsageError> {
        self.patterns
            .iter()
            .copied()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                UsageError::from(HarnessError::UnknownPattern {
                    name: name.to_string(),
                    known: self
                        .patterns
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            })
    }

    fn resolve(&self, names: &[String]) -> Result<Vec<&'a dyn Pattern>, UsageError> {
        if names.is_empty() {
            return Ok(self.patterns.to_vec());
        }
        names.iter().map(|n| self.find(n)).collect()
    }
}

/// `faultline list [PATTERN]`: every pattern (or the one named) with what it is, its
/// default seeds, its invariants and what each promises, its mutants and what each
/// breaks, and the names its plans may target with the kinds each takes.
fn list_cmd(cx: &Context<'_>, name: Option<&str>) -> CliResult {
    let patterns = match name {
        Some(n) => vec![cx.find(n)?],
        None => cx.patterns.to_vec(),
    };
    for p in patterns {
        println!("{}: {}", tty(p.name()), tty(p.about()));
        println!("  default seeds: {}", p.default_seeds());
        println!("  invariants:");
        for (invariant, promise) in p.promises() {
            println!("    {}", tty(invariant));
            if !promise.is_empty() {
                println!("        {}", tty(promise));
            }
        }
        let mutants = p.mutants();
        if mutants.is_empty() {
            println!("  mutants: none");
        } else {
            println!("  mutants:");
        }
        for m in mutants {
            println!(
                "    {} (caught by {}): {}",
                tty(m.name),
                tty(m.expected),
                tty(m.defect)
            );
        }
        println!("  fault targets (name: kinds it takes):");
        for (target, kinds) in list_targets(p) {
            println!("    {}: {}", tty(&target), kinds.join(", "));
        }
        let kinds: Vec<&str> = p
            .fault_kinds(p.default_seeds().start)
            .iter()
            .map(|k| k.name())
            .collect();
        println!("  fault kinds: {}", kinds.join(", "));
    }
    Ok(true)
}

/// The names the plans of `pattern`'s first default seeds (up to 64; a world's names may
/// depend on its seed) may target, in first-seen order, each with the kinds it takes
/// (none known for a pattern without a fault profile).
fn list_targets(pattern: &dyn Pattern) -> Vec<(String, Vec<&'static str>)> {
    let seeds = pattern.default_seeds();
    let mut targets: Vec<(String, Vec<&'static str>)> = Vec::new();
    for seed in (seeds.start..seeds.end).take(64) {
        let profile = pattern.fault_profile_of(seed);
        for name in pattern.known_targets(seed) {
            let k = match targets.iter().position(|(n, _)| *n == name) {
                Some(k) => k,
                None => {
                    targets.push((name.clone(), Vec::new()));
                    targets.len() - 1
                }
            };
            let Some(profile) = &profile else { continue };
            for kind in profile.usable_kinds() {
                if profile.targets_for(kind).contains(&name) && !targets[k].1.contains(&kind.name())
                {
                    targets[k].1.push(kind.name());
                }
            }
        }
    }
    targets
}

fn read_plan(path: &Path) -> Result<FaultPlan, UsageError> {
    let text = input::read_capped(path, "plan", input::PLAN_BYTES_MAX)?;
    FaultPlan::from_json(&text).map_err(|e| UsageError(format!("{}: {e}", path.display())))
}

fn write(path: &Path, contents: &str) -> Result<(), UsageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| UsageError(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Written beside and renamed over, so an interrupted write (a signal, a full disk)
    // leaves the previous file whole, never half of the new one.
    let tmp = path.with_extension("partial-write");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))
}

/// How `run_one` runs: as `replay` or `run`, and whether a fault that can never fire
/// is refused.
struct RunMode {
    replay: bool,
    strict: bool,
}

fn run_one(
    cx: &Context<'_>,
    name: &str,
    seed: Option<u64>,
    plan_file: Option<&Path>,
    mutant: Option<&str>,
    out_arg: Option<&Path>,
    mode: RunMode,
) -> CliResult {
    let RunMode { replay, strict } = mode;
    let out = out_arg.unwrap_or(Path::new(OUT_DEFAULT));
    let pattern = cx.find(name)?;
    if let Some(m) = mutant {
        pattern.mutant_info(m)?;
    }
    let file_plan = plan_file.map(read_plan).transpose()?;
    let seed = match (seed, file_plan.as_ref().and_then(|p| p.seed)) {
        (Some(s), Some(recorded)) if s != recorded => {
            eprintln!(
                "note: the plan was recorded with seed {recorded}; running seed {s} as asked"
            );
            s
        }
        (Some(s), _) => s,
        (None, Some(recorded)) => recorded,
        (None, None) => {
            return Err(UsageError(
                "give --seed, or a --plan file that records its seed".to_string(),
            ));
        }
    };
    let plan = match file_plan {
        Some(p) => {
            input::check_plan(pattern, seed, &p, strict)?;
            p
        }
        None => pattern.plan(seed),
    };
    println!(
        "{} {} seed {seed}{}",
        if replay { "replaying" } else { "running" },
        pattern.name(),
        mutant.map_or(String::new(), |m| format!(" (mutant {m})"))
    );
    println!("knobs:");
    for (k, v) in pattern.knobs(seed) {
        println!("  {k} = {v}");
    }
    println!(
        "fault plan: {} faults, horizon {} ms{}",
        plan.faults.len(),
        plan.horizon_ms,
        plan_file.map_or(String::new(), |p| format!(
            " (from {})",
            tty(&p.display().to_string())
        ))
    );
    for (i, f) in plan.faults.iter().enumerate() {
        println!("  [{i}] {}", tty(&f.to_string()));
    }
    let mut view = pattern.view(seed, &plan, mutant)?;
    let plan_arg = plan_file.map(|p| p.display().to_string());
    // The page leaves --out out, so the same run writes the same bytes anywhere.
    view.replay = cx.replay(pattern.name(), seed, plan_arg.as_deref(), mutant, None);
    println!("invariants:");
    for v in &view.verdicts {
        println!(
            "  {} {}{}",
            if v.held { "held    " } else { "VIOLATED" },
            v.name,
            if v.note.is_empty() {
                String::new()
            } else {
                format!(": {}", v.note)
            }
        );
    }
    let stem = match (plan_file, mutant) {
        (None, None) => format!("{}-seed-{seed}", pattern.name()),
        (Some(p), None) => format!(
            "{}-seed-{seed}-{}",
            pattern.name(),
            p.file_stem()
                .map_or("plan".into(), |s| s.to_string_lossy().into_owned())
        ),
        (_, Some(m)) => format!("{}-seed-{seed}-mutant-{m}", pattern.name()),
    };
    let html = render_run(&view)?;
    let path = out.join("runs").join(format!("{stem}.html"));
    write(&path, &html)?;
    println!("report: {}", tty(&path.display().to_string()));
    if view.outcome.is_pass() {
        println!("passed: every invariant held");
        Ok(true)
    } else {
        println!("FAILED: {}", tty(&view.outcome.to_string()));
        println!("  seed:   {seed}");
        println!(
            "  replay: {}",
            tty(&cx.replay(pattern.name(), seed, plan_arg.as_deref(), mutant, out_arg))
        );
        Ok(false)
    }
}

/// Progress on a terminal as a bar, otherwise as a plain line every tenth.
struct Progress {
    bar: Option<ProgressBar>,
    name: &'static str,
    last_tenth: Mutex<u64>,
}

impl Progress {
    fn new(name: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>10} [{bar:40}] {pos}/{len} seeds {per_sec} eta {eta} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name);
            bar
        });
        Progress {
            bar,
            name,
            last_tenth: Mutex::new(0),
        }
    }

    fn update(&self, p: SweepProgress) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(p.done);
                if p.failed > 0 {
                    bar.set_message(format!("{} failing", p.failed));
                }
            }
            None => {
                let tenth = p.done * 10 / p.total.max(1);
                if let Ok(mut last) = self.last_tenth.lock()
                    && tenth > *last
                {
                    *last = tenth;
                    eprintln!(
                        "{}: {}/{} seeds, {} failing",
                        self.name, p.done, p.total, p.failed
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn relative_href(from_dir: &Path, to: &Path) -> Option<String> {
    let from = std::fs::canonicalize(from_dir).ok()?;
    let to = std::fs::canonicalize(to).ok()?;
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); a.len() - common];
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Some(parts.join("/"))
}

fn criterion_href(out: &Path) -> Option<String> {
    let report = Path::new("target/criterion/report/index.html");
    report
        .exists()
        .then(|| relative_href(out, report))
        .flatten()
}

fn load_mutants(out: &Path) -> Vec<MutantRow> {
    input::read_capped(
        &out.join("mutants.json"),
        "mutants",
        input::SUMMARY_BYTES_MAX,
    )
    .ok()
    .and_then(|t| serde_json::from_str(&t).ok())
    .unwrap_or_default()
}

fn write_index(out: &Path, view: &mut SweepView) -> Result<(), UsageError> {
    write_summary(out, view, true)
}

/// The cores' mutation scores as `scripts/mutation-score --record` last wrote them,
/// built into the program (the file is committed; a test checks it parses).
const MUTATION_SCORES: &str = include_str!("../scripts/mutation-scores.json");

/// [`MUTATION_SCORES`], read.
fn mutation_scores() -> Vec<MutationScore> {
    serde_json::from_str(MUTATION_SCORES).unwrap_or_default()
}

/// Writes `view` as summary.json and index.html in `out`; `announce` prints the path.
fn write_summary(out: &Path, view: &mut SweepView, announce: bool) -> Result<(), UsageError> {
    view.criterion_href = criterion_href(out);
    view.mutation_scores = mutation_scores();
    let json = serde_json::to_string_pretty(view)?;
    write(&out.join("summary.json"), &json)?;
    let html = render_index(view)?;
    let path = out.join("index.html");
    write(&path, &html)?;
    if announce {
        println!("report: {}", tty(&path.display().to_string()));
    }
    Ok(())
}

/// What `sweep` was asked to do, beyond the patterns and `--out`.
struct SweepArgs {
    seeds: Option<SeedRange>,
    jobs: Option<usize>,
    shard: Option<ShardArg>,
    shard_count: Option<u32>,
    shrink_max: usize,
    mutant: Option<String>,
    resume: bool,
}

/// The mutant a `sweep --mutant NAME` of `patterns` runs: it needs exactly one pattern,
/// whose catalog has a mutant of that name.
fn swept_mutant(
    cx: &Context<'_>,
    patterns: &[&dyn Pattern],
    name: &str,
) -> Result<SweptMutant, UsageError> {
    let [pattern] = patterns else {
        let having: Vec<&str> = cx
            .patterns
            .iter()
            .filter(|p| p.mutant_info(name).is_ok())
            .map(|p| p.name())
            .collect();
        let hint = match having.as_slice() {
            [] => String::new(),
            [one] => format!(": `sweep {one} --mutant {name}`"),
            many => format!(
                " (the catalogs of {} have one of that name)",
                many.join(", ")
            ),
        };
        return Err(UsageError(format!(
            "--mutant sweeps one pattern's mutant: name exactly one pattern{hint}"
        )));
    };
    let info = pattern.mutant_info(name)?;
    Ok(SweptMutant {
        name: info.name.to_string(),
        defect: info.defect.to_string(),
    })
}

/// Seconds of wall time between two checkpoints of a running sweep (summary.json and
/// index.html in `--out`, marked partial). Wall time only decides *when* a checkpoint is
/// written; what it holds is the prefix of seeds folded so far.
const CHECKPOINT_EVERY_S: u64 = 10;

/// Stops a sweep after this many seeds of a pattern (counting the resumed ones), as a
/// signal would: lets a test interrupt a sweep at a known seed. Not for users.
const STOP_AFTER_ENV: &str = "FAULTLINE_SWEEP_STOP_AFTER";

/// Exit code of a sweep stopped by SIGINT or SIGTERM (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: i32 = 130;

/// What a pattern's plans are drawn from, in a line: each seed expands into its own
/// plan, so this names a fingerprint (FNV-1a) of the plans of the range's first seeds;
/// two sweeps whose seeds mean different plans (another version of the generator or
/// of the knobs) get different fingerprints.
fn plan_profile(pattern: &dyn Pattern, range: SeedRange) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let first: Vec<u64> = (0..4)
        .filter_map(|k| range.start.checked_add(k))
        .filter(|s| *s < range.end)
        .collect();
    for &seed in &first {
        for b in pattern.plan(seed).to_json().bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!(
        "swarm plans, one per seed; fingerprint {hash:016x} of the plans of seeds {}..={}",
        first.first().copied().unwrap_or(range.start),
        first.last().copied().unwrap_or(range.start)
    )
}

/// Sets `stop` on SIGINT and SIGTERM (the handler only stores a flag), so a sweep stops
/// taking seeds, folds those under way, and writes its partial summary.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("warning: cannot catch signal {signal} ({e}): an interrupt loses the sweep");
        }
    }
    stop
}

/// The checkpoint a `sweep --resume` continues from.
fn load_checkpoint(out: &Path) -> Result<SweepView, UsageError> {
    let file = out.join("summary.json");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        UsageError(format!(
            "--resume: cannot read {} ({e}): there is no sweep to resume in {}",
            file.display(),
            out.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "--resume: {} is not a sweep summary: {e}",
            file.display()
        ))
    })
}

/// A pattern's sweep so far: its summary and histograms, folded seed by seed.
struct Fold {
    summary: SweepSummary,
    histograms: Vec<Histogram>,
}

/// A pattern's section of the report. When `stopped`, failures are listed as they are
/// (no shrinking, which could take long after a signal).
#[allow(clippy::too_many_arguments)]
fn section(
    cx: &Context<'_>,
    pattern: &dyn Pattern,
    swept: Option<&SweptMutant>,
    fold: Fold,
    plan_profile: &str,
    shrink_max: usize,
    out_arg: Option<&Path>,
    stopped: bool,
) -> Result<PatternSweep, UsageError> {
    let mutant = swept.map(|m| m.name.as_str());
    let failures = if stopped {
        fold.summary
            .failures
            .iter()
            .map(|f| FailureView {
                seed: f.seed,
                invariant: f.invariant.clone(),
                message: f.message.clone(),
                replay: f.replay.clone(),
                report_href: None,
                plan_href: None,
                faults_shrunk: None,
            })
            .collect()
    } else {
        report_failures(cx, pattern, mutant, &fold.summary, shrink_max, out_arg)?
    };
    Ok(PatternSweep {
        pattern: pattern.name().to_string(),
        invariants: pattern.invariants().iter().map(|s| s.to_string()).collect(),
        promises: pattern
            .promises()
            .into_iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect(),
        summary: fold.summary,
        histograms: fold.histograms,
        failures,
        plan_profile: plan_profile.to_string(),
        mutant: swept.cloned(),
    })
}

fn sweep_cmd(
    cx: &Context<'_>,
    command: &str,
    names: &[String],
    args: SweepArgs,
    out_arg: Option<&Path>,
) -> CliResult {
    let out = out_arg.unwrap_or(Path::new(OUT_DEFAULT));
    let patterns = cx.resolve(names)?;
    input::writable_out(out)?;
    let swept = args
        .mutant
        .as_deref()
        .map(|m| swept_mutant(cx, &patterns, m))
        .transpose()?;
    let mutant = swept.as_ref().map(|m| m.name.as_str());
    let jobs = input::jobs(args.jobs)?;
    let shard = match (args.shard, args.shard_count) {
        (None, None) => Shard::ALL,
        (Some(ShardArg::Fixed(s)), None) => s,
        (Some(ShardArg::Auto), count) => {
            let (shard, engine) = auto_shard::shard_from_env(&auto_shard::process_env(), count)?;
            println!("shard {shard} (--shard auto: {engine})");
            shard
        }
        (_, Some(_)) => {
            return Err(UsageError(
                "--shard-count goes with --shard auto (with --shard I/N the count is N)".into(),
            ));
        }
    };
    // Every pattern's range, checked before the first one runs.
    for pattern in &patterns {
        input::shard_seeds(args.seeds.unwrap_or_else(|| pattern.default_seeds()), shard)?;
    }
    let checkpoint = args.resume.then(|| load_checkpoint(out)).transpose()?;
    if let Some(c) = &checkpoint
        && c.build != build_info()
    {
        return Err(UsageError(format!(
            "--resume: the checkpoint in {} was written by faultline {} (commit {}), this is {} (commit {}): its seeds may mean other runs; start the sweep afresh",
            out.display(),
            c.build.version,
            c.build.commit,
            build_info().version,
            build_info().commit
        )));
    }
    let stop_after: Option<u64> = std::env::var(STOP_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let stop = stop_on_signals();
    let mut view = SweepView {
        // A resumed sweep is the sweep it continues: it keeps its command.
        command: checkpoint
            .as_ref()
            .map_or_else(|| command.to_string(), |c| c.command.clone()),
        patterns: Vec::new(),
        mutants: load_mutants(out),
        criterion_href: None,
        comparisons: Vec::new(),
        build: build_info(),
        mutation_scores: Vec::new(),
    };
    let mut all_passed = true;
    let mut stopped = false;
    for pattern in patterns {
        let range = args.seeds.unwrap_or_else(|| pattern.default_seeds());
        let total = input::shard_seeds(range, shard)?;
        let profile = plan_profile(pattern, range);
        let prior = checkpoint
            .as_ref()
            .and_then(|c| c.patterns.iter().find(|p| p.pattern == pattern.name()));
        let fold = match prior {
            None => Fold {
                summary: SweepSummary::new(range, shard).keep_failures(args.shrink_max as u64),
                histograms: pattern
                    .metrics()
                    .iter()
                    .map(|(name, unit)| Histogram::new(*name, *unit))
                    .collect(),
            },
            Some(p) => {
                let same = p.summary.range == range
                    && p.summary.shards == [shard].into()
                    && p.mutant == swept
                    && p.plan_profile == profile;
                if !same {
                    return Err(UsageError(format!(
                        "--resume: the checkpoint in {} swept {} seeds {} shard(s) {}{}; this sweep asks for seeds {range} shard {shard}{}: give the same seeds, shard and mutant (and the same build)",
                        out.display(),
                        p.pattern,
                        p.summary.range,
                        p.summary
                            .shards
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        p.mutant
                            .as_ref()
                            .map_or(String::new(), |m| format!(" mutant {}", m.name)),
                        mutant.map_or(String::new(), |m| format!(" mutant {m}")),
                    )));
                }
                Fold {
                    summary: p.summary.clone(),
                    histograms: p.histograms.clone(),
                }
            }
        };
        let skip = fold.summary.runs;
        if stopped {
            // Stopped during an earlier pattern: this one's checkpoint (if any) stays
            // as it was, for a later --resume.
            if let Some(p) = prior {
                view.patterns.push(p.clone());
            }
            continue;
        }
        if prior.is_some() && skip >= total {
            println!("{}: already finished in the checkpoint", pattern.name());
            let p = prior
                .cloned()
                .ok_or_else(|| UsageError("checkpoint lost".into()))?;
            all_passed &= print_verdict(&p);
            view.patterns.push(p);
            continue;
        }
        println!(
            "sweeping {}{} seeds {range} shard {shard} ({total} seeds{}) on {jobs} threads",
            pattern.name(),
            mutant.map_or(String::new(), |m| format!(" (mutant {m})")),
            if skip > 0 {
                format!(", resuming after the first {skip}")
            } else {
                String::new()
            }
        );
        let started = WallClock::now();
        let wall_before = fold.summary.wall_ms;
        let progress = Progress::new(pattern.name(), total);
        let replay = |seed| cx.replay(pattern.name(), seed, None, mutant, out_arg);
        let mut fold = fold;
        let mut last_checkpoint = WallClock::now();
        let mut checkpoint_error: Option<UsageError> = None;
        let end = sweep_fold(
            range,
            shard,
            skip,
            jobs,
            &stop,
            |seed| pattern.run(seed, &pattern.plan(seed), TraceMode::Off, mutant),
            |r| {
                let failed_before = fold.summary.failed;
                match &r.result {
                    Ok(Ok(run)) => {
                        fold.summary.add(&run.report);
                        for reading in &run.metrics {
                            let histogram =
                                fold.histograms.iter_mut().find(|h| h.name == reading.name);
                            if let (Some(h), Some(v)) = (histogram, reading.value) {
                                h.sketch.add((v * 10_000.0).round() / 10_000.0, r.seed);
                            }
                        }
                    }
                    Ok(Err(e)) => fold
                        .summary
                        .add_panic(r.seed, e.to_string(), replay(r.seed)),
                    Err(panic) => fold
                        .summary
                        .add_panic(r.seed, panic.clone(), replay(r.seed)),
                }
                // A failing run's report names the world's built-in replay hint: name
                // this program and pattern instead.
                if fold.summary.failed > failed_before
                    && let Some(f) = fold.summary.failures.last_mut()
                    && f.seed == r.seed
                {
                    f.replay = replay(r.seed);
                }
                progress.update(SweepProgress {
                    done: fold.summary.runs,
                    total,
                    failed: fold.summary.failed,
                });
                if stop_after.is_some_and(|n| fold.summary.runs >= n) {
                    stop.store(true, Ordering::SeqCst);
                }
                if last_checkpoint.elapsed().as_secs() >= CHECKPOINT_EVERY_S
                    && checkpoint_error.is_none()
                {
                    last_checkpoint = WallClock::now();
                    let mut partial = view.clone();
                    let mut summary = fold.summary.clone();
                    summary.wall_ms = wall_before + started.elapsed().as_millis() as u64;
                    let part = Fold {
                        summary,
                        histograms: fold.histograms.clone(),
                    };
                    let written = section(
                        cx,
                        pattern,
                        swept.as_ref(),
                        part,
                        &profile,
                        0,
                        out_arg,
                        true,
                    )
                    .and_then(|s| {
                        partial.patterns.push(s);
                        write_summary(out, &mut partial, false)
                    });
                    if let Err(e) = written {
                        checkpoint_error = Some(e);
                    }
                }
            },
        )?;
        progress.finish();
        if let Some(e) = checkpoint_error {
            eprintln!("warning: a checkpoint could not be written: {}", e.0);
        }
        fold.summary.wall_ms = wall_before + started.elapsed().as_millis() as u64;
        stopped = end.stopped;
        let summary = &fold.summary;
        println!(
            "{}: {} seeds, {} passed, {} failed, {} simulated events, {} of {} coverage marks hit, {:.1} s{}",
            pattern.name(),
            summary.runs,
            summary.passed,
            summary.failed,
            summary.events,
            summary
                .coverage
                .values()
                .filter(|m| m.seeds_hit > 0)
                .count(),
            summary.coverage.len(),
            summary.wall_ms as f64 / 1000.0,
            if stopped { " (stopped early)" } else { "" }
        );
        let s = section(
            cx,
            pattern,
            swept.as_ref(),
            fold,
            &profile,
            args.shrink_max,
            out_arg,
            stopped,
        )?;
        all_passed &= print_verdict(&s);
        view.patterns.push(s);
    }
    add_comparisons(&mut view);
    write_index(out, &mut view)?;
    if stopped {
        let covered: Vec<String> = view
            .patterns
            .iter()
            .map(|p| format!("{}: {}", p.pattern, p.summary.covered()))
            .collect();
        eprintln!(
            "interrupted: the partial summary covers {}; patterns not listed were not started. Continue with the same command and --resume.",
            covered.join("; ")
        );
        std::process::exit(EXIT_INTERRUPTED);
    }
    Ok(all_passed)
}

/// Prints what a pattern's sweep found beyond its counts, and says whether it is the
/// outcome hoped for: for an implementation, that every seed passed (its failures are
/// listed with their replay commands); for a mutant, that some seed caught it (the
/// verdict line, and the command that replays its first catch).
fn print_verdict(p: &PatternSweep) -> bool {
    match p.mutant_verdict() {
        None => {
            for f in &p.failures {
                println!(
                    "  seed {} broke {}: replay with {}",
                    f.seed,
                    tty(&f.invariant),
                    tty(&f.replay)
                );
            }
            p.summary.failed == 0 && p.summary.failures.is_empty()
        }
        Some(line) => {
            println!("{}", tty(&line));
            // Every failing seed has a view, in seed order; the first ones carry the
            // shrunk plan.
            let first = p.failures.iter().min_by_key(|f| f.seed);
            match first {
                Some(f) => println!("  replay: {}", tty(&f.replay)),
                None => println!(
                    "  the invariants missed this deliberately broken implementation on every seed"
                ),
            }
            first.is_some()
        }
    }
}

/// Adds every comparison of the registry with at least two of its patterns in `view` and
/// none of its title there yet.
fn add_comparisons(view: &mut SweepView) {
    for c in registry::comparisons() {
        let swept = c
            .patterns
            .iter()
            .filter(|name| view.patterns.iter().any(|p| p.pattern == **name))
            .count();
        if swept >= 2 && !view.comparisons.iter().any(|d| d.title == c.title) {
            view.comparisons.push(c);
        }
    }
}

/// Shrinks the first `shrink_max` failing seeds, writes each shrunk plan and its report,
/// and returns the failures as the report lists them.
fn report_failures(
    cx: &Context<'_>,
    pattern: &dyn Pattern,
    mutant: Option<&str>,
    summary: &SweepSummary,
    shrink_max: usize,
    out_arg: Option<&Path>,
) -> Result<Vec<FailureView>, UsageError> {
    let out = out_arg.unwrap_or(Path::new(OUT_DEFAULT));
    let mut views = Vec::new();
    for (k, f) in summary.failures.iter().enumerate() {
        let mut view = FailureView {
            seed: f.seed,
            invariant: f.invariant.clone(),
            message: f.message.clone(),
            replay: cx.replay(pattern.name(), f.seed, None, mutant, out_arg),
            report_href: None,
            plan_href: None,
            faults_shrunk: None,
        };
        if k < shrink_max && f.invariant != "sim.panic" {
            let original = pattern.plan(f.seed);
            let same_failure = |p: &FaultPlan| {
                pattern
                    .run(f.seed, p, TraceMode::Off, mutant)
                    .is_ok_and(|r| r.report.outcome.invariant() == Some(f.invariant.as_str()))
            };
            let shrunk = shrink_plan(&original, same_failure, 400);
            let plan = shrunk.plan.with_seed(f.seed);
            let stem = match mutant {
                None => format!("{}-seed-{}", pattern.name(), f.seed),
                Some(m) => format!("{}-seed-{}-mutant-{m}", pattern.name(), f.seed),
            };
            let plan_rel = format!("failures/{stem}.json");
            write(&out.join(&plan_rel), &plan.to_json())?;
            let plan_arg = out.join(&plan_rel).display().to_string();
            let mut run_view = pattern.view(f.seed, &plan, mutant)?;
            run_view.replay = cx.replay(pattern.name(), f.seed, Some(&plan_arg), mutant, out_arg);
            write(
                &out.join(format!("failures/{stem}.html")),
                &render_run(&run_view)?,
            )?;
            view.replay = run_view.replay.clone();
            view.report_href = Some(format!("failures/{stem}.html"));
            view.plan_href = Some(plan_rel);
            view.faults_shrunk = Some((plan.faults.len(), shrunk.faults_before));
        }
        views.push(view);
    }
    Ok(views)
}

/// Which implementation a pattern's sweep ran: `None` for the pattern's own, else the
/// pattern and the name of the mutant.
fn swept_kind(p: &PatternSweep) -> Option<(&str, &str)> {
    p.mutant
        .as_ref()
        .map(|m| (p.pattern.as_str(), m.name.as_str()))
}

/// `kind` in words.
fn kind_words(kind: Option<(&str, &str)>) -> String {
    match kind {
        None => "the patterns' own implementations".to_string(),
        Some((pattern, mutant)) => format!("mutant `{mutant}` of {pattern}"),
    }
}

/// Refuses `parts` unless, pattern by pattern, their shards make up the whole sweep
/// (`allow_incomplete` lets missing or short shards through, with a warning).
fn check_shard_sets(
    parts: &[(&Path, SweepView)],
    allow_incomplete: bool,
) -> Result<(), UsageError> {
    let mut by_pattern: std::collections::BTreeMap<&str, Vec<(&Path, &SweepSummary)>> =
        std::collections::BTreeMap::new();
    for (file, view) in parts {
        for p in &view.patterns {
            by_pattern
                .entry(p.pattern.as_str())
                .or_default()
                .push((file, &p.summary));
        }
    }
    let problems: Vec<merge::Problem> = by_pattern
        .iter()
        .flat_map(|(pattern, ps)| merge::check_shard_set(pattern, ps))
        .collect();
    let bullets =
        |ps: &[&merge::Problem]| ps.iter().map(|p| format!("\n  - {p}")).collect::<String>();
    let (incomplete, inconsistent): (Vec<&merge::Problem>, Vec<&merge::Problem>) =
        problems.iter().partition(|p| p.is_incompleteness());
    if !inconsistent.is_empty() {
        return Err(UsageError(format!(
            "the shards do not add up to one sweep:{}{}",
            bullets(&inconsistent),
            bullets(&incomplete)
        )));
    }
    if !incomplete.is_empty() {
        if !allow_incomplete {
            return Err(UsageError(format!(
                "the shard set is incomplete (pass --allow-incomplete to merge it anyway):{}",
                bullets(&incomplete)
            )));
        }
        for p in incomplete {
            eprintln!("warning: {p} (merged anyway: --allow-incomplete)");
        }
    }
    Ok(())
}

/// Points the replay commands of `p`'s failures, brought into the merged report in
/// `out`, at `out` instead of the shard's own directory: on the merged index and on each
/// failure's page (rendered again from its copied plan, so it is the page a sweep into
/// `out` would have written). A pattern this program does not know keeps its pages as
/// the shard wrote them, with a warning.
fn rehome_failures(cx: &Context<'_>, p: &mut PatternSweep, out: &Path) -> Result<(), UsageError> {
    let mutant = p.mutant.as_ref().map(|m| m.name.clone());
    let mutant = mutant.as_deref();
    let pattern = cx.find(&p.pattern).ok();
    let mut stale_pages = 0usize;
    for f in &mut p.failures {
        let plan_arg = f
            .plan_href
            .as_ref()
            .map(|rel| out.join(rel).display().to_string());
        f.replay = cx.replay(&p.pattern, f.seed, plan_arg.as_deref(), mutant, Some(out));
        let (Some(page), Some(plan_rel)) = (&f.report_href, &f.plan_href) else {
            continue;
        };
        let Some(pattern) = pattern else {
            stale_pages += 1;
            continue;
        };
        let plan = read_plan(&out.join(plan_rel))?;
        let mut run_view = pattern.view(f.seed, &plan, mutant)?;
        run_view.replay = f.replay.clone();
        write(&out.join(page), &render_run(&run_view)?)?;
    }
    if stale_pages > 0 {
        eprintln!(
            "warning: {}: this program does not know the pattern, so its {stale_pages} failure page(s) keep the replay command of their shard's directory",
            tty(&p.pattern)
        );
    }
    Ok(())
}

fn merge_cmd(
    cx: &Context<'_>,
    command: &str,
    files: &[PathBuf],
    allow_incomplete: bool,
    out: &Path,
    allow_mismatch: bool,
) -> CliResult {
    input::writable_out(out)?;
    let mut parts: Vec<(&Path, SweepView)> = Vec::new();
    // The first file and the kind of implementation it swept: every part must match.
    let mut first: Option<(&Path, Option<(String, String)>)> = None;
    for file in files {
        let text = input::read_capped(file, "summary", input::SUMMARY_BYTES_MAX)?;
        let part: SweepView = serde_json::from_str(&text)
            .map_err(|e| UsageError(format!("{} is not a sweep summary: {e}", file.display())))?;
        input::check_links(file, &part)?;
        for p in &part.patterns {
            let kind = swept_kind(p).map(|(a, b)| (a.to_string(), b.to_string()));
            match &first {
                None => first = Some((file.as_path(), kind)),
                Some((_, k)) if *k == kind => {}
                Some((f, k)) => {
                    let words = |k: &Option<(String, String)>| {
                        kind_words(k.as_ref().map(|(a, b)| (a.as_str(), b.as_str())))
                    };
                    return Err(UsageError(format!(
                        "{} swept {}, {} swept {}: a mutant sweep's shards merge only with shards of the same mutant",
                        file.display(),
                        words(&kind),
                        f.display(),
                        words(k)
                    )));
                }
            }
        }
        match parts.first() {
            Some((_, m)) if m.build != part.build && !allow_mismatch => {
                return Err(UsageError(format!(
                    "{} was written by faultline {} (commit {}), {} by faultline {} (commit {}): merge refuses summaries of different builds (--allow-mismatch merges them anyway)",
                    file.display(),
                    part.build.version,
                    part.build.commit,
                    files[0].display(),
                    m.build.version,
                    m.build.commit
                )));
            }
            _ => {}
        }
        parts.push((file.as_path(), part));
    }
    check_shard_sets(&parts, allow_incomplete)?;
    let mut artefacts = merge::Artefacts::new(out, allow_incomplete);
    for (file, part) in &mut parts {
        for p in &mut part.patterns {
            artefacts.bring_all(file, &mut p.failures)?;
            rehome_failures(cx, p, out)?;
        }
    }
    for line in &artefacts.dropped {
        eprintln!("warning: {line}");
    }
    let mut merged: Option<SweepView> = None;
    for (file, part) in parts {
        match &mut merged {
            None => merged = Some(part),
            Some(m) => {
                for p in part.patterns {
                    match m.patterns.iter_mut().find(|q| q.pattern == p.pattern) {
                        Some(q) => {
                            q.summary
                                .merge(p.summary)
                                .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
                            if q.plan_profile != p.plan_profile && !allow_mismatch {
                                return Err(UsageError(format!(
                                    "{}: pattern {} was swept with other plans ({}) than in {} ({}): merge refuses summaries whose seeds mean different runs (--allow-mismatch merges them anyway)",
                                    file.display(),
                                    p.pattern,
                                    p.plan_profile,
                                    files[0].display(),
                                    q.plan_profile
                                )));
                            }
                            Histogram::merge_into(&mut q.histograms, p.histograms);
                            q.failures.extend(p.failures);
                            q.failures.sort_by_key(|f| f.seed);
                        }
                        None => m.patterns.push(p),
                    }
                }
                for row in part.mutants {
                    if !m.mutants.contains(&row) {
                        m.mutants.push(row);
                    }
                }
                for c in part.comparisons {
                    if !m.comparisons.iter().any(|d| d.title == c.title) {
                        m.comparisons.push(c);
                    }
                }
            }
        }
    }
    let Some(mut view) = merged else {
        return Err(UsageError("no summaries to merge".into()));
    };
    view.command = command.to_string();
    // Parts sweeping different patterns may add up to a comparison none held alone.
    add_comparisons(&mut view);
    let mut passed = true;
    for p in &view.patterns {
        let s = &p.summary;
        println!(
            "{}: {} seeds in {} of {} shards{}, {} failed",
            tty(&p.pattern),
            s.runs,
            s.shards.len(),
            s.shard_count(),
            if s.is_complete() { "" } else { " (incomplete)" },
            s.failed.max(s.failures.len() as u64)
        );
        passed &= print_verdict(p);
    }
    write_index(out, &mut view)?;
    Ok(passed)
}

fn mutants_cmd(
    cx: &Context<'_>,
    command: &str,
    names: &[String],
    seeds: SeedRange,
    out_arg: Option<&Path>,
) -> CliResult {
    let out = out_arg.unwrap_or(Path::new(OUT_DEFAULT));
    let patterns = cx.resolve(names)?;
    input::shard_seeds(seeds, Shard::ALL)?;
    input::writable_out(out)?;
    let mut rows = Vec::new();
    // Mutants whose run panicked: (row index, seed, message). Neither caught nor
    // survived, they fail the command.
    let mut panicked: Vec<(usize, u64, String)> = Vec::new();
    for pattern in patterns {
        let mutants = pattern.mutants();
        let found: Vec<(MutantRow, Option<(u64, String)>)> = std::thread::scope(|s| {
            let handles: Vec<_> = mutants
                .iter()
                .map(|m| s.spawn(move || hunt_mutant(pattern, m, seeds)))
                .collect();
            handles
                .into_iter()
                .zip(&mutants)
                .map(|(h, m)| {
                    // hunt_mutant catches a run's panic; this is one outside a run.
                    h.join().unwrap_or_else(|p| {
                        let row = mutant_row(pattern, m);
                        (row, Some((seeds.start, panic_text(p.as_ref()))))
                    })
                })
                .collect()
        });
        for (row, panic) in found {
            if let Some((seed, message)) = panic {
                panicked.push((rows.len(), seed, message));
            }
            rows.push(row);
        }
    }
    println!(
        "{:<10} {:<28} {:<32} {:>6}  defect",
        "pattern", "mutant", "caught by", "cases"
    );
    let mut all_caught = panicked.is_empty();
    for (k, r) in rows.iter().enumerate() {
        all_caught &= r.caught_by.is_some();
        let panic = panicked.iter().find(|(i, _, _)| *i == k);
        println!(
            "{:<10} {:<28} {:<32} {:>6}  {}",
            tty(&r.pattern),
            tty(&r.mutant),
            match panic {
                Some(_) => "PANICKED",
                None => r.caught_by.as_deref().unwrap_or("SURVIVED"),
            },
            r.cases,
            tty(&r.defect)
        );
        if let Some((_, seed, message)) = panic {
            println!(
                "{:>10} seed {seed} panicked: {}; replay: {}",
                "",
                tty(message),
                tty(&cx.replay(&r.pattern, *seed, None, Some(&r.mutant), out_arg))
            );
        }
        if let (Some(seed), Some(_)) = (r.seed, &r.caught_by) {
            println!(
                "{:>10} see it fail: {}",
                "",
                cx.replay(&r.pattern, seed, None, Some(&r.mutant), out_arg)
            );
        }
    }
    write(
        &out.join("mutants.json"),
        &serde_json::to_string_pretty(&rows)?,
    )?;
    let mut view = input::read_capped(
        &out.join("summary.json"),
        "summary",
        input::SUMMARY_BYTES_MAX,
    )
    .ok()
    .and_then(|t| serde_json::from_str::<SweepView>(&t).ok())
    .unwrap_or(SweepView {
        command: command.to_string(),
        patterns: Vec::new(),
        mutants: Vec::new(),
        criterion_href: None,
        comparisons: Vec::new(),
        build: build_info(),
        mutation_scores: Vec::new(),
    });
    view.mutants = rows;
    view.build = build_info();
    write_index(out, &mut view)?;
    if !panicked.is_empty() {
        println!(
            "{} mutant run(s) panicked: the invariants did not judge them, so they count as not caught",
            panicked.len()
        );
    } else if !all_caught {
        println!("a mutant survived: the invariants missed a deliberately broken implementation");
    }
    Ok(all_caught)
}

/// A fresh row of the mutants table for mutant `m` of `pattern`.
fn mutant_row(pattern: &dyn Pattern, m: &crate::harness::MutantInfo) -> MutantRow {
    MutantRow {
        pattern: pattern.name().to_string(),
        mutant: m.name.to_string(),
        defect: m.defect.to_string(),
        caught_by: None,
        cases: 0,
        seed: None,
    }
}

/// Runs mutant `m` of `pattern` on `seeds` until an invariant catches it. A run that
/// panics stops the hunt and comes back as (seed, message) beside the row: it was not
/// caught, and it must not vanish from the table.
fn hunt_mutant(
    pattern: &dyn Pattern,
    m: &crate::harness::MutantInfo,
    seeds: SeedRange,
) -> (MutantRow, Option<(u64, String)>) {
    let mut row = mutant_row(pattern, m);
    for seed in seeds.start..seeds.end {
        row.cases += 1;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let plan = pattern.plan(seed);
            pattern.run(seed, &plan, TraceMode::Off, Some(m.name))
        }));
        let caught = match run {
            Ok(Ok(run)) => run.report.outcome.invariant().map(str::to_string),
            Ok(Err(e)) => Some(format!("harness error: {e}")),
            Err(p) => return (row, Some((seed, panic_text(p.as_ref())))),
        };
        if let Some(inv) = caught {
            row.caught_by = Some(inv);
            row.seed = Some(seed);
            break;
        }
    }
    (row, None)
}

/// The message of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed scores parse (a broken file would leave the report's table empty
    /// without a word), name known units and add up.
    #[test]
    fn the_recorded_mutation_scores_parse_and_add_up() {
        let scores: Vec<MutationScore> =
            serde_json::from_str(MUTATION_SCORES).expect("scripts/mutation-scores.json parses");
        assert!(!scores.is_empty());
        for s in &scores {
            assert!(!s.files.is_empty() && !s.date.is_empty() && !s.commit.is_empty());
            assert_eq!(
                s.caught + s.missed + s.equivalent + s.unviable + s.timeout,
                s.mutants,
                "{}",
                s.unit
            );
            let live = s.caught + s.timeout + s.missed;
            if live > 0 {
                let score = 100.0 * (s.caught + s.timeout) as f64 / live as f64;
                assert!((s.score.unwrap_or(-1.0) - score).abs() < 0.05, "{}", s.unit);
            }
        }
    }

    #[test]
    fn replay_commands_name_the_program_running() {
        for (argv0, program) in [
            ("/w/target/release/faultline", "cargo run --release --"),
            ("target/debug/faultline", "cargo run --release --"),
            (
                "/w/target/x86_64-unknown-linux-gnu/release/faultline",
                "cargo run --release --",
            ),
            (
                "/w/target/release/my-faultline",
                "cargo run --release --bin my-faultline --",
            ),
            (
                "/w/target/release/examples/my_breaker",
                "cargo run --release --example my_breaker --",
            ),
            ("faultline", "faultline"),
            ("./bin/my-faultline", "./bin/my-faultline"),
        ] {
            assert_eq!(program_name(Path::new(argv0)), program, "{argv0}");
        }
        let patterns = registry::patterns();
        let cx = Context {
            patterns: &patterns,
            program: "faultline".into(),
        };
        assert_eq!(
            cx.replay("breaker", 3, Some("p.json"), None, Some(Path::new("out"))),
            "faultline replay breaker --seed 3 --plan p.json --out out"
        );
        assert_eq!(
            cx.replay("bus", 1, None, Some("lossy"), None),
            "faultline replay bus --seed 1 --mutant lossy"
        );
    }
}
