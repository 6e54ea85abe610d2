//! The orchestrated checkout saga as a [`Pattern`] of the harness.

use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list, per_second,
    replay_command, verdicts,
};
use crate::saga::checkout::SagaKnobs;
use crate::saga::invariants::ORCHESTRATED as INVARIANTS;
use crate::saga::orchestrated::mutants::CATALOG;
use crate::saga::orchestrated::world::{SagaWorld, run_world};
use crate::saga::services::SagaId;
use faultline_sim::report::model::{Band, Lane, RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimDuration, SimTime, TraceMode};
use std::collections::BTreeMap;

/// The checkout saga, orchestrated from a durable log.
#[derive(Clone, Copy, Debug, Default)]
pub struct SagaPattern;

const REPORT_TRACE: usize = 300;
/// Sagas drawn as swimlanes in a run report.
const LANES_MAX: usize = 12;

/// The metrics every checkout pattern reports under the same names, so the sweep
/// report can set the sagas beside two-phase commit (see `harness::comparisons`).
pub(crate) const COMPARED: [(&str, &str); 6] = [
    ("throughput", "per s"),
    ("latency p50", "ms"),
    ("latency p99", "ms"),
    ("longest lock hold", "ms"),
    ("locked during crash", "ms"),
    ("inconsistent", "sagas"),
];

/// The `p`-th percentile (nearest rank, as the 2PC world's) of `d`, in ms.
pub(crate) fn percentile_ms(d: &[SimDuration], p: u64) -> Option<f64> {
    let mut v: Vec<u64> = d.iter().map(|d| d.as_nanos()).collect();
    v.sort_unstable();
    let rank = (p.min(100) * v.len() as u64).div_ceil(100).max(1);
    let i = usize::try_from(rank).ok()?.min(v.len()).checked_sub(1)?;
    v.get(i).map(|n| *n as f64 / 1e6)
}

/// The compared metrics of a saga world: completed per simulated second of arrivals,
/// checkout-to-rest latency, no locks (a saga takes none: its reservations do not block
/// other checkouts), and the sagas left half-done (Failed, with an alert).
pub(crate) fn compared_metrics(
    completed: u64,
    horizon_ms: u64,
    latencies: &[SimDuration],
    failed: u64,
) -> Vec<Option<f64>> {
    vec![
        Some(completed as f64 / (horizon_ms.max(1) as f64 / 1000.0)),
        percentile_ms(latencies, 50),
        percentile_ms(latencies, 99),
        Some(0.0),
        Some(0.0),
        Some(failed as f64),
    ]
}

fn metrics_of(world: &SagaWorld) -> Vec<Option<f64>> {
    let s = &world.stats;
    let started = s.started.max(1) as f64;
    let mut m = compared_metrics(
        s.completed,
        world.knobs().horizon_ms,
        &world.latencies(),
        s.failed,
    );
    m.push(Some(100.0 * s.completed as f64 / started));
    m.push(Some(100.0 * s.compensated as f64 / started));
    m.push(Some(s.recoveries as f64));
    m
}

impl SagaPattern {
    fn world(&self, seed: u64, mutant: Option<usize>) -> Result<SagaWorld, HarnessError> {
        let knobs = SagaKnobs::from_seed(seed);
        match mutant {
            None => Ok(SagaWorld::new(knobs)?),
            Some(i) => {
                let m = catalog_entry(self.name(), CATALOG, i)?;
                Ok(m.world(knobs)?)
            }
        }
    }
}

/// Swimlanes of up to [`LANES_MAX`] sagas from `(saga, time, what)` notes, the sagas
/// that did not simply complete first: one band per step attempt or compensation (from
/// when it began to the next note), the lane named after how the saga ended.
pub(crate) fn saga_lanes(notes: &[(SagaId, SimTime, String)], end: SimTime) -> Vec<Lane> {
    let mut by_saga: BTreeMap<u64, Vec<(SimTime, String)>> = BTreeMap::new();
    for (saga, t, what) in notes {
        by_saga.entry(saga.0).or_default().push((*t, what.clone()));
    }
    let mut chosen: Vec<u64> = by_saga
        .iter()
        .filter(|(_, ev)| {
            ev.iter()
                .any(|(_, w)| w.contains("Compensated") || w.contains("Failed"))
        })
        .map(|(s, _)| *s)
        .take(LANES_MAX / 2)
        .collect();
    for s in by_saga.keys() {
        if chosen.len() >= LANES_MAX {
            break;
        }
        if !chosen.contains(s) {
            chosen.push(*s);
        }
    }
    chosen.sort();
    chosen
        .iter()
        .map(|s| {
            let mut ev = by_saga[s].clone();
            ev.sort_by_key(|e| e.0);
            let ending = ev
                .iter()
                .find(|(_, w)| w.starts_with("ended"))
                .map_or("running".to_string(), |(_, w)| {
                    w.trim_start_matches("ended ").to_lowercase()
                });
            let bands = ev
                .iter()
                .enumerate()
                .filter(|(_, (_, w))| !w.starts_with("ended"))
                .map(|(i, (t, w))| Band {
                    from: *t,
                    until: ev.get(i + 1).map_or(end, |n| n.0).max(*t),
                    label: w.clone(),
                })
                .collect();
            Lane {
                name: format!("saga {s}: {ending}"),
                bands,
            }
        })
        .collect()
}

fn describe(
    plan: &FaultPlan,
    report: RunReport,
    world: &SagaWorld,
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
        ("failed (alerted)".into(), s.failed.to_string()),
        ("recoveries from the log".into(), s.recoveries.to_string()),
        ("commands sent".into(), s.sends.to_string()),
        ("log records made durable".into(), s.records.to_string()),
    ];
    RunView {
        pattern: "saga".into(),
        seed: knobs.seed,
        replay: replay_command("saga", knobs.seed, None, mutant),
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

impl Pattern for SagaPattern {
    fn name(&self) -> &'static str {
        "saga"
    }

    fn about(&self) -> &'static str {
        "checkout saga across order, inventory and payment, orchestrated from a durable log"
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
            ("sagas compensated", "%"),
            ("orchestrator recoveries", "count"),
        ]
    }

    /// With the others', about a minute on 2 cores (`cargo run --release -- sweep`).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 5_000,
        }
    }

    fn known_targets(&self) -> Vec<String> {
        let mut t = vec!["orchestrator".to_string()];
        for s in ["orders", "inventory", "payment"] {
            t.push(s.to_string());
            t.push(format!("to-{s}"));
            t.push(format!("from-{s}"));
        }
        t
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
