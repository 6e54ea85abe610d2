//! The contract the simulated 2PC checkout world drives: [`TwoPcCoordinator`]. The
//! reference [`Coordinator`] implements it; so can your own 2PC coordinator, which then
//! meets the reference [`Cohort`](crate::saga::twopc::core::Cohort)s over the same
//! messages and gets the 2PC invariants, the fault plans (coordinator crashes at every
//! point included), shrinking and the reports:
//!
//! ```
//! use faultline::saga::checkout::SagaKnobs;
//! use faultline::saga::twopc::core::Coordinator;
//! use faultline::saga::twopc::world::{TwoPcWorld, config_of, run};
//!
//! let knobs = SagaKnobs::from_seed(7);
//! let plan = knobs.fault_plan();
//! // Any `TwoPcCoordinator` in place of the reference `Coordinator`:
//! let mine = Coordinator::new(config_of(&knobs)?);
//! let world = TwoPcWorld::with_coordinator(knobs, mine)?;
//! let (report, world) = run(world, plan, Default::default());
//! assert!(report.outcome.is_pass(), "{}", report.outcome);
//! assert!(world.participants.iter().all(|p| p.locks_held() == 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the world observes, and what it trusts
//!
//! The invariants are checked from what the world itself sees: the transactions it asks
//! each life of the coordinator to start, the log records it makes durable, the
//! messages it carries (and what the reference participants, the services, did with
//! them). What a coordinator says about itself is compared with those facts, never used
//! instead of them. Per method:
//!
//! | method | observed or trusted | why |
//! |---|---|---|
//! | [`start`](TwoPcCoordinator::start) | observed: every transaction the world started must, at rest, have a durable decision or have been presumed aborted by a coordinator crash after its start (`twopc.at_rest`), whatever the coordinator says of it | a coordinator that drops a transaction sends nothing and logs nothing for it: only the world's record of what it started shows it (mutant `start_dropped`: 0/500 seeds caught before, 500/500 after) |
//! | [`poll_output`](TwoPcCoordinator::poll_output) | observed: the world carries out each output itself, so it knows which decisions are durable and which messages left; a `Decide` must match the durable decision, and an `Abort` without a record is presumed only for a transaction the world did not ask this life of the coordinator to start (`twopc.write_ahead`) | "not known" used to be the coordinator's own `state`: one that sends an unlogged `Abort` and forgets the transaction passed (mutant `abort_unlogged_forgotten`: 0/500 before, 499/500 after, the other seed has no abort) |
//! | [`on_answer`](TwoPcCoordinator::on_answer), [`handle_timeout`](TwoPcCoordinator::handle_timeout) | inputs the world gives | |
//! | [`poll_timeout`](TwoPcCoordinator::poll_timeout) | trusted to schedule the next `handle_timeout` | a coordinator that arms no timer stalls, and the run fails as stalled |
//! | [`state`](TwoPcCoordinator::state) | compared at rest: a transaction it knows must be ended, with the decision the log holds (`twopc.at_rest`); no verdict takes it as the decision, which is the log's (none: presumed abort) | only the coordinator can say a transaction ended; the log says whether its decision is true (mutant `state_claims_commit`: 0/500 before, 499/500 after) |
//! | [`is_at_rest`](TwoPcCoordinator::is_at_rest) | trusted only to tell when the run may stop (with every participant without a timer); the checks then run over every started transaction and every participant | stopping early cannot hide a transaction: each started one is checked, and an in-doubt participant still holds its locks (`twopc.locks_released`) |
//! | [`totals`](TwoPcCoordinator::totals) | `vote_timeouts`, `presumed_aborts` and `decisions_resent` feed coverage marks only; no verdict reads them | a counter left at zero hides a coverage mark, never a bug |
//! | [`recovered`](TwoPcCoordinator::recovered) | observed: built from the durable log alone (the world keeps it; memory is gone), then judged like any coordinator | |
//! | (settings: vote timeout, re-send interval) | not read: no declared policy | no invariant or bound depends on the coordinator's timing. The world's verdicts are read from the log, the messages and the participants at rest; the liveness bound is a fixed hour of simulated time, and the participants' own timers are the world's (configured by `world::config_of`, feature `sim`). A coordinator with its own vote timeout or re-send interval is judged exactly as one with the knobs' (the coordinator written from scratch with four and three times the knobs', or half, passes seeds 0..1000: `tests/sim/twopc.rs`), so the contract asks for no policy declaration |
//!
//! Atomicity, locks, conservation and idempotence (`twopc.at_rest`,
//! `twopc.locks_released`, `twopc.conservation`, `twopc.idempotent`) are read from the
//! participants, the world's own services, never from the coordinator.

