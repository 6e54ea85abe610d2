//! The event bus as a [`Pattern`] of the harness.

use crate::bus::contract::EventBus;
use crate::bus::invariants::INVARIANTS;
use crate::bus::mutants::CATALOG;
use crate::bus::world::{BusKnobs, BusWorld, run};
use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list, per_second,
    replay_command, verdicts,
};
use faultline_sim::report::model::{Band, Lane, RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimTime, TraceMode};

/// The in-memory event bus with publishers, subscribers and their faults.
#[derive(Clone, Copy, Debug, Default)]
pub struct BusPattern;

const REPORT_TRACE: usize = 300;

fn metrics_of<B: EventBus>(world: &BusWorld<B>) -> Vec<Option<f64>> {
    let s = &world.stats;
    let mut m = vec![
        Some(s.retained_max as f64 / world.knobs().capacity.max(1) as f64),
        Some(s.failures as f64),
    ];
    // The longest delivery lag of each subscriber (sub-0 .. sub-4), where it exists.
    for i in 0..5u32 {
        m.push(
            world
                .checker
                .lags
                .get(&i)
                .and_then(|l| l.iter().map(|(_, v)| *v).reduce(f64::max)),
        );
    }
    m
}

fn describe<B: EventBus>(
    knobs: &BusKnobs,
    plan: &FaultPlan,
    report: RunReport,
    world: &BusWorld<B>,
    mutant: Option<&str>,
) -> RunView {
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
        name: format!("events retained (capacity {})", knobs.capacity),
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
    let verdicts = verdicts(&INVARIANTS, &report, |name| match name {
        "bus.bounded_retention" => format!(
            "at most {} events retained; capacity {}",
            s.retained_max, knobs.capacity
        ),
        "bus.dead_events_counted" => {
            format!("{} dead events counted", s.dead_events)
        }
        "bus.drained" => format!(
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
            format!("{} of {}", s.retained_max, knobs.capacity),
        ),
        (
            "longest delivery lag".into(),
            format!("{:.1} ms", s.lag_ms_max),
        ),
    ];
    RunView {
        pattern: "bus".into(),
        seed: knobs.seed,
        replay: replay_command("bus", knobs.seed, None, mutant),
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

impl BusPattern {
    fn mutant(&self, index: usize) -> Result<&'static crate::bus::mutants::Mutant, HarnessError> {
        catalog_entry(self.name(), CATALOG, index)
    }
}

impl Pattern for BusPattern {
    fn name(&self) -> &'static str {
        "bus"
    }

    fn about(&self) -> &'static str {
        "in-memory event bus: every subscriber gets every event, in order, with bounded memory"
    }

    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }

    fn metrics(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("peak retention / capacity", "ratio"),
            ("handler failures", "count"),
            ("longest delivery lag of sub-0", "ms"),
            ("longest delivery lag of sub-1", "ms"),
            ("longest delivery lag of sub-2", "ms"),
            ("longest delivery lag of sub-3", "ms"),
            ("longest delivery lag of sub-4", "ms"),
        ]
    }

    /// With the breaker's, about a minute on 2 cores (`cargo run --release -- sweep`).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 25_000,
        }
    }

    fn known_targets(&self) -> Vec<String> {
        (0..5).map(|i| format!("sub-{i}")).collect()
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list(&BusKnobs::from_seed(seed))
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        BusKnobs::from_seed(seed).fault_plan()
    }

    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<usize>,
    ) -> Result<Run, HarnessError> {
        let knobs = BusKnobs::from_seed(seed);
        Ok(match mutant {
            None => {
                let (report, world) = run(&knobs, plan.clone(), knobs.reference_bus()?, trace);
                Run {
                    metrics: metrics_of(&world),
                    report,
                }
            }
            Some(i) => {
                let (report, world) =
                    run(&knobs, plan.clone(), self.mutant(i)?.bus(&knobs)?, trace);
                Run {
                    metrics: metrics_of(&world),
                    report,
                }
            }
        })
    }

    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<usize>,
    ) -> Result<RunView, HarnessError> {
        let knobs = BusKnobs::from_seed(seed);
        let trace = TraceMode::Ring(REPORT_TRACE);
        Ok(match mutant {
            None => {
                let (report, world) = run(&knobs, plan.clone(), knobs.reference_bus()?, trace);
                describe(&knobs, plan, report, &world, None)
            }
            Some(i) => {
                let m = self.mutant(i)?;
                let (report, world) = run(&knobs, plan.clone(), m.bus(&knobs)?, trace);
                describe(&knobs, plan, report, &world, Some(m.name))
            }
        })
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        catalog_infos(CATALOG, |m| (m.name, m.defect, m.expected))
    }
}
