//! The orchestrator's durable log: [`LogRecord`]. The orchestrator writes each step's
//! intent before its command leaves (write-ahead), each outcome as it learns it, and
//! each saga's end; [`Orchestrator::recover`](crate::saga::Orchestrator::recover) rebuilds every saga from these records
//! alone after a crash at any point.
//!
//! # The stored format
//!
//! A stored log is JSON lines: one record per line, each a JSON object ended by `\n`,
//! in the order appended. [`LogRecord::encode_line`] writes a line (without its
//! newline) and [`LogRecord::decode_line`] reads one of any supported version; the
//! tokio adapter's `FileLog` is a file of them, and a store of your own (a database
//! table, a queue) can keep the same lines. `serde` on [`LogRecord`] uses this
//! format too (an object, not a string).
//!
//! Every line carries its own format version in the field `"v"` (the current one is
//! [`FORMAT_VERSION`]). The version is per line, not in a file header, because the log
//! is append-only: a file begun by an older version and appended to by a newer one
//! holds both, and each line still says how to read it, with no rewrite of the file
//! and no header to tear in a crash; a line can also be read (or grepped) on its own.
//! It costs 7 bytes a line.
//!
//! A line of version 2 (current), as `FileLog` writes it:
//!
//! ```text
//! {"v":2,"type":"started","saga":7,"item":1,"qty":2,"amount":500}
//! {"v":2,"type":"step_intent","saga":7,"step":"inventory","attempt":1}
//! {"v":2,"type":"step_outcome","saga":7,"step":"inventory","ok":true}
//! {"v":2,"type":"compensation_intent","saga":7,"step":"order","attempt":1}
//! {"v":2,"type":"compensation_done","saga":7,"step":"order"}
//! {"v":2,"type":"ended","saga":7,"state":"compensated"}
//! ```
//!
//! | field | JSON type | in | meaning |
//! |---|---|---|---|
//! | `v` | integer | every line | the format version, `2`; absent means 1 |
//! | `type` | string | every line | the record: `started`, `step_intent`, `step_outcome`, `compensation_intent`, `compensation_done`, `ended` |
//! | `saga` | integer (u64) | every line | the saga's id ([`SagaId`]) |
//! | `item`, `qty` | integer (u32) | `started` | the order's item and quantity ([`Order`]) |
//! | `amount` | integer (u64) | `started` | the order's amount, in minor units |
//! | `step` | string | all but `started`, `ended` | `order`, `inventory` or `payment` ([`StepId`]) |
//! | `attempt` | integer (u32) | `step_intent`, `compensation_intent` | the attempt about to be sent, 1 for the first |
//! | `ok` | bool | `step_outcome` | true: the action took effect; false: it was refused |
//! | `state` | string | `ended` | `completed`, `compensated` or `failed` (a saga at rest) |
//!
//! Field order is free when reading; unknown fields are an error (a line is never
//! half understood).
//!
//! ## Versions
//!
//! - **1**: the lines above without `"v"` (written by faultline before the format
//!   was versioned).
//! - **2**: adds `"v":2` to every line; the fields are those of version 1.
//!
//! Reading accepts every version up to [`FORMAT_VERSION`] and migrates each line to
//! today's [`LogRecord`]; a later version (written by a newer faultline) is
//! [`LineError::NewerVersion`], never guessed at. Writing always writes the current
//! version. A change of the fields bumps the version, adds a row above, and keeps a
//! reader for every earlier version.

use serde::{Deserialize, Serialize};

use crate::saga::services::{Command, Kind, Order, SagaId, SagaState, StepId};

