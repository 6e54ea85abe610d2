//! The breaker's promises, checked by the SMS world over a run. Each is a named
//! function of the checker with a message in words. Every one is judged by the
//! [`Policy`] the guard declares (its trip rule, probes, waits in open, answer deadline
//! and bulkhead), computed from what the world itself sees (calls reaching the API,
//! outcomes, answers, timings); the guard's self-reports (transitions, state, counts)
//! are only compared with those facts (see [`contract`](crate::breaker::contract)).
//!
//! 1. `breaker.no_call_while_open`: no call reaches the API while the breaker is Open
//!    or ForcedOpen, and Open lasts at least the declared shortest wait in open.
//! 2. `breaker.half_open_limit`: per half-open episode, calls admitted ≤ the declared
//!    permitted calls in half-open + the cancellations and ignored outcomes the world saw
//!    during that episode (of any attempt, late ones too: each is a permit a counter,
//!    such as Resilience4j's, legitimately gives back); a fresh episode
//!    (HalfOpen → HalfOpen) begins only when the world saw a probe cancelled or ignored
//!    at that moment.
//! 3. `breaker.trip_soundness`: Closed → Open only when the declared trip rule holds,
//!    counted by the world's own model of it over the outcomes it saw in the Closed
//!    episode: for a rate, at least the minimum number of calls recorded and the
//!    failure or slow-call rate (slow: strictly longer than the slow-call duration) at
//!    its threshold in the sliding window; for consecutive failures, that many failures
//!    in a row. Ignored outcomes change no count. An outcome of an attempt sent in an
//!    earlier episode that arrives while Closed may be counted (as Resilience4j does) or
//!    not (as faultline does): the trip is justified if the rule holds either way.
//!    `breaker.trips_when_due` is its other half: Closed → Open as soon as the
//!    declared rule holds. When an outcome of the Closed episode that the world saw
//!    makes the rule hold, counted either way (late outcomes counted or not), the
//!    breaker has left Closed by the end of the step that handed the outcome over: it
//!    evaluates its rule at each recorded outcome, as Resilience4j and faultline do.
//!    A breaker that lets calls through after its own rule said trip (one that dropped
//!    the slow-call half, say) floods the API it was put in front of.
//! 4. `breaker.load_bound`: over any outage of length T, calls reaching the API ≤ calls
//!    needed to trip by the declared rule from the window as it stood + in-flight calls
//!    (at most the declared bulkhead) + (⌈T / shortest declared wait in open⌉ + 1) ×
//!    permitted calls in half-open + the probes given back (cancellations and ignored
//!    outcomes the world saw while half-open during the outage); with a time window of
//!    S seconds, + ⌈T / S⌉ × minimum calls (a window that forgets may take that many
//!    calls per window without tripping). Re-closings and fresh half-open episodes
//!    during the outage add to it only as far as the successes, cancellations and
//!    ignored outcomes the world saw there can justify them. Retries take breaker
//!    permits like any call, so the budget only lowers this.
//! 5. `breaker.responsiveness`: every caller gets an answer (delivered, fallback, or
//!    unavailable with a positive `retry_after`) within the declared answer deadline
//!    (never beyond the world's callers' own deadline) + 1 ms; at rest no request is
//!    left unanswered.
//! 6. `breaker.closes_after_recovery`: once the API has recovered, the breaker is
//!    Closed again within the declared longest wait in open and the probes' time.
//! 7. `breaker.accounting`: admitted = succeeded + failed (errors and timeouts) +
//!    ignored + released, each equal to the world's own count; transitions form a
//!    valid path; the state the guard reports at each send is the one its transitions
//!    lead to; and while Closed, the window a guard reports
//!    ([`CallGuard::window`](crate::breaker::contract::CallGuard::window), optional;
//!    the reference does) holds the calls, failures and slow calls the world saw in
//!    it, with the rates from them.
//! 8. `breaker.retry_budget` (where the guard declares a retry budget,
//!    [`CallGuard::retry_budget`](crate::breaker::contract::CallGuard::retry_budget)):
//!    with `ttl` of ten slots, a reserve of `min_per_sec` × ⌈ttl⌉ s and `retry_percent`,
//!    the retries it schedules within any nine slots never exceed the reserve plus
//!    `retry_percent` % of the requests it admitted within `ttl`; and it refuses a retry
//!    for the budget only when the retries it scheduled within `ttl` had reached the
//!    reserve plus `retry_percent` % of the requests it admitted within nine slots. The
//!    first half keeps a retry storm off the API; the second keeps the budget from
//!    failing callers it should have retried.
//! 9. `breaker.retry_policy` (where the guard declares a retry policy,
//!    [`CallGuard::retry_policy`](crate::breaker::contract::CallGuard::retry_policy)):
//!    no request is sent more than `attempts_max` times, and the retry after attempt
//!    `n` failed waits at most the backoff's ceiling `min(cap, base·2^(n−1))`; and a
//!    request whose attempt `n` failed (an API error the reference retries, or a
//!    timeout) is not given up for that failure while attempts remain and a retry
//!    after the ceiling would still come before its declared deadline. The first
//!    part bounds the attempts one caller costs the API; the second keeps a backoff
//!    that forgot its cap (or its doubling) from stalling callers; the third keeps
//!    the retries the policy promises callers.
//! 10. `breaker.conformance` (optional; on for the reference and its mutants): the
//!     declared policy is the reference's exact parameterisation for the seed's knobs.
//!     A plug-in with settings of its own leaves it off and is judged by 1 to 9 alone.

use crate::breaker::circuit::{CallOutcome, SlidingWindow, State};
use crate::breaker::contract::{
    Answer, GuardMetrics, Policy, Transition, TripRule, Why, WindowReport,
};
use faultline_sim::{SimDuration, SimTime, Violation};
use serde::Serialize;

/// Names of the invariants, in order.
pub const INVARIANTS: [&str; 11] = [
    NO_CALL_WHILE_OPEN,
    HALF_OPEN_LIMIT,
    TRIP_SOUNDNESS,
    TRIPS_WHEN_DUE,
    LOAD_BOUND,
    RESPONSIVENESS,
    CLOSES_AFTER_RECOVERY,
    ACCOUNTING,
    RETRY_BUDGET,
    RETRY_POLICY,
    CONFORMANCE,
];

