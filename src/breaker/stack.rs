//! The decision core of the whole resilience stack (bulkhead, circuit breaker, timeout,
//! retries with backoff under a budget, fallback): one sans-IO state machine that both
//! the reference [`Guard`](crate::breaker::guard::Guard), which the simulator verifies,
//! and the tokio adapter [`Resilient`](crate::breaker::tokio::Resilient) drive, so what
//! a service runs is what the simulator proves (quinn over quinn-proto).
//!
//! The core holds the request-level policy ([`Stack`]: the deadline, the attempt
//! timeout, the retry policy) and one [`Request`] per call; it decides every step and
//! never holds the caller's value or error type. Its drivers feed it `now` and
//! classified outcomes ([`CallOutcome`], or "the attempt timed out", or "the caller went
//! away") and carry out what it asks ([`Next`]): send an attempt with this timeout,
//! sleep this long, or give up for this reason (answering with the fallback's value if
//! the driver's fallback has one). The parts shared between requests (breaker, bulkhead,
//! retry budget, jitter generator) are the driver's, reached through [`Parts`]: the
//! simulator's guard owns them outright (`&mut self`); the tokio adapter shares them
//! across tasks behind their own short locks, never held across an await, and its
//! permits and bulkhead slots hand themselves back when dropped (cancellation safety).
//!
//! Per request: the bulkhead gives a slot (else [`End::BulkheadFull`]) and the first
//! attempt deposits into the retry budget; each attempt asks the breaker for a permit (a
//! rejection ends the request with [`End::Rejected`], no retry) and gets a timeout of
//! `min(attempt_timeout, time left before the request's deadline)`. An attempt that
//! fails ([`CallOutcome::Failure`]) or times out is retried after the retry policy's
//! backoff if attempts remain, the retry fits before the deadline and the budget allows
//! it; an error classified [`Ignored`](CallOutcome::Ignored) or
//! [`Success`](CallOutcome::Success) is not retried.

use crate::breaker::circuit::CallOutcome;
use crate::breaker::timeout::TimeoutPolicy;
use crate::clock::Instant;
use crate::retry::RetryPolicy;
use std::time::Duration;

/// The parts shared between requests, as a driver holds them. Every method is one short
/// step; none may block.
pub(crate) trait Parts {
    /// A breaker permit for one attempt.
    type Permit;
    /// A bulkhead slot for one request.
    type Slot;

    /// A bulkhead slot, or the bulkhead's limit when it is full.
    fn enter(&mut self) -> Result<Self::Slot, u32>;
    /// Frees a bulkhead slot.
    fn exit(&mut self, slot: Self::Slot);
    /// Counts a first attempt in the retry budget (nothing without a budget).
    fn deposit(&mut self, now: Instant);
    /// Asks the breaker to admit attempt number `attempts + 1`.
    fn acquire(&mut self, now: Instant, attempts: u32) -> Admission<Self::Permit>;
    /// Hands a permit back with the attempt's outcome.
    fn record(&mut self, permit: Self::Permit, now: Instant, outcome: CallOutcome);
    /// Hands a permit back without an outcome (the caller went away).
    fn release(&mut self, permit: Self::Permit, now: Instant);
    /// The backoff before the retry of attempt number `attempts` per `retry` (drawing
    /// the jitter from the driver's generator), or `None` when no attempt is left.
    fn backoff(&mut self, retry: &RetryPolicy, attempts: u32) -> Option<Duration>;
    /// Takes one retry from the retry budget (always true without a budget).
    fn withdraw(&mut self, now: Instant) -> bool;
}

/// The breaker's answer to one attempt.
pub(crate) enum Admission<P> {
    /// Admitted, with this permit.
    Permit(P),
    /// Rejected: try again after this long.
    Rejected(Duration),
    /// Sent without a permit. Only the deliberately broken guards of the mutants catalog
    /// answer this; such an attempt gets the time left before the deadline as its
    /// timeout.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    Unguarded,
}

/// Which limit an attempt's timeout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The attempt timeout (shorter than the time left before the deadline).
    Attempt,
    /// The time left before the request's deadline.
    Deadline,
}

/// Why a request ends without the API's success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The bulkhead was full.
    BulkheadFull {
        /// The bulkhead's limit.
        max_concurrent: u32,
    },
    /// The breaker rejected an attempt.
    Rejected {
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// The last attempt's error, after any retries.
    Failed,
    /// The last attempt timed out, after any retries.
    Timeout,
    /// A retry was wanted but the budget was spent.
    BudgetExhausted,
    /// No time was left before the deadline for another attempt.
    DeadlineReached,
}

/// What the driver does next for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Start an attempt now and wait for its outcome at most `timeout`.
    Send {
        /// How long to wait.
        timeout: Duration,
        /// Which limit `timeout` is.
        limit: Limit,
    },
    /// Sleep this long, then call [`Stack::on_retry_due`].
    Sleep(Duration),
    /// The request is over: answer with the fallback's value if the driver has one, else
    /// with this reason.
    GiveUp(End),
}

/// One request in progress: when it started, its attempts, the permit of the attempt in
/// flight and its bulkhead slot.
#[derive(Debug)]
pub(crate) struct Request<P, S> {
    started: Instant,
    attempts: u32,
    permit: Option<P>,
    slot: Option<S>,
}

impl<P, S> Request<P, S> {
    /// Drops the permit of the attempt in flight without handing it back (the defect of
    /// a mutant).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) fn forget_permit(&mut self) {
        let _ = self.permit.take();
    }
}

