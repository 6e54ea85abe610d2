//! [`Guard`]: the reference [`CallGuard`], stacking bulkhead, circuit breaker, timeout,
//! retries with backoff and a budget, and a fallback, in that order (retries sit inside
//! the breaker: every attempt asks it for a permit).
//!
//! Per request: the bulkhead gives a slot (or the answer is `BulkheadFull`); the first
//! attempt deposits into the retry budget; each attempt asks the breaker for a permit
//! (a rejection ends the request with `Rejected { retry_after }`, no retry) and gets a
//! timeout of `min(attempt_timeout, time left before the request's deadline)`. A failed
//! or timed-out attempt is retried after `uniform(0, min(cap, base·2^(n−1)))` if attempts
//! remain, the retry fits before the deadline and the budget allows it. Ignored errors
//! (a bad request) are not retried. Whatever ends a request without success goes to the
//! fallback when one is configured.
//!
//! Every one of those decisions is made by the shared decision core,
//! in `src/breaker/stack.rs` (crate-private), which the tokio adapter
#![cfg_attr(
    feature = "tokio",
    doc = "[`Resilient`](crate::breaker::tokio::Resilient) drives too: the guard classifies the"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "`Resilient` (feature `tokio`) drives too: the guard classifies the"
)]
//! API's replies, owns the parts (breaker, bulkhead, budget, jitter generator, fallback)
//! and maps the core's decisions onto the contract's [`Step`]s and [`Answer`]s.

use crate::breaker::bulkhead::{Bulkhead, BulkheadSlot};
use crate::breaker::circuit::{
    BreakerConfig, BreakerEvent, CallOutcome, CircuitBreaker, Permit, State,
};
use crate::breaker::contract::{
    Answer, ApiError, ApiReply, CallGuard, GuardMetrics, Policy, Step, Transition, Why,
    WindowReport,
};
use crate::breaker::fallback::{Fallback, FallbackPolicy};
use crate::breaker::stack::{Admission, End, Next, Parts, Request, Stack};
use crate::breaker::timeout::TimeoutPolicy;
use crate::clock::Instant;
use crate::retry::{Backoff, RetryBudget, RetryPolicy};
use std::collections::VecDeque;
use std::time::Duration;

/// Decides how an API reply counts for the breaker.
pub type Classifier = fn(&ApiReply) -> CallOutcome;

/// The right classification for the SMS API: success is success, a bad request is
/// ignored (it says nothing about the API's health), everything else is a failure.
pub fn classify(reply: &ApiReply) -> CallOutcome {
    match reply {
        ApiReply::Ok => CallOutcome::Success,
        ApiReply::Err(ApiError::InvalidNumber) => CallOutcome::Ignored,
        ApiReply::Err(_) => CallOutcome::Failure,
    }
}

/// Everything a [`Guard`] is made of. Every part is already validated.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// The caller's deadline for a whole request, retries included.
    pub timeout: TimeoutPolicy,
    /// The longest wait for one attempt (never beyond the request's deadline).
    pub attempt_timeout: Option<Duration>,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// The retry budget, if any: `(ttl, min_per_sec, retry_percent)`.
    pub budget: Option<(Duration, u32, u32)>,
    /// Most requests in progress at once.
    pub bulkhead_max: u32,
    /// Answer with a fallback (e.g. "queued, will send later") instead of an error.
    pub fallback: bool,
    /// How replies count for the breaker.
    pub classifier: Classifier,
}

impl GuardConfig {
    /// A guard of just a breaker and a deadline: no retries, no budget, a bulkhead of 25
    /// (Resilience4j's default), no fallback, the SMS classifier.
    pub fn new(breaker: BreakerConfig, timeout: TimeoutPolicy) -> Self {
        GuardConfig {
            breaker,
            timeout,
            attempt_timeout: None,
            retry: RetryPolicy::none(),
            budget: None,
            bulkhead_max: 25,
            fallback: false,
            classifier: classify,
        }
    }
}

/// The guard's handle for one request.
#[derive(Debug)]
pub struct GuardTicket {
    request: Request<Permit, BulkheadSlot>,
}