/// What each invariant promises, in words (the list above), in the order of
/// [`INVARIANTS`]: what `faultline list` prints beside each name.
pub const PROMISES: [(&str, &str); 11] = [
    (
        NO_CALL_WHILE_OPEN,
        "No call reaches the API while the breaker is Open or ForcedOpen, and Open lasts at least the declared shortest wait in open.",
    ),
    (
        HALF_OPEN_LIMIT,
        "Per half-open episode, calls admitted ≤ the declared permitted calls in half-open + the cancellations and ignored outcomes the world saw during that episode (of any attempt, late ones too: each is a permit a counter legitimately gives back); a fresh episode (HalfOpen → HalfOpen) begins only when the world saw a probe cancelled or ignored at that moment.",
    ),
    (
        TRIP_SOUNDNESS,
        "Closed → Open only when the declared trip rule holds, counted by the world's own model of it over the outcomes it saw in the Closed episode: for a rate, at least the minimum number of calls recorded and the failure or slow-call rate (slow: strictly longer than the slow-call duration) at its threshold in the sliding window; for consecutive failures, that many failures in a row. Ignored outcomes change no count. An outcome of an attempt sent in an earlier episode that arrives while Closed may be counted (as Resilience4j does) or not (as faultline does): the trip is justified if the rule holds either way.",
    ),
    (
        TRIPS_WHEN_DUE,
        "Closed → Open as soon as the declared rule holds: when an outcome of the Closed episode makes the rule hold, counted by the world's own model either way (late outcomes of earlier episodes counted or not), the breaker has left Closed by the end of the step that handed it the outcome.",
    ),
    (
        LOAD_BOUND,
        "Over any outage of length T, calls reaching the API ≤ calls needed to trip by the declared rule from the window as it stood + in-flight calls (at most the declared bulkhead) + (⌈T / shortest declared wait in open⌉ + 1) × permitted calls in half-open + the probes given back (cancellations and ignored outcomes the world saw while half-open during the outage); with a time window of S seconds, + ⌈T / S⌉ × minimum calls (a window that forgets may take that many calls per window without tripping). Re-closings and fresh half-open episodes during the outage add to it only as far as the successes, cancellations and ignored outcomes the world saw there can justify them. Retries take breaker permits like any call, so the budget only lowers this.",
    ),
    (
        RESPONSIVENESS,
        "Every caller gets an answer (delivered, fallback, or unavailable with a positive retry_after) within the declared answer deadline (never beyond the world's callers' own deadline) + 1 ms; at rest no request is left unanswered.",
    ),
    (
        CLOSES_AFTER_RECOVERY,
        "Once the API has recovered, the breaker is Closed again within the declared longest wait in open and the probes' time.",
    ),
    (
        ACCOUNTING,
        "Admitted = succeeded + failed (errors and timeouts) + ignored + released, each equal to the world's own count; transitions form a valid path; the state the guard reports at each send is the one its transitions lead to; while Closed, the window a guard reports (optional) holds the calls, failures and slow calls the world saw in it, with the rates from them.",
    ),
    (
        RETRY_BUDGET,
        "Where the guard declares a retry budget (ttl of ten slots, a reserve of min_per_sec × ⌈ttl⌉ s, retry_percent): the retries it schedules within any nine slots never exceed the reserve + retry_percent % of the requests it admitted within ttl, and it refuses a retry for the budget only when the retries it scheduled within ttl had reached the reserve + retry_percent % of the requests it admitted within nine slots.",
    ),
    (
        RETRY_POLICY,
        "Where the guard declares a retry policy (attempts_max, a backoff of base and cap): no request is sent more than attempts_max times, the retry after attempt n failed waits at most min(cap, base·2^(n−1)), and a request is not given up for a failed attempt while attempts remain and a retry after that ceiling would still come before its declared deadline.",
    ),
    (
        CONFORMANCE,
        "Optional, on for the reference and its mutants: the declared policy is the reference's exact parameterisation for the seed's knobs. A plug-in with settings of its own leaves it off and is judged by the other invariants alone.",
    ),
];

/// The invariant `breaker.no_call_while_open` (see the list above).
pub const NO_CALL_WHILE_OPEN: &str = "breaker.no_call_while_open";
/// The invariant `breaker.half_open_limit` (see the list above).
pub const HALF_OPEN_LIMIT: &str = "breaker.half_open_limit";
/// The invariant `breaker.trip_soundness` (see the list above).
pub const TRIP_SOUNDNESS: &str = "breaker.trip_soundness";
/// The invariant `breaker.trips_when_due` (see the list above, with 3).
pub const TRIPS_WHEN_DUE: &str = "breaker.trips_when_due";
/// The invariant `breaker.load_bound` (see the list above).
pub const LOAD_BOUND: &str = "breaker.load_bound";
/// The invariant `breaker.responsiveness` (see the list above).
pub const RESPONSIVENESS: &str = "breaker.responsiveness";
/// The invariant `breaker.closes_after_recovery` (see the list above).
pub const CLOSES_AFTER_RECOVERY: &str = "breaker.closes_after_recovery";
/// The invariant `breaker.accounting` (see the list above).
pub const ACCOUNTING: &str = "breaker.accounting";
/// The optional check `breaker.conformance` (see the list above).
pub const CONFORMANCE: &str = "breaker.conformance";
/// The invariant `breaker.retry_budget` (see the list above).
pub const RETRY_BUDGET: &str = "breaker.retry_budget";
/// The invariant `breaker.retry_policy` (see the list above).
pub const RETRY_POLICY: &str = "breaker.retry_policy";

/// The world's check of a declared retry policy (`breaker.retry_policy`), from the
/// attempts it sends and the retries it schedules.
#[derive(Clone, Copy, Debug)]
pub struct RetryRule {
    policy: crate::retry::RetryPolicy,
    /// The declared answer deadline, from a request's arrival.
    answer_within: SimDuration,
}

impl RetryRule {
    /// The rule of the retry policy the guard declares, for a guard that declares the
    /// answer deadline `answer_within` ([`Policy::answer_within`]).
    pub fn new(policy: crate::retry::RetryPolicy, answer_within: std::time::Duration) -> Self {
        RetryRule {
            policy,
            answer_within: SimDuration::from_nanos(crate::clock::saturating_nanos(answer_within)),
        }
    }

