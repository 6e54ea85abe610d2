//! The promises of both sagas (orchestrated and choreographed), checked from what their
//! worlds observe at the services, under one set of names:
//!
//! 1. [`AT_REST`]: every accepted saga is Completed, Compensated or Failed; Failed only
//!    with an alert after a compensation kept failing (only the orchestrator can fail).
//! 2. [`CONSERVATION`]: a completed saga holds every step's effect; a compensated one
//!    holds none; and what the participants hold adds up (the checkout: its order,
//!    stock and payment, stock and money conserved; a generated definition's ledgers:
//!    applied net of released is what the live entries hold).
//! 3. [`COMPENSATION_ORDER`]: compensations take effect in reverse order, only for
//!    steps whose action was attempted (the choreography: whose action took effect).
//! 4. [`IDEMPOTENT`]: no command takes effect twice.
//! 5. [`WRITE_AHEAD`]: no command leaves before the log records its intent (the
//!    orchestrator only: the choreography has no log).
//! 6. [`SETTLING`]: every saga comes to rest within its bound after the later of its
//!    checkout and the end of the last fault (the ledger is in
//!    [`checkout`](crate::saga::checkout)). For the orchestrator, the bound is computed
//!    from the timeout and the longest retry delay it declares.
//! 7. [`RETRIES`]: no command is attempted more often than the coordinator's declared
//!    policy allows, and no silent attempt (one the coordinator got no reply to) is
//!    followed by the next before the declared step timeout; counted from the
//!    commands the world sent and when (the orchestrator only).
//! 8. [`STARTED_AS_SUBMITTED`]: the log's `Started` records are the world's
//!    submissions: each names a saga the world submitted, with the payload it
//!    submitted (the checkout's order), once (the orchestrator only).
//! 9. [`CONFORMANCE`] (optional; on for the reference and its mutants): the declared
//!    policy is the reference's exact settings for the seed's knobs. A plug-in with
//!    settings of its own leaves it off and is judged by 1 to 8 alone.
//!
//! The names are constants, so a misspelt one fails to compile. The checks here are the
//! ones both worlds make alike, written against [`Participants`] (any definition's far
//! side; the checkout's [`Services`] is one); each world calls them in its own order at rest, beside
//! the checks only it can make (the orchestrator's alerts and write-ahead log, the
//! choreography's compensations as they are issued). Two-phase commit keeps promises
//! of its own: [`twopc::invariants`](crate::saga::twopc::invariants).

use crate::saga::participants::Participants;
use crate::saga::services::{
    ChargeState, Command, IdempotencyKey, Kind, OrderStatus, ReservationState, SagaId, SagaState,
    Services, StepId,
};
use faultline_sim::Violation;
use std::collections::{BTreeMap, BTreeSet};
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

/// No command is attempted more often, or retried sooner, than the declared policy
/// allows.
pub const RETRIES: &str = "saga.retries";
/// The log's `Started` records are the world's submissions (saga and order), once each.
pub const STARTED_AS_SUBMITTED: &str = "saga.started_as_submitted";
/// The optional check that the declared policy is the reference's for the knobs.
pub const CONFORMANCE: &str = "saga.conformance";

