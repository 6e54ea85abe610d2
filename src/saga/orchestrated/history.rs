//! [`SagaHistory`]: a saga's history for an operator, read from its log records alone
//! (so it works on a log read from disk after a crash): what it was started with,
//! where it stands, and per step how many attempts were made, how the action ended
//! (with the refusal's reason), and whether it was compensated.
//!
//! ```
//! use faultline::saga::{
//!     ActionOutcome, LogRecord, Order, Refusal, SagaHistory, SagaId, SagaState, StepId,
//! };
//!
//! let saga = SagaId(7);
//! let order = Order { item: 1, qty: 2, amount: 500 };
//! let log: Vec<LogRecord> = vec![
//!     LogRecord::Started { saga, payload: order },
//!     LogRecord::StepIntent { saga, step: StepId::ORDER, attempt: 1 },
//!     LogRecord::StepOutcome { saga, step: StepId::ORDER, ok: true, refusal: None },
//!     LogRecord::StepIntent { saga, step: StepId::INVENTORY, attempt: 1 },
//!     LogRecord::StepOutcome {
//!         saga,
//!         step: StepId::INVENTORY,
//!         ok: false,
//!         refusal: Some(Refusal::OutOfStock),
//!     },
//!     LogRecord::CompensationIntent { saga, step: StepId::ORDER, attempt: 1 },
//!     LogRecord::CompensationDone { saga, step: StepId::ORDER },
//!     LogRecord::Ended { saga, state: SagaState::Compensated },
//! ];
//! let history = SagaHistory::of(saga, &log).unwrap();
//! assert_eq!(history.state, SagaState::Compensated);
//! assert_eq!(history.payload, order);
//! assert!(history.steps[0].compensated);
//! assert_eq!(history.steps[1].outcome, ActionOutcome::Refused(Some(Refusal::OutOfStock)));
//! assert_eq!(SagaHistory::all(&log), vec![history.clone()]);
//! println!("{history}");
//! ```

use std::collections::BTreeSet;
use std::fmt;

use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Order, Refusal, SagaId, SagaState, StepId};

/// How a step's action ended, as the log tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome<R = Refusal> {
    /// It took effect.
    Ok,
    /// The participant refused it (no effect), for this reason (`None` when the line
    /// was written by a format version that did not record reasons).
    Refused(Option<R>),
    /// Every attempt failed or went unanswered and the saga moved on to compensate:
    /// the outcome stays unknown (it may have taken effect), so it is compensated.
    Failed,
    /// Sent and not answered yet (in flight, or in flight at a crash).
    Unknown,
}

/// One step of a [`SagaHistory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepHistory<R = Refusal> {
    /// The step.
    pub step: StepId,
    /// Action attempts sent (intents written), 0 if never sent.
    pub attempts: u32,
    /// How the action ended.
    pub outcome: ActionOutcome<R>,
    /// Compensation attempts sent, 0 if never compensated.
    pub compensation_attempts: u32,
    /// The compensation was done.
    pub compensated: bool,
}

/// A saga's history, from its log records: see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SagaHistory<P = Order, R = Refusal> {
    /// The saga.
    pub saga: SagaId,
    /// What it was started with.
    pub payload: P,
    /// Where it stands: at rest once its `Ended` record is durable; `Compensating`
    /// once a compensation was logged; `Running` before.
    pub state: SagaState,
    /// The steps the log names, in the order it first names them (the definition's
    /// order, for every step that was sent).
    pub steps: Vec<StepHistory<R>>,
}

impl<P: Clone, R: Clone> SagaHistory<P, R> {
    /// The history of `saga` from `records` (a log in the order appended; other sagas'
    /// records are skipped). `None` when the log has no `Started` record for it (the
    /// orchestrator ignores such records too).
    pub fn of(saga: SagaId, records: &[LogRecord<P, R>]) -> Option<SagaHistory<P, R>> {
        let mut history: Option<SagaHistory<P, R>> = None;
        for record in records.iter().filter(|r| r.saga() == saga) {
            if let LogRecord::Started { payload, .. } = record {
                history.get_or_insert_with(|| SagaHistory {
                    saga,
                    payload: payload.clone(),
                    state: SagaState::Running,
                    steps: Vec::new(),
                });
                continue;
            }
            let Some(h) = history.as_mut() else {
                continue;
            };
            h.apply(record);
        }
        history
    }

    /// Every saga's history in `records`, in id order.
    pub fn all(records: &[LogRecord<P, R>]) -> Vec<SagaHistory<P, R>> {
        let sagas: BTreeSet<SagaId> = records
            .iter()
            .filter(|r| matches!(r, LogRecord::Started { .. }))
            .map(LogRecord::saga)
            .collect();
        sagas
            .iter()
            .filter_map(|saga| SagaHistory::of(*saga, records))
            .collect()
    }

    /// The history of `step`, if the log names it.
    pub fn step(&self, step: StepId) -> Option<&StepHistory<R>> {
        self.steps.iter().find(|s| s.step == step)
    }