    /// The guard gave `request` (arrived at `arrived`) up at `now`, right after its
    /// attempt `failed` (1-based) failed (an API error it retries, or a timeout), for
    /// that failure: only when no attempt was left, or when even the shortest-fitting
    /// retry could not fit, i.e. the backoff's ceiling would reach the deadline (a
    /// retry refused for the budget is answered as such, not as the failure).
    pub fn on_give_up(
        &self,
        request: u32,
        failed: u32,
        arrived: SimTime,
        now: SimTime,
    ) -> Result<(), Violation> {
        let most = self.policy.attempts_max();
        if failed >= most {
            return Ok(());
        }
        let ceiling = self.policy.backoff().ceiling(failed);
        let deadline = arrived + self.answer_within;
        if now + SimDuration::from_nanos(crate::clock::saturating_nanos(ceiling)) >= deadline {
            return Ok(());
        }
        Err(Violation::new(
            RETRY_POLICY,
            format!(
                "request {request} was given up at {now} after its attempt {failed} failed, with \
                 {} of {most} attempts left and its deadline at {deadline}: a retry after at most \
                 {ceiling:?} fitted",
                most - failed
            ),
        ))
    }

    /// The guard sent attempt `attempt` (1-based) of `request`: at most `attempts_max`.
    pub fn on_send(&self, request: u32, attempt: u32) -> Result<(), Violation> {
        let most = self.policy.attempts_max();
        if attempt > most {
            return Err(Violation::new(
                RETRY_POLICY,
                format!(
                    "attempt {attempt} of request {request} was sent; the declared retry policy allows at most \
                     {most} attempts, the first included"
                ),
            ));
        }
        Ok(())
    }

    /// The guard scheduled a retry of `request` after its attempt `failed` (1-based),
    /// to wait `delay`: only while attempts remain, and at most the backoff's ceiling.
    pub fn on_retry(
        &self,
        request: u32,
        failed: u32,
        delay: std::time::Duration,
    ) -> Result<(), Violation> {
        let most = self.policy.attempts_max();
        if failed >= most {
            return Err(Violation::new(
                RETRY_POLICY,
                format!(
                    "request {request} was scheduled a retry after its attempt {failed} failed; the declared retry \
                     policy allows at most {most} attempts, the first included"
                ),
            ));
        }
        let backoff = self.policy.backoff();
        let ceiling = backoff.ceiling(failed);
        if delay > ceiling {
            return Err(Violation::new(
                RETRY_POLICY,
                format!(
                    "request {request} was scheduled to wait {delay:?} before retrying its attempt {failed}; the \
                     declared backoff (base {:?}, cap {:?}) waits at most {ceiling:?} after attempt {failed}",
                    backoff.base(),
                    backoff.cap()
                ),
            ));
        }
        Ok(())
    }
}

/// The world's ledger of a declared retry budget (`breaker.retry_budget`): when the
/// guard admitted requests (each deposits) and scheduled retries (each withdraws), from
/// the steps it returned.
///
/// The bounds allow for any budget that counts over ten slots of `ttl / 10`: at `now`
/// such a budget's window starts between nine and ten slots back, so it holds at most
/// the deposits within `ttl` and at least the retries within nine slots.
#[derive(Clone, Debug)]
pub struct BudgetLedger {
    ttl: SimDuration,
    /// Nine slots: the shortest span a budget's window covers.
    nine_slots: SimDuration,
    reserve: u64,
    retry_percent: u32,
    /// Times of the admitted requests within `ttl` of the latest step.
    deposits: std::collections::VecDeque<SimTime>,
    /// Times of the scheduled retries within `ttl` of the latest step.
    retries: std::collections::VecDeque<SimTime>,
}

/// `now - d`, or the start.
fn earlier(now: SimTime, d: SimDuration) -> SimTime {
    SimTime::from_nanos(now.as_nanos().saturating_sub(d.as_nanos()))
}

impl BudgetLedger {
    /// The ledger of the budget `budget` declares (its configuration, not its counts).
    pub fn new(budget: &crate::retry::RetryBudget) -> Self {
        let ttl_nanos = crate::clock::saturating_nanos(budget.ttl());
        BudgetLedger {
            ttl: SimDuration::from_nanos(ttl_nanos),
            nine_slots: SimDuration::from_nanos(ttl_nanos / 10 * 9),
            reserve: u64::from(budget.min_per_sec())
                .saturating_mul(ttl_nanos.div_ceil(1_000_000_000)),
            retry_percent: budget.retry_percent(),
            deposits: Default::default(),
            retries: Default::default(),
        }
    }

    fn forget_before(&mut self, now: SimTime) {
        let oldest = earlier(now, self.ttl);
        for q in [&mut self.deposits, &mut self.retries] {
            while q.front().is_some_and(|t| *t < oldest) {
                q.pop_front();
            }
        }
    }

    fn allowed(&self, deposits: u64) -> u64 {
        let earned = u128::from(deposits) * u128::from(self.retry_percent) / 100;
        u64::try_from(earned)
            .unwrap_or(u64::MAX)
            .saturating_add(self.reserve)
    }

    /// (within `ttl`, within the last nine slots, strictly) of `q` at `now`.
    fn spans(&self, q: &std::collections::VecDeque<SimTime>, now: SimTime) -> (u64, u64) {
        let after = earlier(now, self.nine_slots);
        let recent = q.iter().rev().take_while(|t| **t > after).count() as u64;
        (q.len() as u64, recent)
    }

    /// The guard admitted a request at `now` (it deposits).
    pub fn on_admitted(&mut self, now: SimTime) {
        self.forget_before(now);
        self.deposits.push_back(now);
    }

    /// The guard scheduled a retry at `now` (it withdrew): at most the reserve plus the
    /// earned share of the requests admitted within `ttl`.
    pub fn on_retry(&mut self, now: SimTime) -> Result<(), Violation> {
        self.forget_before(now);
        self.retries.push_back(now);
        let (_, retries) = self.spans(&self.retries, now);
        let (deposits, _) = self.spans(&self.deposits, now);
        let allowed = self.allowed(deposits);
        if retries > allowed {
            return Err(Violation::new(
                RETRY_BUDGET,
                format!(
                    "{retries} retries scheduled within {} (nine slots of the declared ttl {}); the budget allows at \
                     most {allowed}: the reserve {} + {} % of the {deposits} requests admitted within the ttl",
                    self.nine_slots, self.ttl, self.reserve, self.retry_percent
                ),
            ));
        }
        Ok(())
    }

