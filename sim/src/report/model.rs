//! The data a report shows. Patterns fill these in generic terms (lanes of labelled
//! bands, numeric series, histograms); the renderer knows nothing of any pattern.

use crate::fault::FaultPlan;
use crate::run::Outcome;
use crate::sketch::Sketch;
use crate::sweep::SweepSummary;
use crate::time::SimTime;
use crate::trace::{Coverage, TraceEntry};
use serde::{Deserialize, Serialize};

/// A labelled stretch of time on a lane (e.g. the breaker Open from 3 s to 5 s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// Start.
    pub from: SimTime,
    /// End.
    pub until: SimTime,
    /// What held during it (e.g. `open`); also picks its colour.
    pub label: String,
}

/// A row of bands on the timeline (e.g. "breaker state").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lane {
    /// The lane's name.
    pub name: String,
    /// Its bands, in time order, not overlapping.
    pub bands: Vec<Band>,
}

/// A numeric series over time (e.g. calls reaching the API per second).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The series' name.
    pub name: String,
    /// Unit of the values (e.g. `calls/s`, `ms`).
    pub unit: String,
    /// (time, value) points in time order.
    pub points: Vec<(SimTime, f64)>,
}

/// What a pattern shows of one run over time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// State lanes, drawn under the fault bands.
    pub lanes: Vec<Lane>,
    /// Series, each drawn as its own chart sharing the time axis.
    pub series: Vec<Series>,
    /// What the lanes show when they show only some of the run's entities (e.g. `12
    /// of 314 sagas: the first 10 and every compensated one`); empty when they show
    /// all of them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shown: String,
}

/// One invariant's verdict in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The invariant's name.
    pub name: String,
    /// True when it held for the whole run.
    pub held: bool,
    /// Details: the violation's message, or a figure showing how it held.
    pub note: String,
    /// What the invariant promises, in words, when the pattern says (shown beside
    /// its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise: Option<String>,
}

/// Everything the report of one run shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunView {
    /// The pattern's name (e.g. `breaker`).
    pub pattern: String,
    /// The seed.
    pub seed: u64,
    /// The command that replays the run.
    pub replay: String,
    /// Every knob the seed expanded into, in order, as (name, value).
    pub knobs: Vec<(String, String)>,
    /// The fault plan.
    pub plan: FaultPlan,
    /// For each fault of the plan, how often it fired.
    pub fault_hits: Vec<u64>,
    /// End of the safety phase.
    pub horizon: SimTime,
    /// When the run stopped.
    pub end: SimTime,
    /// How it ended.
    pub outcome: Outcome,
    /// Each invariant's verdict.
    pub verdicts: Vec<Verdict>,
    /// Coverage marks.
    pub coverage: Coverage,
    /// Events processed.
    pub events: u64,
    /// The run's digest.
    pub digest: u64,
    /// Key figures of the run, as (name, value).
    pub figures: Vec<(String, String)>,
    /// The pattern's state over time.
    pub timeline: Timeline,
    /// Trace entries (for a failure: the run just before the violation).
    pub trace: Vec<TraceEntry>,
    /// The build that produced the view.
    #[serde(default)]
    pub build: BuildInfo,
}

/// The values of one metric across the seeds of a sweep, as a bounded sketch:
/// histograms of two shards merge by name ([`Histogram::merge_into`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// The metric's name (e.g. `worst load / bound`).
    pub name: String,
    /// Unit of the values.
    pub unit: String,
    /// The values of the seeds that have one (counts by bucket, and the least and
    /// greatest with their seeds).
    pub sketch: Sketch,
}

impl Histogram {
    /// An empty histogram of the metric `name` in `unit`.
    pub fn new(name: impl Into<String>, unit: impl Into<String>) -> Self {
        Histogram {
            name: name.into(),
            unit: unit.into(),
            sketch: Sketch::new(),
        }
    }

    /// Merges `others` into `into` by metric name: a histogram of a name `into` has is
    /// merged into it, one of a new name is added at the end.
    pub fn merge_into(into: &mut Vec<Histogram>, others: Vec<Histogram>) {
        for h in others {
            match into.iter_mut().find(|g| g.name == h.name) {
                Some(g) => g.sketch.merge(&h.sketch),
                None => into.push(h),
            }
        }
    }
}

