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
//! SplitMix64 generator seeded by [`SagaConfigBuilder::seed`](crate::saga::SagaConfigBuilder::seed).

use crate::clock::Instant;
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{
    Command, Kind, Order, Refusal, Reply, SagaData, SagaId, SagaState, StepId,
};
use crate::splitmix::SplitMix64;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

/// The deadline of an attempt not yet reported sent (see
/// [`SagaConfigBuilder::deadline_from_sent`](crate::saga::SagaConfigBuilder::deadline_from_sent)): no timer runs for it.
const UNSENT: Instant = Instant::from_nanos(u64::MAX);

/// Why a saga needs a human.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
pub enum Output<P = Order, R = Refusal> {
    /// Make this record durable before performing any later output.
    Append(LogRecord<P, R>),
    /// Send the command (attempt number second); quote the attempt in `on_reply`.
    Send(Command<P>, u32),
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Attempts answered [`Reply::Failed`] (a transient failure, retried like a
    /// timeout but without waiting for the deadline).
    #[serde(default)]
    pub failed_replies: u64,
    /// Replies ignored as stale.
    pub stale_replies: u64,
    /// Attempts in flight at a crash, sent again by recovery under the same attempt
    /// number.
    pub resumed: u64,
}

/// A deliberate defect, set only by mutation tests. The reference has none.
#[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
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
    /// `start` writes no `Started` record: the saga runs, but its log records belong to
    /// a saga a recovery does not know (it ignores them), so a crash loses it.
    NoStartRecord,
    /// `start` writes a `Started` record whose payload is not the one it was given
    /// (altered by the orchestrator's `tamper` hook, which only the checkout's mutant
    /// sets: one unit more than the order given). The live run uses the right payload;
    /// a recovery would use the wrong one.
    StartedWrongOrder,
    /// Declares twice the step timeout it keeps (built with half the knobs', it
    /// declares the knobs'): it retries silent attempts sooner than it says.
    DeclaresLongerTimeout,
    /// Declares one attempt of each kind fewer than it makes (built with one more than
    /// the knobs', it declares the knobs').
    DeclaresFewerAttempts,
    /// An action answered [`Reply::Failed`] is taken for a refusal: the step is
    /// recorded as without effect and is not compensated, though the failure may have
    /// come after the work was done.
    FailedIsRefusal,
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
struct Saga<P> {
    payload: P,
    state: SagaState,
    /// Aligned with `config.steps`.
    steps: Vec<StepProgress>,
    phase: Phase,
    /// The entry of this saga in `Orchestrator::timers`, if any.
    timer: Option<Instant>,
}

/// The saga orchestrator for a definition whose payload is `P` and whose refusal
/// reason is `R` (the checkout's [`Order`] and [`Refusal`] by default). It never looks
/// inside the payload: it logs it and hands it to every command. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Orchestrator<P = Order, R = Refusal> {
    config: SagaConfig,
    sagas: BTreeMap<SagaId, Saga<P>>,
    /// One entry per saga with a deadline or a retry time.
    timers: BTreeSet<(Instant, SagaId)>,
    outputs: VecDeque<Output<P, R>>,
    totals: SagaTotals,
    rng: SplitMix64,
    /// The sagas that came to rest since [`take_rested`](Orchestrator::take_rested) was
    /// last called; `None` until it is first called (nobody asked: nothing is kept).
    rested: Option<Vec<SagaId>>,
    /// How many sagas are not at rest (so [`is_at_rest`](Orchestrator::is_at_rest) does
    /// not walk every saga).
    unsettled: usize,
    pub(crate) flaw: Flaw,
    /// What [`Flaw::StartedWrongOrder`] logs instead of the payload given (set only by
    /// the checkout's mutant).
    pub(crate) tamper: Option<fn(&P) -> P>,
}

impl<P: SagaData, R: SagaData> Orchestrator<P, R> {
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
            rested: None,
            unsettled: 0,
            flaw: Flaw::None,
            tamper: None,
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
    pub fn recover(config: SagaConfig, records: &[LogRecord<P, R>], now: Instant) -> Self {
        Orchestrator::recover_flawed(config, records, now, Flaw::None)
    }

