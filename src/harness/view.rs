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
}
