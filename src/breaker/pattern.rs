//! The breaker as a [`Pattern`] of the harness: knobs and plans from a seed, runs of the
//! reference guard and of the mutants, and the run's report view.

use crate::breaker::circuit::State;
use crate::breaker::guard::Guard;
use crate::breaker::invariants::INVARIANTS;
use crate::breaker::mutants::CATALOG;
use crate::breaker::world::{API, SmsKnobs, SmsWorld, run};
use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list,
    replay_command, verdicts,
};
use faultline_sim::report::model::{Band, Lane, RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimDuration, SimTime, TraceMode};

/// The circuit breaker in front of the simulated SMS gateway.
#[derive(Clone, Copy, Debug, Default)]
pub struct BreakerPattern;

/// Trace entries kept for a report (the run just before a violation).
const REPORT_TRACE: usize = 300;

impl BreakerPattern {
    fn guard(&self, knobs: &SmsKnobs, mutant: Option<usize>) -> Result<Guard, HarnessError> {
        match mutant {
            None => Ok(knobs.reference_guard()?),
            Some(index) => {
                let m = catalog_entry(self.name(), CATALOG, index)?;
                Ok(m.guard(knobs)?)
            }
        }
    }

    fn metrics_of(world: &SmsWorld<Guard>) -> Vec<Option<f64>> {
        let s = &world.stats;
        vec![
            s.worst_load
                .map(|(calls, bound)| calls as f64 / bound.max(1) as f64),
            s.time_to_close_ms.map(|ms| ms as f64 / 1000.0),
            (s.requests > 0).then(|| 100.0 * s.rejected as f64 / s.requests as f64),
        ]
    }
}

impl Pattern for BreakerPattern {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn about(&self) -> &'static str {
        "circuit breaker (+ timeout, retry budget, bulkhead, fallback) in front of a flaky SMS API"
    }

    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }

    fn metrics(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("worst outage load / bound", "ratio"),
            ("time to close after recovery", "s"),
            ("rejection rate", "%"),
        ]
    }

    /// With the bus's, about a minute on 2 cores (`cargo run --release -- sweep`).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 70_000,
        }
    }

    fn known_targets(&self) -> Vec<String> {
        vec![API.to_string()]
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list(&SmsKnobs::from_seed(seed))
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        SmsKnobs::from_seed(seed).fault_plan()
    }

    fn run(
        &self,
        seed: u64,
        plan: &FaultPlan,
        trace: TraceMode,
        mutant: Option<usize>,
    ) -> Result<Run, HarnessError> {
        let knobs = SmsKnobs::from_seed(seed);
        let (report, world) = run(&knobs, plan.clone(), self.guard(&knobs, mutant)?, trace)?;
        Ok(Run {
            metrics: Self::metrics_of(&world),
            report,
        })
    }

    fn view(
        &self,
        seed: u64,
        plan: &FaultPlan,
        mutant: Option<usize>,
    ) -> Result<RunView, HarnessError> {
        let knobs = SmsKnobs::from_seed(seed);
        let (report, world) = run(
            &knobs,
            plan.clone(),
            self.guard(&knobs, mutant)?,
            TraceMode::Ring(REPORT_TRACE),
        )?;
        let name = mutant.and_then(|i| CATALOG.get(i)).map(|m| m.name);
        Ok(describe(self, &knobs, plan, report, &world, name))
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        catalog_infos(CATALOG, |m| (m.name, m.defect, m.expected))
    }
}

