//! CQRS with event sourcing as a [`Scenario`] of the harness.

use crate::config::ConfigError;
use crate::cqrs::contract::{EventSourced, Inventory};
use crate::cqrs::invariants::{self, INVARIANTS};
use crate::cqrs::mutants::CATALOG;
use crate::cqrs::world::{CqrsKnobs, CqrsWorld, PROJECTIONS, WRITER, projection_name, run};
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes, per_second};
use faultline_sim::report::model::{Band, Lane, Series, Timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, SimTime, TraceMode};

/// The event-sourced inventory with racing clients, a crashing writer and projections.
#[derive(Clone, Copy, Debug, Default)]
pub struct CqrsPattern;

/// The key metrics of a run of any event-sourced store, read from what the world
/// observed (its stats): the reference's ([`Scenario::METRICS`]) and a plug-in's
/// ([`Host::metrics_in`]).
const fn metrics<E: EventSourced>() -> [Metric<CqrsWorld<E>>; 4] {
    [
        Metric {
            name: "conflicts per second",
            unit: "1/s",
            value: |w| Some(w.stats.conflicts as f64 / (w.knobs().horizon_ms as f64 / 1000.0)),
        },
        Metric {
            name: "largest projection lag",
            unit: "events",
            value: |w| Some(w.stats.lag_max as f64),
        },
        Metric {
            name: "events re-applied",
            unit: "count",
            value: |w| Some(w.stats.reapplied as f64),
        },
        Metric {
            name: "commands refused / sent",
            unit: "ratio",
            value: |w| {
                let s = &w.stats;
                (s.commands > 0).then(|| s.rejected as f64 / s.commands as f64)
            },
        },
    ]
}

impl Scenario for CqrsPattern {
    type Knobs = CqrsKnobs;
    type World = CqrsWorld<Inventory>;

    const NAME: &'static str = "cqrs";
    const ABOUT: &'static str =
        "CQRS + event sourcing: conflicting writes never vanish, read models converge to the log";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::cqrs::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<CqrsWorld<Inventory>>] = &metrics::<Inventory>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// About 10 seconds on 2 cores (`cargo run --release -- sweep cqrs`).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 6_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("think_ms", &["min", "max"])];

    fn seed_knobs(&self, seed: u64) -> CqrsKnobs {
        CqrsKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &CqrsKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &CqrsKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &CqrsKnobs) -> Result<CqrsWorld<Inventory>, ConfigError> {
        Ok(CqrsWorld::new(knobs.clone(), knobs.reference()?))
    }

    fn simulate(
        &self,
        world: CqrsWorld<Inventory>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, CqrsWorld<Inventory>) {
        run(world, plan, trace)
    }

    fn describe(
        &self,
        knobs: &CqrsKnobs,
        report: &RunReport,
        world: &CqrsWorld<Inventory>,
    ) -> Description {
        describe(knobs, report, world)
    }
}

/// The report view of one run of any event-sourced store, from what the world
/// observed: the reference's ([`Scenario::describe`]) and a plug-in's
/// ([`Host::describe_in`]).
fn describe<E: EventSourced>(
    knobs: &CqrsKnobs,
    report: &RunReport,
    world: &CqrsWorld<E>,
) -> Description {
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
    let notes = notes(&INVARIANTS, |name| match name {
        invariants::NO_LOST_WRITE => format!(
            "{} events acknowledged, all stored; {} conflicts refused",
            s.events, s.conflicts
        ),
        invariants::SNAPSHOT_FOLD => format!(
            "{} loads from a snapshot equal the fold of all events",
            s.snapshot_loads
        ),
        invariants::CAUGHT_UP => format!(
            "every read model at the log's head ({} events) at rest",
            world.checker.head()
        ),
        invariants::IDEMPOTENT_REPLAY => {
            format!("{} events handed again changed nothing", s.reapplied)
        }
        invariants::MONOTONIC_READS => {
            format!("{} queries never saw a read model go back", s.queries)
        }
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
    Description {
        notes,
        figures,
        timeline: Timeline {
            lanes,
            series,
            shown: String::new(),
        },
    }
}

/// Runs any implementation of the contract in this world, for a plug-in
/// ([`Plugin`](crate::harness::Plugin)), with the reference's metrics and report view.
impl<E: EventSourced> Host<CqrsWorld<E>> for CqrsPattern {
    fn simulate_in(
        &self,
        world: CqrsWorld<E>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, CqrsWorld<E>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<CqrsWorld<E>>> {
        metrics::<E>().to_vec()
    }

    fn describe_in(
        &self,
        knobs: &CqrsKnobs,
        report: &RunReport,
        world: &CqrsWorld<E>,
    ) -> Description {
        describe(knobs, report, world)
    }
}
