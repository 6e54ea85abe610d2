//! The task queue (profile sync mixed with unique jobs) as a [`Scenario`] of the harness.

use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, level_per_second, notes};
use crate::queue::contract::TaskQueue;
use crate::queue::core::Queue;
use crate::queue::invariants::{self, INVARIANTS};
use crate::queue::mutants::CATALOG;
use crate::queue::world::{QueueKnobs, QueueStats, QueueWorld, run};
use faultline_sim::report::model::{Band, Lane, Series, Timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, SimTime, TraceMode};

/// The field names of the queue's knobs that are tuples.
pub(crate) const QUEUE_KNOB_FIELDS: &[(&str, &[&str])] = &[
    ("backoff_ms", &["base_ms", "cap_ms"]),
    ("work_ms", &["min", "max"]),
    ("link_ms", &["min", "max"]),
];

/// The task queue for profile sync mixed with unique jobs: outbox, leases, retries, dead
/// letters, workers.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuePattern;

/// The key metrics of a run of any queue, read from what the world observed (its
/// stats): the reference's ([`Scenario::METRICS`]) and a plug-in's
/// ([`Host::metrics_in`]).
const fn metrics<Q: TaskQueue>() -> [Metric<QueueWorld<Q>>; 5] {
    [
        Metric {
            name: "convergence after the last fault heals",
            unit: "ms",
            value: |w| w.stats.convergence_ms(),
        },
        Metric {
            name: "retries",
            unit: "count",
            value: |w| Some(w.stats.retries as f64),
        },
        Metric {
            name: "dead letters",
            unit: "count",
            value: |w| Some(w.stats.dead_lettered as f64),
        },
        Metric {
            name: "coalesced updates",
            unit: "count",
            value: |w| Some(w.stats.coalesced as f64),
        },
        Metric {
            name: "leases expired",
            unit: "count",
            value: |w| Some(w.stats.expired as f64),
        },
    ]
}

impl Scenario for QueuePattern {
    type Knobs = QueueKnobs;
    type World = QueueWorld<Queue>;

    const NAME: &'static str = "queue";
    const ABOUT: &'static str = "task queue for profile sync and unique jobs: every target converges to the latest version, never backwards; each unique job takes effect once";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::queue::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<QueueWorld<Queue>>] = &metrics::<Queue>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// About 10 seconds on 2 cores (`cargo run --release -- sweep queue`).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 50_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] = QUEUE_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> QueueKnobs {
        QueueKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &QueueKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &QueueKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &QueueKnobs) -> Result<QueueWorld<Queue>, ConfigError> {
        QueueWorld::new(knobs.clone(), knobs.reference_queue()?)
    }

    fn simulate(
        &self,
        world: QueueWorld<Queue>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, QueueWorld<Queue>) {
        run(world, plan, trace)
    }

    fn describe(
        &self,
        _knobs: &QueueKnobs,
        report: &RunReport,
        world: &QueueWorld<Queue>,
    ) -> Description {
        describe(report, world)
    }
}

/// How the targets converged after the last fault healed in the run of `report`, in
/// words, the time with `decimals` decimals.
fn convergence(s: &QueueStats, report: &RunReport, decimals: usize) -> String {
    if report.fault_hits.is_empty() {
        "no fault".into()
    } else if s.last_fault_healed.is_none() {
        "not reached: the run stopped before the last fault healed".into()
    } else if s.missing_at_last_heal == 0 {
        "every target was in sync as the last fault healed (nothing to converge)".into()
    } else {
        match s.convergence_ms() {
            Some(ms) => format!(
                "converged {ms:.decimals$} ms after the last fault healed ({} profile copies to catch up)",
                s.missing_at_last_heal
            ),
            None => "did not converge by the end of the run".into(),
        }
    }
}

/// Bands from a list of (time, state) changes, up to `end`.
fn bands(changes: &[(SimTime, &str)], end: SimTime) -> Vec<Band> {
    let mut out: Vec<Band> = Vec::new();
    for (i, (t, label)) in changes.iter().enumerate() {
        let until = changes.get(i + 1).map_or(end, |n| n.0).min(end);
        if until <= *t {
            continue;
        }
        match out.last_mut() {
            Some(b) if b.label == *label && b.until == *t => b.until = until,
            _ => out.push(Band {
                from: *t,
                until,
                label: label.to_string(),
            }),
        }
    }
    out
}

