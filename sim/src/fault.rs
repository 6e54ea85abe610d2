//! Fault plans as data.
//!
//! A [`FaultPlan`] is plain serde data: a horizon (the end of the safety phase) and a
//! list of [`Fault`]s, each a kind, a target and a window `[from_ms, until_ms)`. Plans
//! round-trip through JSON, so a failing plan can be written to a file, edited by hand
//! and replayed. They are made three ways: by hand, by [`FaultPlan::generate`] from a
//! seed (swarm testing), and by [`FaultPlan::strategy`] for proptest (whose shrinking
//! removes faults, shortens them and moves them later).
//!
//! In JSON a fault looks like
//! `{"kind": "slow", "target": "sms_api", "from_ms": 1000, "until_ms": 4000,
//!   "latency_ms_min": 200, "latency_ms_max": 900}`.
//!
//! | kind        | target is a | extra fields                                 | effect while active |
//! |-------------|-------------|----------------------------------------------|---------------------|
//! | `outage`    | target      | —                                            | every call fails |
//! | `slow`      | target      | `latency_ms_min`, `latency_ms_max`           | calls take that much longer |
//! | `errors`    | target      | `ratio`                                      | that share of calls fail |
//! | `crash`     | node        | —                                            | the node is down from `from_ms` and restarts at `until_ms` |
//! | `torn_crash`| node        | —                                            | a `crash` that also tears the write in flight: the node's log keeps a prefix of its unsynced last record (a node without a log of bytes takes it as a `crash`) |
//! | `drop`      | link        | `ratio`                                      | that share of messages vanish |
//! | `duplicate` | link        | `ratio`                                      | that share of messages arrive twice |
//! | `delay`     | link        | `ratio`, `latency_ms_min`, `latency_ms_max`  | that share of messages arrive late (reordered) |

use crate::rng::{Ratio, SimRng};
use crate::time::{SimDuration, SimTime};
#[cfg(feature = "proptest")]
use proptest::{prelude::*, strategy::BoxedStrategy};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of fault, without their parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKindTag {
    /// See [`FaultKind::Outage`].
    Outage,
    /// See [`FaultKind::Slow`].
    Slow,
    /// See [`FaultKind::Errors`].
    Errors,
    /// See [`FaultKind::Crash`].
    Crash,
    /// See [`FaultKind::Drop`].
    Drop,
    /// See [`FaultKind::Duplicate`].
    Duplicate,
    /// See [`FaultKind::Delay`].
    Delay,
    /// See [`FaultKind::TornCrash`].
    TornCrash,
}

impl FaultKindTag {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKindTag; 8] = [
        FaultKindTag::Outage,
        FaultKindTag::Slow,
        FaultKindTag::Errors,
        FaultKindTag::Crash,
        FaultKindTag::Drop,
        FaultKindTag::Duplicate,
        FaultKindTag::Delay,
        FaultKindTag::TornCrash,
    ];

    /// Every kind but [`TornCrash`](FaultKindTag::TornCrash): what a world whose nodes
    /// keep no log of bytes (nothing to tear) understands.
    pub const UNTORN: [FaultKindTag; 7] = [
        FaultKindTag::Outage,
        FaultKindTag::Slow,
        FaultKindTag::Errors,
        FaultKindTag::Crash,
        FaultKindTag::Drop,
        FaultKindTag::Duplicate,
        FaultKindTag::Delay,
    ];

    /// The name used in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKindTag::Outage => "outage",
            FaultKindTag::Slow => "slow",
            FaultKindTag::Errors => "errors",
            FaultKindTag::Crash => "crash",
            FaultKindTag::Drop => "drop",
            FaultKindTag::Duplicate => "duplicate",
            FaultKindTag::Delay => "delay",
            FaultKindTag::TornCrash => "torn_crash",
        }
    }

    /// What the target of this kind names: a target (a service or API), a node, or a link.
    pub const fn target_class(self) -> TargetClass {
        match self {
            FaultKindTag::Outage | FaultKindTag::Slow | FaultKindTag::Errors => TargetClass::Target,
            FaultKindTag::Crash | FaultKindTag::TornCrash => TargetClass::Node,
            FaultKindTag::Drop | FaultKindTag::Duplicate | FaultKindTag::Delay => TargetClass::Link,
        }
    }
}

impl fmt::Display for FaultKindTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fault's `target` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetClass {
    /// A service or external API that calls go to.
    Target,
    /// A process that can crash and restart.
    Node,
    /// A message channel between two actors.
    Link,
}

