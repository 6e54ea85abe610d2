//! Deliberately broken coordinators and participants ("mutants") that the 2PC
//! invariants must catch.

use crate::config::ConfigError;
use crate::harness::Mutant;
use crate::saga::checkout::SagaKnobs;
use crate::saga::twopc::core::Flaw;
use crate::saga::twopc::invariants as inv;
use crate::saga::twopc::pattern::TwoPcPattern;
use crate::saga::twopc::world::TwoPcWorld;

/// The world for `knobs` with the coordinator or a participant carrying `flaw`.
fn flawed(knobs: &SagaKnobs, flaw: Flaw) -> Result<TwoPcWorld, ConfigError> {
    TwoPcWorld::with(knobs.clone(), flaw)
}

/// The catalog.
pub const CATALOG: &[Mutant<TwoPcPattern>] = &[
    Mutant::new(
        "decision_before_log",
        "the coordinator sends Commit or Abort before the decision is durable (a crash then presumes abort after a commit went out)",
        inv::WRITE_AHEAD,
        |k| flawed(k, Flaw::SendBeforeLog),
    ),
    Mutant::new(
        "unilateral_abort",
        "a participant in doubt gives up after the vote timeout and aborts on its own, though it voted Yes",
        inv::AT_REST,
        |k| flawed(k, Flaw::UnilateralAbort),
    ),
    Mutant::new(
        "prepare_not_idempotent",
        "a duplicated Prepare makes its tentative change again (stock held, card authorised twice)",
        inv::IDEMPOTENT,
        |k| flawed(k, Flaw::PrepareNotIdempotent),
    ),
    Mutant::new(
        "lock_leak_on_abort",
        "the inventory does not release the stock row's lock when a transaction aborts",
        inv::LOCKS_RELEASED,
        |k| flawed(k, Flaw::LockLeak),
    ),
    Mutant::new(
        "abort_loses_stock",
        "the inventory releases an aborted reservation without returning its stock",
        inv::CONSERVATION,
        |k| flawed(k, Flaw::AbortLosesStock),
    ),
    Mutant::new(
        "abort_unlogged_forgotten",
        "the coordinator sends an Abort it decided without logging it, and forgets the transaction so it claims not to know it (the world saw it start it)",
        inv::WRITE_AHEAD,
        |k| flawed(k, Flaw::AbortUnloggedForgotten),
    ),
    Mutant::new(
        "start_dropped",
        "the coordinator ignores every seventh transaction it is asked to start: no Prepare, no decision, and it does not know it at rest",
        inv::AT_REST,
        |k| flawed(k, Flaw::StartDropped),
    ),
    Mutant::new(
        "state_claims_commit",
        "the coordinator reports every transaction it knows as ended committed, whatever its log holds",
        inv::AT_REST,
        |k| flawed(k, Flaw::StateClaimsCommit),
    ),
];
