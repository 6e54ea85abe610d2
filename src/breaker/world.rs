//! The simulated SMS gateway: callers arrive (steady, in bursts, in a spike, and now and
//! then in a cluster under a millisecond apart, where a guard that races with itself
//! shows it), each call goes through a [`CallGuard`] to a simulated SMS API whose latency and errors follow
//! the fault plan (outages, slowness, error bursts, flapping), and the
//! [`BreakerChecker`] checks every promise as the run goes.
//!
//! One seed expands into every knob ([`SmsKnobs::from_seed`]) and into the fault plan
//! ([`SmsKnobs::fault_plan`]); [`run`] ties them together.

use crate::breaker::circuit::{BreakerConfig, CallOutcome, SlidingWindow, State};
use crate::breaker::contract::{Answer, ApiError, ApiReply, CallGuard, Policy, Step, Why};
use crate::breaker::guard::{Guard, GuardConfig, classify};
use crate::breaker::invariants;
use crate::breaker::invariants::{BreakerChecker, BudgetLedger, RetryRule};
use crate::breaker::timeout::TimeoutPolicy;
use crate::clock::Instant;
use crate::config::ConfigError;
use crate::retry::{Backoff, RetryPolicy};
use faultline_sim::prelude::*;
use faultline_sim::{FaultKindTag, FaultView, TraceMode};
use serde::Serialize;
use std::time::Duration;

/// The API's name in fault plans.
pub const API: &str = "sms_api";

/// Coverage marks of the SMS world.
pub const MARKS: &[&str] = &[
    "breaker.closed_to_open",
    "breaker.open_to_half_open",
    "breaker.half_open_to_closed",
    "breaker.half_open_to_open",
    "breaker.half_open_given_back",
    "breaker.rejected",
    "retry.scheduled",
    "retry.budget_exhausted",
    "bulkhead.rejected",
    "fallback.used",
    "timeout.fired",
    "client.cancelled",
    "client.cancelled_probe",
    "api.outage",
    "api.slow",
    "api.error",
    "api.invalid_number",
    "breaker.burst",
    "breaker.burst_half_open",
];

/// Every knob of one SMS scenario. All derive from one seed; all are printed before a
/// run so a log line is enough to reproduce it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SmsKnobs {
    /// The seed they came from.
    pub seed: u64,
    /// End of the safety phase, ms.
    pub horizon_ms: u64,
    /// Steady arrivals per second.
    pub steady_per_sec: u32,
    /// Bursts: every `period_ms`, `on_ms` of `per_sec` extra arrivals.
    pub burst: Option<(u64, u64, u32)>,
    /// A spike: `[from_ms, until_ms)` at `per_sec` extra arrivals.
    pub spike: Option<(u64, u64, u32)>,
    /// Healthy API latency range, ms.
    pub latency_ms: (u64, u64),
    /// Share of requests with an invalid number (the API rejects them: ignored).
    pub invalid_number_percent: u32,
    /// Share of callers who give up before their answer.
    pub cancel_percent: u32,
    /// Arrival interval while the run settles after the faults, ms.
    pub liveness_interarrival_ms: u64,
    /// Breaker: `(count, size)` with count true for a count window, false for seconds.
    pub window: (bool, u32),
    /// Breaker: minimum calls.
    pub minimum_calls: u32,
    /// Breaker: failure-rate threshold, percent.
    pub failure_rate_threshold_percent: u32,
    /// Breaker: slow-call-rate threshold, percent.
    pub slow_call_rate_threshold_percent: u32,
    /// Breaker: slow-call duration, ms.
    pub slow_call_ms: u64,
    /// Breaker: wait in open `(initial_ms, multiplier, max_ms, jitter_percent)`; a
    /// multiplier of 0 means a fixed wait of `initial_ms`.
    pub wait_in_open: (u64, u32, u64, u32),
    /// Breaker: probe calls per half-open episode.
    pub half_open_calls_permitted: u32,
    /// Breaker: longest half-open episode, ms (0: no limit).
    pub half_open_wait_max_ms: u64,
    /// Request deadline, ms.
    pub timeout_ms: u64,
    /// Per-attempt timeout, ms.
    pub attempt_timeout_ms: Option<u64>,
    /// Attempts per request, the first included.
    pub attempts_max: u32,
    /// Backoff `(base_ms, cap_ms)`.
    pub backoff_ms: (u64, u64),
    /// Retry budget `(ttl_secs, min_per_sec, retry_percent)`.
    pub budget: Option<(u64, u32, u32)>,
    /// Bulkhead: most requests in progress.
    pub bulkhead_max: u32,
    /// Answer with a fallback instead of an error.
    pub fallback: bool,
    /// Share of arrivals (steady, burst or spike) that bring a cluster of callers
    /// under a millisecond apart, percent (not the on/off `burst` stream above).
    pub burst_percent: u32,
    /// Most callers in a cluster (after the one that brings it).
    pub burst_len_max: u32,
    /// Longest spacing between two callers of a cluster, µs (under a millisecond).
    pub burst_gap_us_max: u64,
}

