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
//! A line of version 3 (current), as `FileLog` writes it for the checkout (the payload
//! is an [`Order`], the refusal a [`Refusal`]):
//!
//! ```text
//! {"v":3,"type":"started","saga":7,"payload":{"item":1,"qty":2,"amount":500}}
//! {"v":3,"type":"step_intent","saga":7,"step":"inventory","attempt":1}
//! {"v":3,"type":"step_outcome","saga":7,"step":"inventory","ok":true}
//! {"v":3,"type":"step_outcome","saga":7,"step":"payment","ok":false,"refusal":"card_declined"}
//! {"v":3,"type":"compensation_intent","saga":7,"step":"order","attempt":1}
//! {"v":3,"type":"compensation_done","saga":7,"step":"order"}
//! {"v":3,"type":"ended","saga":7,"state":"compensated"}
//! ```
//!
//! | field | JSON type | in | meaning |
//! |---|---|---|---|
//! | `v` | integer | every line | the format version, `3`; absent means 1 |
//! | `type` | string | every line | the record: `started`, `step_intent`, `step_outcome`, `compensation_intent`, `compensation_done`, `ended` |
//! | `saga` | integer (u64) | every line | the saga's id ([`SagaId`]) |
//! | `payload` | the payload's serde JSON | `started` | what the saga was started with (the definition's payload type `P`) |
//! | `step` | string | all but `started`, `ended` | the step's name ([`StepId`]), one of the definition's |
//! | `attempt` | integer (u32) | `step_intent`, `compensation_intent` | the attempt about to be sent, 1 for the first |
//! | `ok` | bool | `step_outcome` | true: the action took effect; false: it was refused |
//! | `refusal` | the refusal's serde JSON | `step_outcome` with `ok` false, optional | why the participant refused (the definition's refusal type `R`); absent in lines migrated from versions 1 and 2 |
//! | `state` | string | `ended` | `completed`, `compensated` or `failed` (a saga at rest) |
//!
//! Field order is free when reading; unknown fields are an error (a line is never
//! half understood).
//!
//! ## Versions
//!
//! - **1**: the checkout's lines without `"v"` (written by faultline before the format
//!   was versioned): `started` has the order's fields `item`, `qty` (u32) and `amount`
//!   (u64) instead of `payload`; `step` is one of `order`, `inventory`, `payment`; a
//!   refused `step_outcome` has no `refusal`.
//! - **2**: adds `"v":2` to every line; the fields are those of version 1.
//! - **3**: any saga definition: `started` carries the `payload` (an object for the
//!   checkout's [`Order`]: `{"item":1,"qty":2,"amount":500}`), `step` is any step name,
//!   and a refused `step_outcome` says why in `refusal`.
//!
//! Reading accepts every version up to [`FORMAT_VERSION`] and migrates each line to
//! today's [`LogRecord`]: a version 1 or 2 `started` line becomes a payload read from
//! the object `{"item":..,"qty":..,"amount":..}` (so it reads as an [`Order`], and is
//! [`LineError::Malformed`] for a payload type that is not read from such an object:
//! versions 1 and 2 were only ever written by the checkout), and its refused outcomes
//! have `refusal: None` (the reason was not recorded). A later version (written by a
//! newer faultline) is [`LineError::NewerVersion`], never guessed at. Writing always
//! writes the current version. A change of the fields bumps the version, adds a row
//! above, and keeps a reader for every earlier version.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::saga::services::{Command, Kind, Order, Refusal, SagaData, SagaId, SagaState, StepId};

