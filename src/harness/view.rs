//! Helpers for a run's report view: the replay command, the knob list, the verdicts and
//! per-second series.

use faultline_sim::report::model::{BuildInfo, Verdict};
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
    let mut cmd = format!("{program} replay {} --seed {seed}", shell_quote(pattern));
    if let Some(file) = plan_file {
        cmd.push_str(" --plan ");
        cmd.push_str(&shell_quote(file));
    }
    if let Some(m) = mutant {
        cmd.push_str(" --mutant ");
        cmd.push_str(&shell_quote(m));
    }
    cmd
}

/// `word` as one word of a POSIX shell command line: as it is when every character is
/// one no shell treats specially (letters, digits and `-_./=:,+@%`), else in single
/// quotes, each `'` written `'\''`. So a replay command with a plan path such as
/// `my plans/$(rm -rf ~).json` pastes back as the one argument it was.
///
/// ```
/// use faultline::harness::shell_quote;
///
/// assert_eq!(shell_quote("reports/failures/breaker-seed-3.json"), "reports/failures/breaker-seed-3.json");
/// assert_eq!(shell_quote("my plans/a.json"), "'my plans/a.json'");
/// assert_eq!(shell_quote("it's"), r"'it'\''s'");
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(word: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return std::borrow::Cow::Borrowed(word);
    }
    std::borrow::Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
}

/// This build of faultline: its version and the git commit it was built from (recorded
/// by `build.rs`; `unknown` outside a git checkout). Every summary and page carries it.
pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("FAULTLINE_GIT_COMMIT").to_string(),
    }
}

/// Every knob of a pattern's knobs struct as (name, value), in name order, read from its
/// serde form (`None` shows as `none`). Compound values are written out with their
/// field names: a struct's fields by their own names (`name = sub-0, work_ms = …`), and a
/// tuple's by the names [`knob_list_named`] is given for it.
pub fn knob_list<T: serde::Serialize + fmt::Debug>(knobs: &T) -> Vec<(String, String)> {
    knob_list_named(knobs, &[])
}

/// [`knob_list`], with the field names of tuple-valued knobs: `fields` maps a knob's
/// name to the names of its tuple's fields in order (`("wait_in_open", &["initial_ms",
/// "multiplier", "max_ms", "jitter_percent"])`), so that `[1147,2,2294,47]` shows as
/// `initial_ms = 1147, multiplier = 2, max_ms = 2294, jitter_percent = 47`. A list of
/// such tuples (one per target, say) is written one tuple per `;`.
pub fn knob_list_named<T: serde::Serialize + fmt::Debug>(
    knobs: &T,
    fields: &[(&str, &[&str])],
) -> Vec<(String, String)> {
    match serde_json::to_value(knobs) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let names = fields.iter().find(|(n, _)| *n == k).map(|(_, f)| *f);
                let v = knob_value(&v, names);
                (k, v)
            })
            .collect(),
        _ => vec![("knobs".to_string(), format!("{knobs:?}"))],
    }
}

/// A knob's value in words: scalars as they are (strings unquoted, null as `none`),
/// objects as `field = value, …`, tuples named by `names` when their lengths match.
fn knob_value(v: &serde_json::Value, names: Option<&[&str]>) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k} = {}", knob_value(v, None)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(items) => match names {
            Some(names)
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|i| matches!(i, Value::Array(a) if a.len() == names.len())) =>
            {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("[{i}] {}", knob_value(v, Some(names))))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
            Some(names) if names.len() == items.len() => items
                .iter()
                .zip(names)
                .map(|(v, n)| format!("{n} = {}", knob_value(v, None)))
                .collect::<Vec<_>>()
                .join(", "),
            _ if items.iter().any(|i| i.is_object()) => items
                .iter()
                .map(|v| format!("({})", knob_value(v, None)))
                .collect::<Vec<_>>()
                .join("; "),
            _ => v.to_string(),
        },
        other => other.to_string(),
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
                promise: None,
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
            promise: None,
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

