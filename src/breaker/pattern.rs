//! The breaker as a [`Scenario`] of the harness: knobs and plans from a seed, the
//! reference guard and the mutants in the SMS world, the metrics, and the run's report
//! view.

use crate::breaker::circuit::State;
use crate::breaker::contract::CallGuard;
use crate::breaker::guard::Guard;
use crate::breaker::invariants::{self, INVARIANTS};
use crate::breaker::mutants::CATALOG;
use crate::breaker::world::{SmsKnobs, SmsWorld, run};
use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes};
use faultline_sim::report::model::{Band, Lane, Series, Timeline};
use faultline_sim::{
    FaultPlan, FaultProfile, RunReport, SeedRange, SimDuration, SimTime, TraceMode,
};

/// The field names of the SMS knobs that are tuples (see [`SmsKnobs`]'s fields).
pub(crate) const SMS_KNOB_FIELDS: &[(&str, &[&str])] = &[
    ("burst", &["period_ms", "on_ms", "per_sec"]),
    ("spike", &["from_ms", "until_ms", "per_sec"]),
    ("latency_ms", &["min", "max"]),
    ("window", &["count_based", "size"]),
    (
        "wait_in_open",
        &["initial_ms", "multiplier", "max_ms", "jitter_percent"],
    ),
    ("backoff_ms", &["base_ms", "cap_ms"]),
    ("budget", &["ttl_secs", "min_per_sec", "retry_percent"]),
];

/// The circuit breaker in front of the simulated SMS gateway.
#[derive(Clone, Copy, Debug, Default)]
pub struct BreakerPattern;

/// The key metrics of a run of any guard, read from what the world observed (its
/// stats): the reference's ([`Scenario::METRICS`]) and a plug-in's
/// ([`Host::metrics_in`]).
const fn metrics<G: CallGuard>() -> [Metric<SmsWorld<G>>; 3] {
    [
        Metric {
            name: "worst outage load / bound",
            unit: "ratio",
            value: |w| {
                w.stats
                    .worst_load
                    .map(|(calls, bound)| calls as f64 / bound.max(1) as f64)
            },
        },
        // No value where the breaker was Closed as the faults healed (nothing to close:
        // most seeds), rather than a 0 that would swamp the seeds that had to recover.
        Metric {
            name: "time to close after recovery",
            unit: "s",
            value: |w| w.stats.time_to_close_ms.map(|ms| ms as f64 / 1000.0),
        },
        Metric {
            name: "rejection rate",
            unit: "%",
            value: |w| {
                let s = &w.stats;
                (s.requests > 0).then(|| 100.0 * s.rejected as f64 / s.requests as f64)
            },
        },
    ]
}

impl Scenario for BreakerPattern {
    type Knobs = SmsKnobs;
    type World = SmsWorld<Guard>;

    const NAME: &'static str = "breaker";
    const ABOUT: &'static str =
        "circuit breaker (+ timeout, retry budget, bulkhead, fallback) in front of a flaky SMS API";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::breaker::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<SmsWorld<Guard>>] = &metrics::<Guard>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// With the bus's, about a minute on 2 cores (`cargo run --release -- sweep`).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 70_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] = SMS_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> SmsKnobs {
        SmsKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &SmsKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &SmsKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    /// The reference guard, judged by the policy it declares and held to the reference's
    /// exact settings for the knobs (`breaker.conformance`).
    fn reference(&self, knobs: &SmsKnobs) -> Result<SmsWorld<Guard>, ConfigError> {
        SmsWorld::new(knobs.clone(), knobs.reference_guard()?)?.conforming_to_reference()
    }

    fn simulate(
        &self,
        world: SmsWorld<Guard>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SmsWorld<Guard>) {
        run(world, plan, trace)
    }

    fn describe(
        &self,
        knobs: &SmsKnobs,
        report: &RunReport,
        world: &SmsWorld<Guard>,
    ) -> Description {
        describe(knobs, report, world)
    }
}

