//! `sweep --shard auto`: which shard this process is, read from the environment a batch
//! engine gives each task of an array.
//!
//! | engine | index | count |
//! |---|---|---|
//! | Kubernetes Indexed Job | `JOB_COMPLETION_INDEX` (from 0) | not in the env: `--shard-count N` or `FAULTLINE_SHARD_COUNT` |
//! | Slurm job array | `SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`, over `SLURM_ARRAY_TASK_STEP` | `SLURM_ARRAY_TASK_COUNT` |
//! | AWS Batch array job | `AWS_BATCH_JOB_ARRAY_INDEX` (from 0) | `AWS_BATCH_JOB_ARRAY_SIZE` |
//! | anything else (GitHub Actions matrix, a shell loop) | `FAULTLINE_SHARD_INDEX` (from 1, as in `--shard I/N`) | `FAULTLINE_SHARD_COUNT` |
//!
//! Exactly one engine's index variable must be set. A count given twice (`--shard-count`,
//! `FAULTLINE_SHARD_COUNT`, the engine's own) must agree.

use faultline_sim::sweep::Shard;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The environment variables `--shard auto` reads; everything else is ignored.
pub(crate) const VARS: &[&str] = &[
    K8S_INDEX,
    SLURM_ID,
    SLURM_COUNT,
    SLURM_MIN,
    SLURM_MAX,
    SLURM_STEP,
    AWS_INDEX,
    AWS_SIZE,
    OWN_INDEX,
    OWN_COUNT,
];

const K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
const SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
const SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
const SLURM_MIN: &str = "SLURM_ARRAY_TASK_MIN";
const SLURM_MAX: &str = "SLURM_ARRAY_TASK_MAX";
const SLURM_STEP: &str = "SLURM_ARRAY_TASK_STEP";
const AWS_INDEX: &str = "AWS_BATCH_JOB_ARRAY_INDEX";
const AWS_SIZE: &str = "AWS_BATCH_JOB_ARRAY_SIZE";
const OWN_INDEX: &str = "FAULTLINE_SHARD_INDEX";
const OWN_COUNT: &str = "FAULTLINE_SHARD_COUNT";

/// What `--shard` was given: a fixed `I/N`, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShardArg {
    /// `--shard I/N`.
    Fixed(Shard),
    /// `--shard auto`: from the batch engine's environment.
    Auto,
}

impl FromStr for ShardArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Ok(ShardArg::Auto);
        }
        text.parse::<Shard>()
            .map(ShardArg::Fixed)
            .map_err(|e| format!("{e}, or `auto` to read it from a batch engine's environment"))
    }
}

/// The batch engine a shard was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    /// A Kubernetes Indexed Job.
    Kubernetes,
    /// A Slurm job array.
    Slurm,
    /// An AWS Batch array job.
    AwsBatch,
    /// `FAULTLINE_SHARD_INDEX`/`FAULTLINE_SHARD_COUNT` (a GitHub Actions matrix, a script).
    Faultline,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Kubernetes => "Kubernetes Indexed Job",
            Engine::Slurm => "Slurm job array",
            Engine::AwsBatch => "AWS Batch array job",
            Engine::Faultline => "faultline's own variables",
        })
    }
}

/// Why `--shard auto` could not tell which shard this is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AutoShardError {
    /// No engine's index variable is set.
    #[error(
        "--shard auto found no shard index in the environment: none of {K8S_INDEX} (Kubernetes Indexed Job), {SLURM_ID} (Slurm job array), {AWS_INDEX} (AWS Batch array job) or {OWN_INDEX} (1-based, with {OWN_COUNT}; e.g. from a GitHub Actions matrix) is set"
    )]
    NoEngine,
    /// More than one engine's index variable is set.
    #[error(
        "--shard auto is ambiguous: {} are all set; unset all but one, or pass --shard I/N",
        .0.join(" and ")
    )]
    Ambiguous(Vec<&'static str>),
    /// A variable is not a whole number.
    #[error("--shard auto: {var}={value:?} is not a whole number")]
    NotANumber {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The engine does not say how many shards there are, and nothing else did.
    #[error(
        "--shard auto: {engine} ({index_var} is set) does not say how many shards there are: pass --shard-count N or set {OWN_COUNT}"
    )]
    CountMissing {
        /// The engine.
        engine: Engine,
        /// Its index variable.
        index_var: &'static str,
    },
    /// Two sources of the count disagree.
    #[error("--shard auto: the shard count is given twice and differs: {a} but {b}")]
    CountMismatch {
        /// One source, as `NAME=value`.
        a: String,
        /// The other.
        b: String,
    },
    /// The count is zero.
    #[error("--shard auto: {source_name} says 0 shards; it must be at least 1")]
    ZeroCount {
        /// Where it came from.
        source_name: String,
    },
    /// The index is outside `0..count` (or `1..=count` for `FAULTLINE_SHARD_INDEX`).
    #[error("--shard auto: {detail}, but there are {count} shards ({engine})")]
    IndexOutOfRange {
        /// The engine.
        engine: Engine,
        /// What was read, in words.
        detail: String,
        /// The count.
        count: u32,
    },
    /// The Slurm array's variables do not describe a range `MIN-MAX[:STEP]` this task
    /// is on.
    #[error(
        "--shard auto: the Slurm array is not a range MIN-MAX[:STEP] this task is on: {0}; submit with --array=A-B[:S], or pass --shard I/N"
    )]
    SlurmArray(String),
}

