//! The choreographed checkout saga as a [`Pattern`] of the harness, with its mutants.

use crate::bus::core::{Bus, Flaw as BusFlaw};
use crate::config::ConfigError;
use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list, per_second,
    replay_command, verdicts,
};
use crate::saga::checkout::SagaKnobs;
use crate::saga::choreographed::core::ChoreoFlaw;
use crate::saga::choreographed::world::{ChoreoWorld, run_world};
use crate::saga::invariants::CHOREOGRAPHED as INVARIANTS;
use crate::saga::orchestrated::pattern::{COMPARED, compared_metrics, saga_lanes};
use faultline_sim::report::model::{RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, TraceMode};

/// The checkout saga, choreographed over the event bus.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChoreoPattern;

/// One mutant of the choreography's catalog.
#[derive(Clone, Copy, Debug)]
pub struct ChoreoMutant {
    /// Short name.
    pub name: &'static str,
    /// What is broken.
    pub defect: &'static str,
    /// The invariant expected to catch it.
    pub expected: &'static str,
    flaw: ChoreoFlaw,
    idempotent_payment: bool,
    bus_flaw: BusFlaw,
}

impl ChoreoMutant {
    /// The world for `knobs` with this mutant in it.
    pub fn world(&self, knobs: SagaKnobs) -> Result<ChoreoWorld<Bus<u64>>, ConfigError> {
        let bus_flaw = self.bus_flaw;
        ChoreoWorld::with(knobs, self.flaw, self.idempotent_payment, move |config| {
            let mut bus = Bus::new(config);
            bus.flaw = bus_flaw;
            Ok(bus)
        })
    }
}

/// The catalog.
pub const CATALOG: &[ChoreoMutant] = &[
    ChoreoMutant {
        name: "errors_ignored",
        defect: "a delivery whose reaction failed (service down, reply lost) is acknowledged as if handled, so its event is lost",
        expected: "saga.at_rest",
        flaw: ChoreoFlaw::None,
        idempotent_payment: true,
        bus_flaw: BusFlaw::SwallowErrors,
    },
    ChoreoMutant {
        name: "skip_release",
        defect: "on a decline the order service cancels the order, but nobody releases the stock (the last completed step is not compensated)",
        expected: "saga.conservation",
        flaw: ChoreoFlaw::SkipRelease,
        idempotent_payment: true,
        bus_flaw: BusFlaw::None,
    },
    ChoreoMutant {
        name: "payment_not_idempotent",
        defect: "payment without idempotency: a redelivered stock.reserved charges twice",
        expected: "saga.idempotent",
        flaw: ChoreoFlaw::None,
        idempotent_payment: false,
        bus_flaw: BusFlaw::None,
    },
    ChoreoMutant {
        name: "release_on_refusal",
        defect: "inventory also reacts to stock.refused by releasing stock it never reserved",
        expected: "saga.compensation_order",
        flaw: ChoreoFlaw::ReleaseOnRefusal,
        idempotent_payment: true,
        bus_flaw: BusFlaw::None,
    },
    ChoreoMutant {
        name: "default_ack_deadline",
        defect: "the bus's ack deadline is left at a broker default of 30 s (SQS's visibility timeout), so a lost delivery waits 30 s to be retried",
        expected: "saga.settling",
        flaw: ChoreoFlaw::DefaultAckDeadline,
        idempotent_payment: true,
        bus_flaw: BusFlaw::None,
    },
];

const REPORT_TRACE: usize = 300;

fn metrics_of(world: &ChoreoWorld) -> Vec<Option<f64>> {
    let s = &world.stats;
    let started = s.started.max(1) as f64;
    let settle = world
        .settle_times()
        .iter()
        .map(|(_, d)| d.as_nanos() as f64 / 1e6)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let mut m = compared_metrics(
        s.completed,
        world.knobs().horizon_ms,
        &world.latencies(),
        world.inconsistent(),
    );
    m.push(Some(100.0 * s.completed as f64 / started));
    m.push(Some(s.deadlines as f64));
    m.push(settle);
    m
}

impl ChoreoPattern {
    fn world(&self, seed: u64, mutant: Option<usize>) -> Result<ChoreoWorld, HarnessError> {
        let knobs = SagaKnobs::from_seed(seed);
        match mutant {
            None => Ok(ChoreoWorld::new(knobs)?),
            Some(i) => {
                let m = catalog_entry(self.name(), CATALOG, i)?;
                Ok(m.world(knobs)?)
            }
        }
    }
}

fn describe(
    plan: &FaultPlan,
    report: RunReport,
    world: &ChoreoWorld,
    mutant: Option<&str>,
) -> RunView {
    let knobs = world.knobs();
    let end = report.end;
    let lanes = saga_lanes(&world.lanes, end);
    let series = vec![Series {
        name: "sagas coming to rest".into(),
        unit: "sagas/s".into(),
        points: per_second(
            world
                .lanes
                .iter()
                .filter(|(_, _, w)| w.starts_with("ended"))
                .map(|(_, t, _)| (*t, 1.0)),
            |a, b| a + b,
        ),
    }];
    let s = &world.stats;
    let verdicts = verdicts(&INVARIANTS, &report, |_| String::new());
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
    RunView {
        pattern: "saga-choreo".into(),
        seed: knobs.seed,
        replay: replay_command("saga-choreo", knobs.seed, None, mutant),
        knobs: knob_list(knobs),
        plan: plan.clone(),
        fault_hits: report.fault_hits.clone(),
        horizon: report.horizon,
        end,
        outcome: report.outcome.clone(),
        verdicts,
        coverage: report.coverage.clone(),
        events: report.events,
        digest: report.digest,
        figures,
        timeline: Timeline { lanes, series },
        trace: report.trace,
    }
}

impl Pattern for ChoreoPattern {
    fn name(&self) -> &'static str {
        "saga-choreo"
    }

    fn about(&self) -> &'static str {
        "the same checkout, choreographed: each service reacts to the others' events on the bus"
    }

    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }

    fn metrics(&self) -> &'static [(&'static str, &'static str)] {
        &[
            COMPARED[0],
            COMPARED[1],
            COMPARED[2],
            COMPARED[3],
            COMPARED[4],
            COMPARED[5],
            ("sagas completed", "%"),
            ("deliveries failed at their deadline", "count"),
            ("slowest settling after the faults", "ms"),
        ]
    }

    /// With the others', about a minute on 2 cores (`cargo run --release -- sweep`).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 3_000,
        }
    }

    fn known_targets(&self) -> Vec<String> {
        crate::saga::orchestrated::pattern::SagaPattern.known_targets()
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list(&SagaKnobs::from_seed(seed))
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        SagaKnobs::from_seed(seed).fault_plan()
    }

    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<usize>,
    ) -> Result<Run, HarnessError> {
        let (report, world) = run_world(self.world(seed, mutant)?, plan.clone(), trace);
        Ok(Run {
            metrics: metrics_of(&world),
            report,
        })
    }

    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<usize>,
    ) -> Result<RunView, HarnessError> {
        let (report, world) = run_world(
            self.world(seed, mutant)?,
            plan.clone(),
            TraceMode::Ring(REPORT_TRACE),
        );
        let name = mutant.and_then(|i| CATALOG.get(i)).map(|m| m.name);
        Ok(describe(plan, report, &world, name))
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        catalog_infos(CATALOG, |m| (m.name, m.defect, m.expected))
    }
}
