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
//! let (report, _world) = run(SagaWorld::with_coordinator(knobs, mine)?, plan, Default::default());
//! assert!(report.outcome.is_pass(), "{}", report.outcome);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Declared policy
//!
//! A coordinator is judged by the [`SagaPolicy`] it declares through
//! [`SagaCoordinator::policy`], built from its own configuration: how long an attempt
//! waits for its reply, how many attempts an action and a compensation get, and the
//! longest wait before a retry. The universal promises (every submitted saga ends done
//! or compensated, conservation, no double charge, write-ahead, the log's starts are the
//! submissions) hold for every policy; the ones that read numbers (Failed only after a
//! compensation's last declared attempt, no more attempts than declared and no retry of
//! a silent attempt before the declared timeout: `saga.retries`, and the settling
//! bound) read the declaration. Whether the declaration is the reference's exact
//! settings for a seed's knobs is a separate check, `saga.conformance`, which the
//! reference scenario and its mutants turn on
#![cfg_attr(
    feature = "sim",
    doc = "([`SagaWorld::conforming_to_reference`](crate::saga::orchestrated::world::SagaWorld::conforming_to_reference))"
)]
#![cfg_attr(
    not(feature = "sim"),
    doc = "(`SagaWorld::conforming_to_reference`, feature `sim`)"
)]
//! and a plug-in with settings of its own leaves off.
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
//! | [`policy`](SagaCoordinator::policy) | trusted, read once when the world is made | it is the yardstick, not a fact; a coordinator that breaks its own declaration is caught by the checks that use it (`saga.retries`, `saga.settling`, `saga.at_rest` for Failed), and `saga.conformance` compares it with the reference's settings where asked |
//! | [`start`](SagaCoordinator::start) | observed: every checkout the world submits must end at rest, whatever `start` returns and whatever the log says | a coordinator that drops a checkout, or writes no `Started` record for it, would otherwise switch the at-rest and conservation checks off for that saga |
//! | [`poll_output`](SagaCoordinator::poll_output) | observed: the world carries out each output itself, so it knows which records are durable (a command must follow its intent and its saga's `Started` record: `saga.write_ahead`), which commands left, when and how often (no more attempts than declared, no retry of a silent attempt before the declared timeout: `saga.retries`), and which alerts were raised | these are the facts the checks rest on |
//! | `Started` records ([`Output::Append`] of [`LogRecord::Started`]) | compared with what the world submitted: each durable `Started` must name a saga the world submitted, with the order it submitted (item, quantity, amount), and only once (`saga.started_as_submitted`) | a recovery rebuilds each saga from its `Started` record: a wrong order there would be charged, reserved or refunded wrongly after a crash, and a saga nobody submitted is work nobody asked for |
//! | [`on_reply`](SagaCoordinator::on_reply), [`on_sent`](SagaCoordinator::on_sent), [`handle_timeout`](SagaCoordinator::handle_timeout) | inputs the world gives; `on_reply`'s answer (stale or not) only goes to the trace | |
//! | [`poll_timeout`](SagaCoordinator::poll_timeout) | trusted to schedule the next `handle_timeout` | a coordinator that arms no timer stalls; the failure then lists the sagas left waiting and says no timer is armed |
//! | [`state`](SagaCoordinator::state) | compared: a saga's claimed end is checked against the services (Completed holds its order, stock and payment; Compensated holds none; Failed only after the world sent a compensation's last attempt and carried out an alert); a submitted saga it does not know is `saga.at_rest` | only the coordinator can say how a saga ended; the services say whether that is true |
//! | [`sagas`](SagaCoordinator::sagas), [`is_at_rest`](SagaCoordinator::is_at_rest) | trusted only to tell when the run may stop; the checks then run over the submitted checkouts | stopping early cannot hide a saga: each submitted one is checked at rest |
//! | [`progress`](SagaCoordinator::progress) | not read by the world (the crash-equivalence test and reports may) | the attempts the world sent are the facts |
//! | [`totals`](SagaCoordinator::totals) | `timeouts` and `resumed` feed coverage marks only; no verdict reads them | a counter left at zero hides a coverage mark, never a bug |
//! | [`take_rested`](SagaCoordinator::take_rested) | a hint of which sagas to ask `state` about; every saga is looked at once per coordinator life and again every so many events | a saga left out is seen late, and its settling measured to then |
//! | [`recovered`](SagaCoordinator::recovered) | observed: built from the durable log alone (the world keeps it; memory is gone), then judged like any coordinator | |

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::core::{Flaw, Orchestrator, Output, SagaTotals, StepProgress};
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Kind, Order, Refusal, Reply, SagaData, SagaId, SagaState, StepId};
use std::time::Duration;