/// A deliberate defect, set only by [`crate::breaker::mutants`] to prove that the
/// invariants catch it. The reference guard has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    None,
    /// In half-open, a call the breaker rejects is sent anyway.
    HalfOpenAdmitsAll,
    /// Attempts get no timeout.
    NoTimeout,
    /// A cancelled call's permit is dropped instead of released.
    PermitLeakOnCancel,
    /// Retries skip the breaker and the budget.
    RetriesOutsideBreaker,
    /// Every call skips the breaker (a code path that forgot to wrap the call).
    BypassBreaker,
    /// The declared policy promises a wait in open twice as long as the real one.
    DeclaresLongerWait,
    /// `state()` always says Closed, whatever the transitions say.
    StateAlwaysClosed,
    /// In half-open, a call the breaker rejects is sent anyway, after reporting a fresh
    /// half-open episode that never began (to pass for a probe of a new episode).
    HalfOpenAdmitsAllDisguised,
    /// The half-open probe count is read from a replica that sees each admission
    /// [`PROBE_COUNT_LAG`] late (a breaker whose state is shared through a store): a
    /// call arriving within that lag of the last probe is admitted past the limit.
    HalfOpenCountLags,
    /// In half-open, every probe that succeeds gives its permit back (a counter that
    /// counts up on a success too), so a rejected call is sent anyway for each success
    /// of the episode not yet used that way.
    HalfOpenRefundsOnSuccess,
    /// The retry budget takes every withdrawal: it is asked, and never says no.
    BudgetNeverRefuses,
    /// The retry budget is never credited with the requests: only its reserve is
    /// ever spent.
    BudgetNeverDeposits,
    /// The retry loop counts from zero where the policy counts from one: every request
    /// gets one attempt more than `attempts_max` (the first retry waits no time).
    RetriesOneTooMany,
    /// The retry loop stops one attempt short: every request gets at most
    /// `attempts_max − 1` attempts.
    RetriesOneTooFew,
    /// The backoff doubles without its cap: `uniform(0, base·2^(n−1))`.
    BackoffUncapped,
    /// A probe that fails in half-open closes the breaker (its outcome then arrives
    /// from an ended episode and is not counted against the fresh window).
    FailedProbeCloses,
    /// The window's failure rate is reported in whole percent (`failed × 100 / calls`,
    /// shown as permille): a dashboard rounding away what the breaker decides by.
    RateInWholePercent,
    /// The breaker inside never counts a call as slow (its slow-call setting was
    /// dropped), while the guard declares the slow-call rule of its configuration.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    // set only by the sim feature's mutants
    SlowCallsIgnored,
}

/// How late [`Flaw::HalfOpenCountLags`] sees a half-open admission: 500 µs.
const PROBE_COUNT_LAG: Duration = Duration::from_micros(500);

/// The reference guard. See the [module docs](self).
pub struct Guard {
    config: GuardConfig,
    stack: Stack,
    parts: GuardParts,
    fallback: Fallback<()>,
    /// Reports its window ([`CallGuard::window`]); off only for mutants that show an
    /// invariant catching a defect without that report.
    reports_window: bool,
}

/// The parts the decision core works over, owned by the guard, with the mutants' hooks.
struct GuardParts {
    flaw: Flaw,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    budget: Option<RetryBudget>,
    rng: Box<dyn rand::Rng + Send>,
    transitions: VecDeque<Transition>,
    /// When the last call was sent in half-open (read by [`Flaw::HalfOpenCountLags`]).
    last_probe_at: Option<Instant>,
    /// Permits given back by successes in this half-open episode
    /// ([`Flaw::HalfOpenRefundsOnSuccess`]).
    refunds: u32,
}

impl GuardParts {
    fn drain_events(&mut self) {
        while let Some(event) = self.breaker.poll_event() {
            if let BreakerEvent::Transition { from, to, at, .. } = event {
                self.transitions.push_back(Transition { from, to, at });
                self.refunds = 0;
            }
        }
    }
}

