//! What a check reads from the environment: `FAULTLINE_SEEDS`, `FAULTLINE_JOBS` and
//! `FAULTLINE_REPLAY`, parsed with errors that name the variable.

use super::CheckError;
use faultline_sim::SeedRange;
use std::path::PathBuf;

/// The variable naming the seeds to sweep, as `A..B` or `A..=B`.
pub const SEEDS_VAR: &str = "FAULTLINE_SEEDS";
/// The variable naming the worker threads of a sweep (at least 1).
pub const JOBS_VAR: &str = "FAULTLINE_JOBS";
/// The variable naming a plan file to replay instead of sweeping.
pub const REPLAY_VAR: &str = "FAULTLINE_REPLAY";

/// The check's knobs from the environment; each is `None` when its variable is unset
/// or empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `FAULTLINE_SEEDS`.
    pub seeds: Option<SeedRange>,
    /// `FAULTLINE_JOBS`.
    pub jobs: Option<usize>,
    /// `FAULTLINE_REPLAY`.
    pub replay: Option<PathBuf>,
}

impl Settings {
    /// The settings in the process environment.
    pub fn from_env() -> Result<Settings, CheckError> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings `var` gives (a variable's value by name, `None` when unset), so a
    /// test can parse settings without touching the process environment.
    ///
    /// ```
    /// use faultline::check::{CheckError, Settings};
    ///
    /// let vars = |name: &str| (name == "FAULTLINE_SEEDS").then(|| "0..=99".to_string());
    /// assert_eq!(Settings::from_vars(vars)?.seeds.map(|s| s.len()), Some(100));
    ///
    /// let bad = |name: &str| (name == "FAULTLINE_JOBS").then(|| "lots".to_string());
    /// let err = Settings::from_vars(bad).unwrap_err();
    /// assert!(err.to_string().contains("FAULTLINE_JOBS"));
    /// # Ok::<(), CheckError>(())
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, CheckError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let seeds = get(SEEDS_VAR)
            .map(|value| {
                value
                    .trim()
                    .parse::<SeedRange>()
                    .map_err(|e| CheckError::Env {
                        var: SEEDS_VAR,
                        value: value.clone(),
                        problem: e.to_string(),
                    })
            })
            .transpose()?;
        let jobs = get(JOBS_VAR)
            .map(|value| match value.trim().parse::<usize>() {
                Ok(j) if j >= 1 => Ok(j),
                _ => Err(CheckError::Env {
                    var: JOBS_VAR,
                    value: value.clone(),
                    problem: "not a whole number of threads, at least 1".to_string(),
                }),
            })
            .transpose()?;
        let replay = get(REPLAY_VAR).map(|v| PathBuf::from(v.trim()));
        Ok(Settings {
            seeds,
            jobs,
            replay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn parses_every_variable() {
        let s = Settings::from_vars(vars(&[
            (SEEDS_VAR, "10..20"),
            (JOBS_VAR, " 3 "),
            (REPLAY_VAR, "reports/failures/x-seed-1.json"),
        ]))
        .unwrap();
        assert_eq!(s.seeds, SeedRange::new(10, 20).ok());
        assert_eq!(s.jobs, Some(3));
        assert_eq!(
            s.replay,
            Some(PathBuf::from("reports/failures/x-seed-1.json"))
        );
        assert_eq!(Settings::from_vars(vars(&[])).unwrap(), Settings::default());
        assert_eq!(
            Settings::from_vars(vars(&[(SEEDS_VAR, "  ")])).unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, needles) in [
            (
                &[(SEEDS_VAR, "ten")][..],
                &["FAULTLINE_SEEDS", "`ten`", "A..B"][..],
            ),
            (&[(SEEDS_VAR, "9..3")], &["FAULTLINE_SEEDS", "inverted"]),
            (&[(JOBS_VAR, "0")], &["FAULTLINE_JOBS", "at least 1"]),
            (&[(JOBS_VAR, "-2")], &["FAULTLINE_JOBS", "`-2`"]),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = pairs;
            let err = Settings::from_vars(vars(pairs)).unwrap_err().to_string();
            for n in needles {
                assert!(err.contains(n), "{n:?} missing from {err}");
            }
        }
    }
}