/// A fault's kind and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The target is unavailable: every call fails.
    Outage,
    /// Calls to the target take an extra latency drawn uniformly from the range.
    Slow {
        /// Least added latency, milliseconds.
        latency_ms_min: u64,
        /// Most added latency, milliseconds.
        latency_ms_max: u64,
    },
    /// That share of calls to the target fail.
    Errors {
        /// Share of calls that fail.
        ratio: Ratio,
    },
    /// The node is down during the window and restarts when it ends.
    Crash,
    /// That share of messages on the link vanish.
    Drop {
        /// Share of messages dropped.
        ratio: Ratio,
    },
    /// That share of messages on the link are delivered twice.
    Duplicate {
        /// Share of messages duplicated.
        ratio: Ratio,
    },
    /// That share of messages on the link get an extra delay (and so may be reordered).
    Delay {
        /// Share of messages delayed.
        ratio: Ratio,
        /// Least added delay, milliseconds.
        latency_ms_min: u64,
        /// Most added delay, milliseconds.
        latency_ms_max: u64,
    },
    /// A [`Crash`](FaultKind::Crash) that also tears the write in flight: what the node
    /// had written and not yet synced is lost, except a prefix of the first such record,
    /// which its log keeps as a torn last line for the recovery to deal with. A node
    /// without a log of bytes takes it as a plain crash.
    TornCrash,
}

impl FaultKind {
    /// True for both kinds of crash ([`Crash`](FaultKind::Crash) and
    /// [`TornCrash`](FaultKind::TornCrash)): the node is down during the window.
    pub const fn is_crash(&self) -> bool {
        matches!(self, FaultKind::Crash | FaultKind::TornCrash)
    }

    /// The kind without parameters.
    pub const fn tag(&self) -> FaultKindTag {
        match self {
            FaultKind::Outage => FaultKindTag::Outage,
            FaultKind::Slow { .. } => FaultKindTag::Slow,
            FaultKind::Errors { .. } => FaultKindTag::Errors,
            FaultKind::Crash => FaultKindTag::Crash,
            FaultKind::Drop { .. } => FaultKindTag::Drop,
            FaultKind::Duplicate { .. } => FaultKindTag::Duplicate,
            FaultKind::Delay { .. } => FaultKindTag::Delay,
            FaultKind::TornCrash => FaultKindTag::TornCrash,
        }
    }
}

/// One fault: a kind acting on a target during `[from_ms, until_ms)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawFault", into = "RawFault")]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// The target, node or link it goes wrong on (see [`FaultKindTag::target_class`]).
    pub target: String,
    /// Start of the window, milliseconds of virtual time (inclusive).
    pub from_ms: u64,
    /// End of the window, milliseconds of virtual time (exclusive); after `from_ms`.
    pub until_ms: u64,
}

impl Fault {
    /// A fault, validated as a plan file would be.
    pub fn new(
        kind: FaultKind,
        target: impl Into<String>,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Fault, PlanError> {
        let f = Fault {
            kind,
            target: target.into(),
            from_ms,
            until_ms,
        };
        f.validate()?;
        Ok(f)
    }

    /// Start of the window.
    pub fn from(&self) -> SimTime {
        SimTime::from_millis(self.from_ms)
    }
    /// End of the window.
    pub fn until(&self) -> SimTime {
        SimTime::from_millis(self.until_ms)
    }
    /// Length of the window.
    pub fn duration(&self) -> SimDuration {
        self.until() - self.from()
    }
    /// True when `t` lies in `[from, until)`.
    #[inline]
    pub fn is_active(&self, t: SimTime) -> bool {
        self.from() <= t && t < self.until()
    }

    /// Checks the window and the parameters.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.target.is_empty() {
            return Err(PlanError::Invalid {
                field: "target".into(),
                message: "must not be empty".into(),
            });
        }
        if self.until_ms <= self.from_ms {
            return Err(PlanError::Invalid {
                field: "until_ms".into(),
                message: format!(
                    "window is empty or inverted: until_ms ({}) must be after from_ms ({})",
                    self.until_ms, self.from_ms
                ),
            });
        }
        match self.kind {
            FaultKind::Slow {
                latency_ms_min,
                latency_ms_max,
            }
            | FaultKind::Delay {
                latency_ms_min,
                latency_ms_max,
                ..
            } if latency_ms_max < latency_ms_min => Err(PlanError::Invalid {
                field: "latency_ms_max".into(),
                message: format!(
                    "latency range is inverted: latency_ms_max ({latency_ms_max}) is below latency_ms_min ({latency_ms_min})"
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} [{}ms, {}ms)",
            self.kind.tag(),
            self.target,
            self.from_ms,
            self.until_ms
        )?;
        match self.kind {
            FaultKind::Outage | FaultKind::Crash | FaultKind::TornCrash => Ok(()),
            FaultKind::Slow {
                latency_ms_min,
                latency_ms_max,
            } => write!(f, " +{latency_ms_min}..={latency_ms_max}ms"),
            FaultKind::Errors { ratio }
            | FaultKind::Drop { ratio }
            | FaultKind::Duplicate { ratio } => write!(f, " ratio {ratio}"),
            FaultKind::Delay {
                ratio,
                latency_ms_min,
                latency_ms_max,
            } => write!(f, " ratio {ratio} +{latency_ms_min}..={latency_ms_max}ms"),
        }
    }
}

/// The flat JSON form of a fault; converted to and from [`Fault`] with validation.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: FaultKindTag,
    target: String,
    from_ms: u64,
    until_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio: Option<Ratio>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms_min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_ms_max: Option<u64>,
}

