//! Plug-ins: a user's own implementation in a built-in pattern's world, driven by the
//! harness exactly as the reference is.
//!
//! A [`Plugin`] borrows everything of a built-in [`Scenario`] (the knobs a seed expands
//! into, the fault plans, the invariants) except the implementation: its world comes
//! from the user's constructor. It is a [`Pattern`], so the check API
//! (`faultline::check`) and the command (`faultline::cli`) run, replay, sweep and report
//! it under its own name. A scenario that can host other implementations says how to
//! run them by implementing [`Host`] for the world type that holds them.

use super::scenario::{REPORT_TRACE, profile_names, run_view};
use super::view::{knob_list_named, replay_command};
use super::{
    Description, HarnessError, Metric, MutantInfo, Pattern, Run, Scenario, unknown_mutant,
};
use faultline_sim::report::model::RunView;
use faultline_sim::{FaultPlan, RunReport, SeedRange, TraceMode};
use std::fmt;

/// A scenario whose world can hold implementations other than the reference: `W` is
/// its world with another implementation in it (e.g. `SmsWorld<MyGuard>` for the
/// breaker). The built-in scenarios implement it for every implementation of their
/// contract, all three methods: a plug-in's sweep has the reference's histograms and
/// its run reports the reference's notes, figures, lanes and series, because each
/// pattern defines its metrics and its report view once, generic over the
/// implementation (read from what the world observes, not from the reference), and
/// uses them both for [`Scenario::METRICS`] and [`Scenario::describe`] and here.
///
/// Only [`simulate_in`](Host::simulate_in) is required: [`metrics_in`](Host::metrics_in)
/// and [`describe_in`](Host::describe_in) default to nothing, so a third-party scenario
/// can host other implementations before it has metrics or a view that read them (its
/// plug-ins' sweeps then show no histograms, and their run reports the engine's part
/// only). The built-in patterns override both; the tests hold each of them to the
/// reference's readings and view.
pub trait Host<W>: Scenario {
    /// Runs `world` under `plan`, the world's one run function.
    fn simulate_in(&self, world: W, plan: FaultPlan, trace: TraceMode) -> (RunReport, W);

    /// The key metrics of a run in `W`, shown as histograms across a sweep, in the
    /// order of [`Scenario::METRICS`] where the scenario has the same for `W` (default:
    /// none).
    fn metrics_in(&self) -> Vec<Metric<W>> {
        Vec::new()
    }

    /// What a run report shows of a finished run in `W` beyond the engine's report, as
    /// [`Scenario::describe`] does for the reference's world (default: nothing: the
    /// report still has the knobs, the plan, the verdicts, the coverage and the trace).
    fn describe_in(&self, knobs: &Self::Knobs, report: &RunReport, world: &W) -> Description {
        let _ = (knobs, report, world);
        Description::default()
    }
}

#[cfg(feature = "hosted")]
/// Implements [`Host`] for a scenario over its own world type, by the scenario's own
/// run, metrics and view: for a world that already holds any implementation (a hosted
/// world takes the code under test as a factory), so a [`Plugin`] of it is a user's
/// code in the very world the scenario's reference runs in.
macro_rules! host_own_world {
    ($scenario:ty) => {
        impl $crate::harness::Host<<$scenario as $crate::harness::Scenario>::World> for $scenario {
            fn simulate_in(
                &self,
                world: <$scenario as $crate::harness::Scenario>::World,
                plan: faultline_sim::FaultPlan,
                trace: faultline_sim::TraceMode,
            ) -> (
                faultline_sim::RunReport,
                <$scenario as $crate::harness::Scenario>::World,
            ) {
                $crate::harness::Scenario::simulate(self, world, plan, trace)
            }

            fn metrics_in(
                &self,
            ) -> Vec<$crate::harness::Metric<<$scenario as $crate::harness::Scenario>::World>> {
                <$scenario as $crate::harness::Scenario>::METRICS.to_vec()
            }

            fn describe_in(
                &self,
                knobs: &<$scenario as $crate::harness::Scenario>::Knobs,
                report: &faultline_sim::RunReport,
                world: &<$scenario as $crate::harness::Scenario>::World,
            ) -> $crate::harness::Description {
                $crate::harness::Scenario::describe(self, knobs, report, world)
            }
        }
    };
}
#[cfg(feature = "hosted")]
pub(crate) use host_own_world;

/// The user's constructor of a world for the knobs of a seed.
type Make<K, W> = Box<dyn Fn(&K) -> Result<W, String> + Send + Sync>;

/// A user's implementation in the world of the built-in scenario `S`, under a name of
/// its own, a [`Pattern`]: the check API and the command drive it by that name.
///
/// ```
/// use faultline::breaker::pattern::BreakerPattern;
/// use faultline::breaker::world::{SmsKnobs, SmsWorld};
/// use faultline::harness::{Pattern, Plugin};
/// use faultline_sim::TraceMode;
///
/// // Here the reference guard under another name; yours implements `CallGuard`.
/// let mine = Plugin::new(BreakerPattern, "my-breaker", |knobs: &SmsKnobs| {
///     SmsWorld::new(knobs.clone(), knobs.reference_guard()?)
/// });
/// let run = mine.run(7, &mine.plan(7), TraceMode::Off, None)?;
/// run.report.assert_pass();
/// assert_eq!(mine.name(), "my-breaker");
/// # Ok::<(), faultline::harness::HarnessError>(())
/// ```
pub struct Plugin<S: Scenario, W> {
    scenario: S,
    name: &'static str,
    about: &'static str,
    seeds: SeedRange,
    make: Make<S::Knobs, W>,
}

