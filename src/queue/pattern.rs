//! The profile-sync task queue as a [`Pattern`] of the harness.

use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list, per_second,
    replay_command, verdicts,
};
use crate::queue::core::Queue;
use crate::queue::mutants::CATALOG;
use crate::queue::world::{INVARIANTS, QueueKnobs, QueueWorld, run_world};
use faultline_sim::report::model::{Band, Lane, RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimTime, TraceMode};

/// The task queue for profile sync: outbox, leases, retries, dead letters, workers.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuePattern;

const REPORT_TRACE: usize = 300;

fn metrics_of(world: &QueueWorld<Queue>) -> Vec<Option<f64>> {
    let s = &world.stats;
    vec![
        s.convergence_ms(),
        Some(s.retries as f64),
        Some(s.dead_lettered as f64),
        Some(s.coalesced as f64),
        Some(s.expired as f64),
    ]
}

impl QueuePattern {
    fn world(&self, seed: u64, mutant: Option<usize>) -> Result<QueueWorld<Queue>, HarnessError> {
        let knobs = QueueKnobs::from_seed(seed);
        match mutant {
            None => {
                let queue = knobs.reference_queue()?;
                Ok(QueueWorld::new(knobs, queue)?)
            }
            Some(i) => {
                let m = catalog_entry(self.name(), CATALOG, i)?;
                Ok(m.world(knobs)?)
            }
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

fn describe(
    plan: &FaultPlan,
    report: RunReport,
    world: &QueueWorld<Queue>,
    mutant: Option<&str>,
) -> RunView {
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
    let mut series: Vec<Series> = world
        .behind_series
        .iter()
        .enumerate()
        .map(|(k, points)| Series {
            name: format!(
                "profiles {} is behind on",
                QueueKnobs::target_name(k as u32)
            ),
            unit: "profiles".into(),
            points: per_second(points.iter().copied(), f64::max),
        })
        .collect();
    series.push(Series {
        name: "dead letters waiting for redrive".into(),
        unit: "tasks".into(),
        points: per_second(world.dead_series.iter().copied(), f64::max),
    });
    let c = world.queue().counts();
    let verdicts = verdicts(&INVARIANTS, &report, |name| match name {
        "queue.no_lost_update" => format!(
            "{} updates reached {} targets; converged {} after the last fault healed",
            s.updates,
            knobs.targets,
            s.convergence_ms()
                .map_or("(no fault)".to_string(), |ms| format!("{ms:.0} ms"))
        ),
        "queue.at_most_once" => format!(
            "{} applies, {} deliveries without effect ({} duplicated)",
            s.applied, s.stale, s.duplicated
        ),
        "queue.conservation" => format!(
            "{} enqueued = {} done + {} superseded + {} pending + {} leased + {} retrying + {} dead",
            c.enqueued, c.done, c.superseded, c.pending, c.leased, c.retrying, c.dead
        ),
        "queue.retry_or_dead_letter" => format!(
            "{} retries within the bounds, {} dead letters",
            s.retries, s.dead_lettered
        ),
        "queue.redrive_order" => format!("{} dead letters redriven", s.redriven),
        "queue.single_lease" => format!(
            "{} leases expired, {} workers crashed mid-task",
            s.expired, s.crashes_mid_task
        ),
        _ => String::new(),
    });
    let mut figures = vec![
        ("profile updates".into(), s.updates.to_string()),
        ("tasks accepted".into(), s.accepted.to_string()),
        ("tasks coalesced".into(), s.coalesced.to_string()),
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
            s.convergence_ms()
                .map_or("no fault".to_string(), |ms| format!("{ms:.1} ms")),
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
    RunView {
        pattern: "queue".into(),
        seed: knobs.seed,
        replay: replay_command("queue", knobs.seed, None, mutant),
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

impl Pattern for QueuePattern {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn about(&self) -> &'static str {
        "task queue for profile sync: every target converges to the latest version, never backwards"
    }

    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }

    fn metrics(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("convergence after the last fault heals", "ms"),
            ("retries", "count"),
            ("dead letters", "count"),
            ("coalesced updates", "count"),
            ("leases expired", "count"),
        ]
    }

    /// About 10 seconds on 2 cores (`cargo run --release -- sweep queue`).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 50_000,
        }
    }

    fn known_targets(&self) -> Vec<String> {
        let mut v = vec!["queue".to_string()];
        v.extend((0..4).map(QueueKnobs::target_name));
        v.extend((0..4).map(QueueKnobs::link_name));
        v.extend((0..4).map(QueueKnobs::worker_name));
        v
    }

    fn knobs(&self, seed: u64) -> Vec<(String, String)> {
        knob_list(&QueueKnobs::from_seed(seed))
    }

    fn plan(&self, seed: u64) -> FaultPlan {
        QueueKnobs::from_seed(seed).fault_plan()
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
        let world = self.world(seed, mutant)?;
        let name = mutant.and_then(|i| CATALOG.get(i)).map(|m| m.name);
        let (report, world) = run_world(world, plan.clone(), TraceMode::Ring(REPORT_TRACE));
        Ok(describe(plan, report, &world, name))
    }

    fn mutants(&self) -> Vec<MutantInfo> {
        catalog_infos(CATALOG, |m| (m.name, m.defect, m.expected))
    }
}
