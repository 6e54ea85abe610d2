//! CQRS with event sourcing as a [`Pattern`] of the harness.

use crate::cqrs::contract::EventSourced;
use crate::cqrs::invariants::INVARIANTS;
use crate::cqrs::mutants::{CATALOG, Mutant};
use crate::cqrs::world::{CqrsKnobs, CqrsWorld, PROJECTIONS, WRITER, projection_name, run};
use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list, per_second,
    replay_command, verdicts,
};
use faultline_sim::report::model::{Band, Lane, RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimTime, TraceMode};

/// The event-sourced inventory with racing clients, a crashing writer and projections.
#[derive(Clone, Copy, Debug, Default)]
pub struct CqrsPattern;

const REPORT_TRACE: usize = 300;

fn metrics_of<E: EventSourced>(world: &CqrsWorld<E>) -> Vec<Option<f64>> {
    let s = &world.stats;
    let secs = world.knobs().horizon_ms as f64 / 1000.0;
    vec![
        Some(s.conflicts as f64 / secs),
        Some(s.lag_max as f64),
        Some(s.reapplied as f64),
        (s.commands > 0).then(|| s.rejected as f64 / s.commands as f64),
    ]
}

fn describe<E: EventSourced>(
    knobs: &CqrsKnobs,
    plan: &FaultPlan,
    report: RunReport,
    world: &CqrsWorld<E>,
    mutant: Option<&str>,
) -> RunView {
    let end = report.end;
    let nodes: Vec<String> = std::iter::once(WRITER.to_string())
        .chain((0..PROJECTIONS).map(projection_name))
        .collect();
    let lanes = nodes
        .iter()
        .map(|node| {
            let mut bands = Vec::new();
            let mut from = SimTime::ZERO;
            let mut state = "up";
            for (t, n, st) in &world.states {
                if n != node {
                    continue;
                }
                if *t > from {
                    bands.push(Band {
                        from,
                        until: *t,
                        label: state.to_string(),
                    });
                }
                from = *t;
                state = st;
            }
            if end > from {
                bands.push(Band {
                    from,
                    until: end,
                    label: state.to_string(),
                });
            }
            Lane {
                name: node.clone(),
                bands,
            }
        })
        .collect();
    let mut series: Vec<Series> = (0..PROJECTIONS)
        .map(|p| Series {
            name: format!("lag of {} behind the log", projection_name(p)),
            unit: "events".into(),
            points: per_second(
                world
                    .lags
                    .iter()
                    .filter(|(_, q, _)| *q == p)
                    .map(|(t, _, l)| (*t, *l as f64)),
                f64::max,
            ),
        })
        .collect();
    series.push(Series {
        name: "conflicts per second".into(),
        unit: "conflicts".into(),
        points: per_second(world.conflict_times.iter().map(|t| (*t, 1.0)), |a, b| a + b),
    });
    let s = &world.stats;
    let verdicts = verdicts(&INVARIANTS, &report, |name| match name {
        "cqrs.no_lost_write" => format!(
            "{} events acknowledged, all stored; {} conflicts refused",
            s.events, s.conflicts
        ),
        "cqrs.snapshot_fold" => format!(
            "{} loads from a snapshot equal the fold of all events",
            s.snapshot_loads
        ),
        "cqrs.caught_up" => format!(
            "every read model at the log's head ({} events) at rest",
            world.checker.head()
        ),
        "cqrs.idempotent_replay" => {
            format!("{} events handed again changed nothing", s.reapplied)
        }
        "cqrs.monotonic_reads" => format!("{} queries never saw a read model go back", s.queries),
        _ => String::new(),
    });
    let figures = vec![
        ("commands sent".into(), s.commands.to_string()),
        ("commands accepted".into(), s.accepted.to_string()),
        (
            "commands refused by the item".into(),
            s.rejected.to_string(),
        ),
        (
            "conflicts (appends refused)".into(),
            s.conflicts.to_string(),
        ),
        (
            "commands given up after conflicts".into(),
            s.gave_up.to_string(),
        ),
        (
            "commands lost to a writer crash".into(),
            s.writer_lost.to_string(),
        ),
        ("events appended".into(), s.events.to_string()),
        (
            "loads from a snapshot".into(),
            format!(
                "{} (every {} events)",
                s.snapshot_loads, knobs.snapshot_every
            ),
        ),
        ("events upcast from schema 1".into(), s.upcast.to_string()),
        (
            "dispatches lost between append and dispatch".into(),
            s.dispatch_lost.to_string(),
        ),
        ("deliveries to projections".into(), s.deliveries.to_string()),
        (
            "events re-applied (replays, duplicates)".into(),
            s.reapplied.to_string(),
        ),
        ("rebuilds swapped in".into(), s.rebuilds.to_string()),
        (
            "largest projection lag".into(),
            format!("{} events", s.lag_max),
        ),
    ];
    RunView {
        pattern: "cqrs".into(),
        seed: knobs.seed,
        replay: replay_command("cqrs", knobs.seed, None, mutant),
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

impl CqrsPattern {
    fn mutant(&self, index: usize) -> Result<&'static Mutant, HarnessError> {
        catalog_entry(self.name(), CATALOG, index)
    }
}

impl Pattern for CqrsPattern {
    fn name(&self) -> &'static str {
        "cqrs"
    }

    fn about(&self) -> &'static str {
        "CQRS + event sourcing: conflicting writes never vanish, read models converge to the log"
    }

    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }

    fn metrics(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("conflicts per second", "1/s"),
            ("largest projection lag", "events"),
            ("events re-applied", "count"),
            ("commands refused / sent", "ratio"),
        ]
    }

    /// About 10 seconds on 2 cores (`cargo run --release -- sweep cqrs`).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 6_000,
        }
    }

    fn known_targets(&self) -> Vec<String> {
        let mut t = vec![WRITER.to_string()];
        for p in 0..PROJECTIONS {
            t.push(projection_name(p));
            t.push(crate::cqrs::world::dispatch_link(p));
        }
        t
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list(&CqrsKnobs::from_seed(seed))
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        CqrsKnobs::from_seed(seed).fault_plan()
    }

    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<usize>,
    ) -> Result<Run, HarnessError> {
        let knobs = CqrsKnobs::from_seed(seed);
        let system = match mutant {
            None => knobs.reference()?,
            Some(i) => self.mutant(i)?.inventory(&knobs)?,
        };
        let (report, world) = run(&knobs, plan.clone(), system, trace);
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
        let knobs = CqrsKnobs::from_seed(seed);
        let (system, name) = match mutant {
            None => (knobs.reference()?, None),
            Some(i) => {
                let m = self.mutant(i)?;
                (m.inventory(&knobs)?, Some(m.name))
            }
        };
        let (report, world) = run(&knobs, plan.clone(), system, TraceMode::Ring(REPORT_TRACE));
        Ok(describe(&knobs, plan, report, &world, name))
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        catalog_infos(CATALOG, |m| (m.name, m.defect, m.expected))
    }
}