/// A failing seed as the sweep report lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureView {
    /// The seed.
    pub seed: u64,
    /// The invariant it broke.
    pub invariant: String,
    /// What happened.
    pub message: String,
    /// The command that replays it (with the shrunk plan, when there is one).
    pub replay: String,
    /// Link to its run report, relative to the sweep report.
    pub report_href: Option<String>,
    /// Link to its shrunk plan, relative to the sweep report.
    pub plan_href: Option<String>,
    /// Faults in the shrunk plan / in the original plan.
    pub faults_shrunk: Option<(usize, usize)>,
}

/// One pattern's part of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatternSweep {
    /// The pattern's name.
    pub pattern: String,
    /// The pattern's invariants, in order.
    pub invariants: Vec<String>,
    /// What each invariant promises, as (name, promise), when the pattern says: the
    /// invariant table shows the promise under the name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promises: Vec<(String, String)>,
    /// The merged summary (seeds, events, failures, coverage, wall time).
    pub summary: SweepSummary,
    /// Key metrics across seeds.
    pub histograms: Vec<Histogram>,
    /// The failing seeds, with links.
    pub failures: Vec<FailureView>,
    /// What the pattern's fault plans are drawn from, to tell apart sweeps whose seeds
    /// mean different plans (empty in older summaries).
    #[serde(default)]
    pub plan_profile: String,
    /// The mutant of the pattern's catalog that ran instead of its reference, when the
    /// sweep measured one (`faultline sweep PATTERN --mutant NAME`): its failing seeds
    /// are the seeds that caught it. Absent for a sweep of the implementation itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutant: Option<SweptMutant>,
}

impl PatternSweep {
    /// For a mutant sweep, the line that says how often the invariants caught it;
    /// `None` for a sweep of the implementation itself.
    pub fn mutant_verdict(&self) -> Option<String> {
        self.mutant.as_ref().map(|m| m.verdict(&self.summary))
    }
}

/// A mutant a sweep ran instead of the pattern's reference implementation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptMutant {
    /// The mutant's name in the pattern's catalog.
    pub name: String,
    /// What is broken in it, in words.
    pub defect: String,
}

impl SweptMutant {
    /// How often `summary`'s seeds caught this mutant, in words: `mutant NAME: caught
    /// on N of M seeds (P %), first by INVARIANT at seed S`, or `mutant NAME: survived
    /// all M seeds, no invariant caught it`. The percentage is rounded down to a tenth,
    /// so only a mutant caught on every seed shows 100.0 %.
    pub fn verdict(&self, summary: &SweepSummary) -> String {
        let caught = summary.runs.saturating_sub(summary.passed);
        match summary.failures.iter().min_by_key(|f| f.seed) {
            Some(first) if caught > 0 => {
                let permille = caught * 1000 / summary.runs.max(1);
                format!(
                    "mutant {}: caught on {caught} of {} seeds ({}.{} %), first by {} at seed {}",
                    self.name,
                    summary.runs,
                    permille / 10,
                    permille % 10,
                    first.invariant,
                    first.seed
                )
            }
            _ => format!(
                "mutant {}: survived all {} seeds, no invariant caught it",
                self.name, summary.runs
            ),
        }
    }
}

/// A mutant's row in the mutant table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantRow {
    /// The pattern.
    pub pattern: String,
    /// The mutant's name.
    pub mutant: String,
    /// What is broken.
    pub defect: String,
    /// The invariant that caught it first, if any did.
    pub caught_by: Option<String>,
    /// Cases (seeds) run until the first catch, or in all when it survived.
    pub cases: u64,
    /// The catching seed, if any.
    pub seed: Option<u64>,
}

/// One core's mutation score, as `scripts/mutation-score --record` wrote it: of the
/// small defects cargo-mutants made in the core's files, how many the simulator's
/// properties and sweeps caught (no unit test, golden digest, catalog or mark in the
/// oracle), measured on `date` at `commit`, not by the sweep that shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MutationScore {
    /// The unit (`bus/core`, `breaker/guard`, ...).
    pub unit: String,
    /// Its files.
    pub files: Vec<String>,
    /// What was tested: `sample of 40 of 312 (seed 1)` or `all 312`.
    pub measured: String,
    /// Mutants tested.
    pub mutants: u64,
    /// Caught by the oracle.
    pub caught: u64,
    /// Not caught, and not listed as equivalent.
    pub missed: u64,
    /// Not caught, listed in `scripts/mutation-equivalents` with a reason.
    pub equivalent: u64,
    /// Did not build.
    pub unviable: u64,
    /// Ran past cargo-mutants' timeout (counted as caught).
    pub timeout: u64,
    /// (caught + timeouts) / (caught + timeouts + missed), percent; none when nothing
    /// was live.
    pub score: Option<f64>,
    /// The missed mutants, as cargo-mutants names them.
    #[serde(default)]
    pub missed_mutants: Vec<String>,
    /// The day it was measured (UTC, `YYYY-MM-DD`).
    pub date: String,
    /// The commit it was measured on (`+changes` when the tree had uncommitted ones).
    pub commit: String,
}

