//! The contract the simulated checkout world drives: [`SagaCoordinator`]. The reference
//! [`Orchestrator`] implements it; so can your own orchestrator, which then gets the
//! saga invariants, the fault plans (orchestrator crashes at every persistence point
//! included), shrinking and the reports:
//!
//! ```
//! use faultline::saga::checkout::SagaKnobs;
//! use faultline::saga::orchestrated::world::{SagaWorld, run};
//! use faultline::saga::Orchestrator;
//!
//! let knobs = SagaKnobs::from_seed(7);
//! let plan = knobs.fault_plan();
//! // Any `SagaCoordinator` in place of the reference `Orchestrator`:
//! let mine = Orchestrator::new(knobs.config()?);
//! let (report, _world) = run(SagaWorld::with_coordinator(knobs, mine), plan, Default::default());
//! assert!(report.outcome.is_pass(), "{}", report.outcome);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the world observes, and what it trusts
//!
//! The invariants are checked from what the world itself sees at the boundary it owns:
//! the checkouts it submits, the log records it makes durable, the commands it carries
//! to the services (and what the services did with them), the alerts it raises. What a
//! coordinator says about itself is compared with those facts, never used instead of
//! them. Per method:
//!
//! | method | observed or trusted | why |
//! |---|---|---|
//! | [`start`](SagaCoordinator::start) | observed: every checkout the world submits must end at rest, whatever `start` returns and whatever the log says | a coordinator that drops a checkout, or writes no `Started` record for it, would otherwise switch the at-rest and conservation checks off for that saga |
//! | [`poll_output`](SagaCoordinator::poll_output) | observed: the world carries out each output itself, so it knows which records are durable (a command must follow its intent and its saga's `Started` record: `saga.write_ahead`), which commands left and how often, and which alerts were raised | these are the facts the checks rest on |
//! | [`on_reply`](SagaCoordinator::on_reply), [`on_sent`](SagaCoordinator::on_sent), [`handle_timeout`](SagaCoordinator::handle_timeout) | inputs the world gives; `on_reply`'s answer (stale or not) only goes to the trace | |
//! | [`poll_timeout`](SagaCoordinator::poll_timeout) | trusted to schedule the next `handle_timeout` | a coordinator that arms no timer stalls; the failure then lists the sagas left waiting and says no timer is armed |
//! | [`state`](SagaCoordinator::state) | compared: a saga's claimed end is checked against the services (Completed holds its order, stock and payment; Compensated holds none; Failed only after the world sent a compensation's last attempt and carried out an alert); a submitted saga it does not know is `saga.at_rest` | only the coordinator can say how a saga ended; the services say whether that is true |
//! | [`sagas`](SagaCoordinator::sagas), [`is_at_rest`](SagaCoordinator::is_at_rest) | trusted only to tell when the run may stop; the checks then run over the submitted checkouts | stopping early cannot hide a saga: each submitted one is checked at rest |
//! | [`progress`](SagaCoordinator::progress) | not read by the world (the crash-equivalence test and reports may) | the attempts the world sent are the facts |
//! | [`totals`](SagaCoordinator::totals) | `timeouts` and `resumed` feed coverage marks only; no verdict reads them | a counter left at zero hides a coverage mark, never a bug |
//! | [`recovered`](SagaCoordinator::recovered) | observed: built from the durable log alone (the world keeps it; memory is gone), then judged like any coordinator | |

use crate::clock::Instant;
use crate::saga::orchestrated::core::{Orchestrator, Output, SagaTotals, StepProgress};
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Kind, Order, Reply, SagaId, SagaState, StepId};