    /// [`recover`](Orchestrator::recover) with a defect (for mutation tests).
    pub(crate) fn recover_flawed(
        config: SagaConfig,
        records: &[LogRecord<P, R>],
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
        orch.unsettled = pending.len();
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
    fn resume(&mut self, id: SagaId, saga: &mut Saga<P>, now: Instant) {
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
        saga: &mut Saga<P>,
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

    /// What [`Flaw::StartedWrongOrder`] logs instead of the payload (for the checkout's
    /// mutant; without the flaw it is never called).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn with_tamper(mut self, tamper: fn(&P) -> P) -> Self {
        self.tamper = Some(tamper);
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

    /// `saga`'s payload, if the orchestrator knows it.
    pub fn payload(&self, saga: SagaId) -> Option<&P> {
        self.sagas.get(&saga).map(|s| &s.payload)
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
        self.unsettled
    }

    /// True when every saga is at rest.
    pub fn is_at_rest(&self) -> bool {
        self.unsettled == 0
    }

    /// Moves into `into` the sagas that came to rest since the last call, in the order
    /// they did, and returns true. The first call only starts the list (an orchestrator
    /// nobody asks keeps none): it returns false, and the caller must look at every saga
    /// once. See [`SagaCoordinator::take_rested`].
    pub(crate) fn take_rested(&mut self, into: &mut Vec<SagaId>) -> bool {
        match &mut self.rested {
            Some(rested) => {
                into.append(rested);
                true
            }
            None => {
                self.rested = Some(Vec::new());
                false
            }
        }
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
    pub fn poll_output(&mut self) -> Option<Output<P, R>> {
        self.outputs.pop_front()
    }

    // ----- inputs -----

    /// Accepts a new saga with its payload and sends its first step. False (and
    /// nothing happens) if the id is already known.
    pub fn start(&mut self, saga: SagaId, payload: P, now: Instant) -> bool {
        if self.sagas.contains_key(&saga) {
            return false;
        }
        self.totals.started += 1;
        if self.flaw != Flaw::NoStartRecord {
            let logged = match self.tamper {
                // The defect: the durable payload is not the one given.
                Some(tamper) if self.flaw == Flaw::StartedWrongOrder => tamper(&payload),
                _ => payload.clone(),
            };
            self.outputs.push_back(Output::Append(LogRecord::Started {
                saga,
                payload: logged,
            }));
        }
        let mut s = self.new_saga(payload);
        // Counted before `advance`, which may end it (`end` counts it out).
        self.unsettled += 1;
        self.advance(saga, &mut s, now);
        self.sagas.insert(saga, s);
        true
    }

    /// A service's reply to attempt `attempt` of `kind` of `step` of `saga`. Returns
    /// false when the reply is stale (not the attempt awaited) and was ignored.
    ///
    /// An action's `Ok` records the outcome and sends the next step (or completes); a
    /// refusal records it (with its reason) and starts compensating. A compensation's
    /// `Ok` records it and sends the next compensation (or ends compensated); a refusal
    /// counts as a failure and is retried with backoff. [`Reply::Failed`] (of an action
    /// or a compensation) ends the attempt at once with an unknown outcome, as a
    /// timeout would: the next attempt follows after the backoff, or, with the
    /// attempts spent, the saga compensates (that step included) or fails. A `Failed`
    /// reply counts only for the attempt awaited.
    pub fn on_reply(
        &mut self,
        saga: SagaId,
        step: StepId,
        kind: Kind,
        attempt: u32,
        reply: Reply<R>,
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
                    && (awaited || (kind == Kind::Action && !reply.is_failed()) || reply.is_ok())
            })
        });
        if !expected {
            self.totals.stale_replies += 1;
            return false;
        }
        self.with_saga(saga, |o, s| {
            o.set_phase(saga, s, Phase::Idle);
            match (kind, reply) {
                (Kind::Action, Reply::Failed) if o.flaw == Flaw::FailedIsRefusal => {
                    // The defect: an unknown outcome is presumed to be no effect.
                    s.steps[index].outcome = Some(false);
                    o.outputs.push_back(Output::Append(LogRecord::StepOutcome {
                        saga,
                        step,
                        ok: false,
                        refusal: None,
                    }));
                    o.advance(saga, s, now);
                }
                (_, Reply::Failed) => {
                    o.totals.failed_replies += 1;
                    o.after_failure(saga, s, kind, attempt, now);
                }
                (Kind::Action, reply) => {
                    let ok = reply.is_ok();
                    let refusal = match reply {
                        Reply::Refused(r) => Some(r),
                        _ => None,
                    };
                    s.steps[index].outcome = Some(ok);
                    o.outputs.push_back(Output::Append(LogRecord::StepOutcome {
                        saga,
                        step,
                        ok,
                        refusal,
                    }));
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
    fn current(&self, saga: &Saga<P>) -> Option<(usize, Kind, u32)> {
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

    fn new_saga(&self, payload: P) -> Saga<P> {
        Saga {
            payload,
            state: SagaState::Running,
            steps: vec![StepProgress::default(); self.config.steps.len()],
            phase: Phase::Idle,
            timer: None,
        }
    }

    /// Runs `f` on saga `id` taken out of the map (so `f` may use `self` freely).
    fn with_saga(&mut self, id: SagaId, f: impl FnOnce(&mut Self, &mut Saga<P>)) {
        if let Some(mut saga) = self.sagas.remove(&id) {
            f(self, &mut saga);
            self.sagas.insert(id, saga);
        }
    }

    /// Applies one durable record while recovering.
    fn replay(&mut self, record: &LogRecord<P, R>) {
        if let LogRecord::Started { saga, payload } = record {
            if !self.sagas.contains_key(saga) {
                let s = self.new_saga(payload.clone());
                self.sagas.insert(*saga, s);
            }
            return;
        }
        let index = record.step().and_then(|s| self.index_of(s));
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
    fn advance(&mut self, id: SagaId, saga: &mut Saga<P>, now: Instant) {
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
    fn next_compensation(&self, saga: &Saga<P>) -> Option<usize> {
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

    fn compensation_done(&mut self, id: SagaId, saga: &mut Saga<P>, index: usize, now: Instant) {
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
        saga: &mut Saga<P>,
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
        saga: &mut Saga<P>,
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
        saga: &mut Saga<P>,
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
            payload: saga.payload.clone(),
        };
        let intent = Output::Append(LogRecord::intent_for(&cmd, attempt));
        let send = Output::Send(cmd, attempt);
        if with_intent {
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

    fn end(&mut self, id: SagaId, saga: &mut Saga<P>, state: SagaState) {
        if !saga.state.is_at_rest() && state.is_at_rest() {
            self.unsettled = self.unsettled.saturating_sub(1);
            if let Some(rested) = &mut self.rested {
                rested.push(id);
            }
        }
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

    fn fail(&mut self, id: SagaId, saga: &mut Saga<P>, index: usize) {
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

    fn set_phase(&mut self, id: SagaId, saga: &mut Saga<P>, phase: Phase) {
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