/// The report view of one run of any guard, from what the world observed (its checker
/// and stats): the reference's ([`Scenario::describe`]) and a plug-in's
/// ([`Host::describe_in`]).
fn describe<G: CallGuard>(
    knobs: &SmsKnobs,
    report: &RunReport,
    world: &SmsWorld<G>,
) -> Description {
    let checker = &world.checker;
    let stats = &world.stats;
    let end = report.end;
    let timeline = sms_timeline(
        Some(&checker.transitions),
        checker.sends.iter().copied(),
        checker.answers.iter().copied(),
        end,
    );
    // Before the faults healed (a run stopped early), what the checker saw up to the
    // stop; the figures are the stop's (see `SmsWorld::stopped`).
    let healed = checker.state_at_heal();
    let no_outage = if healed.is_some() {
        "no outage in this plan"
    } else {
        "no outage before the stop"
    };
    let recovery = match (healed, stats.time_to_close_ms) {
        (None, _) => "not reached: the run stopped before the faults healed".to_string(),
        (Some(State::Closed), _) => {
            "nothing to close: the breaker was Closed as the faults healed".to_string()
        }
        (Some(s), Some(ms)) => format!("{s} as the faults healed; Closed {ms} ms later"),
        (Some(s), None) => format!("{s} as the faults healed; did not close"),
    };
    let note_for = |name: &str| -> String {
        match name {
            invariants::LOAD_BOUND => match stats.worst_load {
                Some((c, b)) => format!("worst outage: {c} calls against a bound of {b}"),
                None => no_outage.into(),
            },
            invariants::RESPONSIVENESS => format!(
                "slowest answer {} ms; timeout {} ms",
                stats.answer_latency_ms_max, knobs.timeout_ms
            ),
            invariants::CLOSES_AFTER_RECOVERY => recovery.clone(),
            invariants::ACCOUNTING => format!(
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
    let notes = notes(&INVARIANTS, note_for);
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
                .map_or(no_outage.into(), |(c, b)| format!("{c} / {b}")),
        ),
        (
            "time to close after recovery".into(),
            match stats.time_to_close_ms {
                Some(ms) => format!("{ms} ms"),
                None => recovery.clone(),
            },
        ),
        (
            "slowest answer".into(),
            format!("{} ms", stats.answer_latency_ms_max),
        ),
    ];
    Description {
        notes,
        figures,
        timeline,
    }
}

/// The timeline of a run of either SMS world (the sans-IO one and the hosted one): the
/// breaker's state as a lane (none without `transitions`), and per second the
/// calls that reached the API (`sends`) and the slowest answer to a caller (`answers`:
/// when, and how long the caller waited).
pub(crate) fn sms_timeline(
    transitions: Option<&[(SimTime, State, State)]>,
    sends: impl Iterator<Item = SimTime>,
    answers: impl Iterator<Item = (SimTime, SimDuration)>,
    end: SimTime,
) -> Timeline {
    let mut bands = Vec::new();
    let mut from = SimTime::ZERO;
    let mut state = State::Closed;
    for (t, _, to) in transitions.unwrap_or_default() {
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
    for t in sends {
        if let Some(c) = calls.get_mut((t.as_millis() / 1000) as usize) {
            *c += 1;
        }
    }
    let mut latency = vec![SimDuration::ZERO; seconds as usize];
    for (t, l) in answers {
        if let Some(slot) = latency.get_mut((t.as_millis() / 1000) as usize) {
            *slot = (*slot).max(l);
        }
    }
    let per_second = |values: Vec<f64>| {
        values
            .into_iter()
            .enumerate()
            .map(|(s, v)| (SimTime::from_secs(s as u64), v))
            .collect()
    };
    Timeline {
        lanes: transitions
            .map(|_| Lane {
                name: "breaker".into(),
                bands,
            })
            .into_iter()
            .collect(),
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
        shown: String::new(),
    }
}

/// Runs any implementation of the contract in this world, for a plug-in
/// ([`Plugin`](crate::harness::Plugin)), with the reference's metrics and report view.
impl<G: CallGuard> Host<SmsWorld<G>> for BreakerPattern {
    fn simulate_in(
        &self,
        world: SmsWorld<G>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SmsWorld<G>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<SmsWorld<G>>> {
        metrics::<G>().to_vec()
    }

    fn describe_in(
        &self,
        knobs: &SmsKnobs,
        report: &RunReport,
        world: &SmsWorld<G>,
    ) -> Description {
        describe(knobs, report, world)
    }
}