impl SmsKnobs {
    /// Expands `seed` into every knob.
    pub fn from_seed(seed: u64) -> SmsKnobs {
        let mut r = SimRng::new(seed).fork("sms.knobs");
        let coin = |r: &mut SimRng| r.below(2) == 1;
        let latency_min = r.between(2, 20);
        let latency_max = latency_min + r.between(0, 80);
        let count = coin(&mut r);
        let size = if count {
            r.between(5, 50) as u32
        } else {
            r.between(1, 10) as u32
        };
        let minimum_calls = if count {
            r.between(3, u64::from(size)) as u32
        } else {
            r.between(3, 30) as u32
        };
        let initial = r.between(200, 2_000);
        let wait_in_open = if coin(&mut r) {
            (initial, 0, initial, 0)
        } else {
            let multiplier = r.between(2, 3) as u32;
            (
                initial,
                multiplier,
                initial * r.between(1, 8),
                r.between(0, 50) as u32,
            )
        };
        let timeout_ms = r.between(300, 3_000);
        let attempt_timeout_ms =
            coin(&mut r).then(|| r.between(latency_max + 50, timeout_ms.max(latency_max + 50)));
        let backoff_base = r.between(10, 200);
        // Drawn from their own stream, so every knob above and below keeps its value.
        let mut b = SimRng::new(seed).fork("sms.bursts");
        SmsKnobs {
            seed,
            horizon_ms: 30_000,
            steady_per_sec: r.between(5, 50) as u32,
            burst: coin(&mut r).then(|| {
                (
                    r.between(2_000, 10_000),
                    r.between(200, 2_000),
                    r.between(50, 300) as u32,
                )
            }),
            spike: coin(&mut r).then(|| {
                let from = r.between(0, 25_000);
                (
                    from,
                    from + r.between(1_000, 5_000),
                    r.between(200, 800) as u32,
                )
            }),
            latency_ms: (latency_min, latency_max),
            invalid_number_percent: r.between(0, 30) as u32,
            cancel_percent: r.between(0, 15) as u32,
            liveness_interarrival_ms: 20,
            window: (count, size),
            minimum_calls,
            failure_rate_threshold_percent: r.between(25, 90) as u32,
            slow_call_rate_threshold_percent: r.between(30, 100) as u32,
            slow_call_ms: r.between(200, 2_000),
            wait_in_open,
            half_open_calls_permitted: r.between(1, 10) as u32,
            half_open_wait_max_ms: if coin(&mut r) {
                0
            } else {
                r.between(500, 5_000)
            },
            timeout_ms,
            attempt_timeout_ms,
            attempts_max: r.between(1, 4) as u32,
            backoff_ms: (backoff_base, backoff_base * r.between(1, 10)),
            budget: (r.below(10) < 7).then(|| {
                (
                    r.between(1, 10),
                    r.between(0, 10) as u32,
                    r.between(10, 50) as u32,
                )
            }),
            bulkhead_max: r.between(5, 100) as u32,
            fallback: coin(&mut r),
            burst_percent: b.between(1, 10) as u32,
            burst_len_max: b.between(1, 8) as u32,
            burst_gap_us_max: b.between(50, 900),
        }
    }

    /// The fault plans this world understands: outages, slowness and error bursts of the
    /// API (flapping is many short outages), over the knobs' horizon.
    pub fn fault_profile(&self) -> FaultProfile {
        FaultProfile::new(self.horizon_ms)
            .target(API)
            .kinds([
                FaultKindTag::Outage,
                FaultKindTag::Slow,
                FaultKindTag::Errors,
            ])
            .faults(1, 8)
            .duration_ms(200, 10_000)
            .latency_ms_max(5_000)
    }

    /// The fault plan this seed generates (swarm testing).
    pub fn fault_plan(&self) -> FaultPlan {
        FaultPlan::generate(
            &mut SimRng::new(self.seed).fork("sms.plan"),
            &self.fault_profile(),
        )
    }