/// An environment: variable name to value (only [`VARS`] matter).
pub(crate) type Env = BTreeMap<String, String>;

/// The process's environment, as far as `--shard auto` reads it. A value that is not
/// UTF-8 is kept (lossily) so that it is reported, not ignored.
pub(crate) fn process_env() -> Env {
    VARS.iter()
        .filter_map(|v| std::env::var_os(v).map(|x| (v.to_string(), x.to_string_lossy().into())))
        .collect()
}

fn number(env: &Env, var: &'static str) -> Result<Option<u64>, AutoShardError> {
    match env.get(var) {
        None => Ok(None),
        Some(value) => {
            value
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| AutoShardError::NotANumber {
                    var,
                    value: value.clone(),
                })
        }
    }
}

/// The count from `--shard-count`, `FAULTLINE_SHARD_COUNT` and the engine's own variable,
/// which must agree where more than one is given.
fn count_of(
    env: &Env,
    count_arg: Option<u32>,
    engine: Engine,
    index_var: &'static str,
    engine_count: Option<(&'static str, u64)>,
) -> Result<u32, AutoShardError> {
    let mut given: Vec<(String, u64)> = Vec::new();
    if let Some(n) = count_arg {
        given.push(("--shard-count".into(), u64::from(n)));
    }
    if let Some(n) = number(env, OWN_COUNT)? {
        given.push((OWN_COUNT.into(), n));
    }
    if let Some((var, n)) = engine_count {
        given.push((var.into(), n));
    }
    let Some((first_name, first)) = given.first().cloned() else {
        return Err(AutoShardError::CountMissing { engine, index_var });
    };
    if let Some((name, n)) = given.iter().find(|(_, n)| *n != first) {
        return Err(AutoShardError::CountMismatch {
            a: format!("{first_name}={first}"),
            b: format!("{name}={n}"),
        });
    }
    if first == 0 {
        return Err(AutoShardError::ZeroCount {
            source_name: first_name,
        });
    }
    u32::try_from(first).map_err(|_| AutoShardError::NotANumber {
        var: "shard count",
        value: format!("{first} (more than {})", u32::MAX),
    })
}

/// The 1-based shard of a 0-based `index` of `count`.
fn shard_at(
    engine: Engine,
    detail: String,
    index: u64,
    count: u32,
) -> Result<Shard, AutoShardError> {
    let out_of_range = || AutoShardError::IndexOutOfRange {
        engine,
        detail: detail.clone(),
        count,
    };
    if index >= u64::from(count) {
        return Err(out_of_range());
    }
    // index < count <= u32::MAX, so index + 1 fits.
    let one_based = u32::try_from(index + 1).map_err(|_| out_of_range())?;
    Shard::new(one_based, count).map_err(|_| out_of_range())
}

/// Which shard `env` says this process is, and the engine that said so. `count_arg` is
/// `--shard-count`.
pub(crate) fn shard_from_env(
    env: &Env,
    count_arg: Option<u32>,
) -> Result<(Shard, Engine), AutoShardError> {
    let set: Vec<&'static str> = [K8S_INDEX, SLURM_ID, AWS_INDEX, OWN_INDEX]
        .into_iter()
        .filter(|v| env.contains_key(*v))
        .collect();
    let engine = match set.as_slice() {
        [] => return Err(AutoShardError::NoEngine),
        [K8S_INDEX] => Engine::Kubernetes,
        [SLURM_ID] => Engine::Slurm,
        [AWS_INDEX] => Engine::AwsBatch,
        [_] => Engine::Faultline,
        _ => return Err(AutoShardError::Ambiguous(set)),
    };
    let num = |var| number(env, var);
    let shard = match engine {
        Engine::Kubernetes => {
            let index = num(K8S_INDEX)?.unwrap_or_default();
            let count = count_of(env, count_arg, engine, K8S_INDEX, None)?;
            shard_at(engine, format!("{K8S_INDEX}={index}"), index, count)?
        }
        Engine::AwsBatch => {
            let index = num(AWS_INDEX)?.unwrap_or_default();
            let size = num(AWS_SIZE)?.map(|n| (AWS_SIZE, n));
            let count = count_of(env, count_arg, engine, AWS_INDEX, size)?;
            shard_at(engine, format!("{AWS_INDEX}={index}"), index, count)?
        }
        Engine::Faultline => {
            let index = num(OWN_INDEX)?.unwrap_or_default();
            let count = count_of(env, count_arg, engine, OWN_INDEX, None)?;
            if index == 0 {
                return Err(AutoShardError::IndexOutOfRange {
                    engine,
                    detail: format!("{OWN_INDEX}=0 (it counts from 1, as --shard I/N does)"),
                    count,
                });
            }
            shard_at(engine, format!("{OWN_INDEX}={index}"), index - 1, count)?
        }
        Engine::Slurm => slurm(env, count_arg)?,
    };
    Ok((shard, engine))
}

/// A Slurm array task's shard: its position in `MIN, MIN+STEP, …, MAX`.
fn slurm(env: &Env, count_arg: Option<u32>) -> Result<Shard, AutoShardError> {
    let id = number(env, SLURM_ID)?.unwrap_or_default();
    let engine_count = number(env, SLURM_COUNT)?.map(|n| (SLURM_COUNT, n));
    let count = count_of(env, count_arg, Engine::Slurm, SLURM_ID, engine_count)?;
    let min = number(env, SLURM_MIN)?.unwrap_or(0);
    let step = number(env, SLURM_STEP)?.unwrap_or(1);
    let max = number(env, SLURM_MAX)?;
    let bad = |why: String| AutoShardError::SlurmArray(why);
    if step == 0 {
        return Err(bad(format!("{SLURM_STEP}=0")));
    }
    if id < min {
        return Err(bad(format!("{SLURM_ID}={id} is below {SLURM_MIN}={min}")));
    }
    if (id - min) % step != 0 {
        return Err(bad(format!(
            "{SLURM_ID}={id} is not {SLURM_MIN}={min} plus a multiple of {SLURM_STEP}={step}"
        )));
    }
    if let Some(max) = max {
        // A list such as --array=1,3,7 has MAX - MIN + 1 != COUNT with step 1: the task's
        // position in the list cannot be told from the env.
        let span = max
            .checked_sub(min)
            .map(|d| d / step + 1)
            .ok_or_else(|| bad(format!("{SLURM_MAX}={max} is below {SLURM_MIN}={min}")))?;
        if span != u64::from(count) {
            return Err(bad(format!(
                "{SLURM_MIN}={min} to {SLURM_MAX}={max} by {step} is {span} tasks, but the count is {count}"
            )));
        }
    }
    shard_at(
        Engine::Slurm,
        format!(
            "{SLURM_ID}={id} (task {} from {SLURM_MIN}={min} by {step})",
            (id - min) / step
        ),
        (id - min) / step,
        count,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn shard(i: u32, n: u32) -> Shard {
        Shard::new(i, n).unwrap()
    }

    #[test]
    fn shard_arg_parses_auto_and_fixed() {
        assert_eq!("auto".parse::<ShardArg>(), Ok(ShardArg::Auto));
        assert_eq!("2/4".parse::<ShardArg>(), Ok(ShardArg::Fixed(shard(2, 4))));
        let e = "5/3".parse::<ShardArg>().unwrap_err();
        assert!(e.contains("out of range") && e.contains("auto"), "{e}");
    }

    #[test]
    fn kubernetes_indexed_job_needs_a_count() {
        let e = env(&[(K8S_INDEX, "2")]);
        assert_eq!(
            shard_from_env(&e, None),
            Err(AutoShardError::CountMissing {
                engine: Engine::Kubernetes,
                index_var: K8S_INDEX
            })
        );
        assert_eq!(
            shard_from_env(&e, Some(4)),
            Ok((shard(3, 4), Engine::Kubernetes))
        );
        let e = env(&[(K8S_INDEX, "0"), (OWN_COUNT, "8")]);
        assert_eq!(
            shard_from_env(&e, None),
            Ok((shard(1, 8), Engine::Kubernetes))
        );
        // Both counts, disagreeing.
        assert!(matches!(
            shard_from_env(&e, Some(4)),
            Err(AutoShardError::CountMismatch { .. })
        ));
        // The last index of 4 is 3; 4 is out of range.
        let e = env(&[(K8S_INDEX, "4")]);
        assert!(matches!(
            shard_from_env(&e, Some(4)),
            Err(AutoShardError::IndexOutOfRange { count: 4, .. })
        ));
        let e = env(&[(K8S_INDEX, "x")]);
        assert!(matches!(
            shard_from_env(&e, Some(4)),
            Err(AutoShardError::NotANumber { var: K8S_INDEX, .. })
        ));
        assert!(matches!(
            shard_from_env(&env(&[(K8S_INDEX, "0")]), Some(0)),
            Err(AutoShardError::ZeroCount { .. })
        ));
    }

    #[test]
    fn slurm_array_positions_follow_min_and_step() {
        // --array=0-3
        let e = env(&[
            (SLURM_ID, "3"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "0"),
            (SLURM_MAX, "3"),
        ]);
        assert_eq!(shard_from_env(&e, None), Ok((shard(4, 4), Engine::Slurm)));
        // --array=1-7:2 is tasks 1, 3, 5, 7: task 5 is the third.
        let e = env(&[
            (SLURM_ID, "5"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "1"),
            (SLURM_MAX, "7"),
            (SLURM_STEP, "2"),
        ]);
        assert_eq!(shard_from_env(&e, None), Ok((shard(3, 4), Engine::Slurm)));
        // --array=1,3,7: not a range, refused rather than guessed.
        let e = env(&[
            (SLURM_ID, "3"),
            (SLURM_COUNT, "3"),
            (SLURM_MIN, "1"),
            (SLURM_MAX, "7"),
            (SLURM_STEP, "1"),
        ]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::SlurmArray(_))
        ));
        // A task off the step.
        let e = env(&[
            (SLURM_ID, "4"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "1"),
            (SLURM_STEP, "2"),
        ]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::SlurmArray(_))
        ));
        // Without the count (an old Slurm): --shard-count supplies it, and must agree
        // with Slurm's when both are there.
        let e = env(&[(SLURM_ID, "1")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::CountMissing { .. })
        ));
        assert_eq!(
            shard_from_env(&e, Some(2)),
            Ok((shard(2, 2), Engine::Slurm))
        );
        let e = env(&[(SLURM_ID, "1"), (SLURM_COUNT, "4"), (SLURM_MIN, "0")]);
        assert!(matches!(
            shard_from_env(&e, Some(2)),
            Err(AutoShardError::CountMismatch { .. })
        ));
        let e = env(&[(SLURM_ID, "0"), (SLURM_COUNT, "4"), (SLURM_MIN, "1")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::SlurmArray(_))
        ));
    }

    #[test]
    fn aws_batch_array_reads_index_and_size() {
        let e = env(&[(AWS_INDEX, "9"), (AWS_SIZE, "10")]);
        assert_eq!(
            shard_from_env(&e, None),
            Ok((shard(10, 10), Engine::AwsBatch))
        );
        let e = env(&[(AWS_INDEX, "10"), (AWS_SIZE, "10")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::IndexOutOfRange { count: 10, .. })
        ));
        let e = env(&[(AWS_INDEX, "0")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::CountMissing { .. })
        ));
        assert_eq!(
            shard_from_env(&e, Some(3)),
            Ok((shard(1, 3), Engine::AwsBatch))
        );
    }

    #[test]
    fn faultline_variables_count_from_one() {
        let e = env(&[(OWN_INDEX, "2"), (OWN_COUNT, "4")]);
        assert_eq!(
            shard_from_env(&e, None),
            Ok((shard(2, 4), Engine::Faultline))
        );
        let e = env(&[(OWN_INDEX, "0"), (OWN_COUNT, "4")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::IndexOutOfRange { .. })
        ));
        let e = env(&[(OWN_INDEX, "5"), (OWN_COUNT, "4")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::IndexOutOfRange { .. })
        ));
        let e = env(&[(OWN_INDEX, "1")]);
        assert!(matches!(
            shard_from_env(&e, None),
            Err(AutoShardError::CountMissing { .. })
        ));
    }

    #[test]
    fn no_engine_or_two_engines_are_refused() {
        assert_eq!(
            shard_from_env(&env(&[(OWN_COUNT, "4")]), Some(4)),
            Err(AutoShardError::NoEngine)
        );
        let e = env(&[(K8S_INDEX, "0"), (SLURM_ID, "0"), (OWN_COUNT, "2")]);
        let err = shard_from_env(&e, None).unwrap_err();
        assert_eq!(err, AutoShardError::Ambiguous(vec![K8S_INDEX, SLURM_ID]));
        assert!(
            err.to_string()
                .contains("JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID")
        );
        // Every message names what to do.
        assert!(
            AutoShardError::NoEngine
                .to_string()
                .contains("FAULTLINE_SHARD_INDEX")
        );
    }
}