impl GuardParts {
    /// [`Flaw::FailedProbeCloses`]: a probe that failed closes the breaker (nothing
    /// for any other flaw).
    fn close_on_failed_probe(&mut self, permit: &Permit, now: Instant, outcome: CallOutcome) {
        if self.flaw != Flaw::FailedProbeCloses {
            return;
        }
        if permit.state() == State::HalfOpen
            && outcome == CallOutcome::Failure
            && self.breaker.state() == State::HalfOpen
        {
            self.breaker.transition_to_closed(now);
        }
    }
}

impl Parts for GuardParts {
    type Permit = Permit;
    type Slot = BulkheadSlot;

    fn enter(&mut self) -> Result<BulkheadSlot, u32> {
        self.bulkhead
            .try_enter()
            .map_err(|full| full.max_concurrent)
    }

    fn exit(&mut self, slot: BulkheadSlot) {
        self.bulkhead.exit(slot);
    }

    fn deposit(&mut self, now: Instant) {
        if let Some(budget) = &mut self.budget
            && self.flaw != Flaw::BudgetNeverDeposits
        {
            budget.deposit(now);
        }
    }

    fn acquire(&mut self, now: Instant, attempts: u32) -> Admission<Permit> {
        if (self.flaw == Flaw::RetriesOutsideBreaker && attempts > 0)
            || self.flaw == Flaw::BypassBreaker
        {
            return Admission::Unguarded;
        }
        match self.breaker.try_acquire(now) {
            Err(rejected)
                if self.flaw == Flaw::HalfOpenAdmitsAllDisguised
                    && rejected.state == State::HalfOpen =>
            {
                self.drain_events();
                self.transitions.push_back(Transition {
                    from: State::HalfOpen,
                    to: State::HalfOpen,
                    at: now,
                });
                Admission::Unguarded
            }
            Err(rejected)
                if self.flaw == Flaw::HalfOpenCountLags
                    && rejected.state == State::HalfOpen
                    && self
                        .last_probe_at
                        .is_some_and(|t| now < t + PROBE_COUNT_LAG) =>
            {
                // The replica has not seen the last probe yet: the limit looks unmet.
                self.drain_events();
                self.last_probe_at = Some(now);
                Admission::Unguarded
            }
            Err(rejected)
                if self.flaw == Flaw::HalfOpenRefundsOnSuccess
                    && rejected.state == State::HalfOpen
                    && self.refunds > 0 =>
            {
                self.drain_events();
                self.refunds -= 1;
                Admission::Unguarded
            }
            Err(rejected)
                if self.flaw == Flaw::HalfOpenAdmitsAll && rejected.state == State::HalfOpen =>
            {
                Admission::Unguarded
            }
            Err(rejected) => {
                self.drain_events();
                Admission::Rejected(rejected.retry_after)
            }
            Ok(permit) => {
                self.drain_events();
                if permit.state() == State::HalfOpen {
                    self.last_probe_at = Some(now);
                }
                Admission::Permit(permit)
            }
        }
    }

    fn record(&mut self, permit: Permit, now: Instant, outcome: CallOutcome) {
        let refund = self.flaw == Flaw::HalfOpenRefundsOnSuccess
            && permit.state() == State::HalfOpen
            && outcome == CallOutcome::Success;
        self.close_on_failed_probe(&permit, now, outcome);
        self.breaker.on_result(permit, now, outcome);
        self.drain_events();
        if refund && self.breaker.state() == State::HalfOpen {
            self.refunds += 1;
        }
    }

    fn release(&mut self, permit: Permit, now: Instant) {
        self.breaker.release(permit, now);
        self.drain_events();
    }