/// A level's series (a count that goes up and down: profiles behind, dead letters
/// waiting) for a run that ended at `end`, from `changes` (the time and new level of
/// each change, in time order) and the level it started at: for every second from zero,
/// the highest the level stood in that second (carried through seconds without a
/// change), then the level it ended at, at `end`. The chart so runs to the end of the
/// run (for a run that settled, to where everything converged) instead of stopping at
/// the last second with a change, showing that second's peak as where it ended.
///
/// ```
/// use faultline::harness::level_per_second;
/// use faultline_sim::SimTime;
///
/// let ms = SimTime::from_millis;
/// // Up to 3 at 0.5 s, down to 0 at 2.5 s; the run ends at 3.2 s.
/// let changes = [(ms(500), 3.0), (ms(2_500), 0.0)];
/// let points = level_per_second(changes, 0.0, ms(3_200));
/// assert_eq!(
///     points,
///     vec![(ms(0), 3.0), (ms(1_000), 3.0), (ms(2_000), 3.0), (ms(3_000), 0.0), (ms(3_200), 0.0)]
/// );
/// ```
pub fn level_per_second(
    changes: impl IntoIterator<Item = (SimTime, f64)>,
    start: f64,
    end: SimTime,
) -> Vec<(SimTime, f64)> {
    let last_second = end.as_nanos() / 1_000_000_000;
    let mut out: Vec<(SimTime, f64)> = Vec::new();
    let mut level = start;
    let mut second = 0u64;
    let mut peak = level;
    for (t, v) in changes {
        let s = (t.as_nanos() / 1_000_000_000).min(last_second);
        while second < s {
            out.push((SimTime::from_secs(second), peak));
            second += 1;
            peak = level;
        }
        level = v;
        peak = peak.max(v);
    }
    while second <= last_second {
        out.push((SimTime::from_secs(second), peak));
        second += 1;
        peak = level;
    }
    if out.last().is_some_and(|p| p.0 < end) {
        out.push((end, level));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each quoted word reaches a real shell as the one argument it was.
    #[test]
    fn shell_quoted_words_survive_a_real_shell() {
        let words = [
            "plain-word_1.json",
            "",
            "two words",
            "it's",
            "'",
            "''",
            "$(touch /tmp/faultline-pwned)",
            "`id`",
            "a;b|c&d>e<f",
            "*?[x]",
            "~root",
            "tab\there",
            "new\nline",
            "back\\slash \\'",
            "\u{1b}]0;title\u{7}",
            "é ü 日本",
            "-n",
        ];
        for word in words {
            let quoted = shell_quote(word);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {quoted}"))
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{word:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{quoted}");
        }
        assert_eq!(
            replay_command_of(
                "faultline",
                "breaker",
                3,
                Some("my plans/p.json"),
                Some("x")
            ),
            "faultline replay breaker --seed 3 --plan 'my plans/p.json' --mutant x"
        );
    }

    #[derive(Debug, serde::Serialize)]
    struct Knobs {
        wait_in_open: (u64, u32, u64, u32),
        budget: Option<(u64, u32, u32)>,
        work_ms: Vec<(u64, u64)>,
        subscriber: Sub,
        plain: Vec<u32>,
    }

    #[derive(Debug, serde::Serialize)]
    struct Sub {
        name: String,
        leave_ms: Option<u64>,
    }

    #[test]
    fn compound_knobs_are_labelled() {
        let knobs = Knobs {
            wait_in_open: (1147, 2, 2294, 47),
            budget: None,
            work_ms: vec![(9, 18), (4, 5)],
            subscriber: Sub {
                name: "sub-0".into(),
                leave_ms: None,
            },
            plain: vec![91],
        };
        let list = knob_list_named(
            &knobs,
            &[
                (
                    "wait_in_open",
                    &["initial_ms", "multiplier", "max_ms", "jitter_percent"],
                ),
                ("budget", &["ttl_secs", "min_per_sec", "retry_percent"]),
                ("work_ms", &["min", "max"]),
            ],
        );
        let get = |k: &str| list.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(
            get("wait_in_open"),
            "initial_ms = 1147, multiplier = 2, max_ms = 2294, jitter_percent = 47"
        );
        assert_eq!(get("budget"), "none");
        assert_eq!(
            get("work_ms"),
            "[0] min = 9, max = 18; [1] min = 4, max = 5"
        );
        assert_eq!(get("subscriber"), "leave_ms = none, name = sub-0");
        assert_eq!(get("plain"), "[91]");
    }
}
