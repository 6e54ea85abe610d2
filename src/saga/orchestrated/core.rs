//! The sans-IO saga [`Orchestrator`]: runs many checkouts concurrently, one step at a
//! time, compensates on failure, and rebuilds itself from its durable log.
//!
//! # The contract
//!
//! The orchestrator does no I/O. Inputs ([`start`](Orchestrator::start),
//! [`on_reply`](Orchestrator::on_reply), [`handle_timeout`](Orchestrator::handle_timeout))
//! take `now`; the caller drains [`poll_output`](Orchestrator::poll_output) and performs
//! each [`Output`] **in the order given**:
//!
//! - [`Output::Append`]: make the record durable in the saga log *before* performing any
//!   later output. Every command is preceded by its intent record (write-ahead), so
//!   after a crash the log says what may have been sent.
//! - [`Output::Send`]: deliver the command to its service (it may be lost, duplicated or
//!   delayed); feed the service's reply back with `on_reply`, quoting the attempt.
//! - [`Output::Alert`]: a saga ended [`SagaState::Failed`]: a human must look.
//!
//! A crash may happen between any two outputs. [`Orchestrator::recover`] rebuilds every
//! saga from the records that were made durable and decides what to do next: an intent
//! without its outcome means the outcome is unknown (the command may or may not have
//! taken effect), so that same attempt is sent again, with the same idempotency key and
//! a fresh deadline. A crash costs time, never an attempt: a run with crashes ends every
//! saga in the state it would have reached without them.
//!
//! # The rules
//!
//! - The configured steps run in order, one at a time, each with up to `attempts_max`
//!   attempts of `step_timeout` each, retried after a jittered backoff.
//! - A business refusal ([`Reply::Refused`]) or spent attempts start compensation of
//!   every step that *may* have taken effect (it succeeded, or its outcome is unknown),
//!   in reverse order, one at a time. A refused step took no effect and a step never
//!   sent took none either: neither is compensated.
//! - A compensation that fails or times out is retried with backoff, up to
//!   `compensation_attempts_max` attempts; then the saga is [`SagaState::Failed`] and an
//!   alert is emitted.
//! - Stale replies (another attempt, a step or kind no longer awaited, an action after
//!   its compensation started, an unknown saga) are ignored.
//! - At rest, every saga is [`Completed`](SagaState::Completed),
//!   [`Compensated`](SagaState::Compensated) or [`Failed`](SagaState::Failed).
//!
//! Deterministic: ordered maps only, no clock, and the backoff jitter comes from a small
//! SplitMix64 generator seeded by [`SagaConfigBuilder::seed`].

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::retry::{Backoff, RetryPolicy};
use crate::saga::services::{Command, Kind, Order, Reply, SagaId, SagaState, StepId};
use crate::splitmix::SplitMix64;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// A validated orchestrator configuration; build it with [`SagaConfig::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaConfig {
    step_timeout: Duration,
    attempts_max: u32,
    compensation_attempts_max: u32,
    backoff: Backoff,
    steps: Vec<StepId>,
    seed: u64,
    deadline_from_sent: bool,
}

impl Default for SagaConfig {
    /// The [builder](SagaConfig::builder)'s defaults.
    fn default() -> Self {
        SagaConfig {
            step_timeout: Duration::from_secs(1),
            attempts_max: 3,
            compensation_attempts_max: 10,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
                .unwrap_or_default(),
            steps: StepId::ALL.to_vec(),
            seed: DEFAULT_SEED,
            deadline_from_sent: false,
        }
    }
}

/// The deadline of an attempt not yet reported sent (see
/// [`SagaConfigBuilder::deadline_from_sent`]): no timer runs for it.
const UNSENT: Instant = Instant::from_nanos(u64::MAX);

const DEFAULT_SEED: u64 = 0x5a6a_5f73_6167_6121;

impl SagaConfig {
    /// Defaults: 1 s per attempt, 3 attempts per action, 10 per compensation, backoff
    /// from 50 ms up to 2 s, steps order, inventory, payment, a fixed seed.
    pub fn builder() -> SagaConfigBuilder {
        SagaConfigBuilder {
            step_timeout: Duration::from_secs(1),
            attempts_max: 3,
            compensation_attempts_max: 10,
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            steps: StepId::ALL.to_vec(),
            seed: DEFAULT_SEED,
            deadline_from_sent: false,
        }
    }
    /// True when each attempt's deadline starts at [`Orchestrator::on_sent`].
    pub fn deadline_from_sent(&self) -> bool {
        self.deadline_from_sent
    }
    /// How long an attempt waits for its reply.
    pub fn step_timeout(&self) -> Duration {
        self.step_timeout
    }
    /// Attempts per step action.
    pub fn attempts_max(&self) -> u32 {
        self.attempts_max
    }
    /// Attempts per compensation before the saga fails.
    pub fn compensation_attempts_max(&self) -> u32 {
        self.compensation_attempts_max
    }
    /// The retry backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
    /// The steps, in execution order.
    pub fn steps(&self) -> &[StepId] {
        &self.steps
    }
    /// The jitter generator's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Builder for [`SagaConfig`].
#[derive(Clone, Debug)]
pub struct SagaConfigBuilder {
    step_timeout: Duration,
    attempts_max: u32,
    compensation_attempts_max: u32,
    backoff: (Duration, Duration),
    steps: Vec<StepId>,
    seed: u64,
    deadline_from_sent: bool,
}

impl SagaConfigBuilder {
    /// When true, an attempt's deadline starts only when the driver reports that its
    /// command left ([`Orchestrator::on_sent`]); until then no timer runs for it. Use it
    /// when commands may wait behind log writes (a busy disk), so that the wait is not
    /// taken for a silent service; the driver must then report every send. Default
    /// false: the deadline counts from when the command was emitted, and `on_sent` may
    /// only move it later.
    pub fn deadline_from_sent(mut self, on: bool) -> Self {
        self.deadline_from_sent = on;
        self
    }
    /// How long an attempt waits for its reply (more than zero).
    pub fn step_timeout(mut self, d: Duration) -> Self {
        self.step_timeout = d;
        self
    }
    /// Attempts per step action (1 to [`RetryPolicy::ATTEMPTS_MAX_LIMIT`]).
    pub fn attempts_max(mut self, n: u32) -> Self {
        self.attempts_max = n;
        self
    }
    /// Attempts per compensation before the saga fails (1 to
    /// [`RetryPolicy::ATTEMPTS_MAX_LIMIT`]).
    pub fn compensation_attempts_max(mut self, n: u32) -> Self {
        self.compensation_attempts_max = n;
        self
    }
    /// Retry backoff: full jitter up to `min(cap, base * 2^(n-1))` after attempt `n`.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
        self
    }
    /// The steps in execution order (at least one, none repeated).
    pub fn steps(mut self, steps: &[StepId]) -> Self {
        self.steps = steps.to_vec();
        self
    }
    /// The seed of the backoff jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field: `step_timeout` (zero), `attempts_max`,
    /// `compensation_attempts_max` (out of range), `steps` (empty or repeated), `base`
    /// or `cap` (see [`Backoff::new`]).
    pub fn build(self) -> Result<SagaConfig, ConfigError> {
        if self.step_timeout.is_zero() {
            return Err(ConfigError::new(
                "step_timeout",
                "must be greater than zero, got 0ns",
            ));
        }
        let backoff = Backoff::new(self.backoff.0, self.backoff.1)?;
        let retry = RetryPolicy::new(self.attempts_max, backoff)?;
        let compensation = RetryPolicy::new(self.compensation_attempts_max, backoff)
            .map_err(|e| ConfigError::new("compensation_attempts_max", e.reason))?;
        if self.steps.is_empty() {
            return Err(ConfigError::new(
                "steps",
                "must name at least one step, got []",
            ));
        }
        let distinct: BTreeSet<StepId> = self.steps.iter().copied().collect();
        if distinct.len() != self.steps.len() {
            return Err(ConfigError::new(
                "steps",
                format!("must not repeat a step, got {:?}", self.steps),
            ));
        }
        Ok(SagaConfig {
            step_timeout: self.step_timeout,
            attempts_max: retry.attempts_max(),
            compensation_attempts_max: compensation.attempts_max(),
            backoff,
            steps: self.steps,
            seed: self.seed,
            deadline_from_sent: self.deadline_from_sent,
        })
    }
}

/// One record of the durable saga log. [`Orchestrator::recover`] rebuilds every saga
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
        /// True for [`Reply::Ok`].
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

/// Why a saga needs a human.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertReason {
    /// The compensation of `step` failed or timed out `attempts` times: the step's
    /// effect may still be in place.
    CompensationExhausted {
        /// The step that could not be undone.
        step: StepId,
        /// Attempts made.
        attempts: u32,
    },
}

impl fmt::Display for AlertReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertReason::CompensationExhausted { step, attempts } => write!(
                f,
                "the {step} compensation failed after {attempts} attempts"
            ),
        }
    }
}

