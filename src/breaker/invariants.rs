//! The breaker's promises, checked by the SMS world over a run. Each is a named
//! function of the checker with a message in words:
//!
//! 1. `breaker.no_call_while_open`: no call reaches the API while the breaker is Open
//!    or ForcedOpen.
//! 2. `breaker.half_open_limit`: per half-open episode, calls admitted ≤ permitted calls
//!    in half-open.
//! 3. `breaker.trip_soundness`: Closed → Open only when at least the minimum number of
//!    calls were recorded and the failure or slow-call rate met its threshold, counted
//!    by the world's own model of the sliding window; ignored outcomes change no count.
//! 4. `breaker.load_bound`: over any outage of length T, calls reaching the API ≤ calls
//!    needed to trip from the window as it stood + in-flight calls (at most the
//!    bulkhead) + (⌈T / shortest wait in open⌉ + 1) × permitted calls in half-open;
//!    with a time window of S seconds, + ⌈T / S⌉ × minimum calls (a window that
//!    forgets may take that many calls per window without tripping). Retries take
//!    breaker permits like any call, so the budget only lowers this.
//! 5. `breaker.responsiveness`: every caller gets an answer (delivered, fallback, or
//!    unavailable with a positive `retry_after`) within the request timeout + 1 ms; at
//!    rest no request is left unanswered.
//! 6. `breaker.closes_after_recovery`: once the API has recovered, the breaker is
//!    Closed again within the waits in open and the probes' time.
//! 7. `breaker.accounting`: admitted = succeeded + failed (errors and timeouts) +
//!    ignored + released, each equal to the world's own count; transitions form a
//!    valid path.

use crate::breaker::circuit::{BreakerConfig, CallOutcome, SlidingWindow, State};
use crate::breaker::contract::{Answer, GuardMetrics, Transition, Why};
use faultline_sim::{SimDuration, SimTime, Violation};
use serde::Serialize;

/// Names of the invariants, in order.
pub const INVARIANTS: [&str; 7] = [
    NO_CALL_WHILE_OPEN,
    HALF_OPEN_LIMIT,
    TRIP_SOUNDNESS,
    LOAD_BOUND,
    RESPONSIVENESS,
    CLOSES_AFTER_RECOVERY,
    ACCOUNTING,
];

/// The invariant `breaker.no_call_while_open` (see the list above).
pub const NO_CALL_WHILE_OPEN: &str = "breaker.no_call_while_open";
/// The invariant `breaker.half_open_limit` (see the list above).
pub const HALF_OPEN_LIMIT: &str = "breaker.half_open_limit";
/// The invariant `breaker.trip_soundness` (see the list above).
pub const TRIP_SOUNDNESS: &str = "breaker.trip_soundness";
/// The invariant `breaker.load_bound` (see the list above).
pub const LOAD_BOUND: &str = "breaker.load_bound";
/// The invariant `breaker.responsiveness` (see the list above).
pub const RESPONSIVENESS: &str = "breaker.responsiveness";
/// The invariant `breaker.closes_after_recovery` (see the list above).
pub const CLOSES_AFTER_RECOVERY: &str = "breaker.closes_after_recovery";
/// The invariant `breaker.accounting` (see the list above).
pub const ACCOUNTING: &str = "breaker.accounting";

/// The world's own model of the breaker's sliding window: the outcomes the breaker
/// should have recorded in the current Closed episode.
#[derive(Clone, Debug)]
pub struct WindowModel {
    kind: SlidingWindow,
    /// (second of completion, failed, slow), oldest first.
    entries: Vec<(u64, bool, bool)>,
}

impl WindowModel {
    fn new(kind: SlidingWindow) -> Self {
        WindowModel {
            kind,
            entries: Vec::new(),
        }
    }

    fn record(&mut self, now: SimTime, failed: bool, slow: bool) {
        self.entries
            .push((now.as_nanos() / 1_000_000_000, failed, slow));
        if let SlidingWindow::Count { size } = self.kind
            && self.entries.len() > size as usize
        {
            let extra = self.entries.len() - size as usize;
            self.entries.drain(..extra);
        }
    }