    fn apply(&mut self, record: &LogRecord<P, R>) {
        if let LogRecord::Ended { state, .. } = record {
            self.state = *state;
            return;
        }
        let Some(step) = record.step() else {
            return;
        };
        let at = match self.steps.iter().position(|s| s.step == step) {
            Some(at) => at,
            None => {
                self.steps.push(StepHistory {
                    step,
                    attempts: 0,
                    outcome: ActionOutcome::Unknown,
                    compensation_attempts: 0,
                    compensated: false,
                });
                self.steps.len() - 1
            }
        };
        let compensating = !self.state.is_at_rest();
        let s = &mut self.steps[at];
        match record {
            LogRecord::StepIntent { attempt, .. } => s.attempts = s.attempts.max(*attempt),
            LogRecord::StepOutcome { ok, refusal, .. } => {
                s.outcome = if *ok {
                    ActionOutcome::Ok
                } else {
                    ActionOutcome::Refused(refusal.clone())
                };
            }
            LogRecord::CompensationIntent { attempt, .. } => {
                s.compensation_attempts = s.compensation_attempts.max(*attempt);
            }
            LogRecord::CompensationDone { .. } => s.compensated = true,
            LogRecord::Started { .. } | LogRecord::Ended { .. } => {}
        }
        if matches!(
            record,
            LogRecord::CompensationIntent { .. } | LogRecord::CompensationDone { .. }
        ) {
            if compensating {
                self.state = SagaState::Compensating;
            }
            // Once compensation began, an action still unanswered will never be: its
            // attempts were spent (or the saga gave up on it).
            for s in &mut self.steps {
                if matches!(s.outcome, ActionOutcome::Unknown) && s.attempts > 0 {
                    s.outcome = ActionOutcome::Failed;
                }
            }
        }
    }
}

impl<R: fmt::Debug> fmt::Display for StepHistory<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tries = |n: u32| if n == 1 { "attempt" } else { "attempts" };
        match &self.outcome {
            ActionOutcome::Ok => write!(f, "{}: ok", self.step)?,
            ActionOutcome::Refused(Some(r)) => write!(f, "{}: refused ({r:?})", self.step)?,
            ActionOutcome::Refused(None) => write!(f, "{}: refused", self.step)?,
            ActionOutcome::Failed => write!(f, "{}: failed (outcome unknown)", self.step)?,
            ActionOutcome::Unknown => write!(f, "{}: no answer yet", self.step)?,
        }
        write!(f, " after {} {}", self.attempts, tries(self.attempts))?;
        if self.compensated {
            let n = self.compensation_attempts;
            write!(f, "; compensated after {n} {}", tries(n))?;
        } else if self.compensation_attempts > 0 {
            let n = self.compensation_attempts;
            write!(f, "; compensation not done after {n} {}", tries(n))?;
        }
        Ok(())
    }
}

impl<P: fmt::Debug, R: fmt::Debug> fmt::Display for SagaHistory<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}): {:?}", self.saga, self.state, self.payload)?;
        for step in &self.steps {
            write!(f, "\n  {step}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record = LogRecord<u32, String>;

    /// A step whose attempts all went unanswered before compensation began is
    /// `Failed` (outcome unknown, compensated); one still unanswered at the end of the
    /// log is `Unknown`; records before a saga's start, and other sagas', are ignored.
    #[test]
    fn unanswered_steps_are_failed_once_compensation_begins() {
        let (a, b) = (StepId::from_static("a"), StepId::from_static("b"));
        let s1 = SagaId(1);
        let log: Vec<Record> = vec![
            LogRecord::StepIntent {
                saga: s1,
                step: a,
                attempt: 1,
            },
            LogRecord::Started {
                saga: s1,
                payload: 5,
            },
            LogRecord::Started {
                saga: SagaId(2),
                payload: 6,
            },
            LogRecord::StepIntent {
                saga: s1,
                step: a,
                attempt: 1,
            },
            LogRecord::StepOutcome {
                saga: s1,
                step: a,
                ok: true,
                refusal: None,
            },
            LogRecord::StepIntent {
                saga: s1,
                step: b,
                attempt: 1,
            },
            LogRecord::StepIntent {
                saga: SagaId(2),
                step: a,
                attempt: 1,
            },
            LogRecord::StepIntent {
                saga: s1,
                step: b,
                attempt: 2,
            },
        ];
        let h = SagaHistory::of(s1, &log).unwrap();
        assert_eq!((h.state, h.payload), (SagaState::Running, 5));
        assert_eq!(h.step(a).map(|s| s.attempts), Some(1));
        assert_eq!(
            h.step(b).map(|s| (s.attempts, s.outcome.clone())),
            Some((2, ActionOutcome::Unknown))
        );
        let mut log = log;
        log.push(LogRecord::CompensationIntent {
            saga: s1,
            step: b,
            attempt: 1,
        });
        let h = SagaHistory::of(s1, &log).unwrap();
        assert_eq!(h.state, SagaState::Compensating);
        assert_eq!(
            h.step(b).map(|s| s.outcome.clone()),
            Some(ActionOutcome::Failed)
        );
        log.push(LogRecord::CompensationDone { saga: s1, step: b });
        log.push(LogRecord::CompensationIntent {
            saga: s1,
            step: a,
            attempt: 1,
        });
        log.push(LogRecord::CompensationDone { saga: s1, step: a });
        log.push(LogRecord::Ended {
            saga: s1,
            state: SagaState::Compensated,
        });
        let h = SagaHistory::of(s1, &log).unwrap();
        assert_eq!(h.state, SagaState::Compensated);
        assert!(
            h.steps
                .iter()
                .all(|s| s.compensated && s.compensation_attempts == 1)
        );
        assert_eq!(
            h.to_string(),
            "saga 1 (Compensated): 5\n  a: ok after 1 attempt; compensated after 1 attempt\n  b: failed (outcome unknown) after 2 attempts; compensated after 1 attempt"
        );
        assert_eq!(SagaHistory::of(SagaId(3), &log), None);
        assert_eq!(SagaHistory::all(&log).len(), 2);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(
            serde_json::from_str::<SagaHistory<u32, String>>(&json).unwrap(),
            h
        );
    }
}