/// One record of the durable saga log. [`Orchestrator::recover`](crate::saga::Orchestrator::recover) rebuilds every saga
/// from these alone. Stored as one line of the [versioned format](self#the-stored-format);
/// its `serde` form is that line's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Envelope", try_from = "serde_json::Value")]
pub enum LogRecord {
    /// The saga was accepted with this order.
    Started {
        /// The saga.
        saga: SagaId,
        /// Its order.
        order: Order,
    },
    /// Attempt `attempt` of the step's action is about to be sent (written before the
    /// command).
    StepIntent {
        /// The saga.
        saga: SagaId,
        /// The step.
        step: StepId,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The step's action was answered: `ok` (it took effect) or refused (it did not).
    StepOutcome {
        /// The saga.
        saga: SagaId,
        /// The step.
        step: StepId,
        /// True for [`Reply::Ok`](crate::saga::Reply::Ok).
        ok: bool,
    },
    /// Attempt `attempt` of the step's compensation is about to be sent (written before
    /// the command).
    CompensationIntent {
        /// The saga.
        saga: SagaId,
        /// The step.
        step: StepId,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The step's compensation was done.
    CompensationDone {
        /// The saga.
        saga: SagaId,
        /// The step.
        step: StepId,
    },
    /// The saga came to rest.
    Ended {
        /// The saga.
        saga: SagaId,
        /// Completed, compensated or failed.
        state: SagaState,
    },
}

impl LogRecord {
    /// The saga the record belongs to.
    pub fn saga(&self) -> SagaId {
        match *self {
            LogRecord::Started { saga, .. }
            | LogRecord::StepIntent { saga, .. }
            | LogRecord::StepOutcome { saga, .. }
            | LogRecord::CompensationIntent { saga, .. }
            | LogRecord::CompensationDone { saga, .. }
            | LogRecord::Ended { saga, .. } => saga,
        }
    }

    /// The intent record that must precede sending attempt `attempt` of `cmd`.
    pub fn intent_for(cmd: &Command, attempt: u32) -> LogRecord {
        match cmd.kind {
            Kind::Action => LogRecord::StepIntent {
                saga: cmd.saga,
                step: cmd.step,
                attempt,
            },
            Kind::Compensation => LogRecord::CompensationIntent {
                saga: cmd.saga,
                step: cmd.step,
                attempt,
            },
        }
    }
}

/// The format version [`LogRecord::encode_line`] writes; [`LogRecord::decode_line`]
/// reads this one and every earlier one. See [the format](self#the-stored-format).
pub const FORMAT_VERSION: u32 = 2;

/// Why one stored line is not a [`LogRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object, or not one of the records of its version (a missing, extra or
    /// ill-typed field, an unknown `type`, step or state).
    #[error("not a saga log record: {0}")]
    Malformed(String),
    /// The `"v"` field is not a version (not a positive integer).
    #[error("bad format version {0}")]
    BadVersion(String),
    /// Written in a format version later than this build reads.
    #[error(
        "written in saga log format version {version}, newer than this build reads (up to {supported}); upgrade faultline to read it"
    )]
    NewerVersion {
        /// The line's version.
        version: u64,
        /// The latest version this build reads ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// Well formed, but not a record the orchestrator could have written (a saga
    /// ending in a state not at rest).
    #[error("impossible record: {0}")]
    Impossible(String),
}

impl LogRecord {
    /// The record as one line of the current [format](self#the-stored-format)
    /// ([`FORMAT_VERSION`]), without a newline.
    pub fn encode_line(&self) -> String {
        // Serializing these plain structs to a string cannot fail.
        serde_json::to_string(&Envelope::from(*self)).unwrap_or_default()
    }

    /// Reads one line (without its newline) of any supported format version.
    ///
    /// # Errors
    ///
    /// [`LineError`]: a line that is not a record, a later version than
    /// [`FORMAT_VERSION`], or a record the orchestrator cannot have written.
    pub fn decode_line(line: &[u8]) -> Result<LogRecord, LineError> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
        LogRecord::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<LogRecord, LineError> {
        let serde_json::Value::Object(mut object) = value else {
            return Err(LineError::Malformed("not a JSON object".to_string()));
        };
        let version = match object.remove("v") {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(n @ 1..) => n,
                _ => return Err(LineError::BadVersion(v.to_string())),
            },
        };
        let body = serde_json::Value::Object(object);
        let malformed = |e: serde_json::Error| LineError::Malformed(e.to_string());
        match version {
            // Versions 1 and 2 have the same fields; 2 only added "v".
            1 | 2 => serde_json::from_value::<Line>(body)
                .map_err(malformed)?
                .try_into(),
            version => Err(LineError::NewerVersion {
                version,
                supported: FORMAT_VERSION,
            }),
        }
    }
}