    /// (calls, failed, slow) in the window as of `now`.
    fn counts(&self, now: SimTime) -> (u64, u64, u64) {
        let sec = now.as_nanos() / 1_000_000_000;
        let live = |s: u64| match self.kind {
            SlidingWindow::Count { .. } => true,
            SlidingWindow::Time { size_secs } => s + u64::from(size_secs) > sec,
        };
        self.entries
            .iter()
            .filter(|(s, _, _)| live(*s))
            .fold((0, 0, 0), |(c, f, sl), (_, fa, slo)| {
                (c + 1, f + *fa as u64, sl + *slo as u64)
            })
    }

    /// The window as an outage could at worst find it: in a time window the failures
    /// already there may leave before the successes do (making a trip need more calls),
    /// so they are dropped and the successes counted as fast; a count window forgets in
    /// order, so it stays as it is.
    fn worst_case_for_outage(&self) -> WindowModel {
        match self.kind {
            SlidingWindow::Count { .. } => self.clone(),
            SlidingWindow::Time { .. } => WindowModel {
                kind: self.kind,
                entries: self
                    .entries
                    .iter()
                    .filter(|(_, failed, _)| !failed)
                    .map(|(s, _, _)| (*s, false, false))
                    .collect(),
            },
        }
    }

    fn meets_threshold(&self, now: SimTime, config: &BreakerConfig) -> bool {
        let (calls, failed, slow) = self.counts(now);
        calls >= u64::from(config.minimum_calls())
            && calls > 0
            && (failed * 100 >= u64::from(config.failure_rate_threshold_percent()) * calls
                || slow * 100 >= u64::from(config.slow_call_rate_threshold_percent()) * calls)
    }