    /// The guard refused a retry for the budget at `now`: only when the retries within
    /// `ttl` had reached the reserve plus the earned share of the requests admitted
    /// within nine slots.
    pub fn on_refused(&mut self, now: SimTime) -> Result<(), Violation> {
        self.forget_before(now);
        let (retries, _) = self.spans(&self.retries, now);
        let (_, deposits) = self.spans(&self.deposits, now);
        let owed = self.allowed(deposits);
        if retries < owed {
            return Err(Violation::new(
                RETRY_BUDGET,
                format!(
                    "a retry was refused for the budget with only {retries} retries scheduled within the declared ttl \
                     {}; the budget allows at least {owed}: the reserve {} + {} % of the {deposits} requests admitted \
                     within {} (nine slots)",
                    self.ttl, self.reserve, self.retry_percent, self.nine_slots
                ),
            ));
        }
        Ok(())
    }
}

/// The world's own model of the declared trip rule: the outcomes the breaker should
/// have recorded in the current Closed episode.
#[derive(Clone, Debug)]
pub struct TripModel {
    rule: TripRule,
    /// Rate: (second of completion, failed, slow), oldest first.
    entries: Vec<(u64, bool, bool)>,
    /// Consecutive failures: failures since the last success.
    run: u64,
}

impl TripModel {
    fn new(rule: TripRule) -> Self {
        TripModel {
            rule,
            entries: Vec::new(),
            run: 0,
        }
    }

    /// A call strictly longer than this is slow, if the rule counts slow calls.
    fn slow_call_duration(&self) -> Option<SimDuration> {
        match self.rule {
            TripRule::Rate {
                slow_call_duration, ..
            } => Some(SimDuration::from_nanos(crate::clock::saturating_nanos(
                slow_call_duration,
            ))),
            TripRule::ConsecutiveFailures { .. } => None,
        }
    }

    fn record(&mut self, now: SimTime, failed: bool, slow: bool) {
        match self.rule {
            TripRule::Rate { window, .. } => {
                let sec = now.as_nanos() / 1_000_000_000;
                if let SlidingWindow::Time { size_secs } = window {
                    // Seconds that left the window never count again (time only
                    // moves on): forget them.
                    let live = self
                        .entries
                        .iter()
                        .position(|(s, _, _)| s + u64::from(size_secs) > sec)
                        .unwrap_or(self.entries.len());
                    self.entries.drain(..live);
                }
                self.entries.push((sec, failed, slow));
                if let SlidingWindow::Count { size } = window
                    && self.entries.len() > size as usize
                {
                    let extra = self.entries.len() - size as usize;
                    self.entries.drain(..extra);
                }
            }
            TripRule::ConsecutiveFailures { .. } => {
                self.run = if failed { self.run + 1 } else { 0 };
            }
        }
    }

    /// Rate: (calls, failed, slow) in the window as of `now`.
    fn counts(&self, now: SimTime) -> (u64, u64, u64) {
        let sec = now.as_nanos() / 1_000_000_000;
        let live = |s: u64| match self.rule {
            TripRule::Rate {
                window: SlidingWindow::Time { size_secs },
                ..
            } => s + u64::from(size_secs) > sec,
            _ => true,
        };
        self.entries
            .iter()
            .filter(|(s, _, _)| live(*s))
            .fold((0, 0, 0), |(c, f, sl), (_, fa, slo)| {
                (c + 1, f + *fa as u64, sl + *slo as u64)
            })
    }

    /// The model as an outage could at worst find it: in a time window the failures
    /// already there may leave before the successes do (making a trip need more calls),
    /// so they are dropped and the successes counted as fast; a count window forgets in
    /// order, and a run of failures does not forget, so they stay as they are.
    fn worst_case_for_outage(&self) -> TripModel {
        match self.rule {
            TripRule::Rate {
                window: SlidingWindow::Time { .. },
                ..
            } => TripModel {
                rule: self.rule,
                entries: self
                    .entries
                    .iter()
                    .filter(|(_, failed, _)| !failed)
                    .map(|(s, _, _)| (*s, false, false))
                    .collect(),
                run: self.run,
            },
            _ => self.clone(),
        }
    }

    fn meets_threshold(&self, now: SimTime) -> bool {
        match self.rule {
            TripRule::Rate {
                minimum_calls,
                failure_rate_threshold_permille,
                slow_call_rate_threshold_permille,
                ..
            } => {
                let (calls, failed, slow) = self.counts(now);
                calls >= u64::from(minimum_calls)
                    && calls > 0
                    && (failed * 1000 >= u64::from(failure_rate_threshold_permille) * calls
                        || slow * 1000 >= u64::from(slow_call_rate_threshold_permille) * calls)
            }
            TripRule::ConsecutiveFailures { failures } => self.run >= u64::from(failures.max(1)),
        }
    }

    /// Failures that must still be recorded, at `now`, after `successes` more successes,
    /// before the rule trips (capped).
    fn calls_to_trip(&self, now: SimTime, successes: u64) -> u64 {
        const CAP: u64 = 1_000_000;
        let mut m = self.clone();
        for _ in 0..successes.min(CAP) {
            m.record(now, false, false);
        }
        let mut n = 0;
        while !m.meets_threshold(now) && n < CAP {
            m.record(now, true, false);
            n += 1;
            if let TripRule::Rate {
                window: SlidingWindow::Count { size },
                ..
            } = m.rule
                && n > u64::from(size) + successes
            {
                break;
            }
        }
        n
    }

    /// How many failures one success recorded in Closed can hold a trip back by: in a
    /// count window until `size` more calls push it out; in a time window until enough
    /// failures outweigh it; in a run of failures, a whole run.
    fn held_back_per_success(&self) -> u64 {
        match self.rule {
            TripRule::Rate {
                window: SlidingWindow::Count { size },
                ..
            } => u64::from(size),
            TripRule::Rate {
                window: SlidingWindow::Time { .. },
                failure_rate_threshold_permille: threshold,
                minimum_calls,
                ..
            } => {
                let threshold = u64::from(threshold);
                if threshold < 1000 {
                    threshold.div_ceil(1000 - threshold) + 1
                } else {
                    u64::from(minimum_calls)
                }
            }
            TripRule::ConsecutiveFailures { failures } => u64::from(failures),
        }
    }

    /// A time window's size in nanoseconds and the calls each window may take without
    /// tripping (the minimum), if the rule forgets with time.
    fn forgetting(&self) -> Option<(u128, u64)> {
        match self.rule {
            TripRule::Rate {
                window: SlidingWindow::Time { size_secs },
                minimum_calls,
                ..
            } => Some((
                u128::from(size_secs) * 1_000_000_000,
                u64::from(minimum_calls),
            )),
            _ => None,
        }
    }

