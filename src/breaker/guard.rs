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

use crate::breaker::bulkhead::{Bulkhead, BulkheadSlot};
use crate::breaker::circuit::{
    BreakerConfig, BreakerEvent, CallOutcome, CircuitBreaker, Permit, State,
};
use crate::breaker::contract::{
    Answer, ApiError, ApiReply, CallGuard, GuardMetrics, Policy, Step, Transition, Why,
};
use crate::breaker::fallback::{Fallback, FallbackPolicy};
use crate::breaker::timeout::TimeoutPolicy;
use crate::clock::Instant;
use crate::retry::{RetryBudget, RetryPolicy};
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
    started: Instant,
    attempts: u32,
    permit: Option<Permit>,
    slot: Option<BulkheadSlot>,
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
}

/// How late [`Flaw::HalfOpenCountLags`] sees a half-open admission: 500 µs.
const PROBE_COUNT_LAG: Duration = Duration::from_micros(500);

/// The reference guard. See the [module docs](self).
pub struct Guard {
    flaw: Flaw,
    config: GuardConfig,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    budget: Option<RetryBudget>,
    fallback: Fallback<()>,
    rng: Box<dyn rand::Rng + Send>,
    transitions: VecDeque<Transition>,
    /// When the last call was sent in half-open (read by [`Flaw::HalfOpenCountLags`]).
    last_probe_at: Option<Instant>,
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
            flaw: Flaw::None,
            breaker: CircuitBreaker::new(config.breaker),
            config,
            bulkhead,
            budget,
            fallback,
            rng: Box::new(rng),
            transitions: VecDeque::new(),
            last_probe_at: None,
        })
    }

    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn with_flaw(mut self, flaw: Flaw) -> Self {
        self.flaw = flaw;
        self
    }

    /// The breaker inside.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    fn drain_events(&mut self) {
        while let Some(BreakerEvent::Transition { from, to, at, .. }) = self.breaker.poll_event() {
            self.transitions.push_back(Transition { from, to, at });
        }
    }

    fn attempt(&mut self, mut ticket: GuardTicket, now: Instant) -> Step<GuardTicket> {
        let deadline = self.config.timeout.deadline(ticket.started);
        if now >= deadline {
            return self.finish(ticket, now, Why::DeadlineReached);
        }
        if (self.flaw == Flaw::RetriesOutsideBreaker && ticket.attempts > 0)
            || self.flaw == Flaw::BypassBreaker
        {
            ticket.attempts += 1;
            return Step::Send {
                ticket,
                timeout: Some(deadline - now),
            };
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
                ticket.attempts += 1;
                Step::Send {
                    ticket,
                    timeout: Some(deadline - now),
                }
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
                ticket.attempts += 1;
                Step::Send {
                    ticket,
                    timeout: Some(deadline - now),
                }
            }
            Err(rejected)
                if self.flaw == Flaw::HalfOpenAdmitsAll && rejected.state == State::HalfOpen =>
            {
                ticket.attempts += 1;
                Step::Send {
                    ticket,
                    timeout: Some(deadline - now),
                }
            }
            Err(rejected) => {
                self.drain_events();
                self.finish(
                    ticket,
                    now,
                    Why::Rejected {
                        retry_after: rejected.retry_after,
                    },
                )
            }
            Ok(permit) => {
                self.drain_events();
                if permit.state() == State::HalfOpen {
                    self.last_probe_at = Some(now);
                }
                ticket.attempts += 1;
                ticket.permit = Some(permit);
                let left = deadline - now;
                let timeout = match self.config.attempt_timeout {
                    Some(t) => t.min(left),
                    None => left,
                };
                Step::Send {
                    ticket,
                    timeout: (self.flaw != Flaw::NoTimeout).then_some(timeout),
                }
            }
        }
    }

    fn retry_or_finish(
        &mut self,
        ticket: GuardTicket,
        now: Instant,
        why: Why,
    ) -> Step<GuardTicket> {
        let Some(delay) = self
            .config
            .retry
            .next_delay(ticket.attempts, &mut *self.rng)
        else {
            return self.finish(ticket, now, why);
        };
        let deadline = self.config.timeout.deadline(ticket.started);
        if now + delay >= deadline {
            return self.finish(ticket, now, why);
        }
        if let Some(budget) = &mut self.budget
            && self.flaw != Flaw::RetriesOutsideBreaker
            && !budget.try_withdraw(now)
        {
            return self.finish(ticket, now, Why::BudgetExhausted);
        }
        Step::Retry { ticket, delay }
    }

    fn finish(&mut self, mut ticket: GuardTicket, now: Instant, why: Why) -> Step<GuardTicket> {
        if let Some(permit) = ticket.permit.take() {
            // Never happens on the paths above (the permit is handed back first), but a
            // permit must never leak.
            self.breaker.release(permit, now);
            self.drain_events();
        }
        if let Some(slot) = ticket.slot.take() {
            self.bulkhead.exit(slot);
        }
        match self.fallback.take(now) {
            Some(()) => Step::Answer(Answer::Fallback(why)),
            None => Step::Answer(Answer::Failed(why)),
        }
    }

    fn complete(&mut self, ticket: &mut GuardTicket, now: Instant, outcome: CallOutcome) {
        if let Some(permit) = ticket.permit.take() {
            self.breaker.on_result(permit, now, outcome);
            self.drain_events();
        }
    }
}

