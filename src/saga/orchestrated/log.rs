//! The orchestrator's durable log: [`LogRecord`]. The orchestrator writes each step's
//! intent before its command leaves (write-ahead), each outcome as it learns it, and
//! each saga's end; [`Orchestrator::recover`](crate::saga::Orchestrator::recover) rebuilds every saga from these records
//! alone after a crash at any point.

use crate::saga::services::{Command, Kind, Order, SagaId, SagaState, StepId};

/// One record of the durable saga log. [`Orchestrator::recover`](crate::saga::Orchestrator::recover) rebuilds every saga
/// from these alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
