//! The harness: every pattern behind one interface, so the `faultline` command (and the
//! tests) can run, replay, sweep and mutate any of them by name.
//!
//! A pattern says what a seed expands into (its knobs and its fault plan), runs its
//! reference implementation (or one of its mutants) in its simulated world, and
//! describes a run for the HTML report.

use crate::config::ConfigError;
use faultline_sim::report::model::{Comparison, RunView, Verdict};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimTime, TraceMode};
use std::collections::BTreeMap;
use std::fmt;

/// One run of a pattern's world.
#[derive(Debug)]
pub struct Run {
    /// What the engine reported.
    pub report: RunReport,
    /// Key metrics of the run, in the order of [`Pattern::metrics`]; `None` where the
    /// run has no value (e.g. no outage happened).
    pub metrics: Vec<Option<f64>>,
}

/// A deliberately broken implementation in a pattern's catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MutantInfo {
    /// Short name.
    pub name: &'static str,
    /// What is broken, in words.
    pub defect: &'static str,
    /// The invariant meant to catch it.
    pub expected: &'static str,
}

/// Why the harness could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HarnessError {
    /// No pattern has that name.
    #[error("unknown pattern `{name}`; known patterns: {known}")]
    UnknownPattern {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// No mutant has that index.
    #[error("pattern `{pattern}` has no mutant number {index}")]
    UnknownMutant {
        /// The pattern.
        pattern: String,
        /// The index given.
        index: usize,
    },
    /// No mutant has that name.
    #[error("pattern `{pattern}` has no mutant `{name}`; its mutants: {known}")]
    UnknownMutantName {
        /// The pattern.
        pattern: String,
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A seed expanded into an invalid configuration (a bug in the pattern's knobs).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
}

/// A pattern the harness can drive.
pub trait Pattern: Send + Sync {
    /// The name used on the command line (e.g. `breaker`).
    fn name(&self) -> &'static str;
    /// One line on what it is.
    fn about(&self) -> &'static str;
    /// Its invariants, in order.
    fn invariants(&self) -> &'static [&'static str];
    /// Its key metrics as (name, unit), shown as histograms across a sweep.
    fn metrics(&self) -> &'static [(&'static str, &'static str)];
    /// The seeds `faultline sweep` runs by default.
    fn default_seeds(&self) -> SeedRange;
    /// The fault targets, nodes and links its world knows.
    fn known_targets(&self) -> Vec<String>;
    /// Every knob `seed` expands into, as (name, value), in a fixed order.
    fn knobs(&self, seed: u64) -> Vec<(String, String)>;
    /// The fault plan `seed` generates.
    fn plan(&self, seed: u64) -> FaultPlan;
    /// Runs the reference implementation, or mutant `mutant` of the catalog.
    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<usize>,
    ) -> Result<Run, HarnessError>;
    /// Runs like [`run`](Pattern::run) and describes the run for a report.
    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<usize>,
    ) -> Result<RunView, HarnessError>;
    /// The mutant catalog.
    fn mutants(&self) -> Vec<MutantInfo>;
    /// The index of the mutant called `name`.
    fn mutant_index(&self, name: &str) -> Result<usize, HarnessError> {
        self.mutants()
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| HarnessError::UnknownMutantName {
                pattern: self.name().to_string(),
                name: name.to_string(),
                known: self
                    .mutants()
                    .iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Entry `index` of `pattern`'s mutant catalog, or [`HarnessError::UnknownMutant`].
pub fn catalog_entry<'a, T>(
    pattern: &str,
    catalog: &'a [T],
    index: usize,
) -> Result<&'a T, HarnessError> {
    catalog
        .get(index)
        .ok_or_else(|| HarnessError::UnknownMutant {
            pattern: pattern.to_string(),
            index,
        })
}

/// A mutant catalog as [`MutantInfo`]s, from each entry's (name, defect, expected
/// invariant).
pub fn catalog_infos<T>(
    catalog: &[T],
    info: impl Fn(&T) -> (&'static str, &'static str, &'static str),
) -> Vec<MutantInfo> {
    catalog
        .iter()
        .map(|m| {
            let (name, defect, expected) = info(m);
            MutantInfo {
                name,
                defect,
                expected,
            }
        })
        .collect()
}

/// Every pattern, in the order the command and the reports list them.
pub fn patterns() -> Vec<&'static dyn Pattern> {
    vec![
        &crate::breaker::pattern::BreakerPattern,
        &crate::bus::pattern::BusPattern,
        &crate::saga::orchestrated::pattern::SagaPattern,
        &crate::saga::choreographed::pattern::ChoreoPattern,
        &crate::saga::twopc::pattern::TwoPcPattern,
        &crate::queue::pattern::QueuePattern,
        &crate::cqrs::pattern::CqrsPattern,
    ]
}