impl TryFrom<RawFault> for Fault {
    type Error = PlanError;
    fn try_from(raw: RawFault) -> Result<Fault, PlanError> {
        let tag = raw.kind;
        let need = |field: &'static str, v: Option<u64>| {
            v.ok_or_else(|| PlanError::Invalid {
                field: field.into(),
                message: format!("is required for kind `{tag}`"),
            })
        };
        let need_ratio = |v: Option<Ratio>| {
            v.ok_or_else(|| PlanError::Invalid {
                field: "ratio".into(),
                message: format!("is required for kind `{tag}`"),
            })
        };
        let forbid = |field: &'static str, present: bool| {
            if present {
                Err(PlanError::Invalid {
                    field: field.into(),
                    message: format!("is not used by kind `{tag}`"),
                })
            } else {
                Ok(())
            }
        };
        let uses_ratio = matches!(
            tag,
            FaultKindTag::Errors
                | FaultKindTag::Drop
                | FaultKindTag::Duplicate
                | FaultKindTag::Delay
        );
        let uses_latency = matches!(tag, FaultKindTag::Slow | FaultKindTag::Delay);
        if !uses_ratio {
            forbid("ratio", raw.ratio.is_some())?;
        }
        if !uses_latency {
            forbid("latency_ms_min", raw.latency_ms_min.is_some())?;
            forbid("latency_ms_max", raw.latency_ms_max.is_some())?;
        }
        let kind = match tag {
            FaultKindTag::Outage => FaultKind::Outage,
            FaultKindTag::Crash => FaultKind::Crash,
            FaultKindTag::TornCrash => FaultKind::TornCrash,
            FaultKindTag::Slow => FaultKind::Slow {
                latency_ms_min: need("latency_ms_min", raw.latency_ms_min)?,
                latency_ms_max: need("latency_ms_max", raw.latency_ms_max)?,
            },
            FaultKindTag::Errors => FaultKind::Errors {
                ratio: need_ratio(raw.ratio)?,
            },
            FaultKindTag::Drop => FaultKind::Drop {
                ratio: need_ratio(raw.ratio)?,
            },
            FaultKindTag::Duplicate => FaultKind::Duplicate {
                ratio: need_ratio(raw.ratio)?,
            },
            FaultKindTag::Delay => FaultKind::Delay {
                ratio: need_ratio(raw.ratio)?,
                latency_ms_min: need("latency_ms_min", raw.latency_ms_min)?,
                latency_ms_max: need("latency_ms_max", raw.latency_ms_max)?,
            },
        };
        Fault::new(kind, raw.target, raw.from_ms, raw.until_ms)
    }
}

impl From<Fault> for RawFault {
    fn from(f: Fault) -> RawFault {
        let (ratio, lo, hi) = match f.kind {
            FaultKind::Outage | FaultKind::Crash | FaultKind::TornCrash => (None, None, None),
            FaultKind::Slow {
                latency_ms_min,
                latency_ms_max,
            } => (None, Some(latency_ms_min), Some(latency_ms_max)),
            FaultKind::Errors { ratio }
            | FaultKind::Drop { ratio }
            | FaultKind::Duplicate { ratio } => (Some(ratio), None, None),
            FaultKind::Delay {
                ratio,
                latency_ms_min,
                latency_ms_max,
            } => (Some(ratio), Some(latency_ms_min), Some(latency_ms_max)),
        };
        RawFault {
            kind: f.kind.tag(),
            target: f.target,
            from_ms: f.from_ms,
            until_ms: f.until_ms,
            ratio,
            latency_ms_min: lo,
            latency_ms_max: hi,
        }
    }
}

/// A whole fault plan: the faults of the safety phase, which ends at the horizon.
/// At the horizon every fault heals and the liveness phase begins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// The seed this plan belongs to, when it was written down with one (a failure's
    /// plan file carries it, so that the file alone replays the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// End of the safety phase, milliseconds of virtual time. Faults reaching past it
    /// are cut off there.
    pub horizon_ms: u64,
    /// The faults, in any order.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// Why a plan was rejected. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The JSON did not parse or did not match the schema.
    #[error("fault plan JSON, line {line} column {column}, at `{path}`: {message}")]
    Json {
        /// Path of the offending field, e.g. `faults[2].ratio`.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong.
        message: String,
    },
    /// A field had a value that is out of range or inconsistent.
    #[error("fault plan field `{field}`: {message}")]
    Invalid {
        /// The field at fault (a path such as `faults[1].until_ms` when known).
        field: String,
        /// What was wrong.
        message: String,
    },
}

