//! The choreographed checkout saga as a [`Scenario`] of the harness, with its mutants.

use crate::bus::contract::EventBus;
use crate::bus::core::{Bus, Flaw as BusFlaw};
use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes};
use crate::saga::checkout::SagaKnobs;
use crate::saga::choreographed::core::ChoreoFlaw;
use crate::saga::choreographed::world::{ChoreoWorld, run};
use crate::saga::invariants as inv;
use crate::saga::invariants::CHOREOGRAPHED as INVARIANTS;
use crate::saga::report::{Checkouts, compared_metrics, saga_timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, SimDuration, TraceMode};

/// The checkout saga, choreographed over the event bus.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChoreoPattern;

/// The world for `knobs` with the services carrying `flaw`, payment idempotent or not,
/// and the bus carrying `bus_flaw`.
fn flawed(
    knobs: &SagaKnobs,
    flaw: ChoreoFlaw,
    idempotent_payment: bool,
    bus_flaw: BusFlaw,
) -> Result<ChoreoWorld<Bus<u64>>, ConfigError> {
    ChoreoWorld::with(knobs.clone(), flaw, idempotent_payment, move |config| {
        let mut bus = Bus::new(config);
        bus.flaw = bus_flaw;
        Ok(bus)
    })
}

/// The catalog.
pub const CATALOG: &[Mutant<ChoreoPattern>] = &[
    Mutant::new(
        "errors_ignored",
        "a delivery whose reaction failed (service down, reply lost) is acknowledged as if handled, so its event is lost",
        inv::AT_REST,
        |k| flawed(k, ChoreoFlaw::None, true, BusFlaw::SwallowErrors),
    ),
    Mutant::new(
        "skip_release",
        "on a decline the order service cancels the order, but nobody releases the stock (the last completed step is not compensated)",
        inv::CONSERVATION,
        |k| flawed(k, ChoreoFlaw::SkipRelease, true, BusFlaw::None),
    ),
    Mutant::new(
        "payment_not_idempotent",
        "payment without idempotency: a redelivered stock.reserved charges twice",
        inv::IDEMPOTENT,
        |k| flawed(k, ChoreoFlaw::None, false, BusFlaw::None),
    ),
    Mutant::new(
        "release_on_refusal",
        "inventory also reacts to stock.refused by releasing stock it never reserved",
        inv::COMPENSATION_ORDER,
        |k| flawed(k, ChoreoFlaw::ReleaseOnRefusal, true, BusFlaw::None),
    ),
    Mutant::new(
        "default_ack_deadline",
        "the bus's ack deadline is left at a broker default of 30 s (SQS's visibility timeout), so a lost delivery waits 30 s to be retried",
        inv::SETTLING,
        |k| flawed(k, ChoreoFlaw::DefaultAckDeadline, true, BusFlaw::None),
    ),
];

impl<B: EventBus> Checkouts for ChoreoWorld<B> {
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
        self.inconsistent()
    }
}

/// The key metrics of a run over any bus, the compared ones first, read from what the
/// world observed (its stats, latencies and settling times): the reference's
/// ([`Scenario::METRICS`]) and a plug-in's ([`Host::metrics_in`]).
const fn metrics<B: EventBus>() -> [Metric<ChoreoWorld<B>>; 9] {
    let compared = compared_metrics::<ChoreoWorld<B>>();
    [
        compared[0],
        compared[1],
        compared[2],
        compared[3],
        compared[4],
        compared[5],
        Metric {
            name: "sagas completed",
            unit: "%",
            value: |w| Some(100.0 * w.stats.completed as f64 / w.stats.started.max(1) as f64),
        },
        Metric {
            name: "deliveries failed at their deadline",
            unit: "count",
            value: |w| Some(w.stats.deadlines as f64),
        },
        Metric {
            name: "slowest settling after the faults",
            unit: "ms",
            value: |w| {
                w.settle_times()
                    .iter()
                    .map(|(_, d)| d.as_nanos() as f64 / 1e6)
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            },
        },
    ]
}

impl Scenario for ChoreoPattern {
    type Knobs = SagaKnobs;
    type World = ChoreoWorld;

    const NAME: &'static str = "saga-choreo";
    const ABOUT: &'static str =
        "the same checkout, choreographed: each service reacts to the others' events on the bus";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::saga::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<ChoreoWorld>] = &metrics::<Bus<u64>>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// With the others', about a minute on 2 cores (`cargo run --release -- sweep`).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 3_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        crate::saga::report::CHECKOUT_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> SagaKnobs {
        SagaKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &SagaKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &SagaKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &SagaKnobs) -> Result<ChoreoWorld, ConfigError> {
        ChoreoWorld::new(knobs.clone())
    }

    fn simulate(
        &self,
        world: ChoreoWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, ChoreoWorld) {
        run(world, plan, trace)
    }

    fn describe(&self, _knobs: &SagaKnobs, report: &RunReport, world: &ChoreoWorld) -> Description {
        describe(report, world)
    }
}

/// The report view of one run over any bus, from what the world observed: the
/// reference's ([`Scenario::describe`]) and a plug-in's ([`Host::describe_in`]).
fn describe<B: EventBus>(report: &RunReport, world: &ChoreoWorld<B>) -> Description {
    let s = &world.stats;
    let notes = notes(&INVARIANTS, |_| String::new());
    let figures = vec![
        ("sagas started".into(), s.started.to_string()),
        ("completed".into(), s.completed.to_string()),
        ("compensated".into(), s.compensated.to_string()),
        ("events published".into(), s.published.to_string()),
        ("deliveries".into(), s.deliveries.to_string()),
        ("reactions run".into(), s.reactions.to_string()),
        (
            "deliveries failed at their deadline".into(),
            s.deadlines.to_string(),
        ),
    ];
    Description {
        notes,
        figures,
        timeline: saga_timeline(&world.lanes, report.end),
    }
}

/// Runs any implementation of the contract in this world, for a plug-in
/// ([`Plugin`](crate::harness::Plugin)), with the reference's metrics and report view.
impl<B: EventBus> Host<ChoreoWorld<B>> for ChoreoPattern {
    fn simulate_in(
        &self,
        world: ChoreoWorld<B>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, ChoreoWorld<B>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<ChoreoWorld<B>>> {
        metrics::<B>().to_vec()
    }

    fn describe_in(
        &self,
        _knobs: &SagaKnobs,
        report: &RunReport,
        world: &ChoreoWorld<B>,
    ) -> Description {
        describe(report, world)
    }
}