    /// The breaker configuration.
    pub fn breaker_config(&self) -> Result<BreakerConfig, ConfigError> {
        let mut b = BreakerConfig::builder()
            .minimum_calls(self.minimum_calls)
            .failure_rate_threshold_percent(self.failure_rate_threshold_percent)
            .slow_call_rate_threshold_percent(self.slow_call_rate_threshold_percent)
            .slow_call_duration(Duration::from_millis(self.slow_call_ms))
            .half_open_calls_permitted(self.half_open_calls_permitted)
            .half_open_wait_max(Duration::from_millis(self.half_open_wait_max_ms));
        b = if self.window.0 {
            b.count_window(self.window.1)
        } else {
            b.time_window(self.window.1)
        };
        let (initial, multiplier, max, jitter) = self.wait_in_open;
        b = if multiplier == 0 {
            b.wait_in_open(Duration::from_millis(initial))
        } else {
            b.wait_in_open_exponential(
                Duration::from_millis(initial),
                multiplier,
                Duration::from_millis(max),
                jitter,
            )
        };
        b.build()
    }

    /// The reference guard's configuration.
    pub fn guard_config(&self) -> Result<GuardConfig, ConfigError> {
        let mut c = GuardConfig::new(
            self.breaker_config()?,
            TimeoutPolicy::new(Duration::from_millis(self.timeout_ms))?,
        );
        c.attempt_timeout = self.attempt_timeout_ms.map(Duration::from_millis);
        c.retry = RetryPolicy::new(
            self.attempts_max,
            Backoff::new(
                Duration::from_millis(self.backoff_ms.0),
                Duration::from_millis(self.backoff_ms.1),
            )?,
        )?;
        c.budget = self
            .budget
            .map(|(ttl, min, pct)| (Duration::from_secs(ttl), min, pct));
        c.bulkhead_max = self.bulkhead_max;
        c.fallback = self.fallback;
        c.classifier = classify;
        Ok(c)
    }

    /// The policy the reference guard for these knobs declares: what
    /// [`breaker.conformance`](invariants::CONFORMANCE) compares a declaration with.
    pub fn reference_policy(&self) -> Result<Policy, ConfigError> {
        Ok(Policy::of_breaker(
            &self.breaker_config()?,
            Duration::from_millis(self.timeout_ms),
            self.bulkhead_max,
        ))
    }

    /// When the next caller of `source` arrives after one at `now`, its gap drawn from
    /// `rng` (`None`: that stream has no more callers): the one arrival process of both
    /// SMS worlds, the sans-IO one and the hosted one.
    pub(crate) fn next_arrival(
        &self,
        source: Source,
        now: SimTime,
        rng: &mut SimRng,
    ) -> Option<SimTime> {
        let mut gap = |per_sec: u32| {
            let mean = 1_000_000_000 / u64::from(per_sec.max(1));
            SimDuration::from_nanos(rng.between(mean / 2, mean + mean / 2))
        };
        match source {
            Source::Steady => Some(now + gap(self.steady_per_sec)),
            Source::Burst => self.burst.map(|(period, on, per_sec)| {
                let t = now + gap(per_sec);
                let phase = t.as_millis() % period;
                if phase < on {
                    t
                } else {
                    SimTime::from_millis(t.as_millis() - phase + period)
                }
            }),
            Source::Spike => self.spike.and_then(|(from, until, per_sec)| {
                let t = (now + gap(per_sec)).max(SimTime::from_millis(from));
                (t.as_millis() < until).then_some(t)
            }),
            Source::Liveness => Some(now + SimDuration::from_millis(self.liveness_interarrival_ms)),
        }
    }

    /// The gap before the next caller of a cluster (under a millisecond), from `rng`.
    pub(crate) fn cluster_gap(&self, rng: &mut SimRng) -> SimDuration {
        SimDuration::from_nanos(rng.between(20_000, self.burst_gap_us_max * 1_000))
    }

    /// The reference guard for these knobs, with its own random stream.
    pub fn reference_guard(&self) -> Result<Guard, ConfigError> {
        Guard::new(
            self.guard_config()?,
            SimRng::new(self.seed).fork("sms.guard"),
        )
    }
}

/// Where an arrival comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The steady stream.
    Steady,
    /// A burst stream (on/off).
    Burst,
    /// The spike.
    Spike,
    /// The slow stream that probes the API after the faults heal.
    Liveness,
}