/// The comparisons the sweep report shows when it holds at least two of their patterns:
/// patterns set side by side on metrics they all report under the same names.
pub fn comparisons() -> Vec<Comparison> {
    let strings = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![Comparison {
        title: "Saga vs two-phase commit".to_string(),
        note: "The same checkout three ways: the orchestrated saga (saga), the \
               choreographed saga (saga-choreo) and two-phase commit (twopc). A seed gives \
               all three the same customers, stock, declines, latencies and fault plan, so \
               the columns differ only in the protocol. Throughput: checkouts completed per \
               simulated second of arrivals. Latency: from checkout to the saga or \
               transaction at rest. A saga takes no locks (its stock reservations do not \
               block other checkouts), so its lock figures are 0 by construction; 2PC \
               participants hold row locks from prepare to the decision, and a participant \
               left in doubt holds them through a coordinator crash. Inconsistent: at rest \
               with participants disagreeing on the outcome (2PC), or a saga that ended \
               Failed with an alert, half done."
            .to_string(),
        patterns: strings(&["saga", "saga-choreo", "twopc"]),
        metrics: [
            ("throughput", "per s"),
            ("latency p50", "ms"),
            ("latency p99", "ms"),
            ("longest lock hold", "ms"),
            ("locked during crash", "ms"),
            ("inconsistent", "sagas"),
        ]
        .iter()
        .map(|(m, u)| (m.to_string(), u.to_string()))
        .collect(),
    }]
}

/// The pattern called `name`.
pub fn find(name: &str) -> Result<&'static dyn Pattern, HarnessError> {
    patterns()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| HarnessError::UnknownPattern {
            name: name.to_string(),
            known: patterns()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The command that replays a run of `pattern`: by seed, or by seed and plan file, of
/// the reference implementation or of a mutant.
pub fn replay_command(
    pattern: &str,
    seed: u64,
    plan_file: Option<&str>,
    mutant: Option<&str>,
) -> String {
    let mut cmd = format!("cargo run --release -- replay {pattern} --seed {seed}");
    if let Some(file) = plan_file {
        cmd.push_str(" --plan ");
        cmd.push_str(file);
    }
    if let Some(m) = mutant {
        cmd.push_str(" --mutant ");
        cmd.push_str(m);
    }
    cmd
}

/// Every knob of a pattern's knobs struct as (name, value), in name order, read from its
/// serde form (`None` shows as `none`).
pub fn knob_list<T: serde::Serialize + fmt::Debug>(knobs: &T) -> Vec<(String, String)> {
    match serde_json::to_value(knobs) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::Null => "none".to_string(),
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        _ => vec![("knobs".to_string(), format!("{knobs:?}"))],
    }
}

/// Each invariant's verdict after `report`: the broken one carries the failure; when the
/// run stopped early the others held "until the run stopped"; otherwise `note` says how
/// each held. A failure outside `invariants` (the engine's `sim.*`) is added last.
pub fn verdicts(
    invariants: &[&str],
    report: &RunReport,
    note: impl Fn(&str) -> String,
) -> Vec<Verdict> {
    let violated = report.outcome.invariant();
    let mut out: Vec<Verdict> = invariants
        .iter()
        .map(|name| {
            let broken = violated == Some(*name);
            Verdict {
                name: name.to_string(),
                held: !broken,
                note: if broken {
                    report.outcome.to_string()
                } else if violated.is_some() {
                    "held until the run stopped".into()
                } else {
                    note(name)
                },
            }
        })
        .collect();
    if let Some(v) = violated.filter(|v| !invariants.contains(v)) {
        out.push(Verdict {
            name: v.to_string(),
            held: false,
            note: report.outcome.to_string(),
        });
    }
    out
}

/// Points bucketed by whole second, combined with `combine` (e.g. `f64::max`, or `+` to
/// count), for a per-second series; seconds without points are left out.
pub fn per_second(
    points: impl IntoIterator<Item = (SimTime, f64)>,
    combine: fn(f64, f64) -> f64,
) -> Vec<(SimTime, f64)> {
    let mut by: BTreeMap<u64, f64> = BTreeMap::new();
    for (t, v) in points {
        by.entry(t.as_millis() / 1000)
            .and_modify(|e| *e = combine(*e, v))
            .or_insert(v);
    }
    by.into_iter()
        .map(|(s, v)| (SimTime::from_secs(s), v))
        .collect()
}
