//! The event bus as a [`Scenario`] of the harness.

use crate::bus::contract::EventBus;
use crate::bus::invariants::{self, INVARIANTS};
use crate::bus::mutants::{CATALOG, MutantBus};
use crate::bus::world::{BusKnobs, BusWorld, run};
use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes, per_second};
use faultline_sim::report::model::{Band, Lane, Series, Timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, SimTime, TraceMode};

/// The in-memory event bus with publishers, subscribers and their faults.
#[derive(Clone, Copy, Debug, Default)]
pub struct BusPattern;

/// The longest delivery lag of subscriber `sub`, where it has one.
fn lag_max<B: EventBus>(world: &BusWorld<B>, sub: u32) -> Option<f64> {
    world
        .checker
        .lags
        .get(&sub)
        .and_then(|l| l.iter().map(|(_, v)| *v).reduce(f64::max))
}

/// The key metrics of a run of any bus, read from what the world observed (its stats
/// and checker): the reference's ([`Scenario::METRICS`]) and a plug-in's
/// ([`Host::metrics_in`]).
const fn metrics<B: EventBus>() -> [Metric<BusWorld<B>>; 7] {
    [
        Metric {
            name: "peak retention / capacity",
            unit: "ratio",
            value: |w| Some(w.stats.retained_max as f64 / w.policy().capacity.max(1) as f64),
        },
        Metric {
            name: "handler failures",
            unit: "count",
            value: |w| Some(w.stats.failures as f64),
        },
        Metric {
            name: "longest delivery lag of sub-0",
            unit: "ms",
            value: |w| lag_max(w, 0),
        },
        Metric {
            name: "longest delivery lag of sub-1",
            unit: "ms",
            value: |w| lag_max(w, 1),
        },
        Metric {
            name: "longest delivery lag of sub-2",
            unit: "ms",
            value: |w| lag_max(w, 2),
        },
        Metric {
            name: "longest delivery lag of sub-3",
            unit: "ms",
            value: |w| lag_max(w, 3),
        },
        Metric {
            name: "longest delivery lag of sub-4",
            unit: "ms",
            value: |w| lag_max(w, 4),
        },
    ]
}

impl Scenario for BusPattern {
    type Knobs = BusKnobs;
    /// The reference runs as [`MutantBus::Flawed`] without a flaw (the same calls on
    /// the same bus), so the reference and the mutants share one world type.
    type World = BusWorld<MutantBus>;

    const NAME: &'static str = "bus";
    const ABOUT: &'static str =
        "in-memory event bus: every subscriber gets every event, in order, with bounded memory";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::bus::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<BusWorld<MutantBus>>] = &metrics::<MutantBus>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// With the breaker's, about a minute on 2 cores (`cargo run --release -- sweep`).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 25_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("backoff_ms", &["base_ms", "cap_ms"])];

    fn seed_knobs(&self, seed: u64) -> BusKnobs {
        BusKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &BusKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &BusKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    /// The reference, also checked for conformance to its exact settings for the knobs
    /// (`bus.conformance`).
    fn reference(&self, knobs: &BusKnobs) -> Result<BusWorld<MutantBus>, ConfigError> {
        BusWorld::new(knobs.clone(), MutantBus::Flawed(knobs.reference_bus()?))
            .conforming_to_reference()
    }

    fn simulate(
        &self,
        world: BusWorld<MutantBus>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, BusWorld<MutantBus>) {
        run(world, plan, trace)
    }

    fn describe(
        &self,
        knobs: &BusKnobs,
        report: &RunReport,
        world: &BusWorld<MutantBus>,
    ) -> Description {
        describe(knobs, report, world)
    }
}

/// The report view of one run of any bus, from what the world observed: the
/// reference's ([`Scenario::describe`]) and a plug-in's ([`Host::describe_in`]).
fn describe<B: EventBus>(knobs: &BusKnobs, report: &RunReport, world: &BusWorld<B>) -> Description {
    let end = report.end;
    let mut lanes = Vec::new();
    for (i, s) in knobs.subscribers.iter().enumerate() {
        let mut bands = Vec::new();
        let mut from = SimTime::ZERO;
        let mut state = "not subscribed";
        for (t, sub, st) in &world.states {
            if *sub as usize != i {
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
        lanes.push(Lane {
            name: s.name.clone(),
            bands,
        });
    }
    let mut series = vec![Series {
        name: format!("events retained (capacity {})", world.policy().capacity),
        unit: "events".into(),
        points: per_second(
            world.retention.iter().map(|(t, n)| (*t, *n as f64)),
            f64::max,
        ),
    }];
    for (sub, lags) in &world.checker.lags {
        series.push(Series {
            name: format!(
                "delivery lag of {}",
                knobs
                    .subscribers
                    .get(*sub as usize)
                    .map_or("?", |s| s.name.as_str())
            ),
            unit: "ms".into(),
            points: per_second(lags.iter().copied(), f64::max),
        });
    }
    let s = &world.stats;
    let notes = notes(&INVARIANTS, |name| match name {
        invariants::BOUNDED_RETENTION => format!(
            "at most {} events retained; capacity {}",
            s.retained_max,
            world.policy().capacity
        ),
        invariants::DEAD_EVENTS_COUNTED => {
            format!("{} dead events counted", s.dead_events)
        }
        invariants::DRAINED => format!(
            "{} events handled, {} handler failures",
            s.handled, s.failures
        ),
        _ => String::new(),
    });
    let figures = vec![
        ("events published".into(), s.published.to_string()),
        ("events handled".into(), s.handled.to_string()),
        ("handler failures".into(), s.failures.to_string()),
        (
            "publishes that waited for space".into(),
            s.waited.to_string(),
        ),
        ("publishes refused (BusFull)".into(), s.refused.to_string()),
        ("dead events".into(), s.dead_events.to_string()),
        (
            "most events retained".into(),
            format!("{} of {}", s.retained_max, world.policy().capacity),
        ),
        (
            "longest delivery lag".into(),
            format!("{:.1} ms", s.lag_ms_max),
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
impl<B: EventBus> Host<BusWorld<B>> for BusPattern {
    fn simulate_in(
        &self,
        world: BusWorld<B>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, BusWorld<B>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<BusWorld<B>>> {
        metrics::<B>().to_vec()
    }

    fn describe_in(
        &self,
        knobs: &BusKnobs,
        report: &RunReport,
        world: &BusWorld<B>,
    ) -> Description {
        describe(knobs, report, world)
    }
}
