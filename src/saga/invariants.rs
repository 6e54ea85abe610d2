//! The promises of both sagas (orchestrated and choreographed), checked from what their
//! worlds observe at the services, under one set of names:
//!
//! 1. [`AT_REST`]: every accepted saga is Completed, Compensated or Failed; Failed only
//!    with an alert after a compensation kept failing (only the orchestrator can fail).
//! 2. [`CONSERVATION`]: stock and money are conserved; a completed saga holds its
//!    order, stock and payment; a compensated one holds none.
//! 3. [`COMPENSATION_ORDER`]: compensations take effect in reverse order, only for
//!    steps whose action was attempted (the choreography: whose action took effect).
//! 4. [`IDEMPOTENT`]: no command takes effect twice.
//! 5. [`WRITE_AHEAD`]: no command leaves before the log records its intent (the
//!    orchestrator only: the choreography has no log).
//! 6. [`SETTLING`]: every saga comes to rest within its bound after the later of its
//!    checkout and the end of the last fault (the ledger is in
//!    [`checkout`](crate::saga::checkout)).
//!
//! The names are constants, so a misspelt one fails to compile. The checks here are the
//! ones both worlds make alike; each world calls them in its own order at rest, beside
//! the checks only it can make (the orchestrator's alerts and write-ahead log, the
//! choreography's compensations as they are issued). Two-phase commit keeps promises
//! of its own: [`twopc::invariants`](crate::saga::twopc::invariants).

use crate::saga::services::{Command, Kind, SagaId, SagaState, Services, StepId};
use faultline_sim::Violation;
use std::collections::BTreeMap;
use std::fmt;

/// Every accepted saga comes to rest (Failed only with an alert, after an exhausted
/// compensation).
pub const AT_REST: &str = "saga.at_rest";
/// Stock and money are conserved, and each saga at rest holds what its end says.
pub const CONSERVATION: &str = "saga.conservation";
/// Compensations in reverse order, only for steps whose action was attempted.
pub const COMPENSATION_ORDER: &str = "saga.compensation_order";
/// No command takes effect twice.
pub const IDEMPOTENT: &str = "saga.idempotent";
/// No command leaves before the log records its intent.
pub const WRITE_AHEAD: &str = "saga.write_ahead";
/// Every saga comes to rest within its bound once the faults are over.
pub const SETTLING: &str = "saga.settling";

/// The orchestrated saga's invariants, in order.
pub const ORCHESTRATED: [&str; 6] = [
    AT_REST,
    CONSERVATION,
    COMPENSATION_ORDER,
    IDEMPOTENT,
    WRITE_AHEAD,
    SETTLING,
];

/// The choreographed saga's invariants, in order: the orchestrated saga's, without the
/// log's.
pub const CHOREOGRAPHED: [&str; 5] = [
    AT_REST,
    CONSERVATION,
    COMPENSATION_ORDER,
    IDEMPOTENT,
    SETTLING,
];

/// [`AT_REST`]: `saga` was left in `state` (not at rest).
pub(crate) fn left_in(saga: SagaId, state: impl fmt::Debug) -> Violation {
    Violation::new(AT_REST, format!("{saga} is left {state:?}"))
}

/// [`IDEMPOTENT`]: no command took effect more than once at any service.
pub(crate) fn check_idempotent(services: &Services) -> Result<(), Violation> {
    let most = services.effects_max();
    if most > 1 {
        return Err(Violation::new(
            IDEMPOTENT,
            format!("one command took effect {most} times"),
        ));
    }
    Ok(())
}

/// [`CONSERVATION`]: the stock and the money add up.
pub(crate) fn check_conserved(services: &Services) -> Result<(), Violation> {
    if !services.is_conserved() {
        return Err(Violation::new(
            CONSERVATION,
            "stock or money is not conserved",
        ));
    }
    Ok(())
}

/// [`CONSERVATION`]: `saga`, in `state`, holds what its end says: all of its order,
/// stock and payment when completed, none of them when compensated.
pub(crate) fn check_holdings(
    services: &Services,
    saga: SagaId,
    state: SagaState,
) -> Result<(), Violation> {
    match state {
        SagaState::Completed if !services.holds_all(saga) => Err(Violation::new(
            CONSERVATION,
            format!("{saga} completed but does not hold its order, stock and payment"),
        )),
        SagaState::Compensated if services.holds(saga) => Err(Violation::new(
            CONSERVATION,
            format!("{saga} was compensated but still holds an order, stock or money"),
        )),
        _ => Ok(()),
    }
}

/// The compensations that took effect, per saga, in the order they did: what
/// [`COMPENSATION_ORDER`] is checked against at rest.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompensationEffects(BTreeMap<SagaId, Vec<StepId>>);

impl CompensationEffects {
    /// `cmd` was handled by its service: its key had taken effect `before` times and
    /// has now taken effect `after` times. Notes a compensation's first effect.
    pub(crate) fn observe(&mut self, cmd: &Command, before: u32, after: u32) {
        if cmd.kind == Kind::Compensation && before == 0 && after > 0 {
            self.0.entry(cmd.saga).or_default().push(cmd.step);
        }
    }

    /// [`COMPENSATION_ORDER`]: per saga, the compensations that took effect (in the
    /// order they did) undo the steps in reverse order.
    pub(crate) fn check_reverse_order(&self) -> Result<(), Violation> {
        for (saga, effects) in &self.0 {
            for w in effects.windows(2) {
                if w[0] <= w[1] {
                    return Err(Violation::new(
                        COMPENSATION_ORDER,
                        format!("{saga}: {:?} was compensated before {:?}", w[0], w[1]),
                    ));
                }
            }
        }
        Ok(())
    }
}