impl CallGuard for Guard {
    type Ticket = GuardTicket;

    fn on_request(&mut self, now: Instant) -> Step<GuardTicket> {
        let slot = match self.bulkhead.try_enter() {
            Ok(slot) => slot,
            Err(_) => {
                return match self.fallback.take(now) {
                    Some(()) => Step::Answer(Answer::Fallback(Why::BulkheadFull)),
                    None => Step::Answer(Answer::Failed(Why::BulkheadFull)),
                };
            }
        };
        if let Some(budget) = &mut self.budget {
            budget.deposit(now);
        }
        let ticket = GuardTicket {
            started: now,
            attempts: 0,
            permit: None,
            slot: Some(slot),
        };
        self.attempt(ticket, now)
    }

    fn on_reply(
        &mut self,
        mut ticket: GuardTicket,
        now: Instant,
        reply: ApiReply,
    ) -> Step<GuardTicket> {
        let outcome = (self.config.classifier)(&reply);
        self.complete(&mut ticket, now, outcome);
        match reply {
            ApiReply::Ok => {
                if let Some(slot) = ticket.slot.take() {
                    self.bulkhead.exit(slot);
                }
                self.fallback.on_success(&(), now);
                Step::Answer(Answer::Delivered)
            }
            ApiReply::Err(e) if outcome == CallOutcome::Ignored => {
                self.finish(ticket, now, Why::Api(e))
            }
            ApiReply::Err(e) => self.retry_or_finish(ticket, now, Why::Api(e)),
        }
    }

    fn on_timeout(&mut self, mut ticket: GuardTicket, now: Instant) -> Step<GuardTicket> {
        self.complete(&mut ticket, now, CallOutcome::Failure);
        self.retry_or_finish(ticket, now, Why::Timeout)
    }

    fn on_retry_due(&mut self, ticket: GuardTicket, now: Instant) -> Step<GuardTicket> {
        self.attempt(ticket, now)
    }

    fn on_cancel(&mut self, mut ticket: GuardTicket, now: Instant) {
        if self.flaw == Flaw::PermitLeakOnCancel {
            // The defect: the permit is forgotten, never handed back.
            let _ = ticket.permit.take();
        }
        if let Some(permit) = ticket.permit.take() {
            self.breaker.release(permit, now);
            self.drain_events();
        }
        if let Some(slot) = ticket.slot.take() {
            self.bulkhead.exit(slot);
        }
    }

    fn state(&self) -> State {
        if self.flaw == Flaw::StateAlwaysClosed {
            return State::Closed;
        }
        self.breaker.state()
    }

    fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    fn metrics(&self) -> GuardMetrics {
        let t = self.breaker.metrics().totals;
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
        if self.flaw == Flaw::DeclaresLongerWait {
            policy.wait_in_open_min = policy.wait_in_open_min.saturating_mul(2);
            policy.wait_in_open_max = policy.wait_in_open_max.saturating_mul(2);
        }
        policy
    }
}
