//! The orchestrated checkout saga as a [`Scenario`] of the harness.

use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes};
use crate::saga::checkout::SagaKnobs;
use crate::saga::invariants::ORCHESTRATED as INVARIANTS;
use crate::saga::orchestrated::mutants::CATALOG;
use crate::saga::orchestrated::world::{SagaWorld, run};
use crate::saga::participants::Participants;
use crate::saga::report::{Checkouts, compared_metrics, saga_timeline};
use crate::saga::{Orchestrator, SagaCoordinator};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, SimDuration, TraceMode};

/// The checkout saga, orchestrated from a durable log.
#[derive(Clone, Copy, Debug, Default)]
pub struct SagaPattern;

impl<O: SagaCoordinator> Checkouts for SagaWorld<O> {
    fn completed_sagas(&self) -> u64 {
        self.stats.completed
    }
    fn arrivals_ms(&self) -> u64 {
        self.knobs().horizon_ms
    }
    fn rest_latencies(&self) -> Vec<SimDuration> {
        self.latencies()
    }
    fn half_done(&self) -> u64 {
        self.stats.failed
    }
}

/// The key metrics of a run of any coordinator, the compared ones first, read from what
/// the world observed (its stats and latencies): the reference's
/// ([`Scenario::METRICS`]) and a plug-in's ([`Host::metrics_in`]).
const fn metrics<O: SagaCoordinator>() -> [Metric<SagaWorld<O>>; 9] {
    let compared = compared_metrics::<SagaWorld<O>>();
    [
        compared[0],
        compared[1],
        compared[2],
        compared[3],
        compared[4],
        compared[5],
        completed_share(),
        compensated_share(),
        recoveries(),
    ]
}

/// The share of started sagas that completed, in a world of any definition.
pub(crate) const fn completed_share<O, S: Participants>() -> Metric<SagaWorld<O, S>> {
    Metric {
        name: "sagas completed",
        unit: "%",
        value: |w| Some(100.0 * w.stats.completed as f64 / w.stats.started.max(1) as f64),
    }
}

/// The share of started sagas that were compensated, in a world of any definition.
pub(crate) const fn compensated_share<O, S: Participants>() -> Metric<SagaWorld<O, S>> {
    Metric {
        name: "sagas compensated",
        unit: "%",
        value: |w| Some(100.0 * w.stats.compensated as f64 / w.stats.started.max(1) as f64),
    }
}

/// The orchestrator's recoveries from its log, in a world of any definition.
pub(crate) const fn recoveries<O, S: Participants>() -> Metric<SagaWorld<O, S>> {
    Metric {
        name: "orchestrator recoveries",
        unit: "count",
        value: |w| Some(w.stats.recoveries as f64),
    }
}

impl Scenario for SagaPattern {
    type Knobs = SagaKnobs;
    type World = SagaWorld;

    const NAME: &'static str = "saga";
    const ABOUT: &'static str =
        "checkout saga across order, inventory and payment, orchestrated from a durable log";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::saga::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<SagaWorld>] = &metrics::<Orchestrator>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// With the others', about a minute on 2 cores (`cargo run --release -- sweep`).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 5_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        crate::saga::report::CHECKOUT_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> SagaKnobs {
        SagaKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &SagaKnobs) -> FaultProfile {
        knobs.orchestrated_fault_profile()
    }

    fn fault_plan(&self, knobs: &SagaKnobs) -> FaultPlan {
        knobs.orchestrated_fault_plan()
    }

    fn reference(&self, knobs: &SagaKnobs) -> Result<SagaWorld, ConfigError> {
        SagaWorld::new(knobs.clone())
    }

    fn simulate(
        &self,
        world: SagaWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SagaWorld) {
        run(world, plan, trace)
    }

    fn describe(&self, _knobs: &SagaKnobs, report: &RunReport, world: &SagaWorld) -> Description {
        describe(report, world)
    }
}

/// The report view of one run of any coordinator, from what the world observed: the
/// reference's ([`Scenario::describe`]) and a plug-in's ([`Host::describe_in`]).
fn describe<O: SagaCoordinator>(report: &RunReport, world: &SagaWorld<O>) -> Description {
    let s = &world.stats;
    let notes = notes(&INVARIANTS, |_| String::new());
    let figures = vec![
        ("sagas started".into(), s.started.to_string()),
        ("completed".into(), s.completed.to_string()),
        ("compensated".into(), s.compensated.to_string()),
        ("failed (alerted)".into(), s.failed.to_string()),
        ("recoveries from the log".into(), s.recoveries.to_string()),
        ("commands sent".into(), s.sends.to_string()),
        ("log records made durable".into(), s.records.to_string()),
    ];
    Description {
        notes,
        figures,
        timeline: saga_timeline(&world.lanes, report.end),
    }
}

/// Runs any implementation of the contract in this world, for a plug-in
/// ([`Plugin`](crate::harness::Plugin)), with the reference's metrics and report view.
impl<O: SagaCoordinator> Host<SagaWorld<O>> for SagaPattern {
    fn simulate_in(
        &self,
        world: SagaWorld<O>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SagaWorld<O>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<SagaWorld<O>>> {
        metrics::<O>().to_vec()
    }

    fn describe_in(
        &self,
        _knobs: &SagaKnobs,
        report: &RunReport,
        world: &SagaWorld<O>,
    ) -> Description {
        describe(report, world)
    }
}
