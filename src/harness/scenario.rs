//! The typed side of the harness: a [`Scenario`] per pattern, its [`Mutant`]s and
//! [`Metric`]s, and the blanket impl that makes every scenario a [`Pattern`].

use super::view::{knob_list_named, replay_command, verdicts};
use super::{HarnessError, MutantInfo, Pattern, Reading, Run, unknown_mutant};
use crate::config::ConfigError;
use faultline_sim::report::model::{RunView, Timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, TraceMode};
use std::fmt;

/// Trace entries kept for a report (the run just before a violation).
pub(crate) const REPORT_TRACE: usize = 300;

/// A deliberately broken implementation of scenario `S`: the world it builds from the
/// knobs has one defect that an invariant must catch.
pub struct Mutant<S: Scenario> {
    /// Short name, the one `--mutant NAME` takes.
    pub name: &'static str,
    /// What is broken, in words.
    pub defect: &'static str,
    /// The invariant expected to catch it.
    pub expected: &'static str,
    make: fn(&S::Knobs) -> Result<S::World, ConfigError>,
}

impl<S: Scenario> Mutant<S> {
    /// A mutant called `name`, broken as `defect` says, that the invariant `expected`
    /// must catch; `make` builds its world from the knobs.
    pub const fn new(
        name: &'static str,
        defect: &'static str,
        expected: &'static str,
        make: fn(&S::Knobs) -> Result<S::World, ConfigError>,
    ) -> Self {
        Mutant {
            name,
            defect,
            expected,
            make,
        }
    }

    /// The world for `knobs` with this mutant in it.
    pub fn world(&self, knobs: &S::Knobs) -> Result<S::World, ConfigError> {
        (self.make)(knobs)
    }

    /// Its entry in the catalog the command lists.
    pub fn info(&self) -> MutantInfo {
        MutantInfo {
            name: self.name,
            defect: self.defect,
            expected: self.expected,
        }
    }
}

impl<S: Scenario> Clone for Mutant<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Scenario> Copy for Mutant<S> {}

impl<S: Scenario> fmt::Debug for Mutant<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutant")
            .field("name", &self.name)
            .field("defect", &self.defect)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// One key metric of a world: its name, its unit, and how a finished world gives its
/// value (`None` where the run has none, e.g. no outage happened).
pub struct Metric<W> {
    /// Name, shown as the histogram's title across a sweep.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// The value in a finished world.
    pub value: fn(&W) -> Option<f64>,
}

impl<W> Metric<W> {
    /// The metric's reading in `world`.
    pub fn read(&self, world: &W) -> Reading {
        Reading {
            name: self.name,
            unit: self.unit,
            value: (self.value)(world),
        }
    }
}

impl<W> Clone for Metric<W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for Metric<W> {}

impl<W> fmt::Debug for Metric<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metric")
            .field("name", &self.name)
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

/// What a scenario shows of one finished run in its report, beyond what the engine
/// reported.
#[derive(Clone, Debug, Default)]
pub struct Description {
    /// How invariants held, by name (an invariant without a note shows none).
    pub notes: Vec<(&'static str, String)>,
    /// Key figures as (label, value).
    pub figures: Vec<(String, String)>,
    /// Lanes and series over time.
    pub timeline: Timeline,
}

/// A pattern in the simulator, typed: its knobs, its fault plan, its reference world and
/// mutants, its metrics, and how a run is described. Every scenario is a [`Pattern`]
/// (the blanket impl runs it), so the command and the tests drive it by name.
///
/// ```
/// use faultline::config::ConfigError;
/// use faultline::harness::{Description, Metric, Mutant, Pattern, Scenario};
/// use faultline_sim::prelude::*;
/// use faultline_sim::SeedRange;
///
/// /// A world that pings an API every 10 ms until the faults heal.
/// struct Pinger { seed: u64, pings: u32, in_flight: u32 }
///
/// impl World for Pinger {
///     type Event = &'static str;
///     fn start(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation> {
///         ctx.schedule_in(SimDuration::from_millis(10), "ping");
///         Ok(())
///     }
///     fn handle(&mut self, ctx: &mut Ctx<Self::Event>, ev: Self::Event) -> Result<(), Violation> {
///         match ev {
///             "ping" if !ctx.is_healed() => {
///                 let extra = ctx.faults().extra_latency("api");
///                 self.pings += 1;
///                 self.in_flight += 1;
///                 ctx.schedule_in(SimDuration::from_millis(5) + extra, "reply");
///                 ctx.schedule_in(SimDuration::from_millis(10), "ping");
///             }
///             "reply" => self.in_flight -= 1,
///             _ => {}
///         }
///         Ok(())
///     }
///     fn is_quiescent(&self, _: &Ctx<Self::Event>) -> bool { self.in_flight == 0 }
/// }
///
/// struct PingScenario;
///
/// impl Scenario for PingScenario {
///     type Knobs = u64; // the seed is the only knob
///     type World = Pinger;
///     const NAME: &'static str = "pinger";
///     const ABOUT: &'static str = "pings an API";
///     const INVARIANTS: &'static [&'static str] = &[];
///     const METRICS: &'static [Metric<Pinger>] =
///         &[Metric { name: "pings", unit: "count", value: |w| Some(w.pings as f64) }];
///     const MUTANTS: &'static [Mutant<Self>] = &[];
///     const DEFAULT_SEEDS: SeedRange = SeedRange { start: 0, end: 100 };
///
///     fn seed_knobs(&self, seed: u64) -> u64 { seed }
///     fn fault_profile(&self, _: &u64) -> FaultProfile {
///         FaultProfile::new(10_000).target("api").faults(0, 4)
///     }
///     fn fault_plan(&self, seed: &u64) -> FaultPlan {
///         FaultPlan::generate(&mut SimRng::new(*seed).fork("plan"), &self.fault_profile(seed))
///     }
///     fn reference(&self, seed: &u64) -> Result<Pinger, ConfigError> {
///         Ok(Pinger { seed: *seed, pings: 0, in_flight: 0 })
///     }
///     fn simulate(&self, mut w: Pinger, plan: FaultPlan, trace: TraceMode) -> (RunReport, Pinger) {
///         let report = Simulation::new(w.seed).plan(plan).trace(trace).run(&mut w);
///         (report, w)
///     }
///     fn describe(&self, _: &u64, _: &RunReport, w: &Pinger) -> Description {
///         Description {
///             figures: vec![("pings".into(), w.pings.to_string())],
///             ..Description::default()
///         }
///     }
/// }
///
/// // The harness drives it as it drives the built-in patterns.
/// let pattern: &dyn Pattern = &PingScenario;
/// let run = pattern.run(7, &pattern.plan(7), TraceMode::Off, None)?;
/// run.report.assert_pass();
/// assert_eq!(run.metrics[0].name, "pings");
/// assert_eq!(pattern.known_targets(7), ["api"]);
/// # Ok::<(), faultline::harness::HarnessError>(())
/// ```
pub trait Scenario: Send + Sync + Sized + 'static {
    /// Every knob a seed expands into.
    type Knobs: serde::Serialize + fmt::Debug;
    /// The simulated world a run happens in, the reference's and the mutants' alike.
    type World;