impl FaultPlan {
    /// A plan with no faults whose safety phase lasts `horizon_ms`.
    pub fn healthy(horizon_ms: u64) -> Self {
        FaultPlan {
            seed: None,
            horizon_ms,
            faults: Vec::new(),
        }
    }

    /// End of the safety phase.
    pub fn horizon(&self) -> SimTime {
        SimTime::from_millis(self.horizon_ms)
    }

    /// Parses and validates a plan, naming the offending field (with its line and
    /// column) on error.
    pub fn from_json(text: &str) -> Result<FaultPlan, PlanError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let plan: FaultPlan = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_position(&inner.to_string());
            PlanError::Json {
                path,
                line: inner.line(),
                column: inner.column(),
                message,
            }
        })?;
        plan.validate()?;
        Ok(plan)
    }

    /// The plan as pretty JSON (infallible: the plan is plain data).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        out.push_str("{\n");
        if let Some(seed) = self.seed {
            out.push_str(&format!("  \"seed\": {seed},\n"));
        }
        out.push_str("  \"horizon_ms\": ");
        out.push_str(&self.horizon_ms.to_string());
        out.push_str(",\n  \"faults\": [");
        for (i, f) in self.faults.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("\n    ");
            // A `RawFault` holds only strings, integers and options: it always serializes.
            match serde_json::to_string(&RawFault::from(f.clone())) {
                Ok(s) => out.push_str(&s),
                Err(e) => out.push_str(&format!("{{\"error\": {:?}}}", e.to_string())),
            }
        }
        if !self.faults.is_empty() {
            out.push_str("\n  ");
        }
        out.push_str("]\n}\n");
        out
    }

    /// Checks every fault, naming the first bad one by index.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (i, f) in self.faults.iter().enumerate() {
            f.validate().map_err(|e| match e {
                PlanError::Invalid { field, message } => PlanError::Invalid {
                    field: format!("faults[{i}].{field}"),
                    message,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Generates a plan from `rng` under `profile`, with swarm testing: each plan enables
    /// a random non-empty subset of the profile's fault kinds, each with a random weight,
    /// so some plans hammer one kind and others mix a few, rather than every plan being
    /// the same even blend.
    ///
    /// A `torn_crash` is not one of the swarm's kinds: when the profile enables it, each
    /// `crash` the swarm drew becomes a `torn_crash` with chance 1/2, drawn from a
    /// stream of its own (`rng.fork("torn_crash")`), so enabling it changes no other
    /// draw: the plan is the same plan with some crashes torn.
    pub fn generate(rng: &mut SimRng, profile: &FaultProfile) -> FaultPlan {
        let tear = profile.usable_kinds().contains(&FaultKindTag::TornCrash);
        let mut torn = rng.fork("torn_crash");
        let kinds: Vec<FaultKindTag> = profile
            .usable_kinds()
            .into_iter()
            .filter(|k| *k != FaultKindTag::TornCrash)
            .collect();
        let mut plan = FaultPlan::healthy(profile.horizon_ms);
        if kinds.is_empty() || profile.faults_max == 0 || profile.horizon_ms == 0 {
            return plan;
        }
        // Swarm: each kind is on with probability 1/2; at least one is on.
        let mut weights: Vec<u64> = kinds
            .iter()
            .map(|_| {
                if rng.below(2) == 1 {
                    rng.between(1, 10)
                } else {
                    0
                }
            })
            .collect();
        if weights.iter().all(|w| *w == 0) {
            let i = rng.below(kinds.len() as u64) as usize;
            weights[i] = rng.between(1, 10);
        }
        let count = rng.between(
            profile.faults_min.min(profile.faults_max) as u64,
            profile.faults_max as u64,
        );
        for _ in 0..count {
            let Some(k) = rng.weighted(&weights) else {
                break;
            };
            let tag = kinds[k];
            let targets = profile.targets_for(tag);
            let Some(target) = rng.pick(targets) else {
                continue;
            };
            let len = rng
                .between(
                    profile.duration_ms_min.max(1),
                    profile.duration_ms_max.max(1),
                )
                .min(profile.horizon_ms);
            let from = rng.between(0, profile.horizon_ms - len);
            let kind = match tag {
                FaultKindTag::Outage => FaultKind::Outage,
                FaultKindTag::Crash if tear && torn.below(2) == 1 => FaultKind::TornCrash,
                FaultKindTag::Crash | FaultKindTag::TornCrash => FaultKind::Crash,
                FaultKindTag::Slow => {
                    let a = rng.between(0, profile.latency_ms_max);
                    let b = rng.between(0, profile.latency_ms_max);
                    FaultKind::Slow {
                        latency_ms_min: a.min(b),
                        latency_ms_max: a.max(b),
                    }
                }
                FaultKindTag::Errors => FaultKind::Errors {
                    ratio: random_ratio(rng),
                },
                FaultKindTag::Drop => FaultKind::Drop {
                    ratio: random_ratio(rng),
                },
                FaultKindTag::Duplicate => FaultKind::Duplicate {
                    ratio: random_ratio(rng),
                },
                FaultKindTag::Delay => {
                    let a = rng.between(0, profile.latency_ms_max);
                    let b = rng.between(0, profile.latency_ms_max);
                    FaultKind::Delay {
                        ratio: random_ratio(rng),
                        latency_ms_min: a.min(b),
                        latency_ms_max: a.max(b),
                    }
                }
            };
            plan.faults.push(Fault {
                kind,
                target: target.clone(),
                from_ms: from,
                until_ms: from + len,
            });
        }
        plan
    }

    /// A proptest strategy for plans under `profile`.
    ///
    /// Shrinking removes faults (the plan is a vector), shortens each fault (its length
    /// shrinks toward `duration_ms_min`), moves it later (it is placed as an offset back
    /// from the horizon, which shrinks toward zero; a fault is cut off at the horizon),
    /// lowers its ratios and latencies, and simplifies its kind toward `outage`. So a
    /// failing plan shrinks to the few faults that matter.
    #[cfg(feature = "proptest")]
    pub fn strategy(profile: &FaultProfile) -> BoxedStrategy<FaultPlan> {
        let horizon = profile.horizon_ms;
        let kinds = profile.usable_kinds();
        if kinds.is_empty() || horizon == 0 || profile.faults_max == 0 {
            return Just(FaultPlan::healthy(horizon)).boxed();
        }
        let lat_max = profile.latency_ms_max;
        let len_min = profile.duration_ms_min.clamp(1, horizon);
        let len_max = profile.duration_ms_max.clamp(len_min, horizon);
        let alternatives: Vec<BoxedStrategy<Fault>> = kinds
            .iter()
            .map(|&tag| {
                let targets = profile.targets_for(tag).to_vec();
                let window = (
                    proptest::sample::select(targets),
                    0..horizon,
                    len_min..=len_max,
                );
                let place = move |(target, back, len): (String, u64, u64)| {
                    // `back` = 0 puts the fault as late as it can start.
                    let from = (horizon - 1).saturating_sub(back);
                    let until = (from + len).min(horizon);
                    (target, from, until)
                };
                let ratio = (1u32..=100).prop_map(Ratio::percent);
                let latency = (0..=lat_max, 0..=lat_max).prop_map(move |(lo, extra)| {
                    let hi = lo.saturating_add(extra).min(lat_max.max(lo));
                    (lo, hi)
                });
                let s: BoxedStrategy<Fault> = match tag {
                    FaultKindTag::Outage => window
                        .prop_map(move |w| make(FaultKind::Outage, place(w)))
                        .boxed(),
                    FaultKindTag::Crash => window
                        .prop_map(move |w| make(FaultKind::Crash, place(w)))
                        .boxed(),
                    FaultKindTag::TornCrash => window
                        .prop_map(move |w| make(FaultKind::TornCrash, place(w)))
                        .boxed(),
                    FaultKindTag::Slow => (window, latency)
                        .prop_map(move |(w, (lo, hi))| {
                            make(
                                FaultKind::Slow {
                                    latency_ms_min: lo,
                                    latency_ms_max: hi,
                                },
                                place(w),
                            )
                        })
                        .boxed(),
                    FaultKindTag::Errors => (window, ratio)
                        .prop_map(move |(w, ratio)| make(FaultKind::Errors { ratio }, place(w)))
                        .boxed(),
                    FaultKindTag::Drop => (window, ratio)
                        .prop_map(move |(w, ratio)| make(FaultKind::Drop { ratio }, place(w)))
                        .boxed(),
                    FaultKindTag::Duplicate => (window, ratio)
                        .prop_map(move |(w, ratio)| make(FaultKind::Duplicate { ratio }, place(w)))
                        .boxed(),
                    FaultKindTag::Delay => (window, ratio, latency)
                        .prop_map(move |(w, ratio, (lo, hi))| {
                            make(
                                FaultKind::Delay {
                                    ratio,
                                    latency_ms_min: lo,
                                    latency_ms_max: hi,
                                },
                                place(w),
                            )
                        })
                        .boxed(),
                };
                s
            })
            .collect();
        let fault = proptest::strategy::Union::new(alternatives);
        proptest::collection::vec(
            fault,
            profile.faults_min.min(profile.faults_max)..=profile.faults_max,
        )
        .prop_map(move |faults| FaultPlan {
            seed: None,
            horizon_ms: horizon,
            faults,
        })
        .boxed()
    }

    /// The same plan, labelled with `seed`.
    pub fn with_seed(mut self, seed: u64) -> FaultPlan {
        self.seed = Some(seed);
        self
    }

    /// The faults of one kind.
    pub fn of_kind(&self, tag: FaultKindTag) -> impl Iterator<Item = &Fault> {
        self.faults.iter().filter(move |f| f.kind.tag() == tag)
    }

    /// A copy without fault `index` (used by shrinking that drops one fault at a time).
    pub fn without(&self, index: usize) -> FaultPlan {
        let mut p = self.clone();
        if index < p.faults.len() {
            p.faults.remove(index);
        }
        p
    }
}

#[cfg(feature = "proptest")]
fn make(kind: FaultKind, (target, from_ms, until_ms): (String, u64, u64)) -> Fault {
    Fault {
        kind,
        target,
        from_ms,
        until_ms,
    }
}

/// Ratios a generated plan uses: mostly heavy, sometimes total.
fn random_ratio(rng: &mut SimRng) -> Ratio {
    Ratio::percent(match rng.below(4) {
        0 => 100,
        _ => rng.between(5, 95) as u32,
    })
}

/// serde_json appends " at line L column C" to its messages; we report those apart.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// What fault plans a world can be given: its targets, nodes and links, the kinds it
/// understands, and the bounds on count, length and severity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultProfile {
    /// End of the safety phase, milliseconds.
    pub horizon_ms: u64,
    /// Names that `outage`, `slow` and `errors` faults may target.
    pub targets: Vec<String>,
    /// Names that `crash` faults may target.
    pub nodes: Vec<String>,
    /// Names that `drop`, `duplicate` and `delay` faults may target.
    pub links: Vec<String>,
    /// Kinds the world understands; kinds without a name to target are left out.
    pub kinds: Vec<FaultKindTag>,
    /// Fewest faults in a plan.
    pub faults_min: usize,
    /// Most faults in a plan.
    pub faults_max: usize,
    /// Shortest fault window, milliseconds.
    pub duration_ms_min: u64,
    /// Longest fault window, milliseconds.
    pub duration_ms_max: u64,
    /// Most added latency for `slow` and `delay`, milliseconds.
    pub latency_ms_max: u64,
}

impl FaultProfile {
    /// A profile with every kind enabled and no names; add names with the builders.
    pub fn new(horizon_ms: u64) -> Self {
        FaultProfile {
            horizon_ms,
            targets: Vec::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            kinds: FaultKindTag::ALL.to_vec(),
            faults_min: 0,
            faults_max: 6,
            duration_ms_min: 1,
            duration_ms_max: horizon_ms.max(1),
            latency_ms_max: 1_000,
        }
    }
    /// Adds a target name.
    pub fn target(mut self, name: impl Into<String>) -> Self {
        self.targets.push(name.into());
        self
    }
    /// Adds a node name.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.nodes.push(name.into());
        self
    }
    /// Adds a link name.
    pub fn link(mut self, name: impl Into<String>) -> Self {
        self.links.push(name.into());
        self
    }
    /// Restricts the kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = FaultKindTag>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }
    /// Sets the fault count range.
    pub fn faults(mut self, min: usize, max: usize) -> Self {
        self.faults_min = min;
        self.faults_max = max;
        self
    }
    /// Sets the window length range, milliseconds.
    pub fn duration_ms(mut self, min: u64, max: u64) -> Self {
        self.duration_ms_min = min;
        self.duration_ms_max = max;
        self
    }
    /// Sets the most added latency, milliseconds.
    pub fn latency_ms_max(mut self, max: u64) -> Self {
        self.latency_ms_max = max;
        self
    }

    /// The names a fault of kind `tag` may target.
    pub fn targets_for(&self, tag: FaultKindTag) -> &[String] {
        match tag.target_class() {
            TargetClass::Target => &self.targets,
            TargetClass::Node => &self.nodes,
            TargetClass::Link => &self.links,
        }
    }

    /// Enabled kinds that have something to target, deduplicated, in a fixed order.
    pub fn usable_kinds(&self) -> Vec<FaultKindTag> {
        let mut v: Vec<FaultKindTag> = FaultKindTag::ALL
            .into_iter()
            .filter(|k| self.kinds.contains(k) && !self.targets_for(*k).is_empty())
            .collect();
        v.dedup();
        v
    }
}

