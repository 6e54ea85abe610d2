//! The promises of two-phase commit, checked by its world at rest from the
//! participants' own durable state (and, for [`WRITE_AHEAD`], as each decision leaves):
//!
//! 1. [`AT_REST`]: every transaction the world started has a durable decision (or was
//!    presumed aborted by a coordinator crash after its start), the coordinator reports
//!    each one it knows ended with the logged decision, and every participant agrees
//!    with the decision (atomicity).
//! 2. [`LOCKS_RELEASED`]: no lock outlives its transaction.
//! 3. [`CONSERVATION`]: stock and money add up, and only committed transactions sold
//!    stock or captured money.
//! 4. [`IDEMPOTENT`]: a duplicated request has no extra effect.
//! 5. [`WRITE_AHEAD`]: a decision leaves only once it is durable (an abort without a
//!    record only for a transaction the world did not ask this life of the coordinator
//!    to start: presumed abort).
//!
//! The names are constants, so a misspelt one fails to compile. They are 2PC's own
//! (`twopc.*`): a transaction promises other things than a saga
//! ([`saga::invariants`](crate::saga::invariants)).

use crate::saga::services::StepId;
use crate::saga::twopc::core::{Cohort, Local, step_index};
use faultline_sim::Violation;

/// Every transaction decided and ended, every participant agreeing with the decision.
pub const AT_REST: &str = "twopc.at_rest";
/// No lock outlives its transaction.
pub const LOCKS_RELEASED: &str = "twopc.locks_released";
/// Stock and money add up; only committed transactions sold or captured.
pub const CONSERVATION: &str = "twopc.conservation";
/// A duplicated request has no extra effect.
pub const IDEMPOTENT: &str = "twopc.idempotent";
/// A decision leaves only once it is durable.
pub const WRITE_AHEAD: &str = "twopc.write_ahead";

/// The 2PC invariants, in order.
pub const INVARIANTS: [&str; 5] = [
    AT_REST,
    LOCKS_RELEASED,
    CONSERVATION,
    IDEMPOTENT,
    WRITE_AHEAD,
];

/// What each invariant promises, in words (the list above), in the order of
/// [`INVARIANTS`]: what `faultline list` prints beside each name.
pub const PROMISES: [(&str, &str); 5] = [
    (
        AT_REST,
        "Every transaction the world started has a durable decision (or was presumed aborted by a coordinator crash after its start), the coordinator reports each one it knows ended with the logged decision, and every participant agrees with the decision (atomicity).",
    ),
    (LOCKS_RELEASED, "No lock outlives its transaction."),
    (
        CONSERVATION,
        "Stock and money add up, and only committed transactions sold stock or captured money.",
    ),
    (IDEMPOTENT, "A duplicated request has no extra effect."),
    (
        WRITE_AHEAD,
        "A decision leaves only once it is durable (an abort without a record only for a transaction the world did not ask this life of the coordinator to start: presumed abort).",
    ),
];

/// [`LOCKS_RELEASED`]: no participant holds a lock at rest.
pub(crate) fn check_locks_released(cohorts: &[Cohort; 3]) -> Result<(), Violation> {
    for p in cohorts {
        let held = p.locks_held();
        if held > 0 {
            return Err(Violation::new(
                LOCKS_RELEASED,
                format!("{} still holds {held} locks at rest", p.step()),
            ));
        }
    }
    Ok(())
}

/// [`IDEMPOTENT`]: no request took effect more than once at any participant.
pub(crate) fn check_idempotent(cohorts: &[Cohort; 3]) -> Result<(), Violation> {
    for p in cohorts {
        let most = p.effects_max();
        if most > 1 {
            return Err(Violation::new(
                IDEMPOTENT,
                format!("one request to {} took effect {most} times", p.step()),
            ));
        }
    }
    Ok(())
}

/// [`CONSERVATION`]: per item, available + held + sold = initial, nothing held, and
/// sold = what committed transactions bought; for the money, authorised = held +
/// captured + released, nothing held, and captured = what committed transactions owe.
pub(crate) fn check_conservation(cohorts: &[Cohort; 3]) -> Result<(), Violation> {
    let inventory = &cohorts[step_index(StepId::INVENTORY)];
    for (item, row) in inventory.rows() {
        let sold: u64 = inventory
            .transactions()
            .filter(|(_, o, l)| o.item == item && *l == Local::Committed)
            .map(|(_, o, _)| u64::from(o.qty))
            .sum();
        let total = u64::from(row.available) + u64::from(row.held) + u64::from(row.sold);
        if total != u64::from(row.initial) || row.held != 0 || u64::from(row.sold) != sold {
            return Err(Violation::new(
                CONSERVATION,
                format!(
                    "item {item}: {} available + {} held + {} sold != {} initial, \
                     or {sold} sold by committed transactions",
                    row.available, row.held, row.sold, row.initial
                ),
            ));
        }
    }
    let payment = &cohorts[step_index(StepId::PAYMENT)];
    let (authorised, held, captured, released) = payment.money();
    let committed_money: u128 = payment
        .transactions()
        .filter(|(_, _, l)| *l == Local::Committed)
        .map(|(_, o, _)| u128::from(o.amount))
        .sum();
    if authorised != held + captured + released || held != 0 || captured != committed_money {
        return Err(Violation::new(
            CONSERVATION,
            format!(
                "money: {authorised} authorised != {held} held + {captured} captured + \
                 {released} released, or {committed_money} due from committed transactions"
            ),
        ));
    }
    Ok(())
}