    fn backoff(&mut self, retry: &RetryPolicy, attempts: u32) -> Option<Duration> {
        if self.flaw == Flaw::RetriesOneTooFew && attempts.saturating_add(1) >= retry.attempts_max()
        {
            return None;
        }
        if self.flaw == Flaw::RetriesOneTooMany {
            return retry.next_delay(attempts.saturating_sub(1), &mut *self.rng);
        }
        if self.flaw == Flaw::BackoffUncapped {
            let uncapped = Backoff::new(retry.backoff().base(), Duration::from_nanos(u64::MAX))
                .and_then(|b| RetryPolicy::new(retry.attempts_max(), b))
                .unwrap_or(*retry);
            return uncapped.next_delay(attempts, &mut *self.rng);
        }
        retry.next_delay(attempts, &mut *self.rng)
    }

    fn withdraw(&mut self, now: Instant) -> bool {
        match &mut self.budget {
            Some(budget) if self.flaw == Flaw::BudgetNeverRefuses => {
                budget.try_withdraw(now);
                true
            }
            Some(budget) if self.flaw != Flaw::RetriesOutsideBreaker => budget.try_withdraw(now),
            _ => true,
        }
    }
}

impl Guard {
    /// A guard from `config`, drawing backoff jitter from `rng`.
    pub fn new(
        config: GuardConfig,
        rng: impl rand::Rng + Send + 'static,
    ) -> Result<Self, crate::config::ConfigError> {
        let bulkhead = Bulkhead::new(config.bulkhead_max)?;
        let budget = match config.budget {
            Some((ttl, min_per_sec, percent)) => Some(RetryBudget::new(ttl, min_per_sec, percent)?),
            None => None,
        };
        let fallback = Fallback::new(if config.fallback {
            FallbackPolicy::Default(())
        } else {
            FallbackPolicy::None
        });
        Ok(Guard {
            stack: Stack::new(config.timeout, config.attempt_timeout, config.retry),
            parts: GuardParts {
                flaw: Flaw::None,
                breaker: CircuitBreaker::new(config.breaker),
                bulkhead,
                budget,
                rng: Box::new(rng),
                transitions: VecDeque::new(),
                last_probe_at: None,
                refunds: 0,
            },
            config,
            fallback,
            reports_window: true,
        })
    }

    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    /// The guard without its window report, as a plug-in may be: for the mutants that
    /// show an invariant catching a defect from the calls alone.
    pub(crate) fn without_window_report(mut self) -> Self {
        self.reports_window = false;
        self
    }

    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn with_flaw(mut self, flaw: Flaw) -> Self {
        self.parts.flaw = flaw;
        if flaw == Flaw::SlowCallsIgnored
            && let Ok(deaf) = self
                .config
                .breaker
                .to_builder()
                .slow_call_duration(Duration::MAX)
                .build()
        {
            self.parts.breaker = CircuitBreaker::new(deaf);
        }
        self
    }

    /// The breaker inside.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.parts.breaker
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Carries out the core's decision `next` for `request`: the contract's step.
    /// `failed` is the error of the attempt that just ended, if it ended with one.
    fn step(
        &mut self,
        request: Request<Permit, BulkheadSlot>,
        now: Instant,
        next: Next,
        failed: Option<ApiError>,
    ) -> Step<GuardTicket> {
        match next {
            Next::Send { timeout, .. } => Step::Send {
                ticket: GuardTicket { request },
                timeout: (self.parts.flaw != Flaw::NoTimeout).then_some(timeout),
            },
            Next::Sleep(delay) => Step::Retry {
                ticket: GuardTicket { request },
                delay,
            },
            Next::GiveUp(end) => self.give_up(now, end, failed),
        }
    }

    /// The fallback's answer if there is one, else the failure.
    fn give_up(&mut self, now: Instant, end: End, failed: Option<ApiError>) -> Step<GuardTicket> {
        let why = match end {
            End::BulkheadFull { .. } => Why::BulkheadFull,
            End::Rejected { retry_after } => Why::Rejected { retry_after },
            End::Failed => match failed {
                Some(e) => Why::Api(e),
                None => Why::Timeout,
            },
            End::Timeout => Why::Timeout,
            End::BudgetExhausted => Why::BudgetExhausted,
            End::DeadlineReached => Why::DeadlineReached,
        };
        match self.fallback.take(now) {
            Some(()) => Step::Answer(Answer::Fallback(why)),
            None => Step::Answer(Answer::Failed(why)),
        }
    }
}

