//! The checkout as two-phase commit, the saga's baseline, as a [`Scenario`] of the
//! harness. Its metrics use the saga comparison's names and units, so a sweep of both
//! lines up side by side.

use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes, per_second};
use crate::saga::TwoPcCoordinator;
use crate::saga::checkout::SagaKnobs;
use crate::saga::report::{COMPARED, LANES_MAX};
use crate::saga::twopc::core::Coordinator;
use crate::saga::twopc::invariants::INVARIANTS;
use crate::saga::twopc::mutants::CATALOG;
use crate::saga::twopc::world::{TwoPcWorld, run};
use faultline_sim::report::model::{Band, Lane, Series, Timeline};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, SimTime, TraceMode};
use std::collections::BTreeMap;

/// The checkout as two-phase commit, with a durable coordinator log.
#[derive(Clone, Copy, Debug, Default)]
pub struct TwoPcPattern;

fn ms(d: faultline_sim::SimDuration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

/// The key metrics of a run of any coordinator, under the saga comparison's names and
/// units ([`COMPARED`]), read from what the world observed (its stats): the reference's
/// ([`Scenario::METRICS`]) and a plug-in's ([`Host::metrics_in`]).
const fn metrics<C: TwoPcCoordinator>() -> [Metric<TwoPcWorld<C>>; 6] {
    [
        Metric {
            name: COMPARED[0].0,
            unit: COMPARED[0].1,
            value: |w| Some(w.stats.throughput_per_sec()),
        },
        Metric {
            name: COMPARED[1].0,
            unit: COMPARED[1].1,
            value: |w| w.stats.latency_ms(50),
        },
        Metric {
            name: COMPARED[2].0,
            unit: COMPARED[2].1,
            value: |w| w.stats.latency_ms(99),
        },
        Metric {
            name: COMPARED[3].0,
            unit: COMPARED[3].1,
            value: |w| Some(ms(w.stats.longest_lock_hold)),
        },
        Metric {
            name: COMPARED[4].0,
            unit: COMPARED[4].1,
            // No value without a coordinator crash (0 there by construction).
            value: |w| (!w.stats.crashes.is_empty()).then(|| ms(w.stats.locked_during_crash)),
        },
        Metric {
            name: COMPARED[5].0,
            unit: COMPARED[5].1,
            value: |w| w.stats.inconsistent.map(|n| n as f64),
        },
    ]
}

impl Scenario for TwoPcPattern {
    type Knobs = SagaKnobs;
    type World = TwoPcWorld;

    const NAME: &'static str = "twopc";
    const ABOUT: &'static str = "the checkout as two-phase commit (the saga's baseline): locks held from prepare to decision";
    const PROMISES: &'static [(&'static str, &'static str)] =
        &crate::saga::twopc::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<TwoPcWorld>] = &metrics::<Coordinator>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// About 10 s on this shared 2-core machine (`cargo run --release -- sweep twopc`:
    /// 8.8 to 11.3 s measured while others were building, 7 s of CPU).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 1_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        crate::saga::report::CHECKOUT_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> SagaKnobs {
        SagaKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &SagaKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &SagaKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &SagaKnobs) -> Result<TwoPcWorld, ConfigError> {
        TwoPcWorld::new(knobs.clone())
    }

    fn simulate(
        &self,
        world: TwoPcWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, TwoPcWorld) {
        run(world, plan, trace)
    }

    fn describe(&self, _knobs: &SagaKnobs, report: &RunReport, world: &TwoPcWorld) -> Description {
        describe(report, world)
    }
}

/// The report view of one run of any coordinator, from what the world observed (its
/// notes and stats): the reference's ([`Scenario::describe`]) and a plug-in's
/// ([`Host::describe_in`]).
fn describe<C: TwoPcCoordinator>(report: &RunReport, world: &TwoPcWorld<C>) -> Description {
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
    let notes = notes(&INVARIANTS, |_| String::new());
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
        (
            "inconsistent at rest".into(),
            s.inconsistent
                .map_or_else(|| crate::harness::NOT_JUDGED.to_string(), |n| n.to_string()),
        ),
        ("recoveries from the log".into(), s.recoveries.to_string()),
        (
            "messages sent by the coordinator".into(),
            s.sends.to_string(),
        ),
        ("log records made durable".into(), s.records.to_string()),
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
impl<C: TwoPcCoordinator> Host<TwoPcWorld<C>> for TwoPcPattern {
    fn simulate_in(
        &self,
        world: TwoPcWorld<C>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, TwoPcWorld<C>) {
        run(world, plan, trace)
    }

    fn metrics_in(&self) -> Vec<Metric<TwoPcWorld<C>>> {
        metrics::<C>().to_vec()
    }

    fn describe_in(
        &self,
        _knobs: &SagaKnobs,
        report: &RunReport,
        world: &TwoPcWorld<C>,
    ) -> Description {
        describe(report, world)
    }
}