/// One record of the durable saga log, for a definition whose payload is `P` and whose
/// refusal reason is `R` (the checkout's [`Order`] and
/// [`Refusal`] by default).
/// [`Orchestrator::recover`](crate::saga::Orchestrator::recover) rebuilds every saga
/// from these alone, and [`SagaHistory`](crate::saga::SagaHistory) reads a saga's
/// history from them. Stored as one line of the
/// [versioned format](self#the-stored-format); its `serde` form is that line's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRecord<P = Order, R = Refusal> {
    /// The saga was accepted with this payload.
    Started {
        /// The saga.
        saga: SagaId,
        /// What it was started with.
        payload: P,
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
        /// Why it was refused (when `ok` is false); `None` when `ok`, and for a refusal
        /// read from a version 1 or 2 line (which did not record the reason).
        refusal: Option<R>,
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

impl<P, R> LogRecord<P, R> {
    /// The saga the record belongs to.
    pub fn saga(&self) -> SagaId {
        match self {
            LogRecord::Started { saga, .. }
            | LogRecord::StepIntent { saga, .. }
            | LogRecord::StepOutcome { saga, .. }
            | LogRecord::CompensationIntent { saga, .. }
            | LogRecord::CompensationDone { saga, .. }
            | LogRecord::Ended { saga, .. } => *saga,
        }
    }

    /// The step the record is about (`None` for `Started` and `Ended`).
    pub fn step(&self) -> Option<StepId> {
        match self {
            LogRecord::StepIntent { step, .. }
            | LogRecord::StepOutcome { step, .. }
            | LogRecord::CompensationIntent { step, .. }
            | LogRecord::CompensationDone { step, .. } => Some(*step),
            LogRecord::Started { .. } | LogRecord::Ended { .. } => None,
        }
    }

    /// The intent record that must precede sending attempt `attempt` of `cmd`.
    pub fn intent_for<Q>(cmd: &Command<Q>, attempt: u32) -> LogRecord<P, R> {
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
pub const FORMAT_VERSION: u32 = 3;

/// Why one stored line is not a [`LogRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Not a JSON object, or not one of the records of its version (a missing, extra or
    /// ill-typed field, an unknown `type`, step or state, a payload or refusal that is
    /// not the definition's).
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
    /// ending in a state not at rest, an outcome both ok and refused).
    #[error("impossible record: {0}")]
    Impossible(String),
}

impl<P: SagaData, R: SagaData> LogRecord<P, R> {
    /// The record as one line of the current [format](self#the-stored-format)
    /// ([`FORMAT_VERSION`]), without a newline.
    pub fn encode_line(&self) -> String {
        // Serializing these plain structs to a string cannot fail for a payload and a
        // refusal whose serde form is JSON (a map with non-string keys would).
        serde_json::to_string(&Envelope::from(self.clone())).unwrap_or_default()
    }

    /// Reads one line (without its newline) of any supported format version.
    ///
    /// # Errors
    ///
    /// [`LineError`]: a line that is not a record, a later version than
    /// [`FORMAT_VERSION`], or a record the orchestrator cannot have written.
    pub fn decode_line(line: &[u8]) -> Result<LogRecord<P, R>, LineError> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
        LogRecord::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<LogRecord<P, R>, LineError> {
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
            1 | 2 => serde_json::from_value::<LineV2>(body)
                .map_err(malformed)?
                .migrate(),
            3 => serde_json::from_value::<Line<P, R>>(body)
                .map_err(malformed)?
                .try_into(),
            version => Err(LineError::NewerVersion {
                version,
                supported: FORMAT_VERSION,
            }),
        }
    }
}

/// How a log of bytes ends, as [`decode_log`] found it: the length of its complete lines
/// and what follows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Bytes of the complete lines (each ended by `\n`): where the log is cut back to,
    /// and the next append starts.
    pub complete: usize,
    /// Bytes after them: an incomplete last line (no `\n`), torn by a crash in the
    /// middle of an append; 0 when the log ends on a newline (or is empty).
    pub torn: usize,
}

impl Tail {
    /// True when the log ends in a torn line.
    pub fn is_torn(&self) -> bool {
        self.torn > 0
    }
}

/// A complete line of a log of bytes that is not a record (see [`decode_log`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga log line {line}: {problem}")]
pub struct CorruptLine {
    /// The line, counting from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: LineError,
}

