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
    /// Accepts a new saga (false, and nothing happens, if the id is known).
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
    /// `saga`'s state, if known.
    fn state(&self, saga: SagaId) -> Option<SagaState>;
    /// What is known about `step` of `saga` (the world reads
    /// `compensation_attempts` to check that a Failed saga did exhaust one).
    fn progress(&self, saga: SagaId, step: StepId) -> Option<StepProgress>;
    /// Every saga with its state, in id order.
    fn sagas(&self) -> Vec<(SagaId, SagaState)>;
    /// Counters since this coordinator was made. The world uses `completed`,
    /// `compensated`, `failed` (to notice sagas coming to rest), `timeouts` and
    /// `resumed` (coverage): keep those; the rest may stay zero.
    fn totals(&self) -> SagaTotals;
    /// True when every saga is at rest.
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