    /// What the model holds, in words: calls in the window, or failures in a row.
    fn held(&self, now: SimTime) -> String {
        match self.rule {
            TripRule::Rate { .. } => {
                let (calls, failed, slow) = self.counts(now);
                format!("{calls} calls ({failed} failed, {slow} slow)")
            }
            TripRule::ConsecutiveFailures { .. } => format!("{} failures in a row", self.run),
        }
    }

    /// The report of a guard whose window held what this model holds at `now`, with
    /// the rates computed from it (`None` for a rule without a window).
    fn window_at(&self, now: SimTime) -> Option<WindowReport> {
        let TripRule::Rate { minimum_calls, .. } = self.rule else {
            return None;
        };
        let (calls, failed, slow) = self.counts(now);
        let rate = |n: u64| {
            (calls >= u64::from(minimum_calls) && calls > 0).then(|| (n * 1000 / calls) as u32)
        };
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Some(WindowReport {
            calls: narrow(calls),
            failed: narrow(failed),
            slow: narrow(slow),
            failure_rate_permille: rate(failed),
            slow_call_rate_permille: rate(slow),
        })
    }

    /// The declared rule, in words.
    fn rule_in_words(&self) -> String {
        match self.rule {
            TripRule::Rate {
                minimum_calls,
                failure_rate_threshold_permille,
                slow_call_rate_threshold_permille,
                ..
            } => format!(
                "at least {minimum_calls} calls and a failure rate of {failure_rate_threshold_permille} \
                 permille or a slow-call rate of {slow_call_rate_threshold_permille} permille"
            ),
            TripRule::ConsecutiveFailures { failures } => format!("{failures} failures in a row"),
        }
    }

    /// What the model holds and what the rule needs, in words.
    fn describe(&self, now: SimTime) -> String {
        match self.rule {
            TripRule::Rate {
                minimum_calls,
                failure_rate_threshold_permille,
                slow_call_rate_threshold_permille,
                ..
            } => {
                let (calls, failed, slow) = self.counts(now);
                format!(
                    "the breaker opened with {calls} calls in its window ({failed} failed, {slow} slow); \
                     its declared rule needs at least {minimum_calls} calls and a failure rate of \
                     {failure_rate_threshold_permille} permille or a slow-call rate of \
                     {slow_call_rate_threshold_permille} permille (ignored outcomes must not count)"
                )
            }
            TripRule::ConsecutiveFailures { failures } => format!(
                "the breaker opened after {} failures in a row; its declared rule needs {failures} \
                 (a success starts the count again; ignored outcomes must not count)",
                self.run
            ),
        }
    }
}

/// One outage of the API and the calls that reached it.
#[derive(Clone, Debug, Serialize)]
pub struct OutageLoad {
    /// Start of the outage, ms.
    pub from_ms: u64,
    /// End of the outage (or of the safety phase), ms.
    pub until_ms: u64,
    /// Calls that reached the API during it.
    pub calls: u64,
    /// The bound those calls must stay within.
    pub bound: u64,
}

/// One outage's load and the parts of its bound, for the violation's message.
struct LoadParts {
    load: OutageLoad,
    closed_part: u64,
    held_back: u64,
    late_successes: u64,
    forgetting: u64,
    episodes: u64,
    permitted: u64,
    given_back: u64,
    reclosed: u64,
}

/// Snapshot taken when an outage starts.
#[derive(Clone, Debug)]
struct OutageStart {
    at: SimTime,
    state: State,
    model: TripModel,
    in_flight: u64,
}

/// The invariant checker: fed by the world as the run goes, asked at rest.
#[derive(Clone, Debug)]
pub struct BreakerChecker {
    policy: Policy,
    /// The longest a caller may wait: the declared answer deadline, never beyond the
    /// world's callers' own.
    timeout: SimDuration,
    bulkhead_max: u64,
    liveness_interarrival: SimDuration,
    /// State as seen through transitions.
    state: State,
    /// Transitions seen (also the episode number of the current state).
    episode: u64,
    episode_sends: u64,
    /// Cancellations and ignored outcomes (of any attempt) the world saw in this
    /// half-open episode: the permits a counter may have been given back.
    episode_given_back: u64,
    /// When the breaker last went to Open.
    opened_at: SimTime,
    model: TripModel,
    /// The same rule over every outcome that arrived in this Closed episode, late ones
    /// (of attempts sent in an earlier episode) included, as Resilience4j counts them.
    late_model: TripModel,
    /// An outcome of this Closed episode was just recorded in `model`: the guard had
    /// it, so the rule must be judged once the guard's step is done.
    trip_due_unchecked: bool,
    outage_starts: Vec<OutageStart>,
    /// All transitions: (time, from, to).
    pub transitions: Vec<(SimTime, State, State)>,
    /// Times at which calls reached the API.
    pub sends: Vec<SimTime>,
    /// Times at which successes entered the Closed window (the outage's late successes
    /// among them: each holds a trip back).
    closed_successes: Vec<SimTime>,
    /// Times of every success the world saw (each may justify a closing).
    successes: Vec<SimTime>,
    /// Times of every cancelled attempt and ignored outcome the world saw (each may
    /// justify a fresh half-open episode).
    inconclusive: Vec<SimTime>,
    /// Times of the cancellations and ignored outcomes the world saw while half-open
    /// (each a permit a counter may give back: one more probe).
    given_back: Vec<SimTime>,
    /// World counts for accounting.
    pub counts: GuardMetrics,
    /// Attempts in flight now.
    pub in_flight: u64,
    healed_at: Option<SimTime>,
    /// The state the breaker was in when the faults healed (`None` before).
    state_at_heal: Option<State>,
    /// When the breaker was first Closed after the faults healed (at the healing when
    /// it was Closed then).
    pub closed_after_heal: Option<SimTime>,
    /// Longest answer latency seen.
    pub answer_latency_max: SimDuration,
    /// Every answer: when, and how long the caller waited.
    pub answers: Vec<(SimTime, SimDuration)>,
    /// Per-outage load figures, filled at rest (or, for a run stopped early, up to the
    /// stop).
    pub outage_loads: Vec<OutageLoad>,
}