    /// The name used on the command line (e.g. `breaker`).
    const NAME: &'static str;
    /// One line on what it is.
    const ABOUT: &'static str;
    /// Its invariants, in order.
    const INVARIANTS: &'static [&'static str];
    /// What invariants promise, in words, as (name, promise): what `faultline list`
    /// prints beside each invariant. Looked up by name, so a table may hold more than
    /// [`INVARIANTS`](Scenario::INVARIANTS) (a hosted world keeps a subset of its
    /// pattern's); an invariant missing from it shows without a promise.
    const PROMISES: &'static [(&'static str, &'static str)] = &[];
    /// Its key metrics, in the order a sweep shows them.
    const METRICS: &'static [Metric<Self::World>];
    /// Its mutant catalog.
    const MUTANTS: &'static [Mutant<Self>];
    /// The seeds `faultline sweep` runs by default.
    const DEFAULT_SEEDS: SeedRange;
    /// The field names of the knobs that are tuples, as (knob, fields in order), so
    /// that reports and `run` label them (`wait_in_open: initial_ms = 1147, …`) instead
    /// of printing bare lists; see [`knob_list_named`](super::knob_list_named).
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] = &[];

    /// The knobs `seed` expands into.
    fn seed_knobs(&self, seed: u64) -> Self::Knobs;
    /// The faults the world of `knobs` understands, and the names they may target.
    fn fault_profile(&self, knobs: &Self::Knobs) -> FaultProfile;
    /// The fault plan the knobs' seed generates.
    fn fault_plan(&self, knobs: &Self::Knobs) -> FaultPlan;
    /// The world with the reference implementation in it.
    fn reference(&self, knobs: &Self::Knobs) -> Result<Self::World, ConfigError>;
    /// Runs `world` under `plan` (the world's own run function).
    fn simulate(
        &self,
        world: Self::World,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, Self::World);
    /// What the report shows of a finished run of the world of `knobs`.
    fn describe(&self, knobs: &Self::Knobs, report: &RunReport, world: &Self::World)
    -> Description;

    /// The mutant of the catalog called `name`.
    fn mutant(&self, name: &str) -> Result<&'static Mutant<Self>, HarnessError> {
        Self::MUTANTS
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| unknown_mutant(Self::NAME, name, Self::MUTANTS.iter().map(|m| m.name)))
    }

    /// The world of `knobs` with the reference in it, or the mutant called `mutant`.
    fn world(
        &self,
        knobs: &Self::Knobs,
        mutant: Option<&str>,
    ) -> Result<Self::World, HarnessError> {
        Ok(match mutant {
            None => self.reference(knobs)?,
            Some(name) => self.mutant(name)?.world(knobs)?,
        })
    }

    /// Runs the reference for `seed`'s knobs under `plan`.
    fn run_reference(
        &self,
        seed: u64,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> Result<(RunReport, Self::World), HarnessError> {
        let world = self.reference(&self.seed_knobs(seed))?;
        Ok(self.simulate(world, plan, trace))
    }

    /// Runs the reference for `seed`: knobs and plan both from the seed.
    fn run_seed(
        &self,
        seed: u64,
        trace: TraceMode,
    ) -> Result<(RunReport, Self::World), HarnessError> {
        let knobs = self.seed_knobs(seed);
        let plan = self.fault_plan(&knobs);
        let world = self.reference(&knobs)?;
        Ok(self.simulate(world, plan, trace))
    }
}