    /// Failures that must still be recorded, at `now`, after `successes` more successes,
    /// before the threshold is met (capped).
    fn calls_to_trip(&self, now: SimTime, successes: u64, config: &BreakerConfig) -> u64 {
        const CAP: u64 = 1_000_000;
        let mut m = self.clone();
        for _ in 0..successes {
            m.record(now, false, false);
        }
        let mut n = 0;
        while !m.meets_threshold(now, config) && n < CAP {
            m.record(now, true, false);
            n += 1;
            if let SlidingWindow::Count { size } = m.kind
                && n > u64::from(size) + successes
            {
                break;
            }
        }
        n
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

/// Snapshot taken when an outage starts.
#[derive(Clone, Debug)]
struct OutageStart {
    at: SimTime,
    state: State,
    model: WindowModel,
    in_flight: u64,
}

/// The invariant checker: fed by the world as the run goes, asked at rest.
#[derive(Clone, Debug)]
pub struct BreakerChecker {
    config: BreakerConfig,
    timeout: SimDuration,
    bulkhead_max: u64,
    liveness_interarrival: SimDuration,
    /// State as seen through transitions.
    state: State,
    /// Transitions seen (also the episode number of the current state).
    episode: u64,
    episode_sends: u64,
    model: WindowModel,
    outage_starts: Vec<OutageStart>,
    /// All transitions: (time, from, to).
    pub transitions: Vec<(SimTime, State, State)>,
    /// Times at which calls reached the API.
    pub sends: Vec<SimTime>,
    /// Times at which successes entered the Closed window (the outage's late successes
    /// among them: each holds a trip back).
    closed_successes: Vec<SimTime>,
    /// World counts for accounting.
    pub counts: GuardMetrics,
    /// Attempts in flight now.
    pub in_flight: u64,
    healed_at: Option<SimTime>,
    /// When the breaker was first Closed after the faults healed.
    pub closed_after_heal: Option<SimTime>,
    /// Longest answer latency seen.
    pub answer_latency_max: SimDuration,
    /// Every answer: when, and how long the caller waited.
    pub answers: Vec<(SimTime, SimDuration)>,
    /// Per-outage load figures, filled at rest.
    pub outage_loads: Vec<OutageLoad>,
}

impl BreakerChecker {
    /// A checker for a guard with these settings.
    pub fn new(
        config: BreakerConfig,
        timeout: SimDuration,
        bulkhead_max: u32,
        liveness_interarrival: SimDuration,
    ) -> Self {
        BreakerChecker {
            model: WindowModel::new(config.window()),
            config,
            timeout,
            bulkhead_max: u64::from(bulkhead_max),
            liveness_interarrival,
            state: State::Closed,
            episode: 0,
            episode_sends: 0,
            outage_starts: Vec::new(),
            transitions: Vec::new(),
            sends: Vec::new(),
            closed_successes: Vec::new(),
            counts: GuardMetrics::default(),
            in_flight: 0,
            healed_at: None,
            closed_after_heal: None,
            answer_latency_max: SimDuration::ZERO,
            answers: Vec::new(),
            outage_loads: Vec::new(),
        }
    }

    /// The state as seen through transitions.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current episode number (transitions seen so far).
    pub fn episode(&self) -> u64 {
        self.episode
    }

    /// Invariant 7 (path) and 3 (soundness), on each transition.
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
        if t.to == State::Closed {
            self.model = WindowModel::new(self.config.window());
            if self.healed_at.is_some() && self.closed_after_heal.is_none() {
                self.closed_after_heal = Some(now);
            }
        }
        self.state = t.to;
        self.episode += 1;
        self.episode_sends = 0;
        self.transitions.push((now, t.from, t.to));
        Ok(())
    }

    /// Invariant 3.
    fn trip_soundness(&self, now: SimTime) -> Result<(), Violation> {
        if self.model.meets_threshold(now, &self.config) {
            return Ok(());
        }
        let (calls, failed, slow) = self.model.counts(now);
        Err(Violation::new(
            TRIP_SOUNDNESS,
            format!(
                "the breaker opened with {calls} calls in its window ({failed} failed, {slow} slow); \
                 it needs at least {} calls and a failure rate of {} % or a slow-call rate of {} % \
                 (ignored outcomes must not count)",
                self.config.minimum_calls(),
                self.config.failure_rate_threshold_percent(),
                self.config.slow_call_rate_threshold_percent()
            ),
        ))
    }

    /// Invariants 1 and 2, when a call reaches the API.
    pub fn on_send(&mut self, now: SimTime, state: State) -> Result<(), Violation> {
        self.sends.push(now);
        self.counts.admitted += 1;
        self.in_flight += 1;
        if state.rejects_all() {
            return Err(Violation::new(
                NO_CALL_WHILE_OPEN,
                format!("a call reached the API while the breaker was {state}"),
            ));
        }
        if state == State::HalfOpen {
            self.episode_sends += 1;
            let permitted = u64::from(self.config.half_open_calls_permitted());
            if self.episode_sends > permitted {
                return Err(Violation::new(
                    HALF_OPEN_LIMIT,
                    format!(
                        "{} calls reached the API in one half-open episode; at most {permitted} are permitted",
                        self.episode_sends
                    ),
                ));
            }
        }
        Ok(())
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
            CallOutcome::Success => self.counts.succeeded += 1,
            CallOutcome::Failure => self.counts.failed += 1,
            CallOutcome::Ignored => self.counts.ignored += 1,
        }
        if outcome == CallOutcome::Ignored
            || sent_episode != self.episode
            || self.state != State::Closed
        {
            return;
        }
        let slow_nanos =
            u64::try_from(self.config.slow_call_duration().as_nanos()).unwrap_or(u64::MAX);
        let slow = now - sent_at >= SimDuration::from_nanos(slow_nanos);
        if outcome == CallOutcome::Success {
            self.closed_successes.push(now);
        }
        self.model
            .record(now, outcome == CallOutcome::Failure, slow);
    }

    /// An attempt in flight was cancelled by its caller.
    pub fn on_cancel_in_flight(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.counts.released += 1;
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
                    "a caller waited {latency} for an answer ({answer:?}); the timeout is {}",
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
        if self.state == State::Closed {
            self.closed_after_heal = Some(now);
        }
    }

