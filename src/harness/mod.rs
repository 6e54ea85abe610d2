//! The harness: every pattern behind one interface, so the `faultline` command (and the
//! tests) can run, replay, sweep and mutate any of them by name.
//!
//! Two traits, one above the other:
//!
//! - [`Scenario`], typed, one per pattern: what a seed expands into (its knobs and its
//!   fault plan), its reference world and its mutants, its metrics, and how a run is
//!   described for the HTML report.
//! - [`Pattern`], object-safe, what the command drives. Every [`Scenario`] is a
//!   [`Pattern`] through one blanket impl, which holds the only copy of the run, the
//!   report view and the world run.
//!
//! A [`Plugin`] puts a user's own implementation into a built-in scenario's world (any
//! scenario that is a [`Host`] of it), and is a [`Pattern`] too.
//!
//! The harness names no pattern; the list of them is [`crate::registry`].

#[cfg(feature = "hosted")]
pub mod hosted;
mod plugin;
mod scenario;
mod view;

#[cfg(feature = "hosted")]
pub(crate) use plugin::host_own_world;
pub use plugin::{Host, Plugin};
pub use scenario::{Description, Metric, Mutant, Scenario};
#[cfg(feature = "cli")]
pub(crate) use view::replay_command_of;
pub use view::{
    build_info, knob_list, knob_list_named, level_per_second, notes, per_second, replay_command,
    shell_quote, verdicts,
};

use crate::config::ConfigError;
use faultline_sim::report::model::RunView;
use faultline_sim::{FaultPlan, RunReport, SeedRange, TraceMode};

/// One run of a pattern's world.
#[derive(Debug)]
pub struct Run {
    /// What the engine reported.
    pub report: RunReport,
    /// Key metrics of the run, one [`Reading`] per entry of the pattern's metric table,
    /// in its order.
    pub metrics: Vec<Reading>,
}

/// The value one metric took in one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The metric's name.
    pub name: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// Its value; `None` where the run has no value (e.g. no outage happened).
    pub value: Option<f64>,
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
#[non_exhaustive]
pub enum HarnessError {
    /// No pattern has that name.
    #[error("unknown pattern `{name}`; known patterns: {known}")]
    UnknownPattern {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// No mutant has that name.
    #[error("pattern `{pattern}` has no mutant `{name}`; {}", mutant_list(known))]
    UnknownMutant {
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
    /// A plug-in's constructor failed to build its world.
    #[error("plug-in `{name}` could not build its world: {message}")]
    Plugin {
        /// The plug-in's name.
        name: String,
        /// The constructor's error.
        message: String,
    },
}

/// A pattern the harness can drive. Implement [`Scenario`] instead: every scenario is a
/// pattern.
pub trait Pattern: Send + Sync {
    /// The name used on the command line (e.g. `breaker`).
    fn name(&self) -> &'static str;
    /// One line on what it is.
    fn about(&self) -> &'static str;
    /// Its invariants, in order.
    fn invariants(&self) -> &'static [&'static str];
    /// Each invariant with what it promises, in words, in the order of
    /// [`invariants`](Pattern::invariants); the empty string where the pattern says
    /// nothing (the default, so a pattern of your own compiles without it).
    fn promises(&self) -> Vec<(&'static str, &'static str)> {
        self.invariants().iter().map(|name| (*name, "")).collect()
    }
    /// Its key metrics as (name, unit), shown as histograms across a sweep.
    fn metrics(&self) -> Vec<(&'static str, &'static str)>;
    /// The seeds `faultline sweep` runs by default.
    fn default_seeds(&self) -> SeedRange;
    /// The fault targets, nodes and links the world of `seed` knows: the names its fault
    /// profile lets a plan target.
    fn known_targets(&self, seed: u64) -> Vec<String>;
    /// The fault kinds the world of `seed` understands (its fault profile's usable
    /// kinds), in a fixed order.
    fn fault_kinds(&self, seed: u64) -> Vec<faultline_sim::FaultKindTag> {
        let _ = seed;
        Vec::new()
    }
    /// The fault profile of the world of `seed`: which kinds it takes and which names
    /// each kind may target, to tell a fault that can never fire. `None` (the default)
    /// when the pattern does not say; then only unknown names are found.
    fn fault_profile_of(&self, seed: u64) -> Option<faultline_sim::FaultProfile> {
        let _ = seed;
        None
    }
    /// Every knob `seed` expands into, as (name, value), in a fixed order.
    fn knobs(&self, seed: u64) -> Vec<(String, String)>;
    /// The fault plan `seed` generates.
    fn plan(&self, seed: u64) -> FaultPlan;
    /// Runs the reference implementation, or the mutant of the catalog called `mutant`.
    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<&str>,
    ) -> Result<Run, HarnessError>;
    /// Runs like [`run`](Pattern::run) and describes the run for a report.
    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<&str>,
    ) -> Result<RunView, HarnessError>;
    /// The mutant catalog.
    fn mutants(&self) -> Vec<MutantInfo>;
    /// The entry of the mutant called `name`, or [`HarnessError::UnknownMutant`].
    fn mutant_info(&self, name: &str) -> Result<MutantInfo, HarnessError> {
        let mutants = self.mutants();
        mutants
            .iter()
            .find(|m| m.name == name)
            .copied()
            .ok_or_else(|| unknown_mutant(self.name(), name, mutants.iter().map(|m| m.name)))
    }
}

/// The figure a world shows for a count it judges only at rest, when the run stopped
/// before it came to rest.
pub(crate) const NOT_JUDGED: &str = "not judged: the run did not come to rest";

/// The promises of the harness's own invariants, which any pattern may check.
pub(crate) const HARNESS_PROMISES: &[(&str, &str)] = &[(
    "sim.determinism",
    "Two runs of the same seed on fresh runtimes record the same trace: the code under test draws no unseeded randomness and reads no wall clock (checked on every hosted run).",
)];

/// The known mutants of an [`HarnessError::UnknownMutant`] in words.
fn mutant_list(known: &str) -> String {
    if known.is_empty() {
        "it has no mutant catalog (a plug-in has none; its scenario's mutants run under the built-in pattern's name)".to_string()
    } else {
        format!("its mutants: {known}")
    }
}

/// The error for a mutant called `name` that `pattern`'s catalog (`known`) lacks.
pub(crate) fn unknown_mutant<'a>(
    pattern: &str,
    name: &str,
    known: impl Iterator<Item = &'a str>,
) -> HarnessError {
    HarnessError::UnknownMutant {
        pattern: pattern.to_string(),
        name: name.to_string(),
        known: known.collect::<Vec<_>>().join(", "),
    }
}