/// The report view of one run.
fn describe(
    pattern: &BreakerPattern,
    knobs: &SmsKnobs,
    plan: &FaultPlan,
    report: RunReport,
    world: &SmsWorld<Guard>,
    mutant: Option<&str>,
) -> RunView {
    let checker = &world.checker;
    let stats = &world.stats;
    let end = report.end;
    // The breaker's state as bands.
    let mut bands = Vec::new();
    let mut from = SimTime::ZERO;
    let mut state = State::Closed;
    for (t, _, to) in &checker.transitions {
        if *t > from {
            bands.push(Band {
                from,
                until: *t,
                label: state.name().to_string(),
            });
        }
        from = *t;
        state = *to;
    }
    if end > from {
        bands.push(Band {
            from,
            until: end,
            label: state.name().to_string(),
        });
    }
    let seconds = end.as_millis() / 1000 + 1;
    let mut calls = vec![0u64; seconds as usize];
    for t in &checker.sends {
        if let Some(c) = calls.get_mut((t.as_millis() / 1000) as usize) {
            *c += 1;
        }
    }
    let mut latency = vec![SimDuration::ZERO; seconds as usize];
    for (t, l) in &checker.answers {
        if let Some(slot) = latency.get_mut((t.as_millis() / 1000) as usize) {
            *slot = (*slot).max(*l);
        }
    }
    let per_second = |values: Vec<f64>| {
        values
            .into_iter()
            .enumerate()
            .map(|(s, v)| (SimTime::from_secs(s as u64), v))
            .collect()
    };
    let timeline = Timeline {
        lanes: vec![Lane {
            name: "breaker".into(),
            bands,
        }],
        series: vec![
            Series {
                name: "calls reaching the API".into(),
                unit: "calls/s".into(),
                points: per_second(calls.iter().map(|c| *c as f64).collect()),
            },
            Series {
                name: "slowest answer to a caller".into(),
                unit: "ms".into(),
                points: per_second(
                    latency
                        .iter()
                        .map(|l| l.as_nanos() as f64 / 1_000_000.0)
                        .collect(),
                ),
            },
        ],
    };
    let note_for = |name: &str| -> String {
        match name {
            "breaker.load_bound" => match stats.worst_load {
                Some((c, b)) => format!("worst outage: {c} calls against a bound of {b}"),
                None => "no outage in this plan".into(),
            },
            "breaker.responsiveness" => format!(
                "slowest answer {} ms; timeout {} ms",
                stats.answer_latency_ms_max, knobs.timeout_ms
            ),
            "breaker.closes_after_recovery" => match stats.time_to_close_ms {
                Some(ms) => format!("closed {ms} ms after the faults healed"),
                None => "did not close".into(),
            },
            "breaker.accounting" => format!(
                "{} calls admitted = {} succeeded + {} failed + {} ignored + {} released",
                checker.counts.admitted,
                checker.counts.succeeded,
                checker.counts.failed,
                checker.counts.ignored,
                checker.counts.released
            ),
            _ => String::new(),
        }
    };
    let verdicts = verdicts(&INVARIANTS, &report, note_for);
    let opt = |v: Option<u64>, unit: &str| v.map_or("none".to_string(), |v| format!("{v} {unit}"));
    let figures = vec![
        ("requests".into(), stats.requests.to_string()),
        ("delivered".into(), stats.delivered.to_string()),
        (
            "answered by the fallback".into(),
            stats.fallbacks.to_string(),
        ),
        ("answered with an error".into(), stats.failed.to_string()),
        (
            "told unavailable (retry after)".into(),
            stats.rejected.to_string(),
        ),
        (
            "rejected by the bulkhead".into(),
            stats.bulkhead_rejected.to_string(),
        ),
        ("callers who gave up".into(), stats.cancelled.to_string()),
        ("calls reaching the API".into(), stats.api_calls.to_string()),
        ("retries".into(), stats.retries.to_string()),
        (
            "worst outage load".into(),
            stats
                .worst_load
                .map_or("no outage".into(), |(c, b)| format!("{c} / {b}")),
        ),
        (
            "time to close after recovery".into(),
            opt(stats.time_to_close_ms, "ms"),
        ),
        (
            "slowest answer".into(),
            format!("{} ms", stats.answer_latency_ms_max),
        ),
    ];
    RunView {
        pattern: pattern.name().to_string(),
        seed: knobs.seed,
        replay: replay_command(pattern.name(), knobs.seed, None, mutant),
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
        timeline,
        trace: report.trace,
    }
}