impl BreakerChecker {
    /// A checker for a guard that declares `policy`, in a world whose callers wait at
    /// most `callers_timeout` for an answer.
    pub fn new(
        policy: Policy,
        callers_timeout: SimDuration,
        liveness_interarrival: SimDuration,
    ) -> Self {
        let declared =
            SimDuration::from_nanos(crate::clock::saturating_nanos(policy.answer_within));
        BreakerChecker {
            model: TripModel::new(policy.trip),
            late_model: TripModel::new(policy.trip),
            trip_due_unchecked: false,
            policy,
            timeout: declared.min(callers_timeout),
            bulkhead_max: u64::from(policy.in_progress_max),
            liveness_interarrival,
            state: State::Closed,
            episode: 0,
            episode_sends: 0,
            episode_given_back: 0,
            opened_at: SimTime::ZERO,
            outage_starts: Vec::new(),
            transitions: Vec::new(),
            sends: Vec::new(),
            closed_successes: Vec::new(),
            successes: Vec::new(),
            inconclusive: Vec::new(),
            given_back: Vec::new(),
            counts: GuardMetrics::default(),
            in_flight: 0,
            healed_at: None,
            state_at_heal: None,
            closed_after_heal: None,
            answer_latency_max: SimDuration::ZERO,
            answers: Vec::new(),
            outage_loads: Vec::new(),
        }
    }

    /// The policy the guard declared.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The state as seen through transitions.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current episode number (transitions seen so far).
    pub fn episode(&self) -> u64 {
        self.episode
    }

    /// Invariants 7 (path), 3 (soundness) and 1 (the wait in open), on each transition.
    pub fn on_transition(&mut self, t: Transition, now: SimTime) -> Result<(), Violation> {
        if t.from != self.state {
            return Err(Violation::new(
                ACCOUNTING,
                format!(
                    "transition {} -> {} does not start from the state the breaker was in ({})",
                    t.from, t.to, self.state
                ),
            ));
        }
        let allowed = matches!(
            (t.from, t.to),
            (State::Closed, State::Open)
                | (State::Open, State::HalfOpen)
                | (State::HalfOpen, State::Closed)
                | (State::HalfOpen, State::Open)
                | (State::HalfOpen, State::HalfOpen)
        );
        if !allowed {
            return Err(Violation::new(
                ACCOUNTING,
                format!(
                    "transition {} -> {} is not a valid breaker transition",
                    t.from, t.to
                ),
            ));
        }
        if t.from == State::Closed && t.to == State::Open {
            self.trip_soundness(now)?;
        }
        if t.from == State::HalfOpen
            && t.to == State::HalfOpen
            && self.inconclusive.last() != Some(&now)
        {
            // A fresh episode (fresh probes) only when the last probe said nothing.
            return Err(Violation::new(
                HALF_OPEN_LIMIT,
                format!(
                    "the breaker reported a fresh half-open episode at {now} after {} probes, \
                     but no probe was cancelled or ignored then",
                    self.episode_sends
                ),
            ));
        }
        if t.from == State::Open {
            let wait = SimDuration::from_nanos(crate::clock::saturating_nanos(
                self.policy.wait_in_open_min,
            ));
            if now < self.opened_at + wait {
                return Err(Violation::new(
                    NO_CALL_WHILE_OPEN,
                    format!(
                        "the breaker left Open for {} after {}; its declared wait in open is at least {wait}",
                        t.to,
                        now - self.opened_at
                    ),
                ));
            }
        }
        if t.to == State::Open {
            self.opened_at = now;
        }
        if t.to == State::Closed {
            self.model = TripModel::new(self.policy.trip);
            self.late_model = TripModel::new(self.policy.trip);
            if self.healed_at.is_some() && self.closed_after_heal.is_none() {
                self.closed_after_heal = Some(now);
            }
        }
        self.state = t.to;
        self.episode += 1;
        self.episode_sends = 0;
        self.episode_given_back = 0;
        self.transitions.push((now, t.from, t.to));
        Ok(())
    }

    /// Invariant 3.
    fn trip_soundness(&self, now: SimTime) -> Result<(), Violation> {
        if self.model.meets_threshold(now) || self.late_model.meets_threshold(now) {
            return Ok(());
        }
        Err(Violation::new(
            TRIP_SOUNDNESS,
            format!(
                "{}; with the late outcomes of attempts sent before this Closed episode \
                 counted too (as Resilience4j does), {}",
                self.model.describe(now),
                self.late_model.held(now)
            ),
        ))
    }

    /// Invariants 1, 2 and 7 (the reported state), when a call reaches the API while
    /// the guard reports `reported` as its state.
    pub fn on_send(&mut self, now: SimTime, reported: State) -> Result<(), Violation> {
        self.sends.push(now);
        self.counts.admitted += 1;
        self.in_flight += 1;
        let state = self.state;
        for s in [state, reported] {
            if s.rejects_all() {
                return Err(Violation::new(
                    NO_CALL_WHILE_OPEN,
                    format!("a call reached the API while the breaker was {s}"),
                ));
            }
        }
        if reported != state {
            return Err(Violation::new(
                ACCOUNTING,
                format!(
                    "a call was sent while the guard reported {reported}, but its transitions \
                     put the breaker in {state}"
                ),
            ));
        }
        if state == State::HalfOpen {
            self.episode_sends += 1;
            let permitted = u64::from(self.policy.half_open_calls_permitted);
            let given_back = self.episode_given_back;
            if self.episode_sends > permitted.saturating_add(given_back) {
                return Err(Violation::new(
                    HALF_OPEN_LIMIT,
                    format!(
                        "{} calls reached the API in one half-open episode; at most {permitted} are \
                         permitted, + {given_back} given back by the calls cancelled or ignored in it",
                        self.episode_sends
                    ),
                ));
            }
        }
        Ok(())
    }

    /// True when the half-open episode has sent more probes than the declared permits
    /// (through permits given back): the case the give-back half of invariant 2 is for.
    pub fn probes_given_back_used(&self) -> bool {
        self.state == State::HalfOpen
            && self.episode_sends > u64::from(self.policy.half_open_calls_permitted)
    }