/// The policy a coordinator declares it implements, from its own configuration: what
/// the saga invariants judge it by (see the [module docs](self)).
///
/// A coordinator that waits 500 ms for each reply, tries each action twice and each
/// compensation five times, and retries at once (no backoff) declares:
///
/// ```
/// use faultline::saga::SagaPolicy;
/// use std::time::Duration;
///
/// let policy = SagaPolicy {
///     step_timeout: Duration::from_millis(500),
///     attempts_max: 2,
///     compensation_attempts_max: 5,
///     retry_delay_max: Duration::ZERO,
/// };
/// assert!(policy.validate().is_ok());
/// ```
///
/// The reference [`Orchestrator`] declares its [`SagaConfig`]'s
/// (`SagaPolicy::from(&config)`): the backoff's cap is its longest retry delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SagaPolicy {
    /// How long an attempt waits for its reply before it counts as failed (an unknown
    /// outcome), from when its command was emitted or, later, sent. A silent attempt is
    /// never followed by the next one sooner than this.
    pub step_timeout: Duration,
    /// Attempts per step action (at least 1): after the last, the saga compensates.
    pub attempts_max: u32,
    /// Attempts per compensation (at least 1): after the last, the saga ends Failed
    /// with an alert, and not before.
    pub compensation_attempts_max: u32,
    /// The longest wait between an attempt's failure and the next attempt (zero for a
    /// coordinator that retries at once): with the timeout, it bounds how soon a saga
    /// settles once the faults are over.
    pub retry_delay_max: Duration,
}

impl SagaPolicy {
    /// Checks that the declaration makes sense: a timeout above zero and at least one
    /// attempt of each kind.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field: `step_timeout`, `attempts_max` or
    /// `compensation_attempts_max`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.step_timeout.is_zero() {
            return Err(ConfigError::new(
                "step_timeout",
                "must be greater than zero, got 0ns",
            ));
        }
        for (field, n) in [
            ("attempts_max", self.attempts_max),
            ("compensation_attempts_max", self.compensation_attempts_max),
        ] {
            if n == 0 {
                return Err(ConfigError::new(field, "must be at least 1, got 0"));
            }
        }
        Ok(())
    }
}

impl From<&SagaConfig> for SagaPolicy {
    /// The reference's policy: its step timeout, its attempts, and its backoff's cap
    /// as the longest retry delay.
    fn from(config: &SagaConfig) -> Self {
        SagaPolicy {
            step_timeout: config.step_timeout(),
            attempts_max: config.attempts_max(),
            compensation_attempts_max: config.compensation_attempts_max(),
            retry_delay_max: config.backoff().cap(),
        }
    }
}