/// The SMS world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsEvent {
    /// A caller arrives.
    Arrive(Source),
    /// The API's reply to attempt `attempt` of request `req`.
    Reply {
        /// Request index.
        req: u32,
        /// Attempt number.
        attempt: u32,
        /// What the API said.
        reply: ApiReply,
    },
    /// The timeout of attempt `attempt` of request `req`.
    Timeout {
        /// Request index.
        req: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// A retry wait of request `req` is over.
    RetryDue {
        /// Request index.
        req: u32,
        /// Attempt number it follows.
        attempt: u32,
    },
    /// The caller of request `req` gives up.
    Cancel {
        /// Request index.
        req: u32,
    },
    /// The next caller of a cluster arrives (under a millisecond after the one before).
    Cluster {
        /// Callers of the cluster still to come, this one included.
        left: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Awaiting,
    Waiting,
    Done,
}

#[derive(Debug)]
struct Request<T> {
    arrived: SimTime,
    invalid: bool,
    ticket: Option<T>,
    attempt: u32,
    phase: Phase,
    sent_at: SimTime,
    sent_episode: u64,
    /// When its last attempt failed (an API error the reference retries, or a
    /// timeout), if it did.
    failed_at: Option<SimTime>,
}

/// Figures of one run, for reports and sweeps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SmsStats {
    /// Requests that arrived.
    pub requests: u64,
    /// Delivered by the API.
    pub delivered: u64,
    /// Answered by the fallback.
    pub fallbacks: u64,
    /// Answered with an error.
    pub failed: u64,
    /// Told "unavailable, retry after" (with or without fallback).
    pub rejected: u64,
    /// Rejected by the bulkhead.
    pub bulkhead_rejected: u64,
    /// Callers who gave up.
    pub cancelled: u64,
    /// Calls that reached the API.
    pub api_calls: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Worst outage load as (calls, bound): over the plan's outages at rest, over
    /// the outages up to the stop for a run stopped early; `None` without an outage.
    pub worst_load: Option<(u64, u64)>,
    /// Time from healing to Closed, ms, when the breaker was not Closed as the faults
    /// healed (see [`BreakerChecker::time_to_close`]): `None` when there was nothing to
    /// close, when it never closed, or when the run stopped before the faults healed.
    pub time_to_close_ms: Option<u64>,
    /// Longest answer latency, ms (up to the stop for a run stopped early).
    pub answer_latency_ms_max: u64,
}

/// The SMS gateway world, generic over the guard under test.
///
/// The world judges the guard by the [`Policy`] it declares
/// ([`CallGuard::policy`]); [`conforming_to_reference`](SmsWorld::conforming_to_reference)
/// adds the check that the declaration is the reference's exact settings for the knobs.
pub struct SmsWorld<G: CallGuard> {
    knobs: SmsKnobs,
    guard: G,
    /// The policy the guard must declare, when conformance is checked.
    conform_to: Option<Policy>,
    /// The invariant checker (public for reports).
    pub checker: BreakerChecker,
    /// The ledger of the retry budget the guard declares, if it declares one.
    budget: Option<BudgetLedger>,
    /// The rule of the retry policy the guard declares, if it declares one.
    retry: Option<RetryRule>,
    requests: Vec<Request<G::Ticket>>,
    pending: u64,
    /// A liveness-phase arrival is scheduled.
    probing: bool,
    rng_arrivals: SimRng,
    rng_api: SimRng,
    rng_callers: SimRng,
    rng_burst: SimRng,
    /// Figures of the run.
    pub stats: SmsStats,
}

impl<G: CallGuard> SmsWorld<G> {
    /// A world for `knobs` around `guard`, judged by the policy `guard` declares.
    /// The knobs shape the traffic, the API and the callers' own deadline
    /// (`timeout_ms`); the guard's settings are its own.
    pub fn new(knobs: SmsKnobs, guard: G) -> Result<Self, ConfigError> {
        let root = SimRng::new(knobs.seed);
        Ok(SmsWorld {
            checker: BreakerChecker::new(
                guard.policy(),
                SimDuration::from_millis(knobs.timeout_ms),
                SimDuration::from_millis(knobs.liveness_interarrival_ms),
            ),
            budget: guard.retry_budget().as_ref().map(BudgetLedger::new),
            retry: guard
                .retry_policy()
                .map(|retry| RetryRule::new(retry, guard.policy().answer_within)),
            guard,
            conform_to: None,
            requests: Vec::new(),
            pending: 0,
            probing: false,
            rng_arrivals: root.fork("sms.arrivals"),
            rng_api: root.fork("sms.api"),
            rng_callers: root.fork("sms.callers"),
            rng_burst: root.fork("sms.burst"),
            stats: SmsStats::default(),
            knobs,
        })
    }

    /// Also checks [`breaker.conformance`](invariants::CONFORMANCE): the guard's
    /// declared policy must be the reference's for these knobs
    /// ([`SmsKnobs::reference_policy`]). On for the reference and its mutants.
    pub fn conforming_to_reference(mut self) -> Result<Self, ConfigError> {
        self.conform_to = Some(self.knobs.reference_policy()?);
        Ok(self)
    }

    /// The guard under test.
    pub fn guard(&self) -> &G {
        &self.guard
    }

    /// The knobs.
    pub fn knobs(&self) -> &SmsKnobs {
        &self.knobs
    }