    /// The latest time by which the breaker must be Closed after the faults healed.
    pub fn close_deadline(&self) -> Option<SimTime> {
        let healed = self.healed_at?;
        let wait_max = SimDuration::from_nanos(crate::clock::saturating_nanos(
            self.config.wait_in_open().ceiling(u32::MAX),
        ));
        let probes = self
            .liveness_interarrival
            .saturating_mul(u64::from(self.config.half_open_calls_permitted()) + 1);
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

    /// Invariant 4 over the outages `windows` (merged, clipped), at rest.
    pub fn check_load(&mut self, windows: &[(SimTime, SimTime)]) -> Result<(), Violation> {
        let permitted = u64::from(self.config.half_open_calls_permitted());
        let wait_min = self.config.wait_in_open().min_wait().as_nanos().max(1);
        let fresh = WindowModel::new(self.config.window());
        for &(from, until) in windows {
            let calls = self
                .sends
                .iter()
                .filter(|t| **t >= from && **t < until)
                .count() as u64;
            let start = self.outage_starts.iter().find(|s| s.at == from);
            let closed_part = match start {
                Some(s) if s.state == State::Closed => s
                    .model
                    .worst_case_for_outage()
                    .calls_to_trip(from, s.in_flight, &self.config),
                Some(_) => 0,
                None => fresh.calls_to_trip(from, self.bulkhead_max, &self.config),
            };
            let in_window = |t: &SimTime| *t >= from && *t < until;
            let reclosed = self
                .transitions
                .iter()
                .filter(|(t, _, to)| in_window(t) && *to == State::Closed)
                .count() as u64;
            let restarts = self
                .transitions
                .iter()
                .filter(|(t, f, to)| {
                    in_window(t) && *f == State::HalfOpen && *to == State::HalfOpen
                })
                .count() as u64;
            let length = (until - from).as_nanos() as u128;
            let episodes = length.div_ceil(wait_min) as u64 + 1 + restarts;
            let fresh_trip = fresh.calls_to_trip(from, 0, &self.config);
            // Calls sent before the outage may still succeed during it. Each such success
            // sits in the window and holds a trip back: in a count window until `size`
            // more calls push it out; in a time window until enough failures outweigh it.
            let late_successes = self
                .closed_successes
                .iter()
                .filter(|t| in_window(t))
                .count() as u64;
            let threshold = u64::from(self.config.failure_rate_threshold_percent());
            let per_success = match self.config.window() {
                SlidingWindow::Count { size } => u64::from(size),
                SlidingWindow::Time { .. } if threshold < 100 => {
                    threshold.div_ceil(100 - threshold) + 1
                }
                SlidingWindow::Time { .. } => u64::from(self.config.minimum_calls()),
            };
            let held_back = late_successes * per_success;
            // A time window forgets: each window's worth of seconds may take up to the
            // minimum number of calls without tripping (fewer calls than that never
            // trip it, whatever they say), in every Closed stretch of the outage.
            let forgetting = match self.config.window() {
                SlidingWindow::Time { size_secs } => {
                    let size = u128::from(size_secs) * 1_000_000_000;
                    let closed_stretches = reclosed + u64::from(closed_part > 0);
                    length.div_ceil(size) as u64
                        * u64::from(self.config.minimum_calls())
                        * closed_stretches
                }
                SlidingWindow::Count { .. } => 0,
            };
            let bound = closed_part
                + held_back
                + forgetting
                + self.bulkhead_max
                + reclosed * (fresh_trip + self.bulkhead_max)
                + episodes * permitted;
            self.outage_loads.push(OutageLoad {
                from_ms: from.as_millis(),
                until_ms: until.as_millis(),
                calls,
                bound,
            });
            if calls > bound {
                return Err(Violation::new(
                    LOAD_BOUND,
                    format!(
                        "{calls} calls reached the API during the outage [{from}, {until}); the bound is {bound} \
                         ({closed_part} to trip + {held_back} held back by {late_successes} late successes \
                         + {forgetting} as the time window forgets + {} in flight \
                         + {episodes} half-open episodes x {permitted} probes{})",
                        self.bulkhead_max,
                        if reclosed > 0 {
                            format!(" + {reclosed} re-closings")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        Ok(())
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