/// The orchestrated saga's invariants, in order.
pub const ORCHESTRATED: [&str; 9] = [
    AT_REST,
    CONSERVATION,
    COMPENSATION_ORDER,
    IDEMPOTENT,
    WRITE_AHEAD,
    SETTLING,
    RETRIES,
    STARTED_AS_SUBMITTED,
    CONFORMANCE,
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

/// What each invariant promises, in words (the list above), in the order of
/// [`ORCHESTRATED`] (the choreography keeps five of them): what `faultline list` prints beside each name.
pub const PROMISES: [(&str, &str); 9] = [
    (
        AT_REST,
        "Every accepted saga is Completed, Compensated or Failed; Failed only with an alert after a compensation kept failing (only the orchestrator can fail).",
    ),
    (
        CONSERVATION,
        "A completed saga holds every step's effect; a compensated one holds none; and what the participants hold adds up (the checkout: its order, stock and payment, stock and money conserved; a generated definition's ledgers: applied net of released is what the live entries hold).",
    ),
    (
        COMPENSATION_ORDER,
        "Compensations take effect in reverse order, only for steps whose action was attempted (the choreography: whose action took effect).",
    ),
    (IDEMPOTENT, "No command takes effect twice."),
    (
        WRITE_AHEAD,
        "No command leaves before the log records its intent (the orchestrator only: the choreography has no log).",
    ),
    (
        SETTLING,
        "Every saga comes to rest within its bound after the later of its checkout and the end of the last fault. For the orchestrator, the bound is computed from the timeout and the longest retry delay it declares.",
    ),
    (
        RETRIES,
        "No command is attempted more often than the coordinator's declared policy allows, and no silent attempt (one the coordinator got no reply to) is followed by the next before the declared step timeout; counted from the commands the world sent and when (the orchestrator only).",
    ),
    (
        STARTED_AS_SUBMITTED,
        "The log's Started records are the world's submissions: each names a saga the world submitted, with the payload it submitted (the checkout's order), once (the orchestrator only).",
    ),
    (
        CONFORMANCE,
        "Optional, on for the reference and its mutants: the declared policy is the reference's exact settings for the seed's knobs. A plug-in with settings of its own leaves it off and is judged by the other invariants alone.",
    ),
];

/// [`AT_REST`]: `saga` was left in `state` (not at rest).
pub(crate) fn left_in(saga: SagaId, state: impl fmt::Debug) -> Violation {
    Violation::new(AT_REST, format!("{saga} is left {state:?}"))
}

/// Every key of the participants' ledgers that took effect more than once, with how
/// many times, in participant then key order.
fn repeated_effects<S: Participants>(services: &S) -> impl Iterator<Item = (IdempotencyKey, u32)> {
    services.all_effects().into_iter().filter(|(_, n)| *n > 1)
}

/// [`IDEMPOTENT`]: no command took effect more than once at any participant (the message
/// names the first that did).
pub(crate) fn check_idempotent<S: Participants>(services: &S) -> Result<(), Violation> {
    if let Some((key, n)) = repeated_effects(services).next() {
        return Err(Violation::new(
            IDEMPOTENT,
            format!("{key} took effect {n} times"),
        ));
    }
    Ok(())
}

/// The commands of `step` that took effect more than once, in words (`""` if none):
/// the cause, when the world's ledgers know it, of a resource that does not add up.
fn repeated_cause(services: &Services, step: StepId) -> String {
    let repeated: Vec<String> = repeated_effects(services)
        .filter(|(key, _)| key.step == step)
        .take(3)
        .map(|(key, n)| format!("{key} took effect {n} times"))
        .collect();
    if repeated.is_empty() {
        String::new()
    } else {
        format!(" (cause: {})", repeated.join(", "))
    }
}

/// [`CONSERVATION`]: the stock and the money add up. The message names what does not:
/// the item, with its initial stock against what is available plus what the live
/// reservations hold, or the money, with what was captured net of refunds against
/// what the live charges hold; and the cause where the ledgers show one (a command
/// that took effect twice).
pub(crate) fn check_conserved(services: &Services) -> Result<(), Violation> {
    let inventory = &services.inventory;
    let mut held: BTreeMap<u32, u64> = BTreeMap::new();
    for (_, r) in inventory.reservations() {
        if r.state == ReservationState::Reserved {
            *held.entry(r.item).or_insert(0) += u64::from(r.qty);
        }
    }
    let items: BTreeSet<u32> = inventory.items().chain(held.keys().copied()).collect();
    for item in items {
        let expected = u64::from(inventory.initial(item));
        let available = u64::from(inventory.available(item));
        let reserved = held.get(&item).copied().unwrap_or(0);
        if available + reserved != expected {
            return Err(Violation::new(
                CONSERVATION,
                format!(
                    "stock of item {item} is not conserved: {expected} at the start, but {available} available + {reserved} held by live reservations = {}{}",
                    available + reserved,
                    repeated_cause(services, StepId::INVENTORY)
                ),
            ));
        }
    }
    let payment = &services.payment;
    let (captured, refunded, held) = (
        payment.captured_total(),
        payment.refunded_total(),
        payment.held_total(),
    );
    if captured.checked_sub(refunded) != Some(held) {
        return Err(Violation::new(
            CONSERVATION,
            format!(
                "money is not conserved: {captured} captured - {refunded} refunded, but the live charges hold {held}{}",
                repeated_cause(services, StepId::PAYMENT)
            ),
        ));
    }
    if !services.is_conserved() {
        return Err(Violation::new(
            CONSERVATION,
            "stock or money is not conserved",
        ));
    }
    Ok(())
}

/// What `saga` holds at `step`'s checkout service, in words, and whether it is a live effect
/// (a placed order, a reservation, a captured charge).
pub(crate) fn checkout_holding(services: &Services, saga: SagaId, step: StepId) -> (bool, String) {
    use crate::saga::services::CheckoutStep as S;
    match step.checkout() {
        Some(S::Order) => match services.orders.status(saga) {
            Some(OrderStatus::Placed) => (true, "the order is placed".into()),
            Some(st) => (false, format!("the order is {st:?}")),
            None => (false, "there is no order".into()),
        },
        Some(S::Inventory) => match services.inventory.reservation(saga) {
            Some(r) if r.state == ReservationState::Reserved => (
                true,
                format!("stock: {} of item {} is reserved", r.qty, r.item),
            ),
            Some(r) => (
                false,
                format!(
                    "stock: the reservation of {} of item {} is {:?}",
                    r.qty, r.item, r.state
                ),
            ),
            None => (false, "stock: nothing is reserved".into()),
        },
        Some(S::Payment) => match services.payment.charge(saga) {
            Some(c) if c.state == ChargeState::Captured => {
                (true, format!("money: {} is captured", c.amount))
            }
            Some(c) => (
                false,
                format!("money: the charge of {} is {:?}", c.amount, c.state),
            ),
            None => (false, "money: nothing is captured".into()),
        },
        None => (false, format!("{step}: not a checkout step")),
    }
}

/// [`CONSERVATION`]: `saga`, in `state`, holds what its end says: every step's effect
/// when completed (the checkout: its order, stock and payment), none of them when
/// compensated. The message names each step whose holding is off (the checkout: order,
/// stock with its item and quantity, money with its amount) and, where `cause` knows it (from what the world saw sent), why:
/// `cause(saga, step, kind)` explains the missing `kind` command of `step`.
pub(crate) fn check_holdings<S: Participants>(
    services: &S,
    saga: SagaId,
    state: SagaState,
    cause: impl Fn(SagaId, StepId, Kind) -> Option<String>,
) -> Result<(), Violation> {
    let (want_live, kind, end) = match state {
        SagaState::Completed => (true, Kind::Action, "completed"),
        SagaState::Compensated => (false, Kind::Compensation, "was compensated"),
        _ => return Ok(()),
    };
    let off: Vec<String> = services
        .steps()
        .iter()
        .filter_map(|&step| {
            let (live, words) = services.holding(saga, step);
            (live != want_live).then(|| match cause(saga, step, kind) {
                Some(why) => format!("{words} ({why})"),
                None => words,
            })
        })
        .collect();
    if off.is_empty() {
        return Ok(());
    }
    let (missing, left) = services.holding_promise();
    let promise = if want_live { missing } else { left };
    Err(Violation::new(
        CONSERVATION,
        format!("{saga} {end} but {promise}: {}", off.join("; ")),
    ))
}

/// The compensations that took effect, per saga, in the order they did: what
/// [`COMPENSATION_ORDER`] is checked against at rest.
#[derive(Clone, Debug, Default)]
pub(crate) struct CompensationEffects(BTreeMap<SagaId, Vec<StepId>>);

impl CompensationEffects {
    /// `cmd` was handled by its service: its key had taken effect `before` times and
    /// has now taken effect `after` times. Notes a compensation's first effect.
    pub(crate) fn observe<P>(&mut self, cmd: &Command<P>, before: u32, after: u32) {
        if cmd.kind == Kind::Compensation && before == 0 && after > 0 {
            self.0.entry(cmd.saga).or_default().push(cmd.step);
        }
    }

    /// [`COMPENSATION_ORDER`]: per saga, the compensations that took effect (in the
    /// order they did) undo the steps in the reverse of their order in `definition`
    /// (the saga's steps in execution order; never the step names' order).
    pub(crate) fn check_reverse_order(&self, definition: &[StepId]) -> Result<(), Violation> {
        let position = |step: &StepId| definition.iter().position(|s| s == step);
        for (saga, effects) in &self.0 {
            for w in effects.windows(2) {
                if position(&w[0]) <= position(&w[1]) {
                    return Err(Violation::new(
                        COMPENSATION_ORDER,
                        format!(
                            "{saga}: the {} step was compensated before the {} step, which comes after it",
                            w[0], w[1]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::services::Order;

    fn undo(saga: u64, step: StepId) -> Command {
        Command::compensation(
            SagaId(saga),
            step,
            Order {
                item: 1,
                qty: 1,
                amount: 1,
            },
        )
    }

    /// [`COMPENSATION_ORDER`] follows the definition, not the names: the checkout's
    /// correct undo (inventory, then order) passes although "inventory" < "order", and
    /// the wrong one (order, then inventory) is caught, naming both.
    #[test]
    fn compensation_order_is_the_definitions_reverse() {
        let mut right = CompensationEffects::default();
        for step in [StepId::PAYMENT, StepId::INVENTORY, StepId::ORDER] {
            right.observe(&undo(1, step), 0, 1);
        }
        assert!(right.check_reverse_order(&StepId::ALL).is_ok());
        let mut wrong = CompensationEffects::default();
        for step in [StepId::ORDER, StepId::INVENTORY] {
            wrong.observe(&undo(2, step), 0, 1);
        }
        let v = wrong.check_reverse_order(&StepId::ALL).unwrap_err();
        assert!(v.message.contains("saga 2"), "{}", v.message);
        // Another definition's order decides for its own steps.
        let (z, a) = (StepId::from_static("zulu"), StepId::from_static("alpha"));
        let mut other = CompensationEffects::default();
        for step in [a, z] {
            other.observe(&undo(3, step), 0, 1);
        }
        assert!(other.check_reverse_order(&[z, a]).is_ok());
        assert!(other.check_reverse_order(&[a, z]).is_err());
    }
}