/// Patterns set side by side on the same metrics (e.g. saga vs two-phase commit): the
/// index page shows a table and a chart of each metric's median, p90 and max per pattern,
/// taken from the histograms of the same name in each pattern's sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// The title; also names the section (`comparison-{slug of the title}`).
    pub title: String,
    /// What is compared and how to read it, in plain words.
    pub note: String,
    /// The patterns, one column each, in order.
    pub patterns: Vec<String>,
    /// The metrics, one row each, as (name, unit): the names of the patterns' histograms.
    pub metrics: Vec<(String, String)>,
}

/// Everything the index page (the sweep report) shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepView {
    /// The command that produced it.
    pub command: String,
    /// One section per pattern.
    pub patterns: Vec<PatternSweep>,
    /// The mutant table, when `mutants` was run.
    pub mutants: Vec<MutantRow>,
    /// Link to criterion's report, when it exists.
    pub criterion_href: Option<String>,
    /// Comparisons across patterns, one section each (absent from older summaries).
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// The program that produced it (`unknown` in older summaries).
    #[serde(default)]
    pub build: BuildInfo,
    /// The mutation score of each core, as last recorded by `scripts/mutation-score`
    /// (absent from older summaries).
    #[serde(default)]
    pub mutation_scores: Vec<MutationScore>,
}

/// Which build of faultline produced a summary or a page: shown in every page's footer,
/// and `merge` refuses summaries of different builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The crate version.
    pub version: String,
    /// The git commit it was built from, or `unknown` (a build outside a git checkout,
    /// or a summary from before faultline recorded it).
    pub commit: String,
}

impl Default for BuildInfo {
    fn default() -> Self {
        BuildInfo {
            version: "unknown".into(),
            commit: "unknown".into(),
        }
    }
}

/// True when `href` may be put in a report's link: a relative reference to a file beside
/// the report (`failures/x.html`, `../criterion/report/index.html`). A report links only
/// to files it was written with, so this refuses a scheme (`https:`, `javascript:`,
/// `data:`, any `:` before the first `/`, `?` or `#`), a network path (`//host`), an
/// absolute path (`/etc`, `C:\`), a backslash (browsers read it as `/`), a leading
/// space, whitespace other than a space or a control character (browsers strip them, so
/// `java\tscript:` is a scheme). The renderer shows a refused link as text; `merge`
/// refuses a summary holding one.
pub fn is_relative_link(href: &str) -> bool {
    // A scheme is whatever precedes the first `:` when no `/`, `?` or `#` comes first.
    let end = href.find(['/', '?', '#']).unwrap_or(href.len());
    !href.is_empty()
        && !href.starts_with(['/', ' '])
        && !href.contains('\\')
        && !href
            .chars()
            .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
        && !href[..end].contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(name: &str, values: &[(f64, u64)]) -> Histogram {
        let mut h = Histogram::new(name, "ms");
        for &(v, seed) in values {
            h.sketch.add(v, seed);
        }
        h
    }

    /// Two shards whose patterns list their metrics in different orders (another
    /// build's order, a plug-in's) merge metric by metric, not position by position.
    #[test]
    fn histograms_merge_by_name_whatever_their_order() {
        let mut a = vec![
            hist("lag", &[(1.0, 0), (2.0, 2)]),
            hist("load", &[(50.0, 0)]),
        ];
        let b = vec![
            hist("load", &[(70.0, 1), (90.0, 3)]),
            hist("lag", &[(3.0, 1)]),
            hist("new", &[(7.0, 3)]),
        ];
        Histogram::merge_into(&mut a, b);
        let names: Vec<&str> = a.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["lag", "load", "new"]);
        let lag = &a[0].sketch;
        assert_eq!(lag.count, 3);
        assert_eq!(lag.max.map(|e| (e.value, e.seed)), Some((3.0, 1)));
        let load = &a[1].sketch;
        assert_eq!(load.count, 3);
        assert_eq!(load.min.map(|e| (e.value, e.seed)), Some((50.0, 0)));
        assert_eq!(load.max.map(|e| (e.value, e.seed)), Some((90.0, 3)));
        assert_eq!(a[2].sketch.count, 1);
    }
}
