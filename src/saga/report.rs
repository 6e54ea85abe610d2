//! What the three checkout patterns (the two sagas and 2PC) show alike in the harness:
//! the metrics the sweep report compares across them, under the same names, and the
//! swimlanes of a run report.

use crate::harness::Metric;
use crate::harness::per_second;
use crate::saga::services::SagaId;
use faultline_sim::report::model::{Band, Lane, Series, Timeline};
use faultline_sim::{SimDuration, SimTime};
use std::collections::BTreeMap;

/// Sagas drawn as swimlanes in a run report.
pub(crate) const LANES_MAX: usize = 12;

/// The metrics every checkout pattern reports under the same names, so the sweep
/// report can set the sagas beside two-phase commit (see `registry::comparisons`).
pub(crate) const COMPARED: [(&str, &str); 6] = [
    ("throughput", "per s"),
    ("latency p50", "ms"),
    ("latency p99", "ms"),
    ("longest lock hold", "ms"),
    ("locked during crash", "ms"),
    ("inconsistent", "sagas"),
];

/// The `p`-th percentile (nearest rank, as the 2PC world's) of `d`, in ms.
pub(crate) fn percentile_ms(d: &[SimDuration], p: u64) -> Option<f64> {
    let mut v: Vec<u64> = d.iter().map(|d| d.as_nanos()).collect();
    v.sort_unstable();
    let rank = (p.min(100) * v.len() as u64).div_ceil(100).max(1);
    let i = usize::try_from(rank).ok()?.min(v.len()).checked_sub(1)?;
    v.get(i).map(|n| *n as f64 / 1e6)
}

/// What a saga world tells the compared metrics.
pub(crate) trait Checkouts {
    /// Sagas completed.
    fn completed_sagas(&self) -> u64;
    /// End of the arrivals, ms.
    fn arrivals_ms(&self) -> u64;
    /// Checkout-to-rest latency of each saga at rest.
    fn rest_latencies(&self) -> Vec<SimDuration>;
    /// Sagas left half-done (Failed, with an alert).
    fn half_done(&self) -> u64;
}

fn throughput<W: Checkouts>(w: &W) -> Option<f64> {
    Some(w.completed_sagas() as f64 / (w.arrivals_ms().max(1) as f64 / 1000.0))
}

fn latency_p50<W: Checkouts>(w: &W) -> Option<f64> {
    percentile_ms(&w.rest_latencies(), 50)
}

fn latency_p99<W: Checkouts>(w: &W) -> Option<f64> {
    percentile_ms(&w.rest_latencies(), 99)
}

fn no_lock<W>(_: &W) -> Option<f64> {
    Some(0.0)
}

fn half_done<W: Checkouts>(w: &W) -> Option<f64> {
    Some(w.half_done() as f64)
}

/// The compared metrics of a saga world, in [`COMPARED`]'s order: completed per
/// simulated second of arrivals, checkout-to-rest latency, no locks (a saga takes none:
/// its reservations do not block other checkouts), and the sagas left half-done.
pub(crate) const fn compared_metrics<W: Checkouts>() -> [Metric<W>; 6] {
    const fn m<W>(i: usize, value: fn(&W) -> Option<f64>) -> Metric<W> {
        Metric {
            name: COMPARED[i].0,
            unit: COMPARED[i].1,
            value,
        }
    }
    [
        m(0, throughput::<W>),
        m(1, latency_p50::<W>),
        m(2, latency_p99::<W>),
        m(3, no_lock::<W>),
        m(4, no_lock::<W>),
        m(5, half_done::<W>),
    ]
}

/// The field names of the checkout's knobs that are tuples (saga, choreography, 2PC).
pub(crate) const CHECKOUT_KNOB_FIELDS: &[(&str, &[&str])] = &[
    ("latency_ms", &["min", "max"]),
    ("backoff_ms", &["base_ms", "cap_ms"]),
];

/// Swimlanes of up to [`LANES_MAX`] sagas from `(saga, time, what)` notes, the sagas
/// that did not simply complete first: one band per step attempt or compensation (from
/// when it began to the next note), the lane named after how the saga ended.
pub(crate) fn saga_lanes(notes: &[(SagaId, SimTime, String)], end: SimTime) -> Vec<Lane> {
    let mut by_saga: BTreeMap<u64, Vec<(SimTime, String)>> = BTreeMap::new();
    for (saga, t, what) in notes {
        by_saga.entry(saga.0).or_default().push((*t, what.clone()));
    }
    let mut chosen: Vec<u64> = by_saga
        .iter()
        .filter(|(_, ev)| {
            ev.iter()
                .any(|(_, w)| w.contains("Compensated") || w.contains("Failed"))
        })
        .map(|(s, _)| *s)
        .take(LANES_MAX / 2)
        .collect();
    for s in by_saga.keys() {
        if chosen.len() >= LANES_MAX {
            break;
        }
        if !chosen.contains(s) {
            chosen.push(*s);
        }
    }
    chosen.sort();
    chosen
        .iter()
        .map(|s| {
            let mut ev = by_saga[s].clone();
            ev.sort_by_key(|e| e.0);
            let ending = ev
                .iter()
                .find(|(_, w)| w.starts_with("ended"))
                .map_or("running".to_string(), |(_, w)| {
                    w.trim_start_matches("ended ").to_lowercase()
                });
            let bands = ev
                .iter()
                .enumerate()
                .filter(|(_, (_, w))| !w.starts_with("ended"))
                .map(|(i, (t, w))| Band {
                    from: *t,
                    until: ev.get(i + 1).map_or(end, |n| n.0).max(*t),
                    label: w.clone(),
                })
                .collect();
            Lane {
                name: format!("saga {s}: {ending}"),
                bands,
            }
        })
        .collect()
}

/// A saga run's timeline: the swimlanes of [`saga_lanes`] and the sagas coming to rest
/// per second, from the world's `(saga, time, what)` notes.
pub(crate) fn saga_timeline(notes: &[(SagaId, SimTime, String)], end: SimTime) -> Timeline {
    let series = vec![Series {
        name: "sagas coming to rest".into(),
        unit: "sagas/s".into(),
        points: per_second(
            notes
                .iter()
                .filter(|(_, _, w)| w.starts_with("ended"))
                .map(|(_, t, _)| (*t, 1.0)),
            |a, b| a + b,
        ),
    }];
    let lanes = saga_lanes(notes, end);
    Timeline {
        shown: lanes_shown(notes, lanes.len()),
        lanes,
        series,
    }
}

/// Which sagas [`saga_lanes`] showed, in words, when not all of them: `12 of 314
/// sagas: the first 6 by id of the 9 that failed or compensated, then the first 6
/// others by id`.
fn lanes_shown(notes: &[(SagaId, SimTime, String)], shown: usize) -> String {
    let mut troubled: BTreeMap<u64, bool> = BTreeMap::new();
    for (saga, _, what) in notes {
        let t = troubled.entry(saga.0).or_default();
        *t |= what.contains("Compensated") || what.contains("Failed");
    }
    let total = troubled.len();
    if shown >= total {
        return String::new();
    }
    let bad = troubled.values().filter(|t| **t).count();
    let bad_shown = bad.min(LANES_MAX / 2);
    let others = shown - bad_shown;
    let bad_part = if bad == 0 {
        "none failed or compensated".to_string()
    } else if bad_shown == bad {
        format!("all {bad} that failed or compensated")
    } else {
        format!("the first {bad_shown} by id of the {bad} that failed or compensated")
    };
    format!("{shown} of {total} sagas: {bad_part}, then the first {others} others by id")
}