/// Something the caller must do, in the order given. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make this record durable before performing any later output.
    Append(LogRecord),
    /// Send the command (attempt number second); quote the attempt in `on_reply`.
    Send(Command, u32),
    /// A saga ended [`SagaState::Failed`]. Emitted just before its `Ended` record, so a
    /// crash in between repeats it after recovery (at least once).
    Alert {
        /// The saga.
        saga: SagaId,
        /// Why.
        reason: AlertReason,
    },
}

/// What the orchestrator knows about one step of one saga.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepProgress {
    /// Action attempts sent (intents written), 0 if never sent.
    pub attempts: u32,
    /// `Some(true)` succeeded, `Some(false)` refused, `None` never answered.
    pub outcome: Option<bool>,
    /// Compensation attempts sent, 0 if never compensated.
    pub compensation_attempts: u32,
    /// The compensation was done.
    pub compensated: bool,
}

impl StepProgress {
    /// True when the action may have taken effect: sent and not refused.
    pub fn may_have_taken_effect(&self) -> bool {
        self.attempts > 0 && self.outcome != Some(false)
    }
}

/// Counters since this orchestrator was made (a recovered one starts from zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SagaTotals {
    /// Sagas accepted by `start`.
    pub started: u64,
    /// Sagas rebuilt by `recover` that were not at rest.
    pub recovered: u64,
    /// Sagas that ended completed.
    pub completed: u64,
    /// Sagas that ended compensated.
    pub compensated: u64,
    /// Sagas that ended failed (one alert each).
    pub failed: u64,
    /// Commands sent (every attempt of every action and compensation).
    pub sends: u64,
    /// Action attempts after the first (after a timeout, or resent by recovery).
    pub action_retries: u64,
    /// Compensations begun (first attempts).
    pub compensations: u64,
    /// Compensation attempts after the first.
    pub compensation_retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Replies ignored as stale.
    pub stale_replies: u64,
    /// Attempts in flight at a crash, sent again by recovery under the same attempt
    /// number.
    pub resumed: u64,
}

/// A deliberate defect, set only by mutation tests. The reference has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    None,
    /// A failed or timed-out compensation is dropped and recorded as done: the saga
    /// ends compensated anyway.
    CompensationsNotRetried,
    /// The last step that succeeded is not compensated.
    SkipLastCompensation,
    /// Each `Send` is emitted before its intent `Append`.
    SendBeforeLog,
    /// Steps that were never sent are compensated too.
    CompensateNeverSent,
    /// A saga whose compensation is exhausted ends Failed without an alert.
    SilentFailure,
    /// Recovery presumes that an action in flight at the crash failed, and compensates
    /// the saga (a crash then changes how sagas end).
    RecoveryPresumesFailure,
    /// Retry backoff ignores its cap: delays double without bound.
    UncappedBackoff,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing in flight (at rest, or between two decisions).
    Idle,
    /// Attempt `attempt` of `kind` of step `index` is in flight until `deadline`.
    Awaiting {
        index: usize,
        kind: Kind,
        attempt: u32,
        deadline: Instant,
    },
    /// Backing off: decide again (send the next attempt) at `at`.
    Waiting { at: Instant },
}

#[derive(Clone, Debug)]
struct Saga {
    order: Order,
    state: SagaState,
    /// Aligned with `config.steps`.
    steps: Vec<StepProgress>,
    phase: Phase,
    /// The entry of this saga in `Orchestrator::timers`, if any.
    timer: Option<Instant>,
}

/// The saga orchestrator. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Orchestrator {
    config: SagaConfig,
    sagas: BTreeMap<SagaId, Saga>,
    /// One entry per saga with a deadline or a retry time.
    timers: BTreeSet<(Instant, SagaId)>,
    outputs: VecDeque<Output>,
    totals: SagaTotals,
    rng: SplitMix64,
    pub(crate) flaw: Flaw,
}

impl Orchestrator {
    /// An orchestrator with no sagas.
    pub fn new(config: SagaConfig) -> Self {
        let rng = SplitMix64(config.seed);
        Orchestrator {
            config,
            sagas: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            totals: SagaTotals::default(),
            rng,
            flaw: Flaw::None,
        }
    }

    /// Rebuilds every saga from the durable `records` (in log order) and decides what
    /// each saga not at rest does next; the decisions are waiting in
    /// [`poll_output`](Orchestrator::poll_output).
    ///
    /// Per saga, from its records: an action intent without an outcome is resent as the
    /// next attempt (same idempotency key), or, if it was the last attempt allowed,
    /// the saga compensates (that step included: it may have taken effect); a
    /// compensation intent without its done record is resent as the next attempt, or
    /// the saga fails if it was the last. A refused step starts compensation; a saga
    /// whose steps all succeeded completes. Records of a saga without a `Started`
    /// record, or naming a step not in `config`, are ignored.
    pub fn recover(config: SagaConfig, records: &[LogRecord], now: Instant) -> Self {
        Orchestrator::recover_flawed(config, records, now, Flaw::None)
    }