/// The request-level policy, shared by every request. See the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stack {
    timeout: TimeoutPolicy,
    attempt_timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl Stack {
    /// The request deadline.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn timeout(&self) -> TimeoutPolicy {
        self.timeout
    }

    /// A stack with the request deadline `timeout`, the longest wait for one attempt
    /// `attempt_timeout` (never beyond the deadline) and the retry policy `retry`.
    pub(crate) fn new(
        timeout: TimeoutPolicy,
        attempt_timeout: Option<Duration>,
        retry: RetryPolicy,
    ) -> Self {
        Stack {
            timeout,
            attempt_timeout,
            retry,
        }
    }

    /// A request arrives at `now`: its bulkhead slot and its budget deposit, or
    /// [`End::BulkheadFull`]. Follow with [`attempt`](Stack::attempt).
    pub(crate) fn begin<Pa: Parts>(
        &self,
        parts: &mut Pa,
        now: Instant,
    ) -> Result<Request<Pa::Permit, Pa::Slot>, End> {
        let slot = parts
            .enter()
            .map_err(|max_concurrent| End::BulkheadFull { max_concurrent })?;
        parts.deposit(now);
        Ok(Request {
            started: now,
            attempts: 0,
            permit: None,
            slot: Some(slot),
        })
    }

    /// The next attempt of `request`, at `now` (the first one, or a retry that is due).
    pub(crate) fn attempt<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
    ) -> Next {
        let deadline = self.timeout.deadline(request.started);
        if now >= deadline {
            return self.finish(parts, request, now, End::DeadlineReached);
        }
        match parts.acquire(now, request.attempts) {
            Admission::Rejected(retry_after) => {
                self.finish(parts, request, now, End::Rejected { retry_after })
            }
            Admission::Unguarded => {
                request.attempts = request.attempts.saturating_add(1);
                Next::Send {
                    timeout: deadline - now,
                    limit: Limit::Deadline,
                }
            }
            Admission::Permit(permit) => {
                request.attempts = request.attempts.saturating_add(1);
                request.permit = Some(permit);
                let left = deadline - now;
                match self.attempt_timeout {
                    Some(attempt) if attempt < left => Next::Send {
                        timeout: attempt,
                        limit: Limit::Attempt,
                    },
                    _ => Next::Send {
                        timeout: left,
                        limit: Limit::Deadline,
                    },
                }
            }
        }
    }

    /// The retry wait of `request` is over at `now`.
    pub(crate) fn on_retry_due<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
    ) -> Next {
        self.attempt(parts, request, now)
    }

    /// The attempt in flight returned a value, its outcome classified `outcome`: the
    /// request is over, delivered (the driver remembers the value for its fallback).
    pub(crate) fn on_value<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
        outcome: CallOutcome,
    ) {
        self.complete(parts, request, now, outcome);
        if let Some(slot) = request.slot.take() {
            parts.exit(slot);
        }
    }

    /// The attempt in flight returned an error classified `outcome`: a
    /// [`Failure`](CallOutcome::Failure) is retried when allowed, anything else ends the
    /// request ([`End::Failed`]).
    pub(crate) fn on_error<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
        outcome: CallOutcome,
    ) -> Next {
        self.complete(parts, request, now, outcome);
        if outcome == CallOutcome::Failure {
            self.retry_or_finish(parts, request, now, End::Failed)
        } else {
            self.finish(parts, request, now, End::Failed)
        }
    }

    /// The attempt in flight reached its timeout: a failure, retried when allowed.
    pub(crate) fn on_timeout<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
    ) -> Next {
        self.complete(parts, request, now, CallOutcome::Failure);
        self.retry_or_finish(parts, request, now, End::Timeout)
    }

    /// The caller went away: the permit in flight is released without an outcome and the
    /// slot freed. (A driver whose permits and slots hand themselves back when dropped
    /// may drop the request instead.)
    pub(crate) fn on_cancel<Pa: Parts>(
        &self,
        parts: &mut Pa,
        mut request: Request<Pa::Permit, Pa::Slot>,
        now: Instant,
    ) {
        if let Some(permit) = request.permit.take() {
            parts.release(permit, now);
        }
        if let Some(slot) = request.slot.take() {
            parts.exit(slot);
        }
    }

    fn complete<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
        outcome: CallOutcome,
    ) {
        if let Some(permit) = request.permit.take() {
            parts.record(permit, now, outcome);
        }
    }

    fn retry_or_finish<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
        end: End,
    ) -> Next {
        let Some(delay) = parts.backoff(&self.retry, request.attempts) else {
            return self.finish(parts, request, now, end);
        };
        if now + delay >= self.timeout.deadline(request.started) {
            return self.finish(parts, request, now, end);
        }
        if !parts.withdraw(now) {
            return self.finish(parts, request, now, End::BudgetExhausted);
        }
        Next::Sleep(delay)
    }

    fn finish<Pa: Parts>(
        &self,
        parts: &mut Pa,
        request: &mut Request<Pa::Permit, Pa::Slot>,
        now: Instant,
        end: End,
    ) -> Next {
        if let Some(permit) = request.permit.take() {
            // Never happens on the paths above (the permit is handed back first), but a
            // permit must never leak.
            parts.release(permit, now);
        }
        if let Some(slot) = request.slot.take() {
            parts.exit(slot);
        }
        Next::GiveUp(end)
    }
}