/// A sans-IO saga coordinator, as the world drives it. The calls and their order are
/// those of [`Orchestrator`] (see its module docs); the world carries out each
/// [`Output`] in order, making every [`Output::Append`] durable before anything after
/// it happens, and on a crash throws the coordinator away and builds a new one with
/// [`recovered`](SagaCoordinator::recovered) from the durable log alone.
pub trait SagaCoordinator {
    /// Accepts a new saga (false, and nothing happens, if the id is known). The
    /// acceptance is durable once the saga's [`LogRecord::Started`] (one of the outputs
    /// `start` emits) is: the world submits each checkout once, again after a crash only
    /// if that record was still waiting for the disk, and requires every checkout it
    /// submitted to end at rest, and its `Started` record to be durable before its first
    /// command leaves.
    fn start(&mut self, saga: SagaId, order: Order, now: Instant) -> bool;
    /// A service's reply to attempt `attempt` of `kind` of `step` (false if stale).
    fn on_reply(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        reply: Reply,
        now: Instant,
    ) -> bool;
    /// That attempt's command left now. Default: ignored.
    fn on_sent(&mut self, saga: SagaId, step: StepId, kind: Kind, attempt: u32, now: Instant) {
        let _ = (saga, step, kind, attempt, now);
    }
    /// Handles every deadline and retry due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to do, in order.
    fn poll_output(&mut self) -> Option<Output>;
    /// When [`handle_timeout`](SagaCoordinator::handle_timeout) must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// `saga`'s state, if known. The world asks it for each submitted saga not yet
    /// seen at rest after every event, and checks the claimed end against the services.
    fn state(&self, saga: SagaId) -> Option<SagaState>;
    /// What is known about `step` of `saga` (the world does not read it: it counts
    /// the attempts it sent).
    fn progress(&self, saga: SagaId, step: StepId) -> Option<StepProgress>;
    /// Every saga with its state, in id order.
    fn sagas(&self) -> Vec<(SagaId, SagaState)>;
    /// Counters since this coordinator was made. The world reads `timeouts` and
    /// `resumed` for coverage marks only; the rest may stay zero.
    fn totals(&self) -> SagaTotals;
    /// True when every saga is at rest (the world stops the run once it is, after the
    /// faults, and then checks every submitted checkout).
    fn is_at_rest(&self) -> bool {
        self.sagas().iter().all(|(_, s)| s.is_at_rest())
    }
    /// A new coordinator with this one's code and configuration (nothing from its
    /// memory), rebuilt from the durable `log` after a crash.
    fn recovered(&self, log: &[LogRecord], now: Instant) -> Self
    where
        Self: Sized;
}

impl SagaCoordinator for Orchestrator {
    fn start(&mut self, saga: SagaId, order: Order, now: Instant) -> bool {
        Orchestrator::start(self, saga, order, now)
    }
    fn on_reply(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        reply: Reply,
        now: Instant,
    ) -> bool {
        Orchestrator::on_reply(self, saga, step, kind, attempt, reply, now)
    }
    fn on_sent(&mut self, saga: SagaId, step: StepId, kind: Kind, attempt: u32, now: Instant) {
        Orchestrator::on_sent(self, saga, step, kind, attempt, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Orchestrator::handle_timeout(self, now);
    }
    fn poll_output(&mut self) -> Option<Output> {
        Orchestrator::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Orchestrator::poll_timeout(self)
    }
    fn state(&self, saga: SagaId) -> Option<SagaState> {
        Orchestrator::state(self, saga)
    }
    fn progress(&self, saga: SagaId, step: StepId) -> Option<StepProgress> {
        Orchestrator::progress(self, saga, step)
    }
    fn sagas(&self) -> Vec<(SagaId, SagaState)> {
        Orchestrator::sagas(self).collect()
    }
    fn totals(&self) -> SagaTotals {
        Orchestrator::totals(self)
    }
    fn is_at_rest(&self) -> bool {
        Orchestrator::is_at_rest(self)
    }
    fn recovered(&self, log: &[LogRecord], now: Instant) -> Self {
        Orchestrator::recover_flawed(self.config().clone(), log, now, self.flaw)
    }
}