/// Each of `invariants` with its promise from `table` (or from the harness's own, for
/// `sim.determinism`), the empty string where neither has one.
pub(crate) fn promises_of(
    invariants: &'static [&'static str],
    table: &'static [(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    invariants
        .iter()
        .map(|name| {
            let promise = table
                .iter()
                .chain(super::HARNESS_PROMISES)
                .find(|(n, _)| n == name)
                .map_or("", |(_, p)| *p);
            (*name, promise)
        })
        .collect()
}

/// Every name a plan generated from `profile` may target (targets, nodes, links), each
/// once, in that order.
pub(crate) fn profile_names(profile: &FaultProfile) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in profile
        .targets
        .iter()
        .chain(&profile.nodes)
        .chain(&profile.links)
    {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

impl<S: Scenario> Pattern for S {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn about(&self) -> &'static str {
        S::ABOUT
    }

    fn invariants(&self) -> &'static [&'static str] {
        S::INVARIANTS
    }

    fn promises(&self) -> Vec<(&'static str, &'static str)> {
        promises_of(S::INVARIANTS, S::PROMISES)
    }

    fn fault_profile_of(&self, seed: u64) -> Option<FaultProfile> {
        Some(Scenario::fault_profile(self, &self.seed_knobs(seed)))
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str)> {
        S::METRICS.iter().map(|m| (m.name, m.unit)).collect()
    }

    fn default_seeds(&self) -> SeedRange {
        S::DEFAULT_SEEDS
    }

    fn known_targets(&self, seed: u64) -> Vec<String> {
        profile_names(&self.fault_profile(&self.seed_knobs(seed)))
    }

    fn fault_kinds(&self, seed: u64) -> Vec<faultline_sim::FaultKindTag> {
        self.fault_profile(&self.seed_knobs(seed)).usable_kinds()
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list_named(&self.seed_knobs(seed), S::KNOB_FIELDS)
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        self.fault_plan(&self.seed_knobs(seed))
    }

    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<&str>,
    ) -> Result<Run, HarnessError> {
        let knobs = self.seed_knobs(seed);
        let world = self.world(&knobs, mutant)?;
        let (report, world) = self.simulate(world, plan.clone(), trace);
        Ok(Run {
            metrics: S::METRICS.iter().map(|m| m.read(&world)).collect(),
            report,
        })
    }

    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<&str>,
    ) -> Result<RunView, HarnessError> {
        let knobs = self.seed_knobs(seed);
        let world = self.world(&knobs, mutant)?;
        let (report, world) = self.simulate(world, plan.clone(), TraceMode::Ring(REPORT_TRACE));
        let description = self.describe(&knobs, &report, &world);
        Ok(run_view(
            S::NAME,
            S::INVARIANTS,
            &promises_of(S::INVARIANTS, S::PROMISES),
            seed,
            &knobs,
            S::KNOB_FIELDS,
            plan,
            report,
            description,
            replay_command(S::NAME, seed, None, mutant),
        ))
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        S::MUTANTS.iter().map(Mutant::info).collect()
    }
}

/// The report view of one finished run of the pattern called `name`: the engine's
/// report, the knobs, the plan and each invariant's verdict with its promise (from
/// `promises`, as [`promises_of`] gives them) and the scenario's notes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_view<K: serde::Serialize + fmt::Debug>(
    name: &str,
    invariants: &[&str],
    promises: &[(&str, &str)],
    seed: u64,
    knobs: &K,
    knob_fields: &[(&str, &[&str])],
    plan: &FaultPlan,
    report: RunReport,
    description: Description,
    replay: String,
) -> RunView {
    let Description {
        notes,
        figures,
        timeline,
    } = description;
    let mut verdicts = verdicts(invariants, &report, |name| {
        notes
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(String::new, |(_, note)| note.clone())
    });
    for v in &mut verdicts {
        v.promise = promises
            .iter()
            .chain(super::HARNESS_PROMISES)
            .find(|(n, p)| *n == v.name && !p.is_empty())
            .map(|(_, p)| p.to_string());
    }
    RunView {
        pattern: name.to_string(),
        seed,
        replay,
        knobs: knob_list_named(knobs, knob_fields),
        plan: plan.clone(),
        fault_hits: report.fault_hits.clone(),
        horizon: report.horizon,
        end: report.end,
        outcome: report.outcome.clone(),
        verdicts,
        coverage: report.coverage.clone(),
        events: report.events,
        digest: report.digest,
        figures,
        timeline,
        trace: report.trace,
        build: super::view::build_info(),
    }
}
