//! The checkout as two-phase commit, the saga's baseline, as a [`Pattern`] of the
//! harness. Its metrics use the saga comparison's names and units, so a sweep of both
//! lines up side by side.

use crate::harness::{
    HarnessError, MutantInfo, Pattern, Run, catalog_entry, catalog_infos, knob_list, per_second,
    replay_command, verdicts,
};
use crate::saga::checkout::SagaKnobs;
use crate::saga::twopc::invariants::INVARIANTS;
use crate::saga::twopc::mutants::CATALOG;
use crate::saga::twopc::world::{TwoPcWorld, run_world};
use faultline_sim::report::model::{Band, Lane, RunView, Series, Timeline};
use faultline_sim::{FaultPlan, RunReport, SeedRange, SimTime, TraceMode};
use std::collections::BTreeMap;

/// The checkout as two-phase commit, with a durable coordinator log.
#[derive(Clone, Copy, Debug, Default)]
pub struct TwoPcPattern;

const REPORT_TRACE: usize = 300;
/// Transactions drawn as swimlanes in a run report.
const LANES_MAX: usize = 12;

fn ms(d: faultline_sim::SimDuration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn metrics_of(world: &TwoPcWorld) -> Vec<Option<f64>> {
    let s = &world.stats;
    vec![
        Some(s.throughput_per_sec()),
        s.latency_ms(50),
        s.latency_ms(99),
        Some(ms(s.longest_lock_hold)),
        Some(ms(s.locked_during_crash)),
        Some(s.inconsistent as f64),
    ]
}

impl TwoPcPattern {
    fn world(&self, seed: u64, mutant: Option<usize>) -> Result<TwoPcWorld, HarnessError> {
        let knobs = SagaKnobs::from_seed(seed);
        match mutant {
            None => Ok(TwoPcWorld::new(knobs)?),
            Some(i) => {
                let m = catalog_entry(self.name(), CATALOG, i)?;
                Ok(m.world(knobs)?)
            }
        }
    }
}

fn describe(
    plan: &FaultPlan,
    report: RunReport,
    world: &TwoPcWorld,
    mutant: Option<&str>,
) -> RunView {
    let knobs = world.knobs();
    let end = report.end;
    let mut by_tx: BTreeMap<u64, Vec<(SimTime, String)>> = BTreeMap::new();
    for (tx, t, what) in &world.lanes {
        by_tx.entry(tx.0).or_default().push((*t, what.clone()));
    }
    // Swimlanes: the transactions that held locks longest come first.
    let mut holds: Vec<_> = world.stats.lock_holds.clone();
    holds.sort_by(|a, b| b.duration().cmp(&a.duration()).then(a.tx.cmp(&b.tx)));
    let mut chosen: Vec<u64> = Vec::new();
    for h in &holds {
        if chosen.len() >= LANES_MAX / 2 {
            break;
        }
        if !chosen.contains(&h.tx.0) {
            chosen.push(h.tx.0);
        }
    }
    for tx in by_tx.keys() {
        if chosen.len() >= LANES_MAX {
            break;
        }
        if !chosen.contains(tx) {
            chosen.push(*tx);
        }
    }
    chosen.sort();
    let mut lanes: Vec<Lane> = Vec::new();
    if !world.stats.crashes.is_empty() {
        lanes.push(Lane {
            name: "coordinator".into(),
            bands: world
                .stats
                .crashes
                .iter()
                .map(|(from, until)| Band {
                    from: *from,
                    until: *until,
                    label: "crashed".into(),
                })
                .collect(),
        });
    }
    for tx in &chosen {
        let Some(ev) = by_tx.get(tx) else { continue };
        let start = ev.first().map_or(SimTime::ZERO, |e| e.0);
        let decided = ev
            .iter()
            .find(|(_, w)| w.starts_with("decided") || w.starts_with("presumed"));
        let ended = ev.iter().find(|(_, w)| w == "ended").map(|e| e.0);
        let mut bands = Vec::new();
        match decided {
            None => bands.push(Band {
                from: start,
                until: end.max(start),
                label: "voting".into(),
            }),
            Some((t, w)) => {
                bands.push(Band {
                    from: start,
                    until: (*t).max(start),
                    label: "voting".into(),
                });
                let label = if w.contains("Commit") {
                    "commit"
                } else {
                    "abort"
                };
                bands.push(Band {
                    from: (*t).max(start),
                    until: ended.unwrap_or(*t).max(*t).max(start),
                    label: label.into(),
                });
            }
        }
        lanes.push(Lane {
            name: format!("tx {tx}"),
            bands,
        });
        // The transaction's locks, acquire to release, on a lane of their own.
        let mut lock_bands: Vec<Band> = Vec::new();
        let mut mine: Vec<_> = holds.iter().filter(|h| h.tx.0 == *tx).collect();
        mine.sort_by_key(|h| h.from);
        for h in mine {
            match lock_bands.last_mut() {
                Some(last) if h.from <= last.until => last.until = last.until.max(h.until),
                _ => lock_bands.push(Band {
                    from: h.from,
                    until: h.until,
                    label: "locked".into(),
                }),
            }
        }
        if !lock_bands.is_empty() {
            lanes.push(Lane {
                name: format!("tx {tx} locks"),
                bands: lock_bands,
            });
        }
    }
    let series = vec![
        Series {
            name: "lock-held time of the locks taken that second".into(),
            unit: "ms".into(),
            points: per_second(
                world
                    .stats
                    .lock_holds
                    .iter()
                    .map(|h| (h.from, ms(h.duration()))),
                |a, b| a + b,
            ),
        },
        Series {
            name: "longest lock hold starting that second".into(),
            unit: "ms".into(),
            points: per_second(
                world
                    .stats
                    .lock_holds
                    .iter()
                    .map(|h| (h.from, ms(h.duration()))),
                f64::max,
            ),
        },
        Series {
            name: "decisions known to clients".into(),
            unit: "tx/s".into(),
            points: per_second(
                world
                    .lanes
                    .iter()
                    .filter(|(_, _, w)| w.starts_with("decided") || w.starts_with("presumed"))
                    .map(|(_, t, _)| (*t, 1.0)),
                |a, b| a + b,
            ),
        },
    ];
    let s = &world.stats;
    let verdicts = verdicts(&INVARIANTS, &report, |_| String::new());
    let opt = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.1}"));
    let figures = vec![
        ("transactions started".into(), s.started.to_string()),
        ("committed".into(), s.committed.to_string()),
        ("aborted".into(), s.aborted.to_string()),
        (
            "of which presumed aborted".into(),
            s.presumed_aborted.to_string(),
        ),
        (
            "throughput (per s)".into(),
            format!("{:.2}", s.throughput_per_sec()),
        ),
        ("latency p50 (ms)".into(), opt(s.latency_ms(50))),
        ("latency p99 (ms)".into(), opt(s.latency_ms(99))),
        (
            "longest lock hold (ms)".into(),
            format!("{:.1}", ms(s.longest_lock_hold)),
        ),
        (
            "lock-held time during coordinator crashes (ms)".into(),
            format!("{:.1}", ms(s.locked_during_crash)),
        ),
        (
            "delayed by a locked row".into(),
            s.delayed_by_locks.to_string(),
        ),
        (
            "of which refused (aborted)".into(),
            s.refused_by_locks.to_string(),
        ),
        ("inconsistent at rest".into(), s.inconsistent.to_string()),
        ("recoveries from the log".into(), s.recoveries.to_string()),
        (
            "messages sent by the coordinator".into(),
            s.sends.to_string(),
        ),
        ("log records made durable".into(), s.records.to_string()),
    ];
    RunView {
        pattern: "twopc".into(),
        seed: knobs.seed,
        replay: replay_command("twopc", knobs.seed, None, mutant),
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

impl Pattern for TwoPcPattern {
    fn name(&self) -> &'static str {
        "twopc"
    }

    fn about(&self) -> &'static str {
        "the checkout as two-phase commit (the saga's baseline): locks held from prepare to decision"
    }

    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }

    fn metrics(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("throughput", "per s"),
            ("latency p50", "ms"),
            ("latency p99", "ms"),
            ("longest lock hold", "ms"),
            ("locked during crash", "ms"),
            ("inconsistent", "sagas"),
        ]
    }

    /// About 10 s on this shared 2-core machine (`cargo run --release -- sweep twopc`:
    /// 8.8 to 11.3 s measured while others were building, 7 s of CPU).
    fn default_seeds(&self) -> SeedRange {
        SeedRange {
            start: 0,
            end: 1_000,
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