/// A sans-IO saga coordinator, as the world drives it. The calls and their order are
/// those of [`Orchestrator`] (see its module docs); the world carries out each
/// [`Output`] in order, making every [`Output::Append`] durable before anything after
/// it happens, and on a crash throws the coordinator away and builds a new one with
/// [`recovered`](SagaCoordinator::recovered) from the durable log alone.
pub trait SagaCoordinator<P = Order, R = Refusal> {
    /// The policy this coordinator implements, from its own configuration: what the
    /// world judges it by. Trusted, read once when the world is made.
    fn policy(&self) -> SagaPolicy;
    /// Accepts a new saga (false, and nothing happens, if the id is known). The
    /// acceptance is durable once the saga's [`LogRecord::Started`] (one of the outputs
    /// `start` emits) is: the world submits each checkout once, again after a crash only
    /// if that record was still waiting for the disk, and requires every checkout it
    /// submitted to end at rest, and its `Started` record to be durable before its first
    /// command leaves.
    fn start(&mut self, saga: SagaId, payload: P, now: Instant) -> bool;
    /// A service's reply to attempt `attempt` of `kind` of `step` (false if stale).
    /// [`Reply::Failed`] is a transient failure whose outcome is unknown, like a
    /// timeout that came early (the checkout worlds do not send it today; the tokio
    /// runner's participants may).
    fn on_reply(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        reply: Reply<R>,
        now: Instant,
    ) -> bool;
    /// That attempt's command left now. Default: ignored.
    fn on_sent(&mut self, saga: SagaId, step: StepId, kind: Kind, attempt: u32, now: Instant) {
        let _ = (saga, step, kind, attempt, now);
    }
    /// Handles every deadline and retry due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to do, in order.
    fn poll_output(&mut self) -> Option<Output<P, R>>;
    /// When [`handle_timeout`](SagaCoordinator::handle_timeout) must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// `saga`'s state, if known. The world asks it for each submitted saga not yet
    /// seen at rest after every event (or for those
    /// [`take_rested`](SagaCoordinator::take_rested) names), and checks the claimed end
    /// against the services.
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
    /// Moves into `into` the sagas that came to rest (their [`state`](SagaCoordinator::state)
    /// went from running or compensating to completed, compensated or failed) since
    /// the last call, and returns true; or returns false, and the world asks `state`
    /// about every submitted saga it has not yet seen at rest, after every event (time
    /// in proportion to the sagas in flight, each event: a run whose backlog grows
    /// with its horizon turns quadratic). Only a hint of where to look: the world still
    /// reads each saga's end from `state` and checks it, looks at every saga once after
    /// the coordinator is made or recovered, and at every saga again whenever it has
    /// handled as many events as there are sagas in flight, so a saga left out is seen
    /// late (its settling then measured to then: stricter), never missed. A coordinator
    /// may start keeping the list on the first call, and answer false to it.
    /// Default: false.
    fn take_rested(&mut self, into: &mut Vec<SagaId>) -> bool {
        let _ = into;
        false
    }
    /// A new coordinator with this one's code and configuration (nothing from its
    /// memory), rebuilt from the durable `log` after a crash.
    fn recovered(&self, log: &[LogRecord<P, R>], now: Instant) -> Self
    where
        Self: Sized;
}

impl<P: SagaData, R: SagaData> SagaCoordinator<P, R> for Orchestrator<P, R> {
    fn policy(&self) -> SagaPolicy {
        let mut policy = SagaPolicy::from(self.config());
        match self.flaw {
            // The defect: an honest run, a declaration of twice its timeout.
            Flaw::DeclaresLongerTimeout => policy.step_timeout *= 2,
            // The defect: one attempt of each kind fewer than it makes.
            Flaw::DeclaresFewerAttempts => {
                policy.attempts_max = policy.attempts_max.saturating_sub(1).max(1);
                policy.compensation_attempts_max =
                    policy.compensation_attempts_max.saturating_sub(1).max(1);
            }
            _ => {}
        }
        policy
    }
    fn start(&mut self, saga: SagaId, payload: P, now: Instant) -> bool {
        Orchestrator::start(self, saga, payload, now)
    }
    fn on_reply(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        reply: Reply<R>,
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
    fn poll_output(&mut self) -> Option<Output<P, R>> {
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
    fn take_rested(&mut self, into: &mut Vec<SagaId>) -> bool {
        Orchestrator::take_rested(self, into)
    }
    fn recovered(&self, log: &[LogRecord<P, R>], now: Instant) -> Self {
        let mut recovered =
            Orchestrator::recover_flawed(self.config().clone(), log, now, self.flaw);
        recovered.tamper = self.tamper;
        recovered
    }
}