    fn schedule_arrival(&mut self, ctx: &mut Ctx<SmsEvent>, source: Source) {
        let now = ctx.now();
        let horizon = ctx.horizon();
        let next = self.knobs.next_arrival(source, now, &mut self.rng_arrivals);
        if let Some(t) = next {
            let keep = match source {
                Source::Liveness => true,
                _ => t < horizon,
            };
            if keep {
                ctx.schedule_at(t, SmsEvent::Arrive(source));
            }
        }
    }

    /// Schedules the next caller of a cluster, under a millisecond from now (none when
    /// `left` is 0 or the safety phase is over).
    fn schedule_cluster(&mut self, ctx: &mut Ctx<SmsEvent>, left: u32) {
        let at = ctx.now() + self.knobs.cluster_gap(&mut self.rng_burst);
        if left > 0 && at < ctx.horizon() {
            ctx.schedule_at(at, SmsEvent::Cluster { left });
        }
    }

    /// A caller arrives now with a request for the guard.
    fn caller(&mut self, ctx: &mut Ctx<SmsEvent>) -> Result<(), Violation> {
        let req = self.requests.len() as u32;
        let invalid = self.rng_callers.below(100) < u64::from(self.knobs.invalid_number_percent);
        let cancels = self.rng_callers.below(100) < u64::from(self.knobs.cancel_percent);
        if cancels {
            let after = self.rng_callers.between(1, self.knobs.timeout_ms);
            ctx.schedule_in(SimDuration::from_millis(after), SmsEvent::Cancel { req });
        }
        self.requests.push(Request {
            arrived: ctx.now(),
            invalid,
            ticket: None,
            attempt: 0,
            phase: Phase::Waiting,
            sent_at: ctx.now(),
            sent_episode: 0,
            failed_at: None,
        });
        self.pending += 1;
        self.stats.requests += 1;
        let step = self.guard.on_request(Instant::from(ctx.now()));
        // Admitted unless the bulkhead turned it away: an admitted request deposits.
        let turned_away = matches!(
            step,
            Step::Answer(Answer::Failed(Why::BulkheadFull) | Answer::Fallback(Why::BulkheadFull))
        );
        if let Some(budget) = &mut self.budget
            && !turned_away
        {
            budget.on_admitted(ctx.now());
        }
        self.apply(ctx, req, step)
    }

    /// Applies what the guard said, after looking at its transitions.
    fn apply(
        &mut self,
        ctx: &mut Ctx<SmsEvent>,
        req: u32,
        step: Step<G::Ticket>,
    ) -> Result<(), Violation> {
        self.drain_transitions(ctx)?;
        let now = ctx.now();
        let r = req as usize;
        match step {
            Step::Send { ticket, timeout } => {
                let state = self.guard.state();
                self.stats.api_calls += 1;
                let invalid = self.requests[r].invalid;
                let episode = self.checker.episode();
                let rq = &mut self.requests[r];
                rq.attempt += 1;
                rq.phase = Phase::Awaiting;
                rq.ticket = Some(ticket);
                rq.sent_at = now;
                rq.sent_episode = episode;
                let attempt = rq.attempt;
                let (reply, latency) = self.api_call(ctx, invalid);
                ctx.record(
                    "api",
                    format_args!(
                        "req {req} attempt {attempt} sent in {state}: {reply:?} after {latency}"
                    ),
                );
                // Checked once the call is in the trace, so a call that breaks a promise
                // is the last thing the trace shows before the violation.
                self.checker.on_send(now, state)?;
                if let Some(rule) = &self.retry {
                    rule.on_send(req, attempt)?;
                }
                if self.checker.probes_given_back_used() {
                    // A probe beyond the permits, through one a cancelled call or an
                    // ignored outcome gave back.
                    ctx.cover("breaker.half_open_given_back");
                }
                ctx.schedule_in(
                    latency,
                    SmsEvent::Reply {
                        req,
                        attempt,
                        reply,
                    },
                );
                if let Some(t) = timeout {
                    ctx.schedule_in(
                        SimDuration::from_nanos(crate::clock::saturating_nanos(t)),
                        SmsEvent::Timeout { req, attempt },
                    );
                }
            }
            Step::Retry { ticket, delay } => {
                ctx.cover("retry.scheduled");
                if let Some(budget) = &mut self.budget {
                    budget.on_retry(now)?;
                }
                self.stats.retries += 1;
                let rq = &mut self.requests[r];
                rq.phase = Phase::Waiting;
                rq.ticket = Some(ticket);
                let attempt = rq.attempt;
                if let Some(rule) = &self.retry {
                    rule.on_retry(req, attempt, delay)?;
                }
                ctx.schedule_in(
                    SimDuration::from_nanos(crate::clock::saturating_nanos(delay)),
                    SmsEvent::RetryDue { req, attempt },
                );
            }
            Step::Answer(answer) => {
                let rq = &mut self.requests[r];
                rq.phase = Phase::Done;
                self.pending -= 1;
                let latency = now - rq.arrived;
                ctx.record(
                    "caller",
                    format_args!("req {req} answered {answer:?} after {latency}"),
                );
                if let (Some(rule), Some(failed_at)) = (&self.retry, rq.failed_at)
                    && failed_at == now
                    && matches!(
                        answer,
                        Answer::Failed(Why::Api(_) | Why::Timeout)
                            | Answer::Fallback(Why::Api(_) | Why::Timeout)
                    )
                {
                    rule.on_give_up(req, rq.attempt, rq.arrived, now)?;
                }
                let why = match answer {
                    Answer::Delivered => {
                        self.stats.delivered += 1;
                        None
                    }
                    Answer::Fallback(why) => {
                        ctx.cover("fallback.used");
                        self.stats.fallbacks += 1;
                        Some(why)
                    }
                    Answer::Failed(why) => {
                        self.stats.failed += 1;
                        Some(why)
                    }
                };
                match why {
                    Some(Why::Rejected { .. }) => {
                        ctx.cover("breaker.rejected");
                        self.stats.rejected += 1;
                    }
                    Some(Why::BulkheadFull) => {
                        ctx.cover("bulkhead.rejected");
                        self.stats.bulkhead_rejected += 1;
                    }
                    Some(Why::BudgetExhausted) => {
                        ctx.cover("retry.budget_exhausted");
                        if let Some(budget) = &mut self.budget {
                            budget.on_refused(now)?;
                        }
                    }
                    _ => {}
                }
                self.checker.on_answer(now, latency, answer)?;
            }
        }
        Ok(())
    }

