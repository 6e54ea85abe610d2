//! The hosted CQRS world as a [`Scenario`] of the harness: `cqrs-tokio`.

use crate::config::ConfigError;
use crate::cqrs::hosted::{
    CqrsTokioWorld, Defect, INVARIANTS, factory_with, fault_plan, fault_profile, reference_factory,
    run,
};
use crate::cqrs::invariants::{self, CAUGHT_UP, MONOTONIC_READS, NO_LOST_WRITE};
use crate::cqrs::world::{CqrsKnobs, PROJECTIONS, projection_name};
use crate::harness::{Description, Metric, Mutant, Scenario, notes, per_second};
use faultline_sim::report::model::{Series, Timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, TraceMode};

/// Event sourcing with real async command handling and projection tasks against an
/// async event store (see [`crate::cqrs::hosted`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CqrsTokioPattern;

fn mutant(knobs: &CqrsKnobs, defect: Defect) -> Result<CqrsTokioWorld, ConfigError> {
    Ok(CqrsTokioWorld::new(knobs.clone(), factory_with(defect)))
}

/// The async mutants: the reference's tokio code with one defect each.
pub const CATALOG: &[Mutant<CqrsTokioPattern>] = &[
    Mutant::new(
        "retry_without_reload",
        "after a conflict the service appends the same events again at the version the conflict \
         reported, without reloading and deciding again: a lost update",
        NO_LOST_WRITE,
        |k| mutant(k, Defect::RetryWithoutReload),
    ),
    Mutant::new(
        "skip_after_read_error",
        "after a failed read of the log, the projection's puller moves past the event it could not read",
        CAUGHT_UP,
        |k| mutant(k, Defect::SkipAfterReadError),
    ),
    Mutant::new(
        "restart_on_read_error",
        "after a failed read of the log, the projection starts over from an empty replica, \
         serving an empty read model meanwhile",
        MONOTONIC_READS,
        |k| mutant(k, Defect::RestartOnReadError),
    ),
];

const METRICS: [Metric<CqrsTokioWorld>; 3] = [
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
        name: "commands refused / sent",
        unit: "ratio",
        value: |w| {
            let s = &w.stats;
            (s.commands > 0).then(|| s.rejected as f64 / s.commands as f64)
        },
    },
];

impl Scenario for CqrsTokioPattern {
    type Knobs = CqrsKnobs;
    type World = CqrsTokioWorld;

    const NAME: &'static str = "cqrs-tokio";
    const ABOUT: &'static str = "CQRS + event sourcing in the tokio harness: async commands and \
                                 projection tasks against an async event store";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::cqrs::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<CqrsTokioWorld>] = &METRICS;
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// About 5 s on 1 core, release (`faultline sweep cqrs-tokio`; every seed runs twice).
    const DEFAULT_SEEDS: SeedRange = SeedRange { start: 0, end: 500 };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("think_ms", &["min", "max"])];

    fn seed_knobs(&self, seed: u64) -> CqrsKnobs {
        CqrsKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &CqrsKnobs) -> FaultProfile {
        fault_profile(knobs)
    }

    fn fault_plan(&self, knobs: &CqrsKnobs) -> FaultPlan {
        fault_plan(knobs)
    }

    fn reference(&self, knobs: &CqrsKnobs) -> Result<CqrsTokioWorld, ConfigError> {
        Ok(CqrsTokioWorld::new(knobs.clone(), reference_factory()))
    }

    fn simulate(
        &self,
        world: CqrsTokioWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, CqrsTokioWorld) {
        run(world, plan, trace)
    }

    fn describe(&self, _: &CqrsKnobs, _: &RunReport, world: &CqrsTokioWorld) -> Description {
        let s = &world.stats;
        let notes = notes(&INVARIANTS, |name| match name {
            invariants::NO_LOST_WRITE => format!(
                "{} events acknowledged by the store, in order; {} commands answered as appended, \
                 each found where it was told; {} conflicts refused",
                s.events, s.accepted, s.conflicts
            ),
            invariants::CAUGHT_UP => format!(
                "every read model at the log's head ({} events) at rest",
                world.checker.head()
            ),
            invariants::MONOTONIC_READS => {
                format!("{} queries never saw a read model go back", s.queries)
            }
            _ => String::new(),
        });
        let series = (0..PROJECTIONS)
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
        let figures = [
            ("commands sent", s.commands),
            ("commands answered as appended", s.accepted),
            ("commands refused by the item", s.rejected),
            ("conflicts (appends refused)", s.conflicts),
            ("commands given up after conflicts", s.gave_up),
            ("commands failed by the store", s.failed),
            ("events appended", s.events),
            ("store calls refused or failed", s.refused),
            ("log reads by projections", s.log_reads),
            ("largest projection lag, events", s.lag_max),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Description {
            notes,
            figures,
            timeline: Timeline {
                lanes: Vec::new(),
                series,

                shown: String::new(),
            },
        }
    }
}

crate::harness::host_own_world!(CqrsTokioPattern);