    /// [`recover`](Orchestrator::recover) with a defect (for mutation tests).
    pub(crate) fn recover_flawed(
        config: SagaConfig,
        records: &[LogRecord],
        now: Instant,
        flaw: Flaw,
    ) -> Self {
        let mut orch = Orchestrator::new(config).with_flaw(flaw);
        for record in records {
            orch.replay(record);
        }
        let pending: Vec<SagaId> = orch
            .sagas
            .iter()
            .filter(|(_, s)| !s.state.is_at_rest())
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            orch.totals.recovered += 1;
            orch.with_saga(id, |o, saga| o.resume(id, saga, now));
        }
        orch
    }

    /// After a recovery: the attempt in flight at the crash (its intent durable, its
    /// outcome not) is sent again under the same attempt number and idempotency key, so
    /// a crash costs time, never an attempt: the saga ends as it would have without the
    /// crash. Anything else is decided as in a live run.
    fn resume(&mut self, id: SagaId, saga: &mut Saga, now: Instant) {
        if self.flaw == Flaw::RecoveryPresumesFailure && saga.state == SagaState::Running {
            // The defect: whatever was in flight is presumed to have failed.
            if let Some(p) = saga.steps.iter_mut().find(|p| p.outcome.is_none())
                && p.attempts > 0
            {
                p.attempts = p.attempts.max(self.config.attempts_max);
            }
            return self.advance(id, saga, now);
        }
        let in_flight = match saga.state {
            SagaState::Running => saga
                .steps
                .iter()
                .position(|p| p.outcome != Some(true))
                .filter(|&i| saga.steps[i].outcome.is_none() && saga.steps[i].attempts > 0)
                .map(|i| (i, Kind::Action, saga.steps[i].attempts)),
            SagaState::Compensating => self
                .next_compensation(saga)
                .filter(|&j| saga.steps[j].compensation_attempts > 0)
                .map(|j| (j, Kind::Compensation, saga.steps[j].compensation_attempts)),
            _ => None,
        };
        match in_flight {
            Some((index, kind, attempt)) => self.resend(id, saga, index, kind, attempt, now),
            None => self.advance(id, saga, now),
        }
    }

    /// Sends attempt `attempt` of `kind` of step `index` again: its intent is durable
    /// already, so only the command goes out, with a fresh deadline.
    fn resend(
        &mut self,
        id: SagaId,
        saga: &mut Saga,
        index: usize,
        kind: Kind,
        attempt: u32,
        now: Instant,
    ) {
        self.totals.resumed += 1;
        self.dispatch(id, saga, index, kind, attempt, now, false);
    }

    /// The orchestrator with a defect (for mutation tests).
    pub(crate) fn with_flaw(mut self, flaw: Flaw) -> Self {
        self.flaw = flaw;
        self
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &SagaConfig {
        &self.config
    }

    /// Counters since this orchestrator was made.
    pub fn totals(&self) -> SagaTotals {
        self.totals
    }

    /// `saga`'s state, if the orchestrator knows it.
    pub fn state(&self, saga: SagaId) -> Option<SagaState> {
        self.sagas.get(&saga).map(|s| s.state)
    }

    /// `saga`'s order, if the orchestrator knows it.
    pub fn order(&self, saga: SagaId) -> Option<Order> {
        self.sagas.get(&saga).map(|s| s.order)
    }

    /// What the orchestrator knows about `step` of `saga` (`None` for an unknown saga
    /// or a step not configured).
    pub fn progress(&self, saga: SagaId, step: StepId) -> Option<StepProgress> {
        let index = self.index_of(step)?;
        self.sagas.get(&saga)?.steps.get(index).copied()
    }

    /// The attempt `saga` is waiting a reply for: step, kind and attempt number.
    pub fn awaiting(&self, saga: SagaId) -> Option<(StepId, Kind, u32)> {
        match self.sagas.get(&saga)?.phase {
            Phase::Awaiting {
                index,
                kind,
                attempt,
                ..
            } => Some((*self.config.steps.get(index)?, kind, attempt)),
            _ => None,
        }
    }

    /// Every saga with its state, in id order.
    pub fn sagas(&self) -> impl Iterator<Item = (SagaId, SagaState)> + '_ {
        self.sagas.iter().map(|(id, s)| (*id, s.state))
    }

    /// How many sagas are not at rest.
    pub fn in_flight(&self) -> usize {
        self.sagas
            .values()
            .filter(|s| !s.state.is_at_rest())
            .count()
    }

    /// True when every saga is at rest.
    pub fn is_at_rest(&self) -> bool {
        self.sagas.values().all(|s| s.state.is_at_rest())
    }

    /// The earliest attempt deadline or retry time, if any: call
    /// [`handle_timeout`](Orchestrator::handle_timeout) then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    // ----- outputs -----

    /// The next thing to do, in order. See the [module docs](self) for the contract.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ----- inputs -----

    /// Accepts a new saga and sends its first step. False (and nothing happens) if the
    /// id is already known.
    pub fn start(&mut self, saga: SagaId, order: Order, now: Instant) -> bool {
        if self.sagas.contains_key(&saga) {
            return false;
        }
        self.totals.started += 1;
        self.outputs
            .push_back(Output::Append(LogRecord::Started { saga, order }));
        let mut s = self.new_saga(order);
        self.advance(saga, &mut s, now);
        self.sagas.insert(saga, s);
        true
    }

    /// A service's reply to attempt `attempt` of `kind` of `step` of `saga`. Returns
    /// false when the reply is stale (not the attempt awaited) and was ignored.
    ///
    /// An action's `Ok` records the outcome and sends the next step (or completes); a
    /// refusal records it and starts compensating. A compensation's `Ok` records it and
    /// sends the next compensation (or ends compensated); a refusal counts as a failure
    /// and is retried with backoff.
    pub fn on_reply(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        reply: Reply,
        now: Instant,
    ) -> bool {
        let Some(index) = self.index_of(step) else {
            self.totals.stale_replies += 1;
            return false;
        };
        // A reply to an earlier attempt of what the saga is doing now counts as well:
        // every attempt carries the same idempotency key, so the service answers each
        // alike. (A refused compensation counts only for the attempt awaited.)
        let expected = self.sagas.get(&saga).is_some_and(|s| {
            let awaited = matches!(s.phase, Phase::Awaiting { attempt: a, .. } if a == attempt);
            self.current(s).is_some_and(|(i, k, tried)| {
                i == index
                    && k == kind
                    && (1..=tried).contains(&attempt)
                    && (awaited || kind == Kind::Action || reply.is_ok())
            })
        });
        if !expected {
            self.totals.stale_replies += 1;
            return false;
        }
        self.with_saga(saga, |o, s| {
            o.set_phase(saga, s, Phase::Idle);
            match (kind, reply) {
                (Kind::Action, reply) => {
                    let ok = reply.is_ok();
                    s.steps[index].outcome = Some(ok);
                    o.outputs
                        .push_back(Output::Append(LogRecord::StepOutcome { saga, step, ok }));
                    o.advance(saga, s, now);
                }
                (Kind::Compensation, Reply::Ok) => o.compensation_done(saga, s, index, now),
                (Kind::Compensation, Reply::Refused(_)) => {
                    o.after_failure(saga, s, kind, attempt, now);
                }
            }
        });
        true
    }

    /// Tells the orchestrator that attempt `attempt` of `kind` of `step` actually left
    /// now (after its intent became durable): its deadline counts from here, so time
    /// spent queued behind log writes is not held against the service. Optional: a
    /// driver that never calls it gets deadlines counted from when the command was
    /// emitted. False if that attempt is not the one awaited.
    pub fn on_sent(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        now: Instant,
    ) -> bool {
        let Some(index) = self.index_of(step) else {
            return false;
        };
        let deadline = now + self.config.step_timeout;
        let mut rearmed = false;
        self.with_saga(saga, |o, s| {
            if let Phase::Awaiting {
                index: i,
                kind: k,
                attempt: a,
                deadline: old,
            } = s.phase
                && i == index
                && k == kind
                && a == attempt
                && (old == UNSENT || deadline > old)
            {
                o.set_phase(
                    saga,
                    s,
                    Phase::Awaiting {
                        index,
                        kind,
                        attempt,
                        deadline,
                    },
                );
                rearmed = true;
            }
        });
        rearmed
    }

    /// What `saga` is doing now: the step, the kind and how many attempts it has made
    /// (in flight or backing off before the next); `None` when idle or at rest.
    fn current(&self, saga: &Saga) -> Option<(usize, Kind, u32)> {
        match saga.phase {
            Phase::Idle => None,
            Phase::Awaiting {
                index,
                kind,
                attempt,
                ..
            } => Some((index, kind, attempt)),
            Phase::Waiting { .. } => match saga.state {
                SagaState::Running => {
                    let i = saga.steps.iter().position(|p| p.outcome != Some(true))?;
                    Some((i, Kind::Action, saga.steps[i].attempts))
                }
                SagaState::Compensating => {
                    let j = self.next_compensation(saga)?;
                    Some((j, Kind::Compensation, saga.steps[j].compensation_attempts))
                }
                _ => None,
            },
        }
    }

    /// Handles every deadline and retry time up to `now`: an attempt without a reply
    /// has an unknown outcome and is retried after a backoff (same idempotency key)
    /// while attempts remain; a spent action starts compensation (that step included);
    /// a spent compensation fails the saga with an alert.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(Instant, SagaId)> = self
            .timers
            .range(..=(now, SagaId(u64::MAX)))
            .copied()
            .collect();
        for (at, id) in due {
            if !self.sagas.contains_key(&id) {
                self.timers.remove(&(at, id));
                continue;
            }
            self.with_saga(id, |o, saga| {
                if saga.timer != Some(at) {
                    return;
                }
                let phase = saga.phase;
                o.set_phase(id, saga, Phase::Idle);
                match phase {
                    Phase::Awaiting { kind, attempt, .. } => {
                        o.totals.timeouts += 1;
                        o.after_failure(id, saga, kind, attempt, now);
                    }
                    Phase::Waiting { .. } => o.advance(id, saga, now),
                    Phase::Idle => {}
                }
            });
        }
    }

    // ----- internals -----

    fn index_of(&self, step: StepId) -> Option<usize> {
        self.config.steps.iter().position(|s| *s == step)
    }

    fn new_saga(&self, order: Order) -> Saga {
        Saga {
            order,
            state: SagaState::Running,
            steps: vec![StepProgress::default(); self.config.steps.len()],
            phase: Phase::Idle,
            timer: None,
        }
    }

    /// Runs `f` on saga `id` taken out of the map (so `f` may use `self` freely).
    fn with_saga(&mut self, id: SagaId, f: impl FnOnce(&mut Self, &mut Saga)) {
        if let Some(mut saga) = self.sagas.remove(&id) {
            f(self, &mut saga);
            self.sagas.insert(id, saga);
        }
    }

    /// Applies one durable record while recovering.
    fn replay(&mut self, record: &LogRecord) {
        if let LogRecord::Started { saga, order } = *record {
            if !self.sagas.contains_key(&saga) {
                let s = self.new_saga(order);
                self.sagas.insert(saga, s);
            }
            return;
        }
        let step = match *record {
            LogRecord::StepIntent { step, .. }
            | LogRecord::StepOutcome { step, .. }
            | LogRecord::CompensationIntent { step, .. }
            | LogRecord::CompensationDone { step, .. } => Some(step),
            _ => None,
        };
        let index = step.and_then(|s| self.index_of(s));
        let Some(saga) = self.sagas.get_mut(&record.saga()) else {
            return;
        };
        if let LogRecord::Ended { state, .. } = *record {
            saga.state = state;
            return;
        }
        let Some(p) = index.and_then(|i| saga.steps.get_mut(i)) else {
            return;
        };
        match *record {
            LogRecord::StepIntent { attempt, .. } => p.attempts = p.attempts.max(attempt),
            LogRecord::StepOutcome { ok, .. } => p.outcome = Some(ok),
            LogRecord::CompensationIntent { attempt, .. } => {
                p.compensation_attempts = p.compensation_attempts.max(attempt);
            }
            LogRecord::CompensationDone { .. } => p.compensated = true,
            LogRecord::Started { .. } | LogRecord::Ended { .. } => {}
        }
        let compensating = matches!(
            *record,
            LogRecord::CompensationIntent { .. } | LogRecord::CompensationDone { .. }
        );
        if compensating && !saga.state.is_at_rest() {
            saga.state = SagaState::Compensating;
        }
    }

    /// Decides what an idle saga does next, from its step progress alone (so a live run
    /// and a recovery decide alike), and emits it.
    fn advance(&mut self, id: SagaId, saga: &mut Saga, now: Instant) {
        if saga.state == SagaState::Running {
            let Some(i) = saga.steps.iter().position(|p| p.outcome != Some(true)) else {
                return self.end(id, saga, SagaState::Completed);
            };
            let p = saga.steps[i];
            if p.outcome == Some(false) {
                saga.state = SagaState::Compensating;
            } else if p.attempts == 0 {
                return self.send(id, saga, i, Kind::Action, 1, now);
            } else if p.attempts < self.config.attempts_max {
                self.totals.action_retries += 1;
                return self.send(id, saga, i, Kind::Action, p.attempts + 1, now);
            } else {
                saga.state = SagaState::Compensating;
            }
        }
        while saga.state == SagaState::Compensating {
            let Some(j) = self.next_compensation(saga) else {
                return self.end(id, saga, SagaState::Compensated);
            };
            let p = saga.steps[j];
            if p.compensation_attempts == 0 {
                self.totals.compensations += 1;
                return self.send(id, saga, j, Kind::Compensation, 1, now);
            } else if self.flaw == Flaw::CompensationsNotRetried {
                // The defect: the failed compensation is dropped, recorded as done.
                saga.steps[j].compensated = true;
                if let Some(&step) = self.config.steps.get(j) {
                    self.outputs
                        .push_back(Output::Append(LogRecord::CompensationDone {
                            saga: id,
                            step,
                        }));
                }
            } else if p.compensation_attempts < self.config.compensation_attempts_max {
                self.totals.compensation_retries += 1;
                let attempt = p.compensation_attempts + 1;
                return self.send(id, saga, j, Kind::Compensation, attempt, now);
            } else {
                return self.fail(id, saga, j);
            }
        }
    }

    /// The next step to compensate: the last one, in execution order, that may have
    /// taken effect and is not compensated yet.
    fn next_compensation(&self, saga: &Saga) -> Option<usize> {
        let last_ok = saga.steps.iter().rposition(|p| p.outcome == Some(true));
        (0..saga.steps.len()).rev().find(|&j| {
            let p = saga.steps[j];
            if p.compensated {
                return false;
            }
            match self.flaw {
                Flaw::CompensateNeverSent => p.outcome != Some(false),
                Flaw::SkipLastCompensation => p.may_have_taken_effect() && Some(j) != last_ok,
                _ => p.may_have_taken_effect(),
            }
        })
    }

    fn compensation_done(&mut self, id: SagaId, saga: &mut Saga, index: usize, now: Instant) {
        saga.steps[index].compensated = true;
        if let Some(&step) = self.config.steps.get(index) {
            self.outputs
                .push_back(Output::Append(LogRecord::CompensationDone {
                    saga: id,
                    step,
                }));
        }
        self.advance(id, saga, now);
    }

    /// Attempt `attempt` of `kind` timed out or (a compensation) was refused: back off
    /// before the next attempt, or decide now if none remains.
    fn after_failure(
        &mut self,
        id: SagaId,
        saga: &mut Saga,
        kind: Kind,
        attempt: u32,
        now: Instant,
    ) {
        let retry = match kind {
            Kind::Action => attempt < self.config.attempts_max,
            Kind::Compensation => {
                self.flaw != Flaw::CompensationsNotRetried
                    && attempt < self.config.compensation_attempts_max
            }
        };
        if !retry {
            return self.advance(id, saga, now);
        }
        let at = now + self.jitter(attempt);
        if at <= now {
            self.advance(id, saga, now);
        } else {
            self.set_phase(id, saga, Phase::Waiting { at });
        }
    }

    /// Writes the intent and sends attempt `attempt` of `kind` of step `index`.
    fn send(
        &mut self,
        id: SagaId,
        saga: &mut Saga,
        index: usize,
        kind: Kind,
        attempt: u32,
        now: Instant,
    ) {
        let Some(p) = saga.steps.get_mut(index) else {
            return;
        };
        match kind {
            Kind::Action => p.attempts = attempt,
            Kind::Compensation => p.compensation_attempts = attempt,
        }
        self.dispatch(id, saga, index, kind, attempt, now, true);
    }

    /// Emits the command of attempt `attempt` (after its intent record when
    /// `with_intent`) and awaits its reply: the deadline counts from now, or from
    /// [`on_sent`](Orchestrator::on_sent) with `deadline_from_sent`.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        id: SagaId,
        saga: &mut Saga,
        index: usize,
        kind: Kind,
        attempt: u32,
        now: Instant,
        with_intent: bool,
    ) {
        let Some(&step) = self.config.steps.get(index) else {
            return;
        };
        let cmd = Command {
            saga: id,
            step,
            kind,
            order: saga.order,
        };
        let send = Output::Send(cmd, attempt);
        if with_intent {
            let intent = Output::Append(LogRecord::intent_for(&cmd, attempt));
            if self.flaw == Flaw::SendBeforeLog {
                self.outputs.push_back(send);
                self.outputs.push_back(intent);
            } else {
                self.outputs.push_back(intent);
                self.outputs.push_back(send);
            }
        } else {
            self.outputs.push_back(send);
        }
        self.totals.sends += 1;
        let deadline = if self.config.deadline_from_sent {
            UNSENT
        } else {
            now + self.config.step_timeout
        };
        self.set_phase(
            id,
            saga,
            Phase::Awaiting {
                index,
                kind,
                attempt,
                deadline,
            },
        );
    }

    fn end(&mut self, id: SagaId, saga: &mut Saga, state: SagaState) {
        saga.state = state;
        self.set_phase(id, saga, Phase::Idle);
        match state {
            SagaState::Completed => self.totals.completed += 1,
            SagaState::Compensated => self.totals.compensated += 1,
            _ => self.totals.failed += 1,
        }
        self.outputs
            .push_back(Output::Append(LogRecord::Ended { saga: id, state }));
    }

    fn fail(&mut self, id: SagaId, saga: &mut Saga, index: usize) {
        if self.flaw == Flaw::SilentFailure {
            // The defect: the saga is given up on without telling anyone.
            self.end(id, saga, SagaState::Failed);
            return;
        }
        if let Some(&step) = self.config.steps.get(index) {
            let attempts = saga.steps[index].compensation_attempts;
            self.outputs.push_back(Output::Alert {
                saga: id,
                reason: AlertReason::CompensationExhausted { step, attempts },
            });
        }
        self.end(id, saga, SagaState::Failed);
    }

    fn set_phase(&mut self, id: SagaId, saga: &mut Saga, phase: Phase) {
        if let Some(at) = saga.timer.take() {
            self.timers.remove(&(at, id));
        }
        saga.phase = phase;
        let at = match phase {
            Phase::Idle => None,
            Phase::Awaiting { deadline, .. } => Some(deadline).filter(|d| *d != UNSENT),
            Phase::Waiting { at } => Some(at),
        };
        if let Some(at) = at {
            self.timers.insert((at, id));
            saga.timer = Some(at);
        }
    }

    /// The backoff before the attempt after `attempt`: uniform in
    /// `[0, ceiling(attempt)]`, both ends included.
    fn jitter(&mut self, attempt: u32) -> Duration {
        if self.flaw == Flaw::UncappedBackoff {
            // The defect: the delay doubles without its cap (and without jitter).
            let base = self.config.backoff.base();
            return base.saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
        }
        self.config.backoff.delay(attempt, &mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::services::{
        InventoryService, PaymentService, Refusal, ReservationState, Services,
    };

    const S1: SagaId = SagaId(1);
    const ORDER: Order = Order {
        item: 1,
        qty: 2,
        amount: 100,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn config() -> SagaConfig {
        SagaConfig::builder()
            .step_timeout(ms(100))
            .attempts_max(3)
            .compensation_attempts_max(4)
            .backoff(ms(10), ms(40))
            .seed(7)
            .build()
            .unwrap()
    }

    fn drain(o: &mut Orchestrator) -> Vec<Output> {
        std::iter::from_fn(|| o.poll_output()).collect()
    }

    /// Handles timeouts until something comes out; returns when and what.
    fn fire(o: &mut Orchestrator) -> (Instant, Vec<Output>) {
        for _ in 0..10 {
            let now = o.poll_timeout().expect("a timer is pending");
            o.handle_timeout(now);
            let out = drain(o);
            if !out.is_empty() {
                return (now, out);
            }
        }
        panic!("nothing came out of the timers");
    }

    fn append(r: LogRecord) -> Output {
        Output::Append(r)
    }

    fn intent(step: StepId, attempt: u32) -> Output {
        append(LogRecord::StepIntent {
            saga: S1,
            step,
            attempt,
        })
    }

    fn outcome(step: StepId, ok: bool) -> Output {
        append(LogRecord::StepOutcome { saga: S1, step, ok })
    }

    fn comp_intent(step: StepId, attempt: u32) -> Output {
        append(LogRecord::CompensationIntent {
            saga: S1,
            step,
            attempt,
        })
    }

    fn comp_done(step: StepId) -> Output {
        append(LogRecord::CompensationDone { saga: S1, step })
    }

    fn ended(state: SagaState) -> Output {
        append(LogRecord::Ended { saga: S1, state })
    }

    fn send(step: StepId, attempt: u32) -> Output {
        Output::Send(Command::action(S1, step, ORDER), attempt)
    }

    fn send_comp(step: StepId, attempt: u32) -> Output {
        Output::Send(Command::compensation(S1, step, ORDER), attempt)
    }

    /// Starts S1 and answers its actions `Ok` up to (not including) `upto`.
    fn run_until(o: &mut Orchestrator, upto: StepId) {
        assert!(o.start(S1, ORDER, at(0)));
        drain(o);
        for step in StepId::ALL {
            if step == upto {
                return;
            }
            assert!(o.on_reply(S1, step, Kind::Action, 1, Reply::Ok, at(0)));
            drain(o);
        }
    }

    // ----- the in-test driver -----

    /// What the network does to one sent command.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fate {
        Deliver,
        /// The command never reaches the service.
        LoseRequest,
        /// The service applies it; the reply is lost.
        LoseReply,
        /// The service gets it twice; both replies come back.
        Duplicate,
    }

    /// Delivers `Send` outputs to real services, appends records to an in-memory
    /// durable log, feeds replies back, fires timers, and can crash the orchestrator
    /// after any number of performed outputs. The log, the services and replies in
    /// flight survive a crash; the orchestrator's memory does not.
    struct Driver {
        config: SagaConfig,
        flaw: Flaw,
        orch: Orchestrator,
        services: Services,
        log: Vec<LogRecord>,
        replies: VecDeque<(Command, u32, Reply)>,
        fate: fn(&Command, u32) -> Fate,
        now: Instant,
        performed: usize,
        crashes: u32,
        alerts: Vec<(SagaId, AlertReason)>,
        violations: Vec<String>,
    }

    impl Driver {
        fn new(config: SagaConfig, services: Services, fate: fn(&Command, u32) -> Fate) -> Self {
            Driver::flawed(config, services, fate, Flaw::None)
        }

        fn flawed(
            config: SagaConfig,
            services: Services,
            fate: fn(&Command, u32) -> Fate,
            flaw: Flaw,
        ) -> Self {
            Driver {
                orch: Orchestrator::new(config.clone()).with_flaw(flaw),
                config,
                flaw,
                services,
                log: Vec::new(),
                replies: VecDeque::new(),
                fate,
                now: Instant::ZERO,
                performed: 0,
                crashes: 0,
                alerts: Vec::new(),
                violations: Vec::new(),
            }
        }

        fn start(&mut self, sagas: &[(u64, Order)]) {
            for (id, order) in sagas {
                assert!(self.orch.start(SagaId(*id), *order, self.now));
            }
        }

        /// Performs the next output, if any.
        fn perform(&mut self) -> bool {
            let Some(out) = self.orch.poll_output() else {
                return false;
            };
            self.performed += 1;
            match out {
                Output::Append(record) => self.log.push(record),
                Output::Send(cmd, attempt) => {
                    if !self.log.contains(&LogRecord::intent_for(&cmd, attempt)) {
                        self.violations.push(format!(
                            "write-ahead: {cmd} #{attempt} sent before its intent"
                        ));
                    }
                    match (self.fate)(&cmd, attempt) {
                        Fate::LoseRequest => {}
                        Fate::LoseReply => {
                            let _ = self.services.handle(&cmd);
                        }
                        Fate::Deliver => {
                            let reply = self.services.handle(&cmd);
                            self.replies.push_back((cmd, attempt, reply));
                        }
                        Fate::Duplicate => {
                            for _ in 0..2 {
                                let reply = self.services.handle(&cmd);
                                self.replies.push_back((cmd, attempt, reply));
                            }
                        }
                    }
                }
                Output::Alert { saga, reason } => self.alerts.push((saga, reason)),
            }
            true
        }

        /// One unit of progress: an output, else a reply, else a timer. False when idle.
        fn step(&mut self) -> bool {
            if self.perform() {
                return true;
            }
            if let Some((cmd, attempt, reply)) = self.replies.pop_front() {
                let _ = self
                    .orch
                    .on_reply(cmd.saga, cmd.step, cmd.kind, attempt, reply, self.now);
                return true;
            }
            if let Some(t) = self.orch.poll_timeout() {
                self.now = self.now.max(t);
                self.orch.handle_timeout(self.now);
                return true;
            }
            false
        }

        /// Runs until idle (false) or until `crash_at` outputs were performed in all
        /// (true: the caller crashes it).
        fn run(&mut self, crash_at: Option<usize>) -> bool {
            for _ in 0..1_000_000 {
                if crash_at.is_some_and(|k| self.performed >= k) {
                    return true;
                }
                if !self.step() {
                    return false;
                }
            }
            panic!("the driver did not settle");
        }

        /// The orchestrator crashes and a new one recovers from the durable log.
        fn crash_and_recover(&mut self) {
            self.crashes += 1;
            self.orch =
                Orchestrator::recover_flawed(self.config.clone(), &self.log, self.now, self.flaw);
        }

        /// Every invariant at rest; empty when all hold.
        fn check(&self) -> Vec<String> {
            let mut v = self.violations.clone();
            let s = &self.services;
            if !s.inventory.is_conserved() {
                v.push("stock not conserved".into());
            }
            if !s.payment.is_conserved() {
                v.push("money not conserved".into());
            }
            if s.effects_max() > 1 {
                v.push(format!("a key applied {} effects", s.effects_max()));
            }
            for (id, state) in self.orch.sagas() {
                match state {
                    SagaState::Completed if !s.holds_all(id) => {
                        v.push(format!("{id} completed without all its effects"));
                    }
                    SagaState::Compensated if s.holds(id) => {
                        v.push(format!("{id} compensated but still holds an effect"));
                    }
                    SagaState::Failed if !self.alerts.iter().any(|(a, _)| *a == id) => {
                        v.push(format!("{id} failed without an alert"));
                    }
                    SagaState::Running | SagaState::Compensating => {
                        v.push(format!("{id} not at rest: {state:?}"));
                    }
                    _ => {}
                }
            }
            let touched: BTreeSet<SagaId> = s
                .orders
                .orders()
                .map(|(id, _)| id)
                .chain(s.inventory.reservations().map(|(id, _)| id))
                .chain(s.payment.charges().map(|(id, _)| id))
                .collect();
            for id in touched {
                if self.orch.state(id).is_none() && s.holds(id) {
                    v.push(format!("{id} holds an effect but the orchestrator lost it"));
                }
            }
            for (i, r) in self.log.iter().enumerate() {
                if let LogRecord::CompensationIntent { saga, step, .. } = *r {
                    let sent = self.log[..i].iter().any(|e| {
                        matches!(*e, LogRecord::StepIntent { saga: s2, step: t2, .. }
                            if s2 == saga && t2 == step)
                    });
                    if !sent {
                        v.push(format!("{saga}: {step} compensated but never sent"));
                    }
                }
            }
            v
        }
    }

    fn scenario_services() -> Services {
        Services::new(
            InventoryService::new([(1, 5), (2, 1)]),
            PaymentService::new().with_decline(|_, amount| amount > 500),
        )
    }

    /// Six sagas: completions, an out-of-stock, a decline, lost requests, a lost reply
    /// (a charge that took effect unbeknownst), a lost compensation, duplicates.
    const SCENARIO: [(u64, Order); 6] = [
        (
            1,
            Order {
                item: 1,
                qty: 2,
                amount: 100,
            },
        ),
        (
            2,
            Order {
                item: 2,
                qty: 1,
                amount: 50,
            },
        ),
        (
            3,
            Order {
                item: 2,
                qty: 1,
                amount: 70,
            },
        ),
        (
            4,
            Order {
                item: 1,
                qty: 1,
                amount: 999,
            },
        ),
        (
            5,
            Order {
                item: 1,
                qty: 1,
                amount: 30,
            },
        ),
        (
            6,
            Order {
                item: 1,
                qty: 1,
                amount: 40,
            },
        ),
    ];

    fn scenario_fate(cmd: &Command, attempt: u32) -> Fate {
        match (cmd.saga.0, cmd.step, cmd.kind, attempt) {
            (1, _, _, _) | (2, StepId::Inventory, _, _) => Fate::Duplicate,
            (5, StepId::Payment, Kind::Action, 1 | 2) => Fate::LoseRequest,
            (6, StepId::Payment, Kind::Action, 1) => Fate::LoseReply,
            (6, StepId::Payment, Kind::Action, _) => Fate::LoseRequest,
            (6, StepId::Inventory, Kind::Compensation, 1) => Fate::LoseRequest,
            _ => Fate::Deliver,
        }
    }

    fn scenario_driver(flaw: Flaw) -> Driver {
        let mut d = Driver::flawed(config(), scenario_services(), scenario_fate, flaw);
        d.start(&SCENARIO);
        d
    }

    // ----- configuration -----

    #[test]
    fn config_defaults_and_validation_name_the_field() {
        let c = SagaConfig::builder().build().unwrap();
        assert_eq!(c, SagaConfig::default());
        assert_eq!(c.step_timeout(), Duration::from_secs(1));
        assert_eq!(c.attempts_max(), 3);
        assert_eq!(c.compensation_attempts_max(), 10);
        assert_eq!(c.backoff().base(), ms(50));
        assert_eq!(c.backoff().cap(), Duration::from_secs(2));
        assert_eq!(c.steps(), &StepId::ALL);
        assert_eq!(SagaConfig::builder().seed(9).build().unwrap().seed(), 9);
        for (b, field) in [
            (
                SagaConfig::builder().step_timeout(Duration::ZERO),
                "step_timeout",
            ),
            (SagaConfig::builder().attempts_max(0), "attempts_max"),
            (SagaConfig::builder().attempts_max(1_001), "attempts_max"),
            (
                SagaConfig::builder().compensation_attempts_max(0),
                "compensation_attempts_max",
            ),
            (
                SagaConfig::builder().compensation_attempts_max(1_001),
                "compensation_attempts_max",
            ),
            (SagaConfig::builder().steps(&[]), "steps"),
            (
                SagaConfig::builder().steps(&[StepId::Order, StepId::Order]),
                "steps",
            ),
            (SagaConfig::builder().backoff(Duration::ZERO, ms(1)), "base"),
            (SagaConfig::builder().backoff(ms(2), ms(1)), "cap"),
        ] {
            assert_eq!(b.build().unwrap_err().field, field);
        }
    }

    // ----- output sequences -----

    #[test]
    fn happy_path_writes_each_intent_before_its_send_and_completes() {
        let mut o = Orchestrator::new(config());
        assert!(o.start(S1, ORDER, at(0)));
        assert!(!o.start(S1, ORDER, at(0)), "an id is accepted once");
        assert_eq!(
            drain(&mut o),
            vec![
                append(LogRecord::Started {
                    saga: S1,
                    order: ORDER
                }),
                intent(StepId::Order, 1),
                send(StepId::Order, 1),
            ]
        );
        assert_eq!(o.state(S1), Some(SagaState::Running));
        assert_eq!(o.awaiting(S1), Some((StepId::Order, Kind::Action, 1)));
        assert_eq!(o.poll_timeout(), Some(at(100)));
        assert!(o.on_reply(S1, StepId::Order, Kind::Action, 1, Reply::Ok, at(5)));
        assert_eq!(
            drain(&mut o),
            vec![
                outcome(StepId::Order, true),
                intent(StepId::Inventory, 1),
                send(StepId::Inventory, 1),
            ]
        );
        assert_eq!(o.poll_timeout(), Some(at(105)));
        assert!(o.on_reply(S1, StepId::Inventory, Kind::Action, 1, Reply::Ok, at(6)));
        assert_eq!(
            drain(&mut o),
            vec![
                outcome(StepId::Inventory, true),
                intent(StepId::Payment, 1),
                send(StepId::Payment, 1),
            ]
        );
        assert!(o.on_reply(S1, StepId::Payment, Kind::Action, 1, Reply::Ok, at(7)));
        assert_eq!(
            drain(&mut o),
            vec![outcome(StepId::Payment, true), ended(SagaState::Completed)]
        );
        assert_eq!(o.state(S1), Some(SagaState::Completed));
        assert_eq!(o.poll_timeout(), None);
        assert!(o.is_at_rest());
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.order(S1), Some(ORDER));
        let t = o.totals();
        assert_eq!((t.started, t.completed, t.sends), (1, 1, 3));
        assert_eq!(
            o.progress(S1, StepId::Payment),
            Some(StepProgress {
                attempts: 1,
                outcome: Some(true),
                compensation_attempts: 0,
                compensated: false
            })
        );
    }

    #[test]
    fn refusal_at_payment_compensates_inventory_then_order() {
        let mut o = Orchestrator::new(config());
        run_until(&mut o, StepId::Payment);
        let declined = Reply::Refused(Refusal::CardDeclined);
        assert!(o.on_reply(S1, StepId::Payment, Kind::Action, 1, declined, at(1)));
        assert_eq!(o.state(S1), Some(SagaState::Compensating));
        assert_eq!(
            drain(&mut o),
            vec![
                outcome(StepId::Payment, false),
                comp_intent(StepId::Inventory, 1),
                send_comp(StepId::Inventory, 1),
            ],
            "the refused payment took no effect: not compensated"
        );
        assert!(o.on_reply(
            S1,
            StepId::Inventory,
            Kind::Compensation,
            1,
            Reply::Ok,
            at(2)
        ));
        assert_eq!(
            drain(&mut o),
            vec![
                comp_done(StepId::Inventory),
                comp_intent(StepId::Order, 1),
                send_comp(StepId::Order, 1),
            ]
        );
        assert!(o.on_reply(S1, StepId::Order, Kind::Compensation, 1, Reply::Ok, at(3)));
        assert_eq!(
            drain(&mut o),
            vec![comp_done(StepId::Order), ended(SagaState::Compensated)]
        );
        assert_eq!(o.state(S1), Some(SagaState::Compensated));
        assert_eq!(o.totals().compensations, 2);
        assert_eq!(o.totals().compensated, 1);
    }

    #[test]
    fn refusal_at_the_first_step_compensates_nothing() {
        let mut o = Orchestrator::new(config());
        run_until(&mut o, StepId::Order);
        let refused = Reply::Refused(Refusal::OutOfStock);
        assert!(o.on_reply(S1, StepId::Order, Kind::Action, 1, refused, at(1)));
        assert_eq!(
            drain(&mut o),
            vec![outcome(StepId::Order, false), ended(SagaState::Compensated)]
        );
        assert_eq!(o.poll_timeout(), None);
    }

    #[test]
    fn a_timeout_retries_with_the_same_key_then_compensates_when_attempts_run_out() {
        let mut o = Orchestrator::new(config());
        run_until(&mut o, StepId::Payment);
        let mut last = at(0);
        for attempt in 2..=3 {
            let deadline = o.poll_timeout().unwrap();
            assert_eq!(
                deadline,
                last + ms(100),
                "attempt {} timed out",
                attempt - 1
            );
            let (when, out) = fire(&mut o);
            assert!(
                when >= deadline && when <= deadline + o.config().backoff().ceiling(attempt - 1)
            );
            assert_eq!(
                out,
                vec![
                    intent(StepId::Payment, attempt),
                    send(StepId::Payment, attempt)
                ]
            );
            let Output::Send(cmd, _) = out[1] else {
                unreachable!()
            };
            assert_eq!(cmd.key(), Command::action(S1, StepId::Payment, ORDER).key());
            last = when;
        }
        // The third attempt times out: no retry left, compensate the payment itself
        // first (its outcome is unknown: it may have taken effect).
        let (when, out) = fire(&mut o);
        assert_eq!(when, last + ms(100));
        assert_eq!(
            out,
            vec![
                comp_intent(StepId::Payment, 1),
                send_comp(StepId::Payment, 1)
            ]
        );
        // A late reply to an action is ignored once its compensation started.
        for attempt in 1..=3 {
            assert!(!o.on_reply(S1, StepId::Payment, Kind::Action, attempt, Reply::Ok, when));
        }
        assert!(drain(&mut o).is_empty());
        for step in [StepId::Payment, StepId::Inventory] {
            assert!(o.on_reply(S1, step, Kind::Compensation, 1, Reply::Ok, when));
            drain(&mut o);
        }
        assert!(o.on_reply(S1, StepId::Order, Kind::Compensation, 1, Reply::Ok, when));
        assert_eq!(
            drain(&mut o),
            vec![comp_done(StepId::Order), ended(SagaState::Compensated)]
        );
        let t = o.totals();
        assert_eq!((t.timeouts, t.action_retries, t.stale_replies), (3, 2, 3));
    }

    #[test]
    fn a_compensation_is_retried_with_backoff_until_it_succeeds() {
        let mut o = Orchestrator::new(config());
        run_until(&mut o, StepId::Payment);
        let declined = Reply::Refused(Refusal::CardDeclined);
        o.on_reply(S1, StepId::Payment, Kind::Action, 1, declined, at(0));
        drain(&mut o);
        // Attempt 1 times out, attempt 2 is refused (an infrastructure-ish failure).
        let (when, out) = fire(&mut o);
        assert!(when >= at(100) && when <= at(110));
        assert_eq!(
            out,
            vec![
                comp_intent(StepId::Inventory, 2),
                send_comp(StepId::Inventory, 2)
            ]
        );
        let refused = Reply::Refused(Refusal::Misrouted);
        assert!(o.on_reply(S1, StepId::Inventory, Kind::Compensation, 2, refused, when));
        let (when2, out) = fire(&mut o);
        assert!(when2 >= when && when2 <= when + ms(20));
        assert_eq!(
            out,
            vec![
                comp_intent(StepId::Inventory, 3),
                send_comp(StepId::Inventory, 3)
            ]
        );
        assert!(o.on_reply(
            S1,
            StepId::Inventory,
            Kind::Compensation,
            3,
            Reply::Ok,
            when2
        ));
        assert_eq!(
            drain(&mut o),
            vec![
                comp_done(StepId::Inventory),
                comp_intent(StepId::Order, 1),
                send_comp(StepId::Order, 1)
            ]
        );
        assert_eq!(o.totals().compensation_retries, 2);
    }

    #[test]
    fn a_compensation_failing_past_its_limit_fails_the_saga_with_an_alert() {
        let mut o = Orchestrator::new(config());
        run_until(&mut o, StepId::Payment);
        let declined = Reply::Refused(Refusal::CardDeclined);
        o.on_reply(S1, StepId::Payment, Kind::Action, 1, declined, at(0));
        drain(&mut o);
        for attempt in 2..=4 {
            let (_, out) = fire(&mut o);
            assert_eq!(out[0], comp_intent(StepId::Inventory, attempt));
        }
        let (_, out) = fire(&mut o);
        assert_eq!(
            out,
            vec![
                Output::Alert {
                    saga: S1,
                    reason: AlertReason::CompensationExhausted {
                        step: StepId::Inventory,
                        attempts: 4
                    }
                },
                ended(SagaState::Failed)
            ]
        );
        assert_eq!(o.state(S1), Some(SagaState::Failed));
        assert!(o.is_at_rest());
        assert_eq!(o.poll_timeout(), None);
        assert_eq!(o.totals().failed, 1);
        assert_eq!(
            AlertReason::CompensationExhausted {
                step: StepId::Inventory,
                attempts: 4
            }
            .to_string(),
            "the inventory compensation failed after 4 attempts"
        );
    }

    #[test]
    fn stale_replies_are_ignored() {
        let config = SagaConfig::builder()
            .steps(&[StepId::Order, StepId::Payment])
            .build()
            .unwrap();
        let mut o = Orchestrator::new(config);
        assert!(o.start(S1, ORDER, at(0)));
        drain(&mut o);
        let stale = [
            (S1, StepId::Order, Kind::Action, 2),
            (S1, StepId::Order, Kind::Action, 0),
            (S1, StepId::Order, Kind::Compensation, 1),
            (S1, StepId::Payment, Kind::Action, 1),
            (S1, StepId::Inventory, Kind::Action, 1),
            (SagaId(9), StepId::Order, Kind::Action, 1),
        ];
        for (saga, step, kind, attempt) in stale {
            assert!(!o.on_reply(saga, step, kind, attempt, Reply::Ok, at(1)));
        }
        assert!(drain(&mut o).is_empty());
        assert!(o.on_reply(S1, StepId::Order, Kind::Action, 1, Reply::Ok, at(1)));
        // A duplicate of the reply just taken is stale too.
        assert!(!o.on_reply(S1, StepId::Order, Kind::Action, 1, Reply::Ok, at(1)));
        assert_eq!(o.totals().stale_replies, 7);
        assert_eq!(o.awaiting(S1), Some((StepId::Payment, Kind::Action, 1)));
        assert_eq!(o.progress(S1, StepId::Inventory), None);
        drain(&mut o);
        // A late reply to an attempt that timed out still counts: every attempt has
        // the same idempotency key, so the service answers each alike.
        let (_, out) = fire(&mut o);
        assert_eq!(
            out[1],
            Output::Send(Command::action(S1, StepId::Payment, ORDER), 2)
        );
        assert!(!o.on_reply(S1, StepId::Payment, Kind::Action, 3, Reply::Ok, at(500)));
        assert!(o.on_reply(S1, StepId::Payment, Kind::Action, 1, Reply::Ok, at(500)));
        assert_eq!(o.state(S1), Some(SagaState::Completed));
        assert!(!o.on_reply(S1, StepId::Payment, Kind::Action, 2, Reply::Ok, at(500)));
    }

    #[test]
    fn a_deadline_counts_from_when_the_command_left() {
        let mut o = Orchestrator::new(config());
        assert!(o.start(S1, ORDER, at(0)));
        drain(&mut o);
        assert_eq!(o.poll_timeout(), Some(at(100)));
        // Queued behind log writes for 80 ms, then sent.
        assert!(o.on_sent(S1, StepId::Order, Kind::Action, 1, at(80)));
        assert_eq!(o.poll_timeout(), Some(at(180)));
        // Not the attempt awaited: nothing changes.
        assert!(!o.on_sent(S1, StepId::Order, Kind::Action, 2, at(90)));
        assert!(!o.on_sent(S1, StepId::Payment, Kind::Action, 1, at(90)));
        assert_eq!(o.poll_timeout(), Some(at(180)));
        o.handle_timeout(at(150));
        assert_eq!(o.awaiting(S1), Some((StepId::Order, Kind::Action, 1)));

        // With deadline_from_sent, no timer runs until the command is reported sent.
        let config = SagaConfig::builder()
            .step_timeout(Duration::from_millis(100))
            .deadline_from_sent(true)
            .build()
            .unwrap();
        let mut o = Orchestrator::new(config);
        assert!(o.start(S1, ORDER, at(0)));
        drain(&mut o);
        assert_eq!(o.poll_timeout(), None);
        o.handle_timeout(at(10_000));
        assert_eq!(o.awaiting(S1), Some((StepId::Order, Kind::Action, 1)));
        assert!(o.on_sent(S1, StepId::Order, Kind::Action, 1, at(10_000)));
        assert_eq!(o.poll_timeout(), Some(at(10_100)));
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline_or_retry() {
        let mut o = Orchestrator::new(config());
        assert_eq!(o.poll_timeout(), None);
        o.start(SagaId(1), ORDER, at(30));
        o.start(SagaId(2), ORDER, at(10));
        o.start(SagaId(3), ORDER, at(20));
        drain(&mut o);
        assert_eq!(o.poll_timeout(), Some(at(110)));
        o.on_reply(SagaId(2), StepId::Order, Kind::Action, 1, Reply::Ok, at(40));
        assert_eq!(o.poll_timeout(), Some(at(120)));
        o.handle_timeout(at(125));
        // Saga 3 backs off (at most 10 ms); saga 1's deadline is still 130.
        let next = o.poll_timeout().unwrap();
        assert!(next >= at(125) && next <= at(130), "{next}");
        assert_eq!(o.in_flight(), 3);
        let ids: Vec<SagaId> = o.sagas().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![SagaId(1), SagaId(2), SagaId(3)]);
    }

    #[test]
    fn same_seed_same_outputs() {
        let run = |seed| {
            let config = SagaConfig::builder()
                .step_timeout(ms(100))
                .backoff(ms(10), ms(1_000))
                .seed(seed)
                .build()
                .unwrap();
            let mut d = Driver::new(config, scenario_services(), scenario_fate);
            d.start(&SCENARIO);
            d.run(None);
            (d.log, d.now)
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).1, run(2).1, "the jitter depends on the seed");
    }

    // ----- recovery -----

    #[test]
    fn recovery_resends_unknown_outcomes_and_leaves_rest_states_alone() {
        let s = |n| SagaId(n);
        let o1 = Order {
            item: 1,
            qty: 1,
            amount: 10,
        };
        let started = |n| LogRecord::Started {
            saga: s(n),
            order: o1,
        };
        let si = |n, step, attempt| LogRecord::StepIntent {
            saga: s(n),
            step,
            attempt,
        };
        let so = |n, step, ok| LogRecord::StepOutcome {
            saga: s(n),
            step,
            ok,
        };
        let ci = |n, step, attempt| LogRecord::CompensationIntent {
            saga: s(n),
            step,
            attempt,
        };
        let cd = |n, step| LogRecord::CompensationDone { saga: s(n), step };
        let records = vec![
            // 1: the first intent, no outcome: resend attempt 1.
            started(1),
            si(1, StepId::Order, 1),
            // 2: the last attempt of inventory, no outcome: resend it too (a crash
            //    costs no attempt).
            started(2),
            si(2, StepId::Order, 1),
            so(2, StepId::Order, true),
            si(2, StepId::Inventory, 3),
            // 3: a compensation intent without done: resend it.
            started(3),
            si(3, StepId::Order, 1),
            so(3, StepId::Order, true),
            si(3, StepId::Inventory, 1),
            so(3, StepId::Inventory, false),
            ci(3, StepId::Order, 2),
            // 4: ended: nothing to do.
            started(4),
            si(4, StepId::Order, 1),
            so(4, StepId::Order, false),
            LogRecord::Ended {
                saga: s(4),
                state: SagaState::Compensated,
            },
            // 5: every step succeeded, not ended yet: complete.
            started(5),
            si(5, StepId::Order, 1),
            so(5, StepId::Order, true),
            si(5, StepId::Inventory, 1),
            so(5, StepId::Inventory, true),
            si(5, StepId::Payment, 2),
            so(5, StepId::Payment, true),
            // 6: the last compensation attempt without done: resend it.
            started(6),
            si(6, StepId::Order, 1),
            so(6, StepId::Order, true),
            si(6, StepId::Inventory, 1),
            so(6, StepId::Inventory, false),
            ci(6, StepId::Order, 4),
            // 7: compensation done, the rest not begun: next compensation.
            started(7),
            si(7, StepId::Order, 1),
            so(7, StepId::Order, true),
            si(7, StepId::Inventory, 1),
            so(7, StepId::Inventory, true),
            si(7, StepId::Payment, 1),
            ci(7, StepId::Payment, 1),
            cd(7, StepId::Payment),
            // Records of a saga never started are ignored.
            si(8, StepId::Order, 1),
        ];
        let mut o = Orchestrator::recover(config(), &records, at(1_000));
        let act = |n, step| Command::action(s(n), step, o1);
        let comp = |n, step| Command::compensation(s(n), step, o1);
        assert_eq!(
            drain(&mut o),
            vec![
                Output::Send(act(1, StepId::Order), 1),
                Output::Send(act(2, StepId::Inventory), 3),
                Output::Send(comp(3, StepId::Order), 2),
                append(LogRecord::Ended {
                    saga: s(5),
                    state: SagaState::Completed
                }),
                Output::Send(comp(6, StepId::Order), 4),
                append(ci(7, StepId::Inventory, 1)),
                Output::Send(comp(7, StepId::Inventory), 1),
            ]
        );
        assert_eq!(o.state(s(4)), Some(SagaState::Compensated));
        assert_eq!(o.state(s(2)), Some(SagaState::Running));
        assert_eq!(o.awaiting(s(2)), Some((StepId::Inventory, Kind::Action, 3)));
        assert_eq!(o.state(s(8)), None);
        assert_eq!(o.poll_timeout(), Some(at(1_100)));
        let t = o.totals();
        assert_eq!(
            (
                t.recovered,
                t.resumed,
                t.action_retries,
                t.compensation_retries
            ),
            (6, 4, 0, 0)
        );
        // The recovered orchestrator goes on: saga 2's inventory is refused, so its
        // order is compensated.
        assert!(o.on_reply(
            s(2),
            StepId::Inventory,
            Kind::Action,
            3,
            Reply::Refused(Refusal::OutOfStock),
            at(1_001)
        ));
        assert_eq!(
            drain(&mut o),
            vec![
                append(so(2, StepId::Inventory, false)),
                append(ci(2, StepId::Order, 1)),
                Output::Send(comp(2, StepId::Order), 1),
            ]
        );
    }

    #[test]
    fn the_scenario_settles_as_expected_without_crashes() {
        let mut d = scenario_driver(Flaw::None);
        assert!(!d.run(None));
        assert_eq!(d.check(), Vec::<String>::new());
        let states: Vec<(u64, SagaState)> = d.orch.sagas().map(|(id, s)| (id.0, s)).collect();
        use SagaState::{Compensated, Completed};
        assert_eq!(
            states,
            vec![
                (1, Completed),
                (2, Completed),
                (3, Compensated),
                (4, Compensated),
                (5, Completed),
                (6, Compensated)
            ]
        );
        // Saga 6's charge took effect though its reply was lost: it was refunded.
        let s = &d.services;
        assert_eq!(s.payment.captured_total(), 100 + 50 + 30 + 40);
        assert_eq!(s.payment.refunded_total(), 40);
        assert_eq!(s.inventory.available(1), 2);
        assert_eq!(s.inventory.available(2), 0);
        assert_eq!(
            s.inventory.reservation(SagaId(6)).map(|r| r.state),
            Some(ReservationState::Released)
        );
        assert!(
            s.orders.ledger().duplicates() > 0,
            "duplicates were delivered"
        );
        let t = d.orch.totals();
        assert!(t.action_retries >= 4 && t.compensation_retries >= 1 && t.stale_replies > 0);
    }

    #[test]
    fn recovery_after_a_crash_at_every_persistence_point_settles_and_conserves() {
        let mut full = scenario_driver(Flaw::None);
        full.run(None);
        let total = full.performed;
        assert!(total > 50, "{total} outputs");
        for k in 0..=total {
            let mut d = scenario_driver(Flaw::None);
            assert!(d.run(Some(k)), "crash point {k} reached");
            d.crash_and_recover();
            assert!(!d.run(None));
            assert_eq!(d.check(), Vec::<String>::new(), "crash after {k} outputs");
        }
    }

    #[test]
    fn recovery_survives_a_second_crash_during_recovery() {
        let mut full = scenario_driver(Flaw::None);
        full.run(None);
        let total = full.performed;
        let mut runs = 0;
        for k1 in 0..=total {
            for k2 in k1..k1 + 30 {
                let mut d = scenario_driver(Flaw::None);
                d.run(Some(k1));
                d.crash_and_recover();
                if !d.run(Some(k2)) {
                    break; // settled before the second crash point
                }
                d.crash_and_recover();
                assert!(!d.run(None));
                assert_eq!(
                    d.check(),
                    Vec::<String>::new(),
                    "crashes after {k1} and {k2}"
                );
                runs += 1;
            }
        }
        assert!(runs > total);
    }

    fn noisy_fate(cmd: &Command, attempt: u32) -> Fate {
        let x = cmd.saga.0 * 1_000
            + (cmd.step as u64) * 100
            + (cmd.kind as u64) * 10
            + u64::from(attempt);
        match SplitMix64(x).next() % 10 {
            0 | 1 => Fate::LoseRequest,
            2 => Fate::LoseReply,
            3 => Fate::Duplicate,
            _ => Fate::Deliver,
        }
    }

    #[test]
    fn many_concurrent_sagas_with_losses_and_crashes_come_to_rest() {
        let config = SagaConfig::builder()
            .step_timeout(ms(100))
            .backoff(ms(10), ms(200))
            .seed(42)
            .build()
            .unwrap();
        let services = Services::new(
            InventoryService::new([(0, 400), (1, 400), (2, 400)]),
            PaymentService::new().with_decline(|saga, _| saga.0 % 11 == 0),
        );
        let mut d = Driver::new(config, services, noisy_fate);
        let sagas: Vec<(u64, Order)> = (0..300)
            .map(|n| {
                (
                    n,
                    Order {
                        item: (n % 3) as u32,
                        qty: 1 + (n % 2) as u32,
                        amount: 10 + n,
                    },
                )
            })
            .collect();
        d.start(&sagas);
        let mut crash_at = 0;
        while {
            crash_at += 1_500;
            d.run(Some(crash_at))
        } {
            d.crash_and_recover();
            // Clients whose start was lost (no durable `Started`) submit it again.
            for (id, order) in &sagas {
                if d.orch.state(SagaId(*id)).is_none() {
                    assert!(d.orch.start(SagaId(*id), *order, d.now));
                }
            }
        }
        assert!(
            d.crashes >= 3,
            "{} crashes, {} outputs",
            d.crashes,
            d.performed
        );
        assert_eq!(d.check(), Vec::<String>::new());
        let count = |want| d.orch.sagas().filter(|(_, s)| *s == want).count();
        assert_eq!(d.orch.sagas().count(), 300);
        let (completed, compensated) = (count(SagaState::Completed), count(SagaState::Compensated));
        assert!(completed > 100, "{completed} completed");
        assert!(compensated > 20, "{compensated} compensated");
        assert!(d.services.effects_max() <= 1);
    }

    #[test]
    fn a_saga_whose_compensation_never_arrives_fails_with_an_alert() {
        fn fate(cmd: &Command, _: u32) -> Fate {
            match (cmd.step, cmd.kind) {
                (StepId::Inventory, Kind::Compensation) => Fate::LoseRequest,
                _ => Fate::Deliver,
            }
        }
        let services = Services::new(
            InventoryService::new([(1, 5)]),
            PaymentService::new().with_declined([S1]),
        );
        let mut d = Driver::new(config(), services, fate);
        d.start(&[(1, ORDER)]);
        d.run(None);
        assert_eq!(d.orch.state(S1), Some(SagaState::Failed));
        assert_eq!(d.alerts.len(), 1);
        assert_eq!(d.check(), Vec::<String>::new());
        // The reservation is still held: that is what the alert is for.
        assert_eq!(d.services.inventory.available(1), 3);
    }

    // ----- the mutants are caught -----

    fn declined_fate(cmd: &Command, attempt: u32) -> Fate {
        match (cmd.step, cmd.kind, attempt) {
            (StepId::Inventory, Kind::Compensation, 1) => Fate::LoseRequest,
            (StepId::Payment, Kind::Action, _) => Fate::Duplicate,
            _ => Fate::Deliver,
        }
    }

    fn mutant_driver(flaw: Flaw, payment_idempotent: bool) -> Driver {
        let mut payment = PaymentService::new().with_declined([SagaId(2)]);
        payment.idempotent = payment_idempotent;
        let services = Services::new(InventoryService::new([(1, 5), (2, 0)]), payment);
        let mut d = Driver::flawed(config(), services, declined_fate, flaw);
        d.start(&[
            (1, ORDER),
            (2, ORDER),
            (
                3,
                Order {
                    item: 2,
                    qty: 1,
                    amount: 5,
                },
            ),
        ]);
        d
    }

    #[test]
    fn each_mutant_breaks_an_invariant_the_reference_keeps() {
        let mut reference = mutant_driver(Flaw::None, true);
        reference.run(None);
        assert_eq!(reference.check(), Vec::<String>::new());
        for (flaw, idempotent, expected) in [
            (Flaw::CompensationsNotRetried, true, "still holds"),
            (Flaw::SkipLastCompensation, true, "still holds"),
            (Flaw::SendBeforeLog, true, "write-ahead"),
            (Flaw::CompensateNeverSent, true, "never sent"),
            (Flaw::None, false, "effects"),
        ] {
            let mut d = mutant_driver(flaw, idempotent);
            d.run(None);
            let found = d.check();
            assert!(
                found.iter().any(|v| v.contains(expected)),
                "{flaw:?} (idempotent payment: {idempotent}) not caught: {found:?}"
            );
        }
    }
}