    fn drain_transitions(&mut self, ctx: &mut Ctx<SmsEvent>) -> Result<(), Violation> {
        while let Some(t) = self.guard.poll_transition() {
            ctx.record("breaker", format_args!("{} -> {}", t.from, t.to));
            ctx.cover(match (t.from, t.to) {
                (State::Closed, State::Open) => "breaker.closed_to_open",
                (State::Open, State::HalfOpen) => "breaker.open_to_half_open",
                (State::HalfOpen, State::Closed) => "breaker.half_open_to_closed",
                (State::HalfOpen, State::Open) => "breaker.half_open_to_open",
                (State::HalfOpen, State::HalfOpen) => "breaker.half_open_restart",
                _ => "breaker.other_transition",
            });
            self.checker.on_transition(t, ctx.now())?;
        }
        Ok(())
    }

    /// What the API does with one call now: its reply and how long it takes.
    fn api_call(&mut self, ctx: &mut Ctx<SmsEvent>, invalid: bool) -> (ApiReply, SimDuration) {
        let (lo, hi) = self.knobs.latency_ms;
        let base = SimDuration::from_micros(self.rng_api.between(lo * 1_000, hi * 1_000));
        let call = api_call(&mut ctx.faults(), base, lo, invalid);
        for mark in call.marks() {
            ctx.cover(mark);
        }
        (call.reply, call.latency)
    }
}

/// What the simulated SMS API did with one call: the one API of both SMS worlds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApiCall {
    /// Its reply.
    pub reply: ApiReply,
    /// How long it takes.
    pub latency: SimDuration,
    /// A slow fault made it slower.
    pub slow: bool,
}

impl ApiCall {
    /// The coverage marks the call hit.
    pub fn marks(&self) -> impl Iterator<Item = &'static str> {
        let reply = match self.reply {
            ApiReply::Err(ApiError::Unavailable) => Some("api.outage"),
            ApiReply::Err(ApiError::Internal) => Some("api.error"),
            ApiReply::Err(ApiError::InvalidNumber) => Some("api.invalid_number"),
            ApiReply::Ok => None,
        };
        self.slow.then_some("api.slow").into_iter().chain(reply)
    }
}

/// The API's answer to one call under the fault plan as `faults` has it now, for a
/// healthy latency of `base` (`lo_ms` the fastest): in an outage it refuses the
/// connection after `lo_ms` (fails fast); a slow fault adds latency; an error fault
/// fails the call (HTTP 500); else an invalid number is refused (400) and a valid one
/// sent.
pub(crate) fn api_call(
    faults: &mut FaultView<'_>,
    base: SimDuration,
    lo_ms: u64,
    invalid: bool,
) -> ApiCall {
    if faults.is_down(API) {
        return ApiCall {
            reply: ApiReply::Err(ApiError::Unavailable),
            latency: SimDuration::from_millis(lo_ms),
            slow: false,
        };
    }
    let extra = faults.extra_latency(API);
    let error = faults.injects_error(API);
    let reply = if error {
        ApiReply::Err(ApiError::Internal)
    } else if invalid {
        ApiReply::Err(ApiError::InvalidNumber)
    } else {
        ApiReply::Ok
    };
    ApiCall {
        reply,
        latency: base + extra,
        slow: extra > SimDuration::ZERO,
    }
}