    /// An attempt finished (reply or timeout) and was handed to the guard with this
    /// outcome. `sent_episode` is the episode when it was sent.
    pub fn on_outcome(
        &mut self,
        now: SimTime,
        sent_at: SimTime,
        sent_episode: u64,
        outcome: CallOutcome,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            CallOutcome::Success => {
                self.counts.succeeded += 1;
                self.successes.push(now);
            }
            CallOutcome::Failure => self.counts.failed += 1,
            CallOutcome::Ignored => {
                self.counts.ignored += 1;
                self.inconclusive.push(now);
            }
        }
        if outcome == CallOutcome::Ignored {
            self.give_back(now);
            return;
        }
        if self.state != State::Closed {
            return;
        }
        let slow = self
            .model
            .slow_call_duration()
            .is_some_and(|d| now - sent_at > d);
        let failed = outcome == CallOutcome::Failure;
        // Resilience4j records a late outcome (of an attempt sent in an earlier
        // episode) in the Closed window; faultline's core does not: both are modelled.
        self.late_model.record(now, failed, slow);
        if sent_episode != self.episode {
            return;
        }
        if outcome == CallOutcome::Success {
            self.closed_successes.push(now);
        }
        self.model.record(now, failed, slow);
        self.trip_due_unchecked = true;
    }

    /// `breaker.accounting`, for a guard that reports its window: while Closed, the
    /// window it reports at `now` is the world's model of it (late outcomes counted or
    /// not), rates included.
    pub fn compare_window(&self, now: SimTime, reported: WindowReport) -> Result<(), Violation> {
        if self.state != State::Closed {
            return Ok(());
        }
        let Some(expected) = self.model.window_at(now) else {
            return Ok(());
        };
        let with_late = self.late_model.window_at(now);
        if reported == expected || Some(reported) == with_late {
            return Ok(());
        }
        Err(Violation::new(
            ACCOUNTING,
            format!(
                "the guard reports its Closed window as {reported:?}; the outcomes the world saw in \
                 it make {expected:?} (with the late outcomes of earlier episodes: {with_late:?})"
            ),
        ))
    }

    /// `breaker.trips_when_due`, once the guard has handled the outcome the world last
    /// handed it (the step it returned carried out, its transitions seen): if that
    /// outcome entered the Closed window and the declared rule now holds counted
    /// either way, the breaker must have left Closed.
    pub fn after_outcome(&mut self, now: SimTime) -> Result<(), Violation> {
        if !std::mem::take(&mut self.trip_due_unchecked) || self.state != State::Closed {
            return Ok(());
        }
        if self.model.meets_threshold(now) && self.late_model.meets_threshold(now) {
            return Err(Violation::new(
                TRIPS_WHEN_DUE,
                format!(
                    "the breaker stayed Closed with {} in its window (with late outcomes: {}); \
                     its declared rule says trip: {}",
                    self.model.held(now),
                    self.late_model.held(now),
                    self.model.rule_in_words()
                ),
            ));
        }
        Ok(())
    }

    /// An attempt in flight was cancelled by its caller at `now`.
    pub fn on_cancel_in_flight(&mut self, now: SimTime) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.counts.released += 1;
        self.inconclusive.push(now);
        self.give_back(now);
    }

    /// A cancellation or an ignored outcome (of any attempt) at `now`: in half-open, a
    /// permit a counter may give back.
    fn give_back(&mut self, now: SimTime) {
        if self.state == State::HalfOpen {
            self.episode_given_back += 1;
            self.given_back.push(now);
        }
    }

    /// Invariant 5, when a caller gets an answer after `latency`.
    pub fn on_answer(
        &mut self,
        now: SimTime,
        latency: SimDuration,
        answer: Answer,
    ) -> Result<(), Violation> {
        self.answer_latency_max = self.answer_latency_max.max(latency);
        self.answers.push((now, latency));
        let limit = self.timeout + SimDuration::from_millis(1);
        if latency > limit {
            return Err(Violation::new(
                RESPONSIVENESS,
                format!(
                    "a caller waited {latency} for an answer ({answer:?}); the answer deadline is {}",
                    self.timeout
                ),
            ));
        }
        if let Answer::Failed(Why::Rejected { retry_after })
        | Answer::Fallback(Why::Rejected { retry_after }) = answer
            && retry_after.is_zero()
        {
            return Err(Violation::new(
                RESPONSIVENESS,
                "a caller was told the API is unavailable with retry_after = 0",
            ));
        }
        Ok(())
    }

    /// An outage of the API started now: snapshot for invariant 4.
    pub fn on_outage_start(&mut self, now: SimTime) {
        self.outage_starts.push(OutageStart {
            at: now,
            state: self.state,
            model: self.model.clone(),
            in_flight: self.in_flight,
        });
    }

    /// The faults healed now.
    pub fn on_heal(&mut self, now: SimTime) {
        self.healed_at = Some(now);
        self.state_at_heal = Some(self.state);
        if self.state == State::Closed {
            self.closed_after_heal = Some(now);
        }
    }

    /// The state the breaker was in (as its transitions say) when the faults healed;
    /// `None` before they did.
    pub fn state_at_heal(&self) -> Option<State> {
        self.state_at_heal
    }

    /// How long after the faults healed the breaker was Closed again, when it had to
    /// recover: `None` when it was already Closed as they healed (there was nothing to
    /// close: no outage tripped it, or it closed again before), when it never closed,
    /// or before the faults healed.
    pub fn time_to_close(&self) -> Option<SimDuration> {
        let healed = self.healed_at?;
        if self.state_at_heal? == State::Closed {
            return None;
        }
        Some(self.closed_after_heal? - healed)
    }

    /// The latest time by which the breaker must be Closed after the faults healed.
    pub fn close_deadline(&self) -> Option<SimTime> {
        let healed = self.healed_at?;
        let wait_max =
            SimDuration::from_nanos(crate::clock::saturating_nanos(self.policy.wait_in_open_max));
        let probes = self
            .liveness_interarrival
            .saturating_mul(u64::from(self.policy.half_open_calls_permitted) + 1);
        let episode = wait_max + self.timeout + probes;
        Some(healed + self.timeout + episode + episode + SimDuration::from_secs(2))
    }

    /// Invariant 6, asked during the liveness phase.
    pub fn check_recovery(&self, now: SimTime) -> Result<(), Violation> {
        if let Some(deadline) = self.close_deadline()
            && now > deadline
            && self.state != State::Closed
        {
            return Err(Violation::new(
                CLOSES_AFTER_RECOVERY,
                format!(
                    "the API recovered at {} but the breaker is still {} at {now} (deadline {deadline})",
                    self.healed_at.unwrap_or(SimTime::ZERO),
                    self.state
                ),
            ));
        }
        Ok(())
    }

    /// The figures of invariant 4 over the outages `windows` (merged, clipped): the
    /// calls that reached the API in each and its bound, kept in
    /// [`outage_loads`](Self::outage_loads) (replacing any before). At rest the windows
    /// are the plan's outages cut at the horizon; for a run stopped early, cut at the
    /// stop (the calls and the bound of the part that happened).
    pub fn measure_load(&mut self, windows: &[(SimTime, SimTime)]) {
        self.outage_loads = windows
            .iter()
            .map(|&(from, until)| self.load_over(from, until).load)
            .collect();
    }

    /// Invariant 4 over the outages `windows` (merged, clipped), at rest: measures every
    /// one ([`measure_load`](Self::measure_load)), then reports the first over its
    /// bound.
    pub fn check_load(&mut self, windows: &[(SimTime, SimTime)]) -> Result<(), Violation> {
        let parts: Vec<LoadParts> = windows
            .iter()
            .map(|&(from, until)| self.load_over(from, until))
            .collect();
        self.outage_loads = parts.iter().map(|l| l.load.clone()).collect();
        for (l, &(from, until)) in parts.iter().zip(windows) {
            if l.load.calls > l.load.bound {
                return Err(Violation::new(
                    LOAD_BOUND,
                    format!(
                        "{} calls reached the API during the outage [{from}, {until}); the bound is {} \
                         ({} to trip + {} held back by {} late successes \
                         + {} as the time window forgets + {} in flight \
                         + {} half-open episodes x {} probes \
                         + {} given back by probes cancelled or ignored{})",
                        l.load.calls,
                        l.load.bound,
                        l.closed_part,
                        l.held_back,
                        l.late_successes,
                        l.forgetting,
                        self.bulkhead_max,
                        l.episodes,
                        l.permitted,
                        l.given_back,
                        if l.reclosed > 0 {
                            format!(" + {} re-closings", l.reclosed)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The calls that reached the API during the outage `[from, until)` and the bound
    /// invariant 4 sets them, with the parts of the bound.
    fn load_over(&self, from: SimTime, until: SimTime) -> LoadParts {
        let permitted = u64::from(self.policy.half_open_calls_permitted);
        let wait_min = self.policy.wait_in_open_min.as_nanos().max(1);
        let fresh = TripModel::new(self.policy.trip);
        let in_window = |t: &SimTime| *t >= from && *t < until;
        let seen = |times: &[SimTime]| times.iter().filter(|t| in_window(t)).count() as u64;
        let calls = seen(&self.sends);
        let start = self.outage_starts.iter().find(|s| s.at == from);
        let closed_part = match start {
            Some(s) if s.state == State::Closed => s
                .model
                .worst_case_for_outage()
                .calls_to_trip(from, s.in_flight),
            Some(_) => 0,
            None => fresh.calls_to_trip(from, self.bulkhead_max),
        };
        // The guard's word on re-closings and fresh half-open episodes counts only
        // as far as the world's facts justify it: a closing by a success or (its
        // other probes having succeeded) a probe cancelled or ignored in the same
        // half-open episode, a fresh episode by a probe cancelled or ignored. The
        // world sees a transition when it next polls the guard, so the probe that
        // decided a closing may have settled before the outage began: the facts
        // are looked for from the start of the closing's episode, not of the window.
        let justified = |closed_at: SimTime| {
            let episode_start = self
                .transitions
                .iter()
                .filter(|(t, _, to)| *t <= closed_at && *to == State::HalfOpen)
                .map(|(t, _, _)| *t)
                .next_back()
                .unwrap_or(SimTime::ZERO);
            self.successes
                .iter()
                .chain(&self.inconclusive)
                .any(|t| *t >= episode_start && *t <= closed_at)
        };
        let reclosed = self
            .transitions
            .iter()
            .filter(|(t, _, to)| in_window(t) && *to == State::Closed && justified(*t))
            .count() as u64;
        let restarts = (self
            .transitions
            .iter()
            .filter(|(t, f, to)| in_window(t) && *f == State::HalfOpen && *to == State::HalfOpen)
            .count() as u64)
            .min(seen(&self.inconclusive));
        let length = (until - from).as_nanos() as u128;
        let episodes = (length.div_ceil(wait_min) as u64)
            .saturating_add(1)
            .saturating_add(restarts);
        let fresh_trip = fresh.calls_to_trip(from, 0);
        // A half-open counter takes back the permit of a probe cancelled or ignored and
        // lets one more probe through for it.
        let given_back = seen(&self.given_back);
        // Calls sent before the outage may still succeed during it. Each such success
        // sits in the window and holds a trip back.
        let late_successes = seen(&self.closed_successes);
        let held_back = late_successes.saturating_mul(fresh.held_back_per_success());
        // A time window forgets: each window's worth of seconds may take up to the
        // minimum number of calls without tripping (fewer calls than that never
        // trip it, whatever they say), in every Closed stretch of the outage.
        let forgetting = match fresh.forgetting() {
            Some((size, minimum)) => {
                let closed_stretches = reclosed + u64::from(closed_part > 0);
                (length.div_ceil(size) as u64)
                    .saturating_mul(minimum)
                    .saturating_mul(closed_stretches)
            }
            None => 0,
        };
        let bound = closed_part
            .saturating_add(held_back)
            .saturating_add(forgetting)
            .saturating_add(self.bulkhead_max)
            .saturating_add(reclosed.saturating_mul(fresh_trip.saturating_add(self.bulkhead_max)))
            .saturating_add(episodes.saturating_mul(permitted))
            .saturating_add(given_back);
        LoadParts {
            load: OutageLoad {
                from_ms: from.as_millis(),
                until_ms: until.as_millis(),
                calls,
                bound,
            },
            closed_part,
            held_back,
            late_successes,
            forgetting,
            episodes,
            permitted,
            given_back,
            reclosed,
        }
    }

    /// Worst calls/bound ratio over the outages, as (calls, bound).
    pub fn worst_load(&self) -> Option<(u64, u64)> {
        self.outage_loads
            .iter()
            .filter(|l| l.bound > 0)
            .max_by(|a, b| (a.calls * b.bound).cmp(&(b.calls * a.bound)))
            .map(|l| (l.calls, l.bound))
    }

    /// Invariant 7, at rest: the guard's counts against the world's.
    pub fn check_accounting(&self, guard: GuardMetrics) -> Result<(), Violation> {
        let w = self.counts;
        if guard != w {
            return Err(Violation::new(
                ACCOUNTING,
                format!(
                    "the guard counts {guard:?} but the world saw {w:?} \
                     (admitted = succeeded + failed + ignored + released must match call for call)"
                ),
            ));
        }
        let settled = w.succeeded + w.failed + w.ignored + w.released;
        if w.admitted != settled {
            return Err(Violation::new(
                ACCOUNTING,
                format!("{} calls admitted but {settled} settled", w.admitted),
            ));
        }
        Ok(())
    }
}