impl CallGuard for Guard {
    type Ticket = GuardTicket;

    fn on_request(&mut self, now: Instant) -> Step<GuardTicket> {
        match self.stack.begin(&mut self.parts, now) {
            Err(end) => self.give_up(now, end, None),
            Ok(mut request) => {
                let next = self.stack.attempt(&mut self.parts, &mut request, now);
                self.step(request, now, next, None)
            }
        }
    }

    fn on_reply(
        &mut self,
        ticket: GuardTicket,
        now: Instant,
        reply: ApiReply,
    ) -> Step<GuardTicket> {
        let mut request = ticket.request;
        let outcome = (self.config.classifier)(&reply);
        match reply {
            ApiReply::Ok => {
                self.stack
                    .on_value(&mut self.parts, &mut request, now, outcome);
                self.fallback.on_success(&(), now);
                Step::Answer(Answer::Delivered)
            }
            ApiReply::Err(e) => {
                let next = self
                    .stack
                    .on_error(&mut self.parts, &mut request, now, outcome);
                self.step(request, now, next, Some(e))
            }
        }
    }

    fn on_timeout(&mut self, ticket: GuardTicket, now: Instant) -> Step<GuardTicket> {
        let mut request = ticket.request;
        let next = self.stack.on_timeout(&mut self.parts, &mut request, now);
        self.step(request, now, next, None)
    }

    fn on_retry_due(&mut self, ticket: GuardTicket, now: Instant) -> Step<GuardTicket> {
        let mut request = ticket.request;
        let next = self.stack.on_retry_due(&mut self.parts, &mut request, now);
        self.step(request, now, next, None)
    }

    fn on_cancel(&mut self, ticket: GuardTicket, now: Instant) {
        let mut request = ticket.request;
        if self.parts.flaw == Flaw::PermitLeakOnCancel {
            // The defect: the permit is forgotten, never handed back.
            request.forget_permit();
        }
        self.stack.on_cancel(&mut self.parts, request, now);
    }

    fn state(&self) -> State {
        if self.parts.flaw == Flaw::StateAlwaysClosed {
            return State::Closed;
        }
        self.parts.breaker.state()
    }

    fn poll_transition(&mut self) -> Option<Transition> {
        self.parts.transitions.pop_front()
    }

    fn metrics(&self) -> GuardMetrics {
        let t = self.parts.breaker.totals();
        GuardMetrics {
            admitted: t.admitted,
            succeeded: t.succeeded,
            failed: t.failed,
            ignored: t.ignored,
            released: t.released,
        }
    }

    /// The reference's own settings: a rate over its window, its probes and waits in
    /// open, its request deadline and its bulkhead.
    fn policy(&self) -> Policy {
        let mut policy = Policy::of_breaker(
            &self.config.breaker,
            self.config.timeout.duration(),
            self.config.bulkhead_max,
        );
        if self.parts.flaw == Flaw::DeclaresLongerWait {
            policy.wait_in_open_min = policy.wait_in_open_min.saturating_mul(2);
            policy.wait_in_open_max = policy.wait_in_open_max.saturating_mul(2);
        }
        policy
    }

    fn retry_budget(&self) -> Option<RetryBudget> {
        self.config.budget.and_then(|(ttl, min_per_sec, percent)| {
            RetryBudget::new(ttl, min_per_sec, percent).ok()
        })
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        Some(self.config.retry)
    }

    fn window(&self, now: Instant) -> Option<WindowReport> {
        if !self.reports_window {
            return None;
        }
        let m = self.parts.breaker.metrics(now);
        let mut report = WindowReport {
            calls: m.window_calls,
            failed: m.window_failed,
            slow: m.window_slow,
            failure_rate_permille: m.failure_rate_permille,
            slow_call_rate_permille: m.slow_call_rate_permille,
        };
        if self.parts.flaw == Flaw::RateInWholePercent {
            report.failure_rate_permille = report.failure_rate_permille.map(|p| p / 10 * 10);
        }
        Some(report)
    }
}