/// Reads a stored log of JSON lines ([the format](self#the-stored-format)) back after a
/// crash at any point: the records of its complete lines, in order, and how it ends.
///
/// An incomplete last line (no `\n`: the append it belongs to was in flight when the
/// process died, so it was never durable and nothing was done after it) is left out and
/// reported in [`Tail::torn`], even when its bytes happen to form a whole record: only
/// the newline makes a line complete. A complete line that is not a record is an error:
/// the log was damaged (or written by a newer version), not merely cut short, and
/// guessing past it could lose or invent a saga's history. The tokio adapter's
/// `FileLog` reads its file with this, and the simulated checkout reads its modelled
/// disk with it, so a crash in the simulator exercises the recovery a file log runs.
///
/// # Errors
///
/// [`CorruptLine`], naming the first complete line that is not a record.
#[allow(clippy::type_complexity)]
pub fn decode_log<P: SagaData, R: SagaData>(
    bytes: &[u8],
) -> Result<(Vec<LogRecord<P, R>>, Tail), CorruptLine> {
    let mut records = Vec::new();
    let mut complete = 0;
    for (index, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(body) = line.strip_suffix(b"\n") else {
            break; // torn by a crash mid-append
        };
        let record = LogRecord::decode_line(body).map_err(|problem| CorruptLine {
            line: index + 1,
            problem,
        })?;
        records.push(record);
        complete += line.len();
    }
    let tail = Tail {
        complete,
        torn: bytes.len() - complete,
    };
    Ok((records, tail))
}

impl<P: SagaData, R: SagaData> Serialize for LogRecord<P, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Envelope::from(self.clone()).serialize(s)
    }
}

impl<'de, P: SagaData, R: SagaData> Deserialize<'de> for LogRecord<P, R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        LogRecord::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// A line of the current version: `"v"` first, then the record's fields.
#[derive(Serialize)]
#[serde(bound(serialize = "P: Serialize, R: Serialize"))]
struct Envelope<P, R> {
    v: u32,
    #[serde(flatten)]
    line: Line<P, R>,
}

impl<P, R> From<LogRecord<P, R>> for Envelope<P, R> {
    fn from(record: LogRecord<P, R>) -> Self {
        Envelope {
            v: FORMAT_VERSION,
            line: record.into(),
        }
    }
}

/// The fields of one stored [`LogRecord`] of version 3, kept apart from the core's
/// types so that they change only with the format version.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[serde(bound(
    serialize = "P: Serialize, R: Serialize",
    deserialize = "P: DeserializeOwned, R: DeserializeOwned"
))]
enum Line<P, R> {
    Started {
        saga: u64,
        payload: P,
    },
    StepIntent {
        saga: u64,
        step: StepId,
        attempt: u32,
    },
    StepOutcome {
        saga: u64,
        step: StepId,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refusal: Option<R>,
    },
    CompensationIntent {
        saga: u64,
        step: StepId,
        attempt: u32,
    },
    CompensationDone {
        saga: u64,
        step: StepId,
    },
    Ended {
        saga: u64,
        state: StateName,
    },
}