/// The fault plan as a running world sees it at one instant: "is this target down?",
/// "how much slower is it?", "what happens to this message?".
///
/// Every query that finds an active fault counts a hit for that fault, so a run can
/// report which faults actually fired. Random decisions (error ratios, latency draws)
/// come from the engine's own `faults` stream, never the world's.
pub struct FaultView<'a> {
    pub(crate) plan: &'a FaultPlan,
    pub(crate) now: SimTime,
    pub(crate) healed: bool,
    pub(crate) hits: &'a mut [u64],
    pub(crate) rng: &'a mut SimRng,
}

/// The fault plan owned outside the engine, for a world whose far side runs code the
/// engine does not call (async tasks on a hosted runtime): it answers the same queries
/// as [`FaultView`], with its own random stream and its own hit counts, which the world
/// hands back to the engine ([`Ctx::add_fault_hits`](crate::world::Ctx::add_fault_hits))
/// so the run's report counts them.
#[derive(Clone, Debug)]
pub struct FaultState {
    plan: FaultPlan,
    hits: Vec<u64>,
    rng: SimRng,
}

impl FaultState {
    /// The plan `plan`, its random decisions drawn from `rng`.
    pub fn new(plan: FaultPlan, rng: SimRng) -> Self {
        let hits = vec![0; plan.faults.len()];
        FaultState { plan, hits, rng }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The plan as it stands at `now`: healed from the horizon on.
    pub fn view(&mut self, now: SimTime) -> FaultView<'_> {
        FaultView {
            healed: now >= self.plan.horizon(),
            plan: &self.plan,
            now,
            hits: &mut self.hits,
            rng: &mut self.rng,
        }
    }