/// The report view of one run of any queue, from what the world observed and what the
/// contract lets it ask (the queue's `counts` and `dead_letters`, the conservation
/// invariant's subject): the reference's ([`Scenario::describe`]) and a plug-in's
/// ([`Host::describe_in`]).
fn describe<Q: TaskQueue>(report: &RunReport, world: &QueueWorld<Q>) -> Description {
    let knobs = world.knobs();
    let end = report.end;
    let s = &world.stats;
    let mut lanes = Vec::new();
    let queue: Vec<(SimTime, &str)> = world
        .queue_states
        .iter()
        .map(|(t, up)| (*t, if *up { "up" } else { "restarting" }))
        .collect();
    lanes.push(Lane {
        name: "queue process".into(),
        bands: bands(&queue, end),
    });
    for (k, states) in world.sync_states.iter().enumerate() {
        let mut changes: Vec<(SimTime, &str)> = states
            .iter()
            .map(|(t, ok)| (*t, if *ok { "in sync" } else { "behind" }))
            .collect();
        // After the last fault heals: converging until it converged.
        if let Some(h) = s.last_fault_healed {
            changes.retain(|(t, _)| *t < h);
            match s.converged_at.get(k).copied().flatten() {
                Some(c) => {
                    if c > h {
                        changes.push((h, "converging"));
                    }
                    changes.push((c, "converged"));
                }
                None => changes.push((h, "converging")),
            }
        }
        lanes.push(Lane {
            name: format!("{} convergence", QueueKnobs::target_name(k as u32)),
            bands: bands(&changes, end),
        });
    }
    // Levels, each second's peak, to the end of the run (where a run that settled has
    // converged) with the level they ended at.
    let mut series: Vec<Series> = world
        .behind_series
        .iter()
        .enumerate()
        .map(|(k, points)| Series {
            name: format!(
                "profiles {} is behind on (peak each second, to the end of the run)",
                QueueKnobs::target_name(k as u32)
            ),
            unit: "profiles".into(),
            points: level_per_second(points.iter().copied(), 0.0, end),
        })
        .collect();
    series.push(Series {
        name: "dead letters waiting for redrive (peak each second, to the end of the run)".into(),
        unit: "tasks".into(),
        points: level_per_second(world.dead_series.iter().copied(), 0.0, end),
    });
    let c = world.queue().counts();
    let notes = notes(&INVARIANTS, |name| match name {
        invariants::NO_LOST_UPDATE => format!(
            "{} updates reached {} targets; {}",
            s.updates,
            knobs.targets,
            convergence(s, report, 0)
        ),
        invariants::AT_MOST_ONCE => format!(
            "{} applies, {} deliveries without effect ({} duplicated)",
            s.applied, s.stale, s.duplicated
        ),
        invariants::CONSERVATION => format!(
            "{} enqueued = {} done + {} superseded + {} pending + {} leased + {} retrying + {} dead",
            c.enqueued, c.done, c.superseded, c.pending, c.leased, c.retrying, c.dead
        ),
        invariants::RETRY_OR_DEAD_LETTER => format!(
            "{} retries within the bounds, {} dead letters",
            s.retries, s.dead_lettered
        ),
        invariants::REDRIVE_ORDER => format!("{} dead letters redriven", s.redriven),
        invariants::SINGLE_LEASE => format!(
            "{} leases expired, {} workers crashed mid-task",
            s.expired, s.crashes_mid_task
        ),
        invariants::EXACTLY_ONCE => format!(
            "{} unique jobs committed, {} took effect",
            s.unique_jobs, s.unique_effects
        ),
        invariants::NOT_BEFORE_RUN_AT => format!(
            "{} unique jobs committed with a later run-at",
            world.checker.run_at.len()
        ),
        invariants::FENCES_GROW => format!(
            "{} keys leased, each lease with a larger fence than the last",
            world.checker.fence_high.len()
        ),
        _ => String::new(),
    });
    let mut figures = vec![
        ("profile updates".into(), s.updates.to_string()),
        ("tasks accepted".into(), s.accepted.to_string()),
        ("tasks coalesced".into(), s.coalesced.to_string()),
        (
            "unique jobs committed / took effect".into(),
            format!("{} / {}", s.unique_jobs, s.unique_effects),
        ),
        ("deliveries sent".into(), s.deliveries.to_string()),
        (
            "deliveries dropped / duplicated".into(),
            format!("{} / {}", s.dropped, s.duplicated),
        ),
        ("applies with effect".into(), s.applied.to_string()),
        ("deliveries without effect".into(), s.stale.to_string()),
        (
            "fenced applies / acks".into(),
            format!("{} / {}", s.fenced_applies, s.fenced_acks),
        ),
        ("leases expired".into(), s.expired.to_string()),
        ("retries".into(), s.retries.to_string()),
        ("dead-lettered".into(), s.dead_lettered.to_string()),
        ("dead letters redriven".into(), s.redriven.to_string()),
        (
            "dead letters at the end".into(),
            format!(
                "{} waiting, {} listed",
                c.dead,
                world.queue().dead_letters().len()
            ),
        ),
        ("queue restarts".into(), s.restarts.to_string()),
        (
            "worker crashes mid-task".into(),
            s.crashes_mid_task.to_string(),
        ),
        (
            "convergence after the last fault healed".into(),
            convergence(s, report, 1),
        ),
    ];
    for (k, at) in s.converged_at.iter().enumerate() {
        if let (Some(at), Some(h)) = (at, s.last_fault_healed) {
            figures.push((
                format!("{} converged", QueueKnobs::target_name(k as u32)),
                format!(
                    "{:.1} ms after",
                    at.saturating_since(h).as_nanos() as f64 / 1e6
                ),
            ));
        }
    }
    for (attempt, n) in &world.checker.attempts_histogram {
        figures.push((format!("tasks done at attempt {attempt}"), n.to_string()));
    }
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
impl<Q: TaskQueue> Host<QueueWorld<Q>> for QueuePattern {
    fn simulate_in(
        &self,
        world: QueueWorld<Q>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, QueueWorld<Q>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<QueueWorld<Q>>> {
        metrics::<Q>().to_vec()
    }

    fn describe_in(
        &self,
        _knobs: &QueueKnobs,
        report: &RunReport,
        world: &QueueWorld<Q>,
    ) -> Description {
        describe(report, world)
    }
}