/// The fields of one stored line of versions 1 and 2 (the checkout's only).
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum LineV2 {
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

/// The steps a version 1 or 2 line may name: the checkout's.
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

impl From<StepName> for StepId {
    fn from(step: StepName) -> Self {
        match step {
            StepName::Order => StepId::ORDER,
            StepName::Inventory => StepId::INVENTORY,
            StepName::Payment => StepId::PAYMENT,
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

fn at_rest(state: StateName) -> Result<SagaState, LineError> {
    match state {
        StateName::Completed => Ok(SagaState::Completed),
        StateName::Compensated => Ok(SagaState::Compensated),
        StateName::Failed => Ok(SagaState::Failed),
        StateName::Running | StateName::Compensating => Err(LineError::Impossible(
            "a saga cannot end in a state not at rest".to_string(),
        )),
    }
}

impl LineV2 {
    /// The line the version 1 and 2 writer wrote for `record` (for the tests that pin
    /// those versions).
    #[cfg(test)]
    fn from_checkout(record: &LogRecord<Order, Refusal>) -> Option<LineV2> {
        let name = |step: StepId| match step.checkout()? {
            crate::saga::services::CheckoutStep::Order => Some(StepName::Order),
            crate::saga::services::CheckoutStep::Inventory => Some(StepName::Inventory),
            crate::saga::services::CheckoutStep::Payment => Some(StepName::Payment),
        };
        Some(match record {
            LogRecord::Started { saga, payload } => LineV2::Started {
                saga: saga.0,
                item: payload.item,
                qty: payload.qty,
                amount: payload.amount,
            },
            LogRecord::StepIntent {
                saga,
                step,
                attempt,
            } => LineV2::StepIntent {
                saga: saga.0,
                step: name(*step)?,
                attempt: *attempt,
            },
            LogRecord::StepOutcome { saga, step, ok, .. } => LineV2::StepOutcome {
                saga: saga.0,
                step: name(*step)?,
                ok: *ok,
            },
            LogRecord::CompensationIntent {
                saga,
                step,
                attempt,
            } => LineV2::CompensationIntent {
                saga: saga.0,
                step: name(*step)?,
                attempt: *attempt,
            },
            LogRecord::CompensationDone { saga, step } => LineV2::CompensationDone {
                saga: saga.0,
                step: name(*step)?,
            },
            LogRecord::Ended { saga, state } => LineV2::Ended {
                saga: saga.0,
                state: (*state).into(),
            },
        })
    }

    /// The version 3 record this line of version 1 or 2 stands for.
    fn migrate<P: DeserializeOwned, R>(self) -> Result<LogRecord<P, R>, LineError> {
        Ok(match self {
            LineV2::Started {
                saga,
                item,
                qty,
                amount,
            } => {
                let order = serde_json::json!({ "item": item, "qty": qty, "amount": amount });
                let payload = serde_json::from_value(order).map_err(|e| {
                    LineError::Malformed(format!(
                        "a version 1 or 2 started line holds a checkout order, which is not this log's payload: {e}"
                    ))
                })?;
                LogRecord::Started {
                    saga: SagaId(saga),
                    payload,
                }
            }
            LineV2::StepIntent {
                saga,
                step,
                attempt,
            } => LogRecord::StepIntent {
                saga: SagaId(saga),
                step: step.into(),
                attempt,
            },
            LineV2::StepOutcome { saga, step, ok } => LogRecord::StepOutcome {
                saga: SagaId(saga),
                step: step.into(),
                ok,
                refusal: None,
            },
            LineV2::CompensationIntent {
                saga,
                step,
                attempt,
            } => LogRecord::CompensationIntent {
                saga: SagaId(saga),
                step: step.into(),
                attempt,
            },
            LineV2::CompensationDone { saga, step } => LogRecord::CompensationDone {
                saga: SagaId(saga),
                step: step.into(),
            },
            LineV2::Ended { saga, state } => LogRecord::Ended {
                saga: SagaId(saga),
                state: at_rest(state)?,
            },
        })
    }
}

impl<P, R> From<LogRecord<P, R>> for Line<P, R> {
    fn from(record: LogRecord<P, R>) -> Self {
        match record {
            LogRecord::Started { saga, payload } => Line::Started {
                saga: saga.0,
                payload,
            },
            LogRecord::StepIntent {
                saga,
                step,
                attempt,
            } => Line::StepIntent {
                saga: saga.0,
                step,
                attempt,
            },
            LogRecord::StepOutcome {
                saga,
                step,
                ok,
                refusal,
            } => Line::StepOutcome {
                saga: saga.0,
                step,
                ok,
                refusal,
            },
            LogRecord::CompensationIntent {
                saga,
                step,
                attempt,
            } => Line::CompensationIntent {
                saga: saga.0,
                step,
                attempt,
            },
            LogRecord::CompensationDone { saga, step } => {
                Line::CompensationDone { saga: saga.0, step }
            }
            LogRecord::Ended { saga, state } => Line::Ended {
                saga: saga.0,
                state: state.into(),
            },
        }
    }
}

impl<P, R> TryFrom<Line<P, R>> for LogRecord<P, R> {
    type Error = LineError;

    fn try_from(line: Line<P, R>) -> Result<Self, LineError> {
        Ok(match line {
            Line::Started { saga, payload } => LogRecord::Started {
                saga: SagaId(saga),
                payload,
            },
            Line::StepIntent {
                saga,
                step,
                attempt,
            } => LogRecord::StepIntent {
                saga: SagaId(saga),
                step,
                attempt,
            },
            Line::StepOutcome {
                saga,
                step,
                ok,
                refusal,
            } => {
                if ok && refusal.is_some() {
                    return Err(LineError::Impossible(
                        "an outcome cannot be both ok and refused".to_string(),
                    ));
                }
                LogRecord::StepOutcome {
                    saga: SagaId(saga),
                    step,
                    ok,
                    refusal,
                }
            }
            Line::CompensationIntent {
                saga,
                step,
                attempt,
            } => LogRecord::CompensationIntent {
                saga: SagaId(saga),
                step,
                attempt,
            },
            Line::CompensationDone { saga, step } => LogRecord::CompensationDone {
                saga: SagaId(saga),
                step,
            },
            Line::Ended { saga, state } => LogRecord::Ended {
                saga: SagaId(saga),
                state: at_rest(state)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::services::Refusal;

    type Checkout = LogRecord<Order, Refusal>;

    fn decode(line: &[u8]) -> Result<Checkout, LineError> {
        LogRecord::decode_line(line)
    }

    fn every_kind() -> Vec<Checkout> {
        let saga = SagaId(7);
        vec![
            LogRecord::Started {
                saga,
                payload: Order {
                    item: 1,
                    qty: 2,
                    amount: 500,
                },
            },
            LogRecord::StepIntent {
                saga,
                step: StepId::INVENTORY,
                attempt: 1,
            },
            LogRecord::StepOutcome {
                saga,
                step: StepId::INVENTORY,
                ok: true,
                refusal: None,
            },
            LogRecord::StepOutcome {
                saga,
                step: StepId::PAYMENT,
                ok: false,
                refusal: Some(Refusal::CardDeclined),
            },
            LogRecord::CompensationIntent {
                saga,
                step: StepId::ORDER,
                attempt: 1,
            },
            LogRecord::CompensationDone {
                saga,
                step: StepId::ORDER,
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

    /// [`every_kind`] as versions 1 and 2 read it: their refusals carry no reason.
    fn every_kind_migrated() -> Vec<Checkout> {
        every_kind()
            .into_iter()
            .map(|r| match r {
                LogRecord::StepOutcome { saga, step, ok, .. } => LogRecord::StepOutcome {
                    saga,
                    step,
                    ok,
                    refusal: None,
                },
                r => r,
            })
            .collect()
    }

    /// The lines of [`every_kind`] in version 3, byte for byte: the format is a
    /// promise, so a change here is a version bump.
    const V3: &str = r#"{"v":3,"type":"started","saga":7,"payload":{"item":1,"qty":2,"amount":500}}
{"v":3,"type":"step_intent","saga":7,"step":"inventory","attempt":1}
{"v":3,"type":"step_outcome","saga":7,"step":"inventory","ok":true}
{"v":3,"type":"step_outcome","saga":7,"step":"payment","ok":false,"refusal":"card_declined"}
{"v":3,"type":"compensation_intent","saga":7,"step":"order","attempt":1}
{"v":3,"type":"compensation_done","saga":7,"step":"order"}
{"v":3,"type":"ended","saga":7,"state":"compensated"}
{"v":3,"type":"ended","saga":18446744073709551615,"state":"completed"}
{"v":3,"type":"ended","saga":7,"state":"failed"}"#;

    /// The same records as the version 2 writer wrote them (without the reason).
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
    fn every_kind_encodes_to_the_documented_version_3_lines_and_back() {
        let lines: Vec<String> = every_kind().iter().map(LogRecord::encode_line).collect();
        assert_eq!(lines.join("\n"), V3);
        for (line, record) in V3.lines().zip(every_kind()) {
            assert_eq!(decode(line.as_bytes()), Ok(record), "{line}");
        }
    }

    #[test]
    fn version_2_lines_migrate_to_the_same_records_without_reasons() {
        let read: Vec<Checkout> = V2.lines().map(|l| decode(l.as_bytes()).unwrap()).collect();
        assert_eq!(read, every_kind_migrated());
        // V2 is what the version 2 writer (the unchanged `LineV2`, with "v":2) wrote.
        for (line, record) in V2.lines().zip(every_kind_migrated()) {
            let old = LineV2::from_checkout(&record).unwrap();
            let body = serde_json::to_string(&old).unwrap();
            assert_eq!(format!("{{\"v\":2,{}", &body[1..]), line);
        }
    }

    #[test]
    fn version_1_lines_migrate_to_the_same_records() {
        let read: Vec<Checkout> = V1.lines().map(|l| decode(l.as_bytes()).unwrap()).collect();
        assert_eq!(read, every_kind_migrated());
        // An explicit "v":1 reads as version 1 too; field order is free.
        assert_eq!(
            decode(br#"{"saga":7,"step":"order","type":"compensation_done","v":1}"#),
            Ok(every_kind()[5])
        );
        for (line, record) in V1.lines().zip(every_kind_migrated()) {
            let old = LineV2::from_checkout(&record).unwrap();
            assert_eq!(serde_json::to_string(&old).unwrap(), line);
        }
    }

    /// Versions 1 and 2 were only written by the checkout: their start lines read as
    /// an `Order` payload, and as an error (not a guess) for a payload of another
    /// shape; their steps are the checkout's.
    #[test]
    fn an_old_start_line_needs_a_payload_read_from_an_order() {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        struct Trip {
            traveller: String,
        }
        let line = V2.lines().next().unwrap().as_bytes();
        let err = LogRecord::<Trip, Refusal>::decode_line(line).unwrap_err();
        assert!(
            matches!(&err, LineError::Malformed(m) if m.contains("checkout order")),
            "{err}"
        );
        // A payload type with the order's fields reads it.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        struct Amount {
            amount: u64,
            item: u32,
            qty: u32,
        }
        assert!(matches!(
            LogRecord::<Amount, Refusal>::decode_line(line),
            Ok(LogRecord::Started {
                payload: Amount { amount: 500, .. },
                ..
            })
        ));
        // A version 2 line naming a step that is not the checkout's is malformed.
        let other = br#"{"v":2,"type":"step_intent","saga":1,"step":"flight","attempt":1}"#;
        assert!(matches!(decode(other), Err(LineError::Malformed(_))));
        // Version 3 names any step.
        let any = br#"{"v":3,"type":"step_intent","saga":1,"step":"flight","attempt":1}"#;
        assert_eq!(
            decode(any),
            Ok(LogRecord::StepIntent {
                saga: SagaId(1),
                step: StepId::from_static("flight"),
                attempt: 1
            })
        );
    }

    #[test]
    fn serde_uses_the_line_format() {
        for (line, record) in V3.lines().zip(every_kind()) {
            assert_eq!(serde_json::to_string(&record).unwrap(), line);
            let back: Checkout = serde_json::from_str(line).unwrap();
            assert_eq!(back, record);
        }
        let old: Checkout = serde_json::from_str(V1.lines().next().unwrap()).unwrap();
        assert_eq!(old, every_kind()[0]);
        let newer = serde_json::from_str::<Checkout>(r#"{"v":4,"type":"x"}"#).unwrap_err();
        assert!(newer.to_string().contains("version 4"), "{newer}");
    }

    #[test]
    fn a_newer_version_is_refused_not_guessed() {
        let line =
            br#"{"v":4,"type":"started","saga":7,"payload":{"item":1,"qty":2,"amount":500}}"#;
        let err = decode(line).unwrap_err();
        assert_eq!(
            err,
            LineError::NewerVersion {
                version: 4,
                supported: FORMAT_VERSION
            }
        );
        assert!(err.to_string().contains("version 4"), "{err}");
        assert!(err.to_string().contains("up to 3"), "{err}");
        // Even a newer line whose fields look like today's is refused, and a huge one.
        let err = decode(br#"{"v":18446744073709551615}"#).unwrap_err();
        assert!(matches!(err, LineError::NewerVersion { .. }), "{err}");
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        type Expect = fn(&LineError) -> bool;
        let cases: [(&[u8], Expect); 14] = [
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
                br#"{"v":3,"type":"ended","saga":1,"state":"failed","extra":1}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
            (
                br#"{"v":2,"type":"step_intent","saga":1,"step":"shipping","attempt":1}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
            (
                br#"{"v":3,"type":"step_intent","saga":1,"step":"","attempt":1}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
            (
                br#"{"v":3,"type":"ended","saga":1,"state":"running"}"#,
                |e| matches!(e, LineError::Impossible(_)),
            ),
            (
                br#"{"v":3,"type":"step_outcome","saga":1,"step":"order","ok":true,"refusal":"out_of_stock"}"#,
                |e| matches!(e, LineError::Impossible(_)),
            ),
            (
                br#"{"v":3,"type":"step_outcome","saga":1,"step":"order","ok":false,"refusal":"no_such_reason"}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
            (
                br#"{"v":3,"type":"started","saga":1,"item":1,"qty":2,"amount":500}"#,
                |e| matches!(e, LineError::Malformed(_)),
            ),
        ];
        for (line, expected) in cases {
            let err = decode(line).unwrap_err();
            assert!(expected(&err), "{}: {err:?}", String::from_utf8_lossy(line));
        }
    }

    /// A log of every kind of record, cut at every byte (a crash mid-append at any
    /// point): the records of the complete lines come back, the rest is a torn tail of
    /// exactly the bytes after the last newline, never a record.
    #[test]
    fn decode_log_reads_every_prefix_as_its_complete_lines() {
        let records = every_kind();
        let mut bytes = Vec::new();
        let mut ends = vec![0];
        for r in &records {
            bytes.extend_from_slice(r.encode_line().as_bytes());
            bytes.push(b'\n');
            ends.push(bytes.len());
        }
        for cut in 0..=bytes.len() {
            let (got, tail) = decode_log::<Order, Refusal>(&bytes[..cut]).unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count() - 1;
            assert_eq!(got, records[..whole], "cut at {cut}");
            assert_eq!(tail.complete, ends[whole], "cut at {cut}");
            assert_eq!(tail.torn, cut - ends[whole], "cut at {cut}");
            assert_eq!(tail.is_torn(), !ends.contains(&cut), "cut at {cut}");
        }
    }

    /// A whole record without its newline is still torn (the append did not finish),
    /// and a complete line that is not a record is an error naming it, not a tail.
    #[test]
    fn decode_log_needs_the_newline_and_refuses_a_damaged_complete_line() {
        let [a, b, ..] = &every_kind()[..] else {
            unreachable!()
        };
        let unfinished = format!("{}\n{}", a.encode_line(), b.encode_line());
        let (got, tail) = decode_log::<Order, Refusal>(unfinished.as_bytes()).unwrap();
        assert_eq!(got, vec![*a]);
        assert_eq!(tail.torn, b.encode_line().len());
        let damaged = format!(
            "{}\n{{\"v\":3,\"type\":\"sta\n{}\n",
            a.encode_line(),
            b.encode_line()
        );
        let err = decode_log::<Order, Refusal>(damaged.as_bytes()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(matches!(err.problem, LineError::Malformed(_)), "{err}");
    }
}