use crate::clock::Instant;
use crate::saga::services::{Order, SagaId};
use crate::saga::twopc::core::{
    Coordinator, CoordinatorOutput, CoordinatorTotals, ToCoordinator, TxRecord, TxState,
};

/// A sans-IO 2PC coordinator, as the world drives it. The calls and their order are
/// those of [`Coordinator`] (see the [`twopc`](crate::saga::twopc) module docs): inputs
/// ([`start`](TwoPcCoordinator::start), [`on_answer`](TwoPcCoordinator::on_answer),
/// [`handle_timeout`](TwoPcCoordinator::handle_timeout)), then every output drained and
/// carried out in order, every [`CoordinatorOutput::Append`] durable before anything after it
/// happens, then a timer armed for [`poll_timeout`](TwoPcCoordinator::poll_timeout).
/// On a crash the world throws the coordinator away and builds a new one with
/// [`recovered`](TwoPcCoordinator::recovered) from the durable log alone.
///
/// The world holds a coordinator to the protocol: a `Decide` leaves only once the log
/// holds that decision (an `Abort` without a record only for a transaction this life of
/// the coordinator was not asked to start: presumed abort), at rest every transaction
/// the world started has a durable decision or was presumed aborted by a crash, and
/// every transaction the coordinator knows has [ended](TxState::Ended) with the logged
/// decision.
pub trait TwoPcCoordinator {
    /// Starts transaction `tx` for `order` (`Prepare` to every participant); starting a
    /// known transaction again does nothing.
    fn start(&mut self, tx: SagaId, order: Order, now: Instant);
    /// A participant's answer arrived (a vote or an acknowledgement; duplicated, late
    /// and for transactions this coordinator does not know).
    fn on_answer(&mut self, answer: &ToCoordinator, now: Instant);
    /// Handles every vote deadline and re-send due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to do, in order.
    fn poll_output(&mut self) -> Option<CoordinatorOutput>;
    /// When [`handle_timeout`](TwoPcCoordinator::handle_timeout) must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Where `tx` stands, if this coordinator knows it.
    fn state(&self, tx: SagaId) -> Option<TxState>;
    /// Counters since this coordinator was made. The world reads `vote_timeouts`,
    /// `presumed_aborts` and `decisions_resent` (coverage): keep those; the rest may
    /// stay zero.
    fn totals(&self) -> CoordinatorTotals;
    /// True when every known transaction has ended and no output is waiting.
    fn is_at_rest(&self) -> bool;
    /// A new coordinator with this one's code and configuration (nothing from its
    /// memory), rebuilt from the durable `log` after a crash.
    fn recovered(&self, log: &[TxRecord], now: Instant) -> Self
    where
        Self: Sized;
}

impl TwoPcCoordinator for Coordinator {
    fn start(&mut self, tx: SagaId, order: Order, now: Instant) {
        Coordinator::start(self, tx, order, now);
    }
    fn on_answer(&mut self, answer: &ToCoordinator, now: Instant) {
        Coordinator::on_answer(self, answer, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Coordinator::handle_timeout(self, now);
    }
    fn poll_output(&mut self) -> Option<CoordinatorOutput> {
        Coordinator::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Coordinator::poll_timeout(self)
    }
    fn state(&self, tx: SagaId) -> Option<TxState> {
        Coordinator::state(self, tx)
    }
    fn totals(&self) -> CoordinatorTotals {
        Coordinator::totals(self)
    }
    fn is_at_rest(&self) -> bool {
        Coordinator::is_at_rest(self)
    }
    fn recovered(&self, log: &[TxRecord], now: Instant) -> Self {
        Coordinator::recover_flawed(self.config().clone(), log, now, self.flaw)
    }
}