    /// The hits counted since the last [`clear_hits`](FaultState::clear_hits), per fault.
    pub fn hits(&self) -> &[u64] {
        &self.hits
    }

    /// Zeroes the hit counts.
    pub fn clear_hits(&mut self) {
        self.hits.fill(0);
    }

    /// The hits counted since the last call, per fault, and zeroes them.
    pub fn take_hits(&mut self) -> Vec<u64> {
        let fresh = vec![0; self.hits.len()];
        std::mem::replace(&mut self.hits, fresh)
    }
}

/// What a link does to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFate {
    /// The message vanishes.
    pub dropped: bool,
    /// How many copies arrive when not dropped (1, or 2 when duplicated).
    pub copies: u32,
    /// Extra delay added on top of the link's normal latency.
    pub extra_delay: SimDuration,
}

impl FaultView<'_> {
    /// Calls `f` with the index and fault of every fault of kind `tag` on `target`
    /// active now. Allocation-free: worlds ask this on every call.
    #[inline]
    fn each_active(
        &mut self,
        tag: FaultKindTag,
        target: &str,
        mut f: impl FnMut(&mut Self, usize, FaultKind),
    ) {
        if self.healed {
            return;
        }
        let plan = self.plan;
        let now = self.now;
        for (i, fault) in plan.faults.iter().enumerate() {
            if fault.kind.tag() == tag && fault.is_active(now) && fault.target == target {
                f(self, i, fault.kind);
            }
        }
    }

    fn hit(&mut self, i: usize) {
        if let Some(h) = self.hits.get_mut(i) {
            *h += 1;
        }
    }

    /// True when the liveness phase has begun and every fault is healed.
    pub fn is_healed(&self) -> bool {
        self.healed
    }

    /// True while an `outage` of `target` is active.
    pub fn is_down(&mut self, target: &str) -> bool {
        let mut down = false;
        self.each_active(FaultKindTag::Outage, target, |v, i, _| {
            v.hit(i);
            down = true;
        });
        down
    }

    /// True while a `crash` or a `torn_crash` of `node` is active.
    pub fn is_crashed(&mut self, node: &str) -> bool {
        let mut crashed = false;
        for tag in [FaultKindTag::Crash, FaultKindTag::TornCrash] {
            self.each_active(tag, node, |v, i, _| {
                v.hit(i);
                crashed = true;
            });
        }
        crashed
    }

    /// Latency added to a call to `target` now: the sum over active `slow` faults, each
    /// drawn uniformly from its range.
    pub fn extra_latency(&mut self, target: &str) -> SimDuration {
        let mut total = SimDuration::ZERO;
        self.each_active(FaultKindTag::Slow, target, |v, i, kind| {
            if let FaultKind::Slow {
                latency_ms_min,
                latency_ms_max,
            } = kind
            {
                v.hit(i);
                let ms = v.rng.between(latency_ms_min, latency_ms_max);
                total = total + SimDuration::from_millis(ms);
            }
        });
        total
    }

    /// True when an active `errors` fault makes this call to `target` fail.
    pub fn injects_error(&mut self, target: &str) -> bool {
        let mut fail = false;
        self.each_active(FaultKindTag::Errors, target, |v, i, kind| {
            if let FaultKind::Errors { ratio } = kind
                && v.rng.chance(ratio)
            {
                v.hit(i);
                fail = true;
            }
        });
        fail
    }

    /// What `link` does to one message sent now.
    pub fn link(&mut self, link: &str) -> LinkFate {
        let mut fate = LinkFate {
            dropped: false,
            copies: 1,
            extra_delay: SimDuration::ZERO,
        };
        if self.healed {
            return fate;
        }
        let now = self.now;
        for i in 0..self.plan.faults.len() {
            let f = &self.plan.faults[i];
            if f.target != link || !f.is_active(now) {
                continue;
            }
            match f.kind {
                FaultKind::Drop { ratio } if self.rng.chance(ratio) => {
                    fate.dropped = true;
                    self.hit(i);
                }
                FaultKind::Duplicate { ratio } if self.rng.chance(ratio) => {
                    fate.copies = 2;
                    self.hit(i);
                }
                FaultKind::Delay {
                    ratio,
                    latency_ms_min,
                    latency_ms_max,
                } if self.rng.chance(ratio) => {
                    let ms = self.rng.between(latency_ms_min, latency_ms_max);
                    fate.extra_delay = fate.extra_delay + SimDuration::from_millis(ms);
                    self.hit(i);
                }
                _ => {}
            }
        }
        if fate.dropped {
            fate.copies = 0;
        }
        fate
    }

    /// Faults active now on `target` (any kind), without counting hits.
    pub fn active_on<'b>(&'b self, target: &'b str) -> impl Iterator<Item = &'b Fault> + 'b {
        let now = self.now;
        let healed = self.healed;
        self.plan
            .faults
            .iter()
            .filter(move |f| !healed && f.target == target && f.is_active(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> FaultProfile {
        FaultProfile::new(10_000)
            .target("api")
            .node("worker")
            .link("a->b")
            .faults(0, 8)
            .duration_ms(10, 3_000)
    }

    #[test]
    fn generated_plans_are_valid_and_swarmed() {
        let mut rng = SimRng::new(3);
        let mut kind_sets = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let plan = FaultPlan::generate(&mut rng, &profile());
            plan.validate().unwrap();
            assert!(plan.faults.iter().all(|f| f.until_ms <= plan.horizon_ms));
            let kinds: Vec<FaultKindTag> = {
                let mut k: Vec<_> = plan.faults.iter().map(|f| f.kind.tag()).collect();
                k.sort();
                k.dedup();
                k
            };
            kind_sets.insert(kinds);
        }
        assert!(
            kind_sets.len() > 20,
            "swarm gives varied mixes: {}",
            kind_sets.len()
        );
    }

    /// Enabling `torn_crash` tears some crashes and changes nothing else: the same seed
    /// gives the same plan, fault for fault, with some crashes torn.
    #[test]
    fn enabling_torn_crash_only_tears_crashes() {
        let untorn = profile().kinds(FaultKindTag::UNTORN);
        let torn = profile().kinds(FaultKindTag::ALL);
        let (mut crashes, mut tears) = (0, 0);
        for seed in 0..300 {
            let a = FaultPlan::generate(&mut SimRng::new(seed), &untorn);
            let b = FaultPlan::generate(&mut SimRng::new(seed), &torn);
            assert_eq!(a.faults.len(), b.faults.len(), "seed {seed}");
            for (x, y) in a.faults.iter().zip(&b.faults) {
                if y.kind == FaultKind::TornCrash {
                    tears += 1;
                    assert_eq!(x.kind, FaultKind::Crash, "seed {seed}");
                    assert_eq!(
                        (&x.target, x.from_ms, x.until_ms),
                        (&y.target, y.from_ms, y.until_ms)
                    );
                } else {
                    assert_eq!(x, y, "seed {seed}");
                }
                crashes += usize::from(x.kind == FaultKind::Crash);
            }
            assert!(a.faults.iter().all(|f| f.kind != FaultKind::TornCrash));
        }
        assert!(
            tears > crashes / 4 && tears < crashes * 3 / 4,
            "{tears} of {crashes}"
        );
        let f = Fault::new(FaultKind::TornCrash, "worker", 5, 9).unwrap();
        assert_eq!(
            FaultPlan::from_json(
                &FaultPlan {
                    seed: None,
                    horizon_ms: 10,
                    faults: vec![f.clone()]
                }
                .to_json()
            )
            .unwrap()
            .faults,
            vec![f]
        );
    }

    #[test]
    fn json_round_trip() {
        let mut rng = SimRng::new(9);
        for _ in 0..50 {
            let plan = FaultPlan::generate(&mut rng, &profile());
            let back = FaultPlan::from_json(&plan.to_json()).unwrap();
            assert_eq!(back, plan);
            let compact = serde_json::to_string(&plan).unwrap();
            assert_eq!(FaultPlan::from_json(&compact).unwrap(), plan);
            let seeded = plan.clone().with_seed(77);
            assert_eq!(FaultPlan::from_json(&seeded.to_json()).unwrap(), seeded);
        }
    }
}