impl<G: CallGuard> World for SmsWorld<G> {
    type Event = SmsEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<SmsEvent>) -> Result<(), Violation> {
        if let Some(reference) = self.conform_to {
            let declared = *self.checker.policy();
            if declared != reference {
                return Err(Violation::new(
                    invariants::CONFORMANCE,
                    format!(
                        "the guard declares {declared:?}, but the reference's settings for these knobs are {reference:?}"
                    ),
                ));
            }
        }
        self.schedule_arrival(ctx, Source::Steady);
        self.schedule_arrival(ctx, Source::Burst);
        self.schedule_arrival(ctx, Source::Spike);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<SmsEvent>, event: SmsEvent) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        match event {
            SmsEvent::Arrive(source) => {
                if source == Source::Liveness {
                    // Probe traffic runs only while the breaker is not Closed (as its
                    // transitions say: the world steers by them, never by `state`).
                    self.probing = false;
                    if self.checker.state() == State::Closed {
                        return self.after(ctx);
                    }
                }
                if source == Source::Liveness {
                    self.probing = true;
                } else if self.rng_burst.below(100) < u64::from(self.knobs.burst_percent) {
                    let len = self
                        .rng_burst
                        .between(1, u64::from(self.knobs.burst_len_max));
                    self.schedule_cluster(ctx, len as u32);
                }
                self.schedule_arrival(ctx, source);
                self.caller(ctx)?;
            }
            SmsEvent::Cluster { left } => {
                ctx.cover("breaker.burst");
                let half_open = self.checker.state() == State::HalfOpen;
                self.schedule_cluster(ctx, left - 1);
                self.caller(ctx)?;
                if half_open || self.checker.state() == State::HalfOpen {
                    // The cluster met the breaker half-open (or its caller turned it so):
                    // how many of its callers the probe limit lets through is tested.
                    ctx.cover("breaker.burst_half_open");
                }
            }
            SmsEvent::Reply {
                req,
                attempt,
                reply,
            } => {
                let Some((ticket, sent_at, episode)) =
                    self.take_ticket(req, attempt, Phase::Awaiting)
                else {
                    return self.after(ctx);
                };
                let outcome = classify(&reply);
                self.requests[req as usize].failed_at =
                    (outcome == CallOutcome::Failure).then(|| ctx.now());
                self.checker
                    .on_outcome(ctx.now(), sent_at, episode, outcome);
                let step = self.guard.on_reply(ticket, now, reply);
                self.apply(ctx, req, step)?;
                self.checker.after_outcome(ctx.now())?;
            }
            SmsEvent::Timeout { req, attempt } => {
                let Some((ticket, sent_at, episode)) =
                    self.take_ticket(req, attempt, Phase::Awaiting)
                else {
                    return self.after(ctx);
                };
                ctx.cover("timeout.fired");
                self.requests[req as usize].failed_at = Some(ctx.now());
                self.checker
                    .on_outcome(ctx.now(), sent_at, episode, CallOutcome::Failure);
                let step = self.guard.on_timeout(ticket, now);
                self.apply(ctx, req, step)?;
                self.checker.after_outcome(ctx.now())?;
            }
            SmsEvent::RetryDue { req, attempt } => {
                let Some((ticket, _, _)) = self.take_ticket(req, attempt, Phase::Waiting) else {
                    return self.after(ctx);
                };
                let step = self.guard.on_retry_due(ticket, now);
                self.apply(ctx, req, step)?;
            }
            SmsEvent::Cancel { req } => {
                let rq = &mut self.requests[req as usize];
                if rq.phase != Phase::Done {
                    let in_flight = rq.phase == Phase::Awaiting;
                    rq.phase = Phase::Done;
                    self.pending -= 1;
                    self.stats.cancelled += 1;
                    ctx.cover("client.cancelled");
                    if let Some(ticket) = rq.ticket.take() {
                        if in_flight {
                            self.checker.on_cancel_in_flight(ctx.now());
                            if self.checker.state() == State::HalfOpen {
                                ctx.cover("client.cancelled_probe");
                            }
                        }
                        self.guard.on_cancel(ticket, now);
                    }
                    self.drain_transitions(ctx)?;
                }
            }
        }
        self.after(ctx)
    }

    fn on_fault(&mut self, ctx: &mut Ctx<SmsEvent>, edge: FaultEdge) -> Result<(), Violation> {
        if edge.started && edge.fault.kind == FaultKind::Outage && edge.fault.target == API {
            self.checker.on_outage_start(ctx.now());
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<SmsEvent>) -> Result<(), Violation> {
        self.checker.on_heal(ctx.now());
        self.after(ctx)
    }

    fn is_quiescent(&self, ctx: &Ctx<SmsEvent>) -> bool {
        ctx.is_healed() && self.pending == 0 && self.checker.state() == State::Closed
    }

    fn finish(&mut self, ctx: &mut Ctx<SmsEvent>) -> Result<(), Violation> {
        self.drain_transitions(ctx)?;
        if let Some(r) = self.requests.iter().position(|r| r.phase != Phase::Done) {
            return Err(Violation::new(
                invariants::RESPONSIVENESS,
                format!("request {r} was never answered"),
            ));
        }
        let windows = outage_windows(ctx.plan(), ctx.horizon(), ctx.now());
        let load = self.checker.check_load(&windows);
        self.take_figures();
        load?;
        self.checker.check_recovery(ctx.now())?;
        self.checker.check_accounting(self.guard.metrics())
    }

    /// The run stopped before it came to rest: its figures up to the stop, from what
    /// the checker saw (the outages cut at the stop).
    fn stopped(&mut self, ctx: &Ctx<SmsEvent>) {
        let windows = outage_windows(ctx.plan(), ctx.horizon(), ctx.now());
        self.checker.measure_load(&windows);
        self.take_figures();
    }
}

