//! Helpers for a run's report view: the replay command, the knob list, the verdicts and
//! per-second series.

use faultline_sim::report::model::Verdict;
use faultline_sim::{RunReport, SimTime};
use std::collections::BTreeMap;
use std::fmt;

/// The command that replays a run of `pattern`: by seed, or by seed and plan file, of
/// the reference implementation or of a mutant.
pub fn replay_command(
    pattern: &str,
    seed: u64,
    plan_file: Option<&str>,
    mutant: Option<&str>,
) -> String {
    replay_command_of("cargo run --release --", pattern, seed, plan_file, mutant)
}

/// [`replay_command`] for the command `program` (the binary running, for the CLI).
pub(crate) fn replay_command_of(
    program: &str,
    pattern: &str,
    seed: u64,
    plan_file: Option<&str>,
    mutant: Option<&str>,
) -> String {
    let mut cmd = format!("{program} replay {pattern} --seed {seed}");
    if let Some(file) = plan_file {
        cmd.push_str(" --plan ");
        cmd.push_str(file);
    }
    if let Some(m) = mutant {
        cmd.push_str(" --mutant ");
        cmd.push_str(m);
    }
    cmd
}

/// Every knob of a pattern's knobs struct as (name, value), in name order, read from its
/// serde form (`None` shows as `none`).
pub fn knob_list<T: serde::Serialize + fmt::Debug>(knobs: &T) -> Vec<(String, String)> {
    match serde_json::to_value(knobs) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::Null => "none".to_string(),
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        _ => vec![("knobs".to_string(), format!("{knobs:?}"))],
    }
}

/// Each invariant's verdict after `report`: the broken one carries the failure; when the
/// run stopped early the others held "until the run stopped"; otherwise `note` says how
/// each held. A failure outside `invariants` (the engine's `sim.*`) is added last.
pub fn verdicts(
    invariants: &[&str],
    report: &RunReport,
    note: impl Fn(&str) -> String,
) -> Vec<Verdict> {
    let violated = report.outcome.invariant();
    let mut out: Vec<Verdict> = invariants
        .iter()
        .map(|name| {
            let broken = violated == Some(*name);
            Verdict {
                name: name.to_string(),
                held: !broken,
                note: if broken {
                    report.outcome.to_string()
                } else if violated.is_some() {
                    "held until the run stopped".into()
                } else {
                    note(name)
                },
            }
        })
        .collect();
    if let Some(v) = violated.filter(|v| !invariants.contains(v)) {
        out.push(Verdict {
            name: v.to_string(),
            held: false,
            note: report.outcome.to_string(),
        });
    }
    out
}

/// Points bucketed by whole second, combined with `combine` (e.g. `f64::max`, or `+` to
/// count), for a per-second series; seconds without points are left out.
pub fn per_second(
    points: impl IntoIterator<Item = (SimTime, f64)>,
    combine: fn(f64, f64) -> f64,
) -> Vec<(SimTime, f64)> {
    let mut by: BTreeMap<u64, f64> = BTreeMap::new();
    for (t, v) in points {
        by.entry(t.as_millis() / 1000)
            .and_modify(|e| *e = combine(*e, v))
            .or_insert(v);
    }
    by.into_iter()
        .map(|(s, v)| (SimTime::from_secs(s), v))
        .collect()
}

/// The note `note` gives each invariant of `invariants`, for a
/// [`Description`](super::Description) (an empty note is left out).
pub fn notes(
    invariants: &[&'static str],
    note: impl Fn(&str) -> String,
) -> Vec<(&'static str, String)> {
    invariants
        .iter()
        .map(|name| (*name, note(name)))
        .filter(|(_, n)| !n.is_empty())
        .collect()
}