impl TryFrom<serde_json::Value> for LogRecord {
    type Error = LineError;

    fn try_from(value: serde_json::Value) -> Result<Self, LineError> {
        LogRecord::from_value(value)
    }
}

/// A line of the current version: `"v"` first, then the record's fields.
#[derive(Serialize)]
struct Envelope {
    v: u32,
    #[serde(flatten)]
    line: Line,
}

impl From<LogRecord> for Envelope {
    fn from(record: LogRecord) -> Self {
        Envelope {
            v: FORMAT_VERSION,
            line: record.into(),
        }
    }
}

/// The fields of one stored [`LogRecord`] (versions 1 and 2), kept apart from the
/// core's types so that they change only with the format version.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Started {
        saga: u64,
        item: u32,
        qty: u32,
        amount: u64,
    },
    StepIntent {
        saga: u64,
        step: StepName,
        attempt: u32,
    },
    StepOutcome {
        saga: u64,
        step: StepName,
        ok: bool,
    },
    CompensationIntent {
        saga: u64,
        step: StepName,
        attempt: u32,
    },
    CompensationDone {
        saga: u64,
        step: StepName,
    },
    Ended {
        saga: u64,
        state: StateName,
    },
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StepName {
    Order,
    Inventory,
    Payment,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StateName {
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

impl From<StepId> for StepName {
    fn from(step: StepId) -> Self {
        match step {
            StepId::Order => StepName::Order,
            StepId::Inventory => StepName::Inventory,
            StepId::Payment => StepName::Payment,
        }
    }
}

impl From<StepName> for StepId {
    fn from(step: StepName) -> Self {
        match step {
            StepName::Order => StepId::Order,
            StepName::Inventory => StepId::Inventory,
            StepName::Payment => StepId::Payment,
        }
    }
}

impl From<SagaState> for StateName {
    fn from(state: SagaState) -> Self {
        match state {
            SagaState::Running => StateName::Running,
            SagaState::Compensating => StateName::Compensating,
            SagaState::Completed => StateName::Completed,
            SagaState::Compensated => StateName::Compensated,
            SagaState::Failed => StateName::Failed,
        }
    }
}

impl From<LogRecord> for Line {
    fn from(record: LogRecord) -> Self {
        match record {
            LogRecord::Started { saga, order } => Line::Started {
                saga: saga.0,
                item: order.item,
                qty: order.qty,
                amount: order.amount,
            },
            LogRecord::StepIntent {
                saga,
                step,
                attempt,
            } => Line::StepIntent {
                saga: saga.0,
                step: step.into(),
                attempt,
            },
            LogRecord::StepOutcome { saga, step, ok } => Line::StepOutcome {
                saga: saga.0,
                step: step.into(),
                ok,
            },
            LogRecord::CompensationIntent {
                saga,
                step,
                attempt,
            } => Line::CompensationIntent {
                saga: saga.0,
                step: step.into(),
                attempt,
            },
            LogRecord::CompensationDone { saga, step } => Line::CompensationDone {
                saga: saga.0,
                step: step.into(),
            },
            LogRecord::Ended { saga, state } => Line::Ended {
                saga: saga.0,
                state: state.into(),
            },
        }
    }
}

impl TryFrom<Line> for LogRecord {
    type Error = LineError;

    fn try_from(line: Line) -> Result<Self, LineError> {
        Ok(match line {
            Line::Started {
                saga,
                item,
                qty,
                amount,
            } => LogRecord::Started {
                saga: SagaId(saga),
                order: Order { item, qty, amount },
            },
            Line::StepIntent {
                saga,
                step,
                attempt,
            } => LogRecord::StepIntent {
                saga: SagaId(saga),
                step: step.into(),
                attempt,
            },
            Line::StepOutcome { saga, step, ok } => LogRecord::StepOutcome {
                saga: SagaId(saga),
                step: step.into(),
                ok,
            },
            Line::CompensationIntent {
                saga,
                step,
                attempt,
            } => LogRecord::CompensationIntent {
                saga: SagaId(saga),
                step: step.into(),
                attempt,
            },
            Line::CompensationDone { saga, step } => LogRecord::CompensationDone {
                saga: SagaId(saga),
                step: step.into(),
            },
            Line::Ended { saga, state } => LogRecord::Ended {
                saga: SagaId(saga),
                state: match state {
                    StateName::Completed => SagaState::Completed,
                    StateName::Compensated => SagaState::Compensated,
                    StateName::Failed => SagaState::Failed,
                    StateName::Running | StateName::Compensating => {
                        return Err(LineError::Impossible(
                            "a saga cannot end in a state not at rest".to_string(),
                        ));
                    }
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<LogRecord> {
        let saga = SagaId(7);
        vec![
            LogRecord::Started {
                saga,
                order: Order {
                    item: 1,
                    qty: 2,
                    amount: 500,
                },
            },
            LogRecord::StepIntent {
                saga,
                step: StepId::Inventory,
                attempt: 1,
            },
            LogRecord::StepOutcome {
                saga,
                step: StepId::Inventory,
                ok: true,
            },
            LogRecord::StepOutcome {
                saga,
                step: StepId::Payment,
                ok: false,
            },
            LogRecord::CompensationIntent {
                saga,
                step: StepId::Order,
                attempt: 1,
            },
            LogRecord::CompensationDone {
                saga,
                step: StepId::Order,
            },
            LogRecord::Ended {
                saga,
                state: SagaState::Compensated,
            },
            LogRecord::Ended {
                saga: SagaId(u64::MAX),
                state: SagaState::Completed,
            },
            LogRecord::Ended {
                saga,
                state: SagaState::Failed,
            },
        ]
    }

    /// The lines of [`every_kind`] in version 2, byte for byte: the format is a
    /// promise, so a change here is a version bump.
    const V2: &str = r#"{"v":2,"type":"started","saga":7,"item":1,"qty":2,"amount":500}
{"v":2,"type":"step_intent","saga":7,"step":"inventory","attempt":1}
{"v":2,"type":"step_outcome","saga":7,"step":"inventory","ok":true}
{"v":2,"type":"step_outcome","saga":7,"step":"payment","ok":false}
{"v":2,"type":"compensation_intent","saga":7,"step":"order","attempt":1}
{"v":2,"type":"compensation_done","saga":7,"step":"order"}
{"v":2,"type":"ended","saga":7,"state":"compensated"}
{"v":2,"type":"ended","saga":18446744073709551615,"state":"completed"}
{"v":2,"type":"ended","saga":7,"state":"failed"}"#;

    /// The same records as the unversioned writer (version 1) wrote them.
    const V1: &str = r#"{"type":"started","saga":7,"item":1,"qty":2,"amount":500}
{"type":"step_intent","saga":7,"step":"inventory","attempt":1}
{"type":"step_outcome","saga":7,"step":"inventory","ok":true}
{"type":"step_outcome","saga":7,"step":"payment","ok":false}
{"type":"compensation_intent","saga":7,"step":"order","attempt":1}
{"type":"compensation_done","saga":7,"step":"order"}
{"type":"ended","saga":7,"state":"compensated"}
{"type":"ended","saga":18446744073709551615,"state":"completed"}
{"type":"ended","saga":7,"state":"failed"}"#;

    #[test]
    fn every_kind_encodes_to_the_documented_version_2_lines_and_back() {
        let lines: Vec<String> = every_kind().iter().map(LogRecord::encode_line).collect();
        assert_eq!(lines.join("\n"), V2);
        for (line, record) in V2.lines().zip(every_kind()) {
            assert_eq!(
                LogRecord::decode_line(line.as_bytes()),
                Ok(record),
                "{line}"
            );
        }
    }

    #[test]
    fn version_1_lines_migrate_to_the_same_records() {
        let read: Vec<LogRecord> = V1
            .lines()
            .map(|line| LogRecord::decode_line(line.as_bytes()).unwrap())
            .collect();
        assert_eq!(read, every_kind());
        // An explicit "v":1 reads as version 1 too; field order is free.
        assert_eq!(
            LogRecord::decode_line(
                br#"{"saga":7,"step":"order","type":"compensation_done","v":1}"#
            ),
            Ok(every_kind()[5])
        );
        // V1 is what the version 1 writer (the unchanged `Line`, without "v") writes.
        for (line, record) in V1.lines().zip(every_kind()) {
            assert_eq!(serde_json::to_string(&Line::from(record)).unwrap(), line);
        }
    }

    #[test]
    fn serde_uses_the_line_format() {
        for (line, record) in V2.lines().zip(every_kind()) {
            assert_eq!(serde_json::to_string(&record).unwrap(), line);
            let back: LogRecord = serde_json::from_str(line).unwrap();
            assert_eq!(back, record);
        }
        let old: LogRecord = serde_json::from_str(V1.lines().next().unwrap()).unwrap();
        assert_eq!(old, every_kind()[0]);
        let newer = serde_json::from_str::<LogRecord>(r#"{"v":3,"type":"x"}"#).unwrap_err();
        assert!(newer.to_string().contains("version 3"), "{newer}");
    }

    #[test]
    fn a_newer_version_is_refused_not_guessed() {
        let line = br#"{"v":3,"type":"started","saga":7,"item":1,"qty":2,"amount":500}"#;
        let err = LogRecord::decode_line(line).unwrap_err();
        assert_eq!(
            err,
            LineError::NewerVersion {
                version: 3,
                supported: FORMAT_VERSION
            }
        );
        assert!(err.to_string().contains("version 3"), "{err}");
        assert!(err.to_string().contains("up to 2"), "{err}");
        // Even a newer line whose fields look like today's is refused, and a huge one.
        let err = LogRecord::decode_line(br#"{"v":18446744073709551615}"#).unwrap_err();
        assert!(matches!(err, LineError::NewerVersion { .. }), "{err}");
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        type Expect = fn(&LineError) -> bool;
        let cases: [(&[u8], Expect); 10] = [
            (b"", |e| matches!(e, LineError::Malformed(_))),
            (b"not json", |e| matches!(e, LineError::Malformed(_))),
            (b"[1,2]", |e| matches!(e, LineError::Malformed(_))),
            (b"{}", |e| matches!(e, LineError::Malformed(_))),
            (
                br#"{"v":0,"type":"ended","saga":1,"state":"failed"}"#,
                |e| matches!(e, LineError::BadVersion(_)),
            ),
            (
                br#"{"v":"2","type":"ended","saga":1,"state":"failed"}"#,
                |e| matches!(e, LineError::BadVersion(_)),
            ),
            (
                br#"{"v":-1,"type":"ended","saga":1,"state":"failed"}"#,
                |e| matches!(e, LineError::BadVersion(_)),
            ),
            (
                br#"{"v":2,"type":"ended","saga":1,"state":"failed","extra":1}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
            (
                br#"{"v":2,"type":"step_intent","saga":1,"step":"shipping","attempt":1}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
            (
                br#"{"v":2,"type":"ended","saga":1,"state":"running"}"#,
                |e| matches!(e, LineError::Impossible(_)),
            ),
        ];
        for (line, expected) in cases {
            let err = LogRecord::decode_line(line).unwrap_err();
            assert!(expected(&err), "{}: {err:?}", String::from_utf8_lossy(line));
        }
    }
}