impl<S: Host<W>, W: 'static> Plugin<S, W> {
    /// The implementation `make` builds, in `scenario`'s world, called `name` (the name
    /// the command takes and the reports and failure files carry). `make` may fail: its
    /// error is reported as [`HarnessError::Plugin`].
    pub fn new<E: fmt::Display>(
        scenario: S,
        name: &'static str,
        make: impl Fn(&S::Knobs) -> Result<W, E> + Send + Sync + 'static,
    ) -> Self {
        Plugin {
            scenario,
            name,
            about: S::ABOUT,
            seeds: S::DEFAULT_SEEDS,
            make: Box::new(move |k| make(k).map_err(|e| e.to_string())),
        }
    }

    /// Like [`new`](Plugin::new), for a constructor that cannot fail.
    pub fn infallible(
        scenario: S,
        name: &'static str,
        make: impl Fn(&S::Knobs) -> W + Send + Sync + 'static,
    ) -> Self {
        Self::new(scenario, name, move |k| {
            Ok::<W, std::convert::Infallible>(make(k))
        })
    }

    /// One line on what it is (default: the scenario's).
    pub fn about(mut self, about: &'static str) -> Self {
        self.about = about;
        self
    }

    /// The seeds `faultline sweep` runs by default (default: the scenario's).
    pub fn default_seeds(mut self, seeds: SeedRange) -> Self {
        self.seeds = seeds;
        self
    }

    /// The world of `knobs` with the implementation in it.
    pub fn world(&self, knobs: &S::Knobs) -> Result<W, HarnessError> {
        (self.make)(knobs).map_err(|message| HarnessError::Plugin {
            name: self.name.to_string(),
            message,
        })
    }

    fn no_mutant(&self, mutant: Option<&str>) -> Result<(), HarnessError> {
        match mutant {
            None => Ok(()),
            Some(m) => Err(unknown_mutant(self.name, m, std::iter::empty())),
        }
    }
}

impl<S: Scenario, W> fmt::Debug for Plugin<S, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("scenario", &S::NAME)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S: Host<W>, W: 'static> Pattern for Plugin<S, W> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> &'static str {
        self.about
    }

    fn invariants(&self) -> &'static [&'static str] {
        S::INVARIANTS
    }

    fn promises(&self) -> Vec<(&'static str, &'static str)> {
        super::scenario::promises_of(S::INVARIANTS, S::PROMISES)
    }

    fn fault_profile_of(&self, seed: u64) -> Option<faultline_sim::FaultProfile> {
        Some(self.scenario.fault_profile(&self.scenario.seed_knobs(seed)))
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str)> {
        self.scenario
            .metrics_in()
            .iter()
            .map(|m| (m.name, m.unit))
            .collect()
    }

    fn default_seeds(&self) -> SeedRange {
        self.seeds
    }

    fn known_targets(&self, seed: u64) -> Vec<String> {
        profile_names(&self.scenario.fault_profile(&self.scenario.seed_knobs(seed)))
    }

    fn fault_kinds(&self, seed: u64) -> Vec<faultline_sim::FaultKindTag> {
        self.scenario
            .fault_profile(&self.scenario.seed_knobs(seed))
            .usable_kinds()
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list_named(&self.scenario.seed_knobs(seed), S::KNOB_FIELDS)
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        self.scenario.fault_plan(&self.scenario.seed_knobs(seed))
    }

    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<&str>,
    ) -> Result<Run, HarnessError> {
        self.no_mutant(mutant)?;
        let world = self.world(&self.scenario.seed_knobs(seed))?;
        let (report, world) = self.scenario.simulate_in(world, plan.clone(), trace);
        Ok(Run {
            metrics: self
                .scenario
                .metrics_in()
                .iter()
                .map(|m| m.read(&world))
                .collect(),
            report,
        })
    }

    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<&str>,
    ) -> Result<RunView, HarnessError> {
        self.no_mutant(mutant)?;
        let knobs = self.scenario.seed_knobs(seed);
        let world = self.world(&knobs)?;
        let (report, world) =
            self.scenario
                .simulate_in(world, plan.clone(), TraceMode::Ring(REPORT_TRACE));
        let description = self.scenario.describe_in(&knobs, &report, &world);
        Ok(run_view(
            self.name,
            S::INVARIANTS,
            &super::scenario::promises_of(S::INVARIANTS, S::PROMISES),
            seed,
            &knobs,
            S::KNOB_FIELDS,
            plan,
            report,
            description,
            replay_command(self.name, seed, None, None),
        ))
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        Vec::new()
    }
}