/// The plan's outages of the API, merged, cut at the horizon or at `now` if earlier (a
/// run stopped early: the part of each outage that happened).
fn outage_windows(plan: &FaultPlan, horizon: SimTime, now: SimTime) -> Vec<(SimTime, SimTime)> {
    let cut = horizon.min(now);
    let windows: Vec<(SimTime, SimTime)> = plan
        .of_kind(FaultKindTag::Outage)
        .filter(|f| f.target == API && f.from() < cut)
        .map(|f| (f.from(), f.until().min(cut)))
        .collect();
    merge_windows(windows)
}

/// `windows` sorted, overlapping or touching ones merged into one.
pub(crate) fn merge_windows(mut windows: Vec<(SimTime, SimTime)>) -> Vec<(SimTime, SimTime)> {
    windows.sort();
    let mut merged: Vec<(SimTime, SimTime)> = Vec::new();
    for (a, b) in windows {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

impl<G: CallGuard> SmsWorld<G> {
    /// The ticket of request `req` if it is still at `attempt` in `phase` (a reply,
    /// timeout or retry for an earlier attempt is stale), with its send time and episode.
    fn take_ticket(
        &mut self,
        req: u32,
        attempt: u32,
        phase: Phase,
    ) -> Option<(G::Ticket, SimTime, u64)> {
        let rq = &mut self.requests[req as usize];
        if rq.phase != phase || rq.attempt != attempt {
            return None;
        }
        let ticket = rq.ticket.take()?;
        Some((ticket, rq.sent_at, rq.sent_episode))
    }

    /// The figures the checker computes, into the stats (after the outages' loads were
    /// measured).
    fn take_figures(&mut self) {
        self.stats.worst_load = self.checker.worst_load();
        self.stats.time_to_close_ms = self.checker.time_to_close().map(|d| d.as_millis());
        self.stats.answer_latency_ms_max = self.checker.answer_latency_max.as_millis();
    }

    /// Checks that run after every event.
    fn after(&mut self, ctx: &mut Ctx<SmsEvent>) -> Result<(), Violation> {
        if self.checker.state() == State::Closed
            && let Some(window) = self.guard.window(Instant::from(ctx.now()))
        {
            self.checker.compare_window(ctx.now(), window)?;
        }
        if ctx.is_healed() {
            self.checker.check_recovery(ctx.now())?;
            // After the faults heal, a slow stream of callers probes the API until the
            // breaker is Closed (and starts again if it ever leaves Closed).
            if !self.probing && self.checker.state() != State::Closed {
                self.probing = true;
                self.schedule_arrival(ctx, Source::Liveness);
            }
        }
        Ok(())
    }
}

/// Runs `world` under `plan`, the one way the SMS world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<G: CallGuard>(
    mut world: SmsWorld<G>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, SmsWorld<G>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(600))
        .replay_hint("cargo run --release -- replay breaker --seed {seed}")
        .run(&mut world);
    (report, world)
}

/// A window description for display.
pub fn describe_window(w: SlidingWindow) -> String {
    match w {
        SlidingWindow::Count { size } => format!("last {size} calls"),
        SlidingWindow::Time { size_secs } => format!("last {size_secs} s"),
    }
}
