//! The SMS world in the tokio harness: real async code between callers and a simulated
//! SMS API, under the same seeds, knobs and fault plans as the sans-IO
//! [`SmsWorld`](crate::breaker::world::SmsWorld).
//!
//! The code under test is whatever turns an [`SmsApi`] into a [`Caller`]: faultline's
//! [`Resilient`] (the reference, [`reference_stack`]), a tower stack around the API
//! (the API is a `tower::Service`), another crate's breaker, a hand-written retry loop.
//! It runs on a [`TokioHost`]: a paused single-threaded runtime the engine steps, so a
//! `tokio::time::sleep` or a tower `Timeout` waits in virtual time.
//!
//! The API is the world's far side: each call it receives, it asks the fault plan at
//! that instant (outage: fails fast; slow: later; errors: an HTTP 500), logs it, and
//! answers after its latency; a call whose caller gave up (its future dropped) is logged
//! as abandoned. Callers arrive as in the sans-IO world, some give up early, and each
//! logs its answer and how long it waited.
//!
//! # What is checked, from observations only
//!
//! Every invariant here reads the API's log and the callers' answers, judged by the
//! [`Policy`] the stack declares; none asks the code under test anything.
//!
//! - `breaker.load_bound`: over each window in which every call fails (an outage, a
//!   slow fault at least as long as the answer deadline or the slow-call duration, an
//!   error fault of ratio 1), calls reaching the API ≤ what the declared policy allows:
//!   before the first caller is turned away without an API call, the calls to trip
//!   from a full window (the count window's size, the consecutive failures; a time
//!   window excuses its first window of seconds and may take its minimum calls per
//!   window) plus the calls the API already held at once in that stretch; after it,
//!   one half-open episode per shortest wait in open (+1), each of the permitted
//!   probes, + one more episode per probe its caller gave up on (a call dropped by a
//!   timeout is a failure, not a release); every success the API
//!   gave in the window may re-close the breaker and buys one more trip.
//! - `breaker.responsiveness`: every caller is answered (a receipt, a fallback or an
//!   error) within the declared answer deadline + 2 ms (tokio's timers fire on
//!   millisecond ticks), and at rest no caller waits.
//! - `breaker.closes_after_recovery`: after the faults heal, a caller who arrives once
//!   the declared longest wait in open and the probes' time have passed reaches the API.
//!
//! Receipts are the API's: an `Ok` whose receipt the API did not issue for that request
//! is counted as a fallback, whatever the stack calls it.

use crate::breaker::circuit::{CallOutcome, SlidingWindow, State};
use crate::breaker::contract::{ApiError, ApiReply, Policy, TripRule};
use crate::breaker::fallback::FallbackPolicy;
use crate::breaker::invariants::{
    ACCOUNTING, CLOSES_AFTER_RECOVERY, HALF_OPEN_LIMIT, LOAD_BOUND, NO_CALL_WHILE_OPEN,
    RESPONSIVENESS,
};
use crate::breaker::tokio::Resilient;
use crate::breaker::world::{API, SmsKnobs, Source};
use crate::config::ConfigError;
use crate::harness::hosted::{Rerun, TokioHost, VirtualClock};
use crate::harness::{Description, Metric, Mutant, Scenario, notes};
use crate::retry::{Backoff, RetryBudget, RetryPolicy};
use crate::rt::lock;
use faultline_sim::FaultState;
use faultline_sim::SeedRange;
use faultline_sim::prelude::*;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The invariants the hosted SMS world checks, in order.
pub const HOSTED_INVARIANTS: &[&str] = &[
    LOAD_BOUND,
    RESPONSIVENESS,
    CLOSES_AFTER_RECOVERY,
    NO_CALL_WHILE_OPEN,
    HALF_OPEN_LIMIT,
    ACCOUNTING,
];

/// Coverage marks of the hosted SMS world.
pub const HOSTED_MARKS: &[&str] = &[
    "api.outage",
    "api.slow",
    "api.error",
    "api.invalid_number",
    "api.abandoned",
    "caller.turned_away",
    "caller.fallback",
    "caller.gave_up",
    "window.failing",
];

/// One message to send, as a caller hands it to the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmsRequest {
    /// The caller's request number (every attempt of one request carries it).
    pub request: u64,
    /// True when the number is invalid (the API answers 400).
    pub invalid: bool,
}

/// What the API hands back for a message it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmsReceipt {
    /// The API's receipt number ([`SmsReceipt::QUEUED`] for none: a stack's placeholder).
    pub id: u64,
}

impl SmsReceipt {
    /// A receipt no API issues: "queued, will send later", the reference's fallback.
    pub const QUEUED: SmsReceipt = SmsReceipt { id: u64::MAX };
}

/// What the API saw, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// A call arrived; `held` calls were in progress at the API after it.
    Call {
        at: SimTime,
        request: u64,
        held: u64,
    },
    /// It answered a call sent at `sent`.
    Reply {
        at: SimTime,
        request: u64,
        sent: SimTime,
        reply: ApiReply,
        receipt: Option<u64>,
    },
    /// The caller dropped a call sent at `sent` before its answer.
    Abandoned {
        at: SimTime,
        request: u64,
        sent: SimTime,
    },
}

struct ApiState {
    faults: FaultState,
    rng: SimRng,
    latency_ms: (u64, u64),
    held: u64,
    /// The request each receipt was issued to, by receipt number.
    receipts: Vec<u64>,
    seen: Vec<Seen>,
    marks: Vec<&'static str>,
}

impl ApiState {
    /// What the API does with one call at `now`: its reply and how long it takes.
    fn decide(&mut self, now: SimTime, invalid: bool) -> (ApiReply, SimDuration) {
        let (lo, hi) = self.latency_ms;
        let base = SimDuration::from_micros(self.rng.between(lo * 1_000, hi * 1_000));
        let call = crate::breaker::world::api_call(&mut self.faults.view(now), base, lo, invalid);
        self.marks.extend(call.marks());
        (call.reply, call.latency)
    }
}

/// The simulated SMS API, for the code under test to call: an async fn
/// ([`send`](SmsApi::send)) and a `tower::Service<SmsRequest>`. Cheap to clone; every
/// clone is the same API.
#[derive(Clone)]
pub struct SmsApi {
    state: Arc<Mutex<ApiState>>,
    clock: VirtualClock,
}

impl fmt::Debug for SmsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsApi").finish_non_exhaustive()
    }
}

/// Logs a call as abandoned if its future is dropped before the answer.
struct InFlight {
    state: Arc<Mutex<ApiState>>,
    clock: VirtualClock,
    request: u64,
    sent: SimTime,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            let mut s = lock(&self.state);
            s.held -= 1;
            s.marks.push("api.abandoned");
            s.seen.push(Seen::Abandoned {
                at: self.clock.now(),
                request: self.request,
                sent: self.sent,
            });
        }
    }
}

impl SmsApi {
    /// Sends one message: the API's answer after its latency, as the fault plan has it
    /// at the moment of the call.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unavailable`] in an outage (fast), [`ApiError::Internal`] when an
    /// error fault hits the call, [`ApiError::InvalidNumber`] for an invalid number.
    pub async fn send(&self, request: SmsRequest) -> Result<SmsReceipt, ApiError> {
        let sent = self.clock.now();
        let (reply, latency) = {
            let mut s = lock(&self.state);
            s.held += 1;
            let held = s.held;
            s.seen.push(Seen::Call {
                at: sent,
                request: request.request,
                held,
            });
            s.decide(sent, request.invalid)
        };
        let mut in_flight = InFlight {
            state: Arc::clone(&self.state),
            clock: self.clock,
            request: request.request,
            sent,
            answered: false,
        };
        tokio::time::sleep(Duration::from_nanos(latency.as_nanos())).await;
        in_flight.answered = true;
        let mut s = lock(&self.state);
        s.held -= 1;
        let receipt = (reply == ApiReply::Ok).then(|| {
            s.receipts.push(request.request);
            s.receipts.len() as u64 - 1
        });
        s.seen.push(Seen::Reply {
            at: self.clock.now(),
            request: request.request,
            sent,
            reply,
            receipt,
        });
        match (reply, receipt) {
            (ApiReply::Ok, Some(id)) => Ok(SmsReceipt { id }),
            (ApiReply::Err(e), _) => Err(e),
            (ApiReply::Ok, None) => Err(ApiError::Internal),
        }
    }
}

impl tower_service::Service<SmsRequest> for SmsApi {
    type Response = SmsReceipt;
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<SmsReceipt, ApiError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ApiError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: SmsRequest) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { api.send(request).await })
    }
}

impl std::error::Error for ApiError {}

/// The code under test as callers use it: one request in, its answer out (an error in
/// words: the oracles never read it).
pub type Caller =
    Rc<dyn Fn(SmsRequest) -> Pin<Box<dyn Future<Output = Result<SmsReceipt, String>>>>>;

/// A [`Caller`] from an async function of the request.
pub fn caller<F, Fut, E>(f: F) -> Caller
where
    F: Fn(SmsRequest) -> Fut + 'static,
    Fut: Future<Output = Result<SmsReceipt, E>> + 'static,
    E: fmt::Display,
{
    Rc::new(move |request| {
        let answer = f(request);
        Box::pin(async move { answer.await.map_err(|e| e.to_string()) })
    })
}

/// A [`Caller`] from a `tower::Service` (a stack of layers around the [`SmsApi`]):
/// each request waits for `poll_ready` on a clone, then calls it.
pub fn service_caller<S>(service: S) -> Caller
where
    S: tower_service::Service<SmsRequest, Response = SmsReceipt> + Clone + 'static,
    S::Error: fmt::Display,
    S::Future: 'static,
{
    caller(move |request| {
        let mut service = service.clone();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|e| e.to_string())?;
            service.call(request).await.map_err(|e| e.to_string())
        }
    })
}

/// Where the code under test exposes its breaker: the next transition it made, as
/// `(when, from, to)`, oldest first. The white-box checks read it; the black-box ones
/// never do.
pub type Transitions = Rc<dyn Fn() -> Option<(SimTime, State, State)>>;

/// The code under test as one run built it: what callers call, and (optionally) its
/// breaker's transitions for the white-box checks.
pub struct Built {
    /// What callers call.
    pub caller: Caller,
    /// The breaker's transitions, where the stack exposes them.
    pub transitions: Option<Transitions>,
}

impl From<Caller> for Built {
    fn from(caller: Caller) -> Built {
        Built {
            caller,
            transitions: None,
        }
    }
}

/// How a run builds the code under test: from the seed's knobs and the API, inside the
/// run's runtime (so a tokio clock it reads is the paused one). Called once per run.
pub type MakeStack = Arc<dyn Fn(&SmsKnobs, SmsApi) -> Result<Built, String> + Send + Sync>;

/// The code under test for one hosted world: how to build it and the policy it
/// declares.
#[derive(Clone)]
pub struct Stack {
    /// What the stack declares it does: what the oracles judge it by.
    pub policy: Policy,
    make: MakeStack,
    white_box: bool,
    follow: Option<FollowTime>,
}

/// Makes, once per run, the hook a host calls with engine time (see
/// [`TokioHost::follow_time`]): how a stack that reads the real clock is hosted.
pub type FollowTime = Arc<dyn Fn() -> Box<dyn FnMut(SimTime)> + Send + Sync>;

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// The same stack, for code that reads the real clock (`std::time::Instant`, as
    /// failsafe and recloser do): each run, `hook()` makes the function the host calls
    /// with engine time before every poll of a caller's task and after every step, e.g.
    /// one that sets [`faultline-clock`](https://docs.rs/faultline-clock)'s virtual
    /// monotonic clock. Without it such code sees its waits never elapse.
    pub fn following_time(
        mut self,
        hook: impl Fn() -> Box<dyn FnMut(SimTime)> + Send + Sync + 'static,
    ) -> Stack {
        self.follow = Some(Arc::new(hook));
        self
    }

    /// The same stack with the white-box checks off: judged by the black-box oracles
    /// alone, even where it exposes its transitions.
    pub fn black_box(mut self) -> Stack {
        self.white_box = false;
        self
    }

    /// A stack that declares `policy` and is built by `make` (which returns a [`Caller`],
    /// or a [`Built`] that also exposes the breaker's transitions).
    pub fn new<C, E>(
        policy: Policy,
        make: impl Fn(&SmsKnobs, SmsApi) -> Result<C, E> + Send + Sync + 'static,
    ) -> Stack
    where
        C: Into<Built>,
        E: fmt::Display,
    {
        Stack {
            policy,
            white_box: true,
            follow: None,
            make: Arc::new(move |k, api| make(k, api).map(Into::into).map_err(|e| e.to_string())),
        }
    }
}

/// The reference: faultline's [`Resilient`] configured from the knobs exactly as the
/// sans-IO reference guard is, declaring the reference's policy.
///
/// # Errors
///
/// The knobs' configuration error, if any.
pub fn reference_stack(knobs: &SmsKnobs) -> Result<Stack, ConfigError> {
    Ok(Stack::new(knobs.reference_policy()?, |k, api| {
        resilient(k, ResilientShape::Reference)
            .map(|r| resilient_caller(r, api, 0, Duration::from_millis(k.timeout_ms)))
    }))
}

/// The reference's [`Resilient`] for the knobs, as [`reference_stack`] builds it (build
/// it inside a runtime whose clock you want it to read).
///
/// # Errors
///
/// The knobs' configuration error, if any.
pub fn reference_resilient(
    knobs: &SmsKnobs,
) -> Result<Resilient<SmsReceipt, ApiError>, ConfigError> {
    resilient(knobs, ResilientShape::Reference)
}

/// The reference's parts, or one of the broken shapes the mutants use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResilientShape {
    Reference,
    /// No timeout: the deadline is an hour.
    NoTimeout,
    /// Half-open lets every call through.
    HalfOpenAdmitsAll,
    /// One attempt through the breaker, the retries straight to the API.
    RetriesOutside,
    /// Waits an hour in open: once tripped, it never probes the recovered API.
    NeverCloses,
}

pub(crate) fn resilient(
    k: &SmsKnobs,
    shape: ResilientShape,
) -> Result<Resilient<SmsReceipt, ApiError>, ConfigError> {
    // A broken shape is the reference's knobs with one setting changed (the policy the
    // stack declares stays the knobs' own).
    let mut broken = k.clone();
    match shape {
        ResilientShape::HalfOpenAdmitsAll => broken.half_open_calls_permitted = 10_000,
        ResilientShape::NeverCloses => broken.wait_in_open = (3_600_000, 0, 3_600_000, 0),
        _ => {}
    }
    let config = broken.breaker_config()?;
    let timeout = match shape {
        ResilientShape::NoTimeout => Duration::from_secs(3_600),
        _ => Duration::from_millis(k.timeout_ms),
    };
    let attempts = match shape {
        ResilientShape::RetriesOutside => 1,
        _ => k.attempts_max,
    };
    let mut b = Resilient::builder(config)
        .timeout(timeout)
        .retry(RetryPolicy::new(
            attempts,
            Backoff::new(
                Duration::from_millis(k.backoff_ms.0),
                Duration::from_millis(k.backoff_ms.1),
            )?,
        )?)
        .bulkhead(k.bulkhead_max)
        .classify(|e: &ApiError| match e {
            ApiError::InvalidNumber => CallOutcome::Ignored,
            _ => CallOutcome::Failure,
        })
        .seed(k.seed);
    if let Some(ms) = k.attempt_timeout_ms
        && shape != ResilientShape::NoTimeout
    {
        b = b.attempt_timeout(Duration::from_millis(ms));
    }
    if let Some((ttl, min, pct)) = k.budget {
        b = b.budget(RetryBudget::new(Duration::from_secs(ttl), min, pct)?);
    }
    if k.fallback {
        b = b.fallback(FallbackPolicy::Default(SmsReceipt::QUEUED));
    }
    b.build()
}

/// `resilient` in front of `api`; when its answer is an error, up to `retries_outside`
/// more attempts go straight to the API within what is left of `deadline` (the mutant
/// of that name: a retry loop of its own around the breaker, not inside it).
pub(crate) fn resilient_caller(
    resilient: Resilient<SmsReceipt, ApiError>,
    api: SmsApi,
    retries_outside: u32,
    deadline: Duration,
) -> Built {
    let resilient = Rc::new(resilient);
    let breaker = Rc::clone(&resilient);
    let transitions: Transitions = Rc::new(move || {
        loop {
            if let crate::breaker::circuit::BreakerEvent::Transition { from, to, at, .. } =
                breaker.breaker().poll_event()?
            {
                return Some((SimTime::from_nanos(at.as_nanos()), from, to));
            }
        }
    });
    let caller = caller(move |request| {
        let resilient = Rc::clone(&resilient);
        let api = api.clone();
        async move {
            let until = tokio::time::Instant::now() + deadline;
            let attempt = {
                let api = api.clone();
                move || {
                    let api = api.clone();
                    async move { api.send(request).await }
                }
            };
            let mut answer = resilient.call(attempt).await.map_err(|e| e.to_string());
            for _ in 0..retries_outside {
                if answer.is_ok() {
                    break;
                }
                answer = match tokio::time::timeout_at(until, api.send(request)).await {
                    Ok(reply) => reply.map_err(|e| e.to_string()),
                    Err(_) => break,
                };
            }
            answer
        }
    });
    Built {
        caller,
        transitions: Some(transitions),
    }
}

/// One caller's answer, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answered {
    request: u64,
    start: SimTime,
    end: SimTime,
    /// `None`: the caller gave up first.
    result: Option<Result<SmsReceipt, String>>,
    /// Calls the API held when the answer came.
    api_held: u64,
}

/// The hosted SMS world's events: callers arriving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostedEvent {
    /// A caller of a stream arrives (the sans-IO world's streams and process).
    Arrive(Source),
    /// One more caller of a cluster under a millisecond apart.
    Cluster {
        /// Callers left in the cluster after this one.
        left: u32,
    },
}

/// What a finished run of the hosted SMS world saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostedStats {
    /// Callers that arrived.
    pub callers: u64,
    /// Calls that reached the API.
    pub api_calls: u64,
    /// Answers with a receipt the API issued for that request.
    pub delivered: u64,
    /// `Ok` answers with no receipt of the API's (fallbacks).
    pub fallbacks: u64,
    /// Error answers.
    pub failed: u64,
    /// Callers who gave up first.
    pub gave_up: u64,
    /// Callers answered without any call reaching the API.
    pub turned_away: u64,
    /// Longest a caller waited for an answer.
    pub latency_max: SimDuration,
    /// Per failing window: (from, until, calls, bound); for a run stopped before the
    /// faults healed, the windows up to the stop (cut there).
    pub loads: Vec<(SimTime, SimTime, u64, u64)>,
    /// Every answer: when, and how long its caller waited.
    pub answers: Vec<(SimTime, SimDuration)>,
}

/// A failing window's load: (from, until, calls, bound).
type WindowLoad = (SimTime, SimTime, u64, u64);

/// The SMS world in the tokio harness. See the [module docs](self).
pub struct HostedSms {
    knobs: SmsKnobs,
    stack: Stack,
    run: Option<Running>,
    rng_arrivals: SimRng,
    rng_burst: SimRng,
    rng_callers: SimRng,
    next_request: u64,
    /// Calls at the API per request, by request number.
    attempts: Vec<u32>,
    seen: Vec<Seen>,
    pending: u64,
    healed_at: Option<SimTime>,
    /// Liveness callers answered in a row with a receipt after the close deadline.
    delivered_in_a_row: u32,
    /// When callers were answered without any call reaching the API (while it held
    /// none: a bulkhead full of calls in flight is not the breaker turning them away).
    turned_away_at: Vec<SimTime>,
    /// The breaker's transitions, where the stack exposes them (white box).
    transitions: Vec<(SimTime, State, State)>,
    /// (request, when) of every caller who gave up: a call the API saw abandoned at that
    /// instant was the caller's doing, not a timeout's.
    gave_up: std::collections::BTreeSet<(u64, SimTime)>,
    /// Emptied logs, swapped with the API's and the callers' at each step.
    buffers: (Vec<Seen>, Vec<&'static str>, Vec<Answered>),
    /// The failing windows' loads were measured (at the healing).
    loads_measured: bool,
    /// Stats of the run so far.
    pub stats: HostedStats,
}

struct Running {
    host: TokioHost,
    api: Arc<Mutex<ApiState>>,
    caller: Caller,
    transitions: Option<Transitions>,
    answers: Rc<RefCell<Vec<Answered>>>,
}

impl fmt::Debug for HostedSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostedSms")
            .field("knobs", &self.knobs)
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

impl HostedSms {
    /// The world of `knobs` with `stack` under test.
    pub fn new(knobs: SmsKnobs, stack: Stack) -> HostedSms {
        let root = SimRng::new(knobs.seed);
        HostedSms {
            rng_arrivals: root.fork("hosted.arrivals"),
            rng_burst: root.fork("hosted.bursts"),
            rng_callers: root.fork("hosted.callers"),
            knobs,
            stack,
            run: None,
            next_request: 0,
            attempts: Vec::new(),
            seen: Vec::new(),
            pending: 0,
            healed_at: None,
            delivered_in_a_row: 0,
            turned_away_at: Vec::new(),
            transitions: Vec::new(),
            gave_up: std::collections::BTreeSet::new(),
            buffers: Default::default(),
            loads_measured: false,
            stats: HostedStats::default(),
        }
    }

    /// The same world with the white-box checks off (see [`Stack::black_box`]).
    pub fn black_box(mut self) -> HostedSms {
        self.stack.white_box = false;
        self
    }

    /// The knobs.
    pub fn knobs(&self) -> &SmsKnobs {
        &self.knobs
    }

    /// The policy the stack declares.
    pub fn policy(&self) -> &Policy {
        &self.stack.policy
    }

    fn answer_deadline(&self) -> SimDuration {
        let declared = SimDuration::from_nanos(crate::clock::saturating_nanos(
            self.stack.policy.answer_within,
        ));
        declared.min(SimDuration::from_millis(self.knobs.timeout_ms))
    }

    /// When a liveness caller must reach the API again: the faults healed, then the
    /// longest wait in open, probes and answers twice over, and 2 s of slack.
    fn close_deadline(&self) -> Option<SimTime> {
        let healed = self.healed_at?;
        let wait_max = SimDuration::from_nanos(crate::clock::saturating_nanos(
            self.stack.policy.wait_in_open_max,
        ));
        let probes = SimDuration::from_millis(self.knobs.liveness_interarrival_ms)
            .saturating_mul(u64::from(self.stack.policy.half_open_calls_permitted) + 1);
        let episode = wait_max + self.answer_deadline() + probes;
        Some(healed + self.answer_deadline() + episode + episode + SimDuration::from_secs(2))
    }

    fn schedule(&mut self, ctx: &mut Ctx<HostedEvent>, event: HostedEvent) {
        let now = ctx.now();
        let next = match event {
            HostedEvent::Arrive(source) => {
                self.knobs.next_arrival(source, now, &mut self.rng_arrivals)
            }
            HostedEvent::Cluster { left } => {
                let gap = self.knobs.cluster_gap(&mut self.rng_burst);
                (left > 0).then(|| now + gap)
            }
        };
        if let Some(t) = next
            && (event == HostedEvent::Arrive(Source::Liveness) || t < ctx.horizon())
        {
            ctx.schedule_at(t, event);
        }
    }

    /// A caller arrives now and hands its request to the stack.
    fn arrive(&mut self, ctx: &mut Ctx<HostedEvent>, valid: bool) {
        let Some(run) = &self.run else { return };
        let request = self.next_request;
        self.next_request += 1;
        self.attempts.push(0);
        self.pending += 1;
        self.stats.callers += 1;
        let invalid =
            !valid && self.rng_callers.below(100) < u64::from(self.knobs.invalid_number_percent);
        let gives_up = (self.rng_callers.below(100) < u64::from(self.knobs.cancel_percent))
            .then(|| Duration::from_millis(self.rng_callers.between(1, self.knobs.timeout_ms)));
        ctx.record(
            "caller",
            format_args!("req {request} arrives (invalid number: {invalid})"),
        );
        let call = (run.caller)(SmsRequest { request, invalid });
        let answers = Rc::clone(&run.answers);
        let api = Arc::clone(&run.api);
        let clock = run.host.clock();
        let start = run.host.now();
        run.host.spawn(async move {
            let result = match gives_up {
                Some(after) => tokio::time::timeout(after, call).await.ok(),
                None => Some(call.await),
            };
            answers.borrow_mut().push(Answered {
                request,
                start,
                end: clock.now(),
                result,
                api_held: lock(&api).held,
            });
        });
    }

    /// Runs the code under test until now and takes in what the API and the callers saw.
    fn step(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        let Some(run) = &mut self.run else {
            return Ok(());
        };
        run.host.advance_to(ctx.now());
        // The API's and the callers' logs are swapped with the world's emptied buffers,
        // so a step allocates nothing.
        let (mut seen, mut marks, mut answers) = (
            std::mem::take(&mut self.buffers.0),
            std::mem::take(&mut self.buffers.1),
            std::mem::take(&mut self.buffers.2),
        );
        {
            let mut api = lock(&run.api);
            std::mem::swap(&mut api.seen, &mut seen);
            std::mem::swap(&mut api.marks, &mut marks);
            ctx.add_fault_hits(api.faults.hits());
            api.faults.clear_hits();
        }
        std::mem::swap(&mut *run.answers.borrow_mut(), &mut answers);
        if let Some(poll) = &run.transitions {
            while let Some((at, from, to)) = poll() {
                ctx.record("breaker", format_args!("{at}: {from} -> {to}"));
                self.transitions.push((at, from, to));
            }
        }
        for mark in marks.drain(..) {
            ctx.cover(mark);
        }
        for s in seen.drain(..) {
            match s {
                Seen::Call { at, request, held } => {
                    ctx.record(
                        "api",
                        format_args!("{at}: call for req {request} ({held} held)"),
                    );
                    self.stats.api_calls += 1;
                    if let Some(a) = self.attempts.get_mut(request as usize) {
                        *a += 1;
                    }
                }
                Seen::Reply {
                    at,
                    request,
                    reply,
                    receipt,
                    ..
                } => ctx.record(
                    "api",
                    format_args!("{at}: answers req {request}: {reply:?} receipt {receipt:?}"),
                ),
                Seen::Abandoned { at, request, .. } => {
                    ctx.record("api", format_args!("{at}: req {request} abandoned"))
                }
            }
            self.seen.push(s);
        }
        let mut result = Ok(());
        for a in answers.drain(..) {
            if result.is_ok() {
                result = self.on_answer(ctx, a);
            }
        }
        self.buffers = (seen, marks, answers);
        result
    }

    fn on_answer(&mut self, ctx: &mut Ctx<HostedEvent>, a: Answered) -> Result<(), Violation> {
        self.pending -= 1;
        let waited = a.end - a.start;
        self.stats.latency_max = self.stats.latency_max.max(waited);
        if a.result.is_some() {
            self.stats.answers.push((a.end, waited));
        }
        let attempts = self.attempts.get(a.request as usize).copied().unwrap_or(0);
        let delivered = match &a.result {
            Some(Ok(receipt)) => self.issued_to(receipt.id) == Some(a.request),
            _ => false,
        };
        ctx.record(
            "caller",
            format_args!(
                "{}: req {} answered after {waited} ({} API calls): {:?}",
                a.end, a.request, attempts, a.result
            ),
        );
        match &a.result {
            None => {
                self.gave_up.insert((a.request, a.end));
                self.stats.gave_up += 1;
                ctx.cover("caller.gave_up");
            }
            Some(Ok(_)) if delivered => self.stats.delivered += 1,
            Some(Ok(_)) => {
                self.stats.fallbacks += 1;
                ctx.cover("caller.fallback");
            }
            Some(Err(_)) => self.stats.failed += 1,
        }
        if a.result.is_some() && attempts == 0 {
            if a.api_held == 0 {
                self.turned_away_at.push(a.end);
            }
            self.stats.turned_away += 1;
            ctx.cover("caller.turned_away");
        }
        let limit = self.answer_deadline() + SimDuration::from_millis(2);
        if a.result.is_some() && waited > limit {
            return Err(Violation::new(
                RESPONSIVENESS,
                format!(
                    "req {} waited {waited} for its answer ({:?}); the answer deadline is {}",
                    a.request,
                    a.result,
                    self.answer_deadline()
                ),
            ));
        }
        if let Some(deadline) = self.close_deadline()
            && a.start > deadline
        {
            if attempts == 0 && a.result.is_some() {
                return Err(Violation::new(
                    CLOSES_AFTER_RECOVERY,
                    format!(
                        "the faults healed at {} but req {} arriving at {} (after {deadline}) was \
                         answered without reaching the API: {:?}",
                        self.healed_at.unwrap_or(SimTime::ZERO),
                        a.request,
                        a.start,
                        a.result
                    ),
                ));
            }
            self.delivered_in_a_row = if delivered {
                self.delivered_in_a_row + 1
            } else {
                0
            };
        }
        Ok(())
    }

    fn issued_to(&self, receipt: u64) -> Option<u64> {
        let run = self.run.as_ref()?;
        lock(&run.api).receipts.get(receipt as usize).copied()
    }

    /// The windows of the safety phase in which every call fails, merged, cut at `cut`
    /// (the horizon, or the stop of a run stopped before it).
    fn failing_windows(&self, plan: &FaultPlan, cut: SimTime) -> Vec<(SimTime, SimTime)> {
        let slow = self.answer_deadline().min(match self.stack.policy.trip {
            TripRule::Rate {
                slow_call_duration, ..
            } => SimDuration::from_nanos(crate::clock::saturating_nanos(slow_call_duration)),
            TripRule::ConsecutiveFailures { .. } => SimDuration::MAX,
        });
        let cut = cut.min(plan.horizon());
        let windows: Vec<(SimTime, SimTime)> = plan
            .faults
            .iter()
            .filter(|f| f.target == API)
            .filter(|f| match f.kind {
                FaultKind::Outage => true,
                FaultKind::Slow { latency_ms_min, .. } => {
                    SimDuration::from_millis(latency_ms_min) >= slow
                }
                FaultKind::Errors { ratio } => ratio.num() >= ratio.den(),
                _ => false,
            })
            .map(|f| (f.from(), f.until().min(cut)))
            .filter(|(a, b)| a < b)
            .collect();
        super::world::merge_windows(windows)
    }

    /// `breaker.load_bound` over every failing window (see the module docs): measures
    /// each one into the stats, then reports the first over its bound.
    fn check_load(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        let loads = self.window_loads(ctx.plan(), ctx.now());
        self.stats.loads = loads.iter().map(|l| l.0).collect();
        let mut first = None;
        for (_, over) in loads {
            ctx.cover("window.failing");
            first = first.or(over);
        }
        first.map_or(Ok(()), Err)
    }

    /// Per failing window up to `cut`: (from, until, calls, bound), and the violation
    /// when the calls are over the bound.
    fn window_loads(&self, plan: &FaultPlan, cut: SimTime) -> Vec<(WindowLoad, Option<Violation>)> {
        let policy = self.stack.policy;
        let permitted = u64::from(policy.half_open_calls_permitted);
        let wait_min = crate::clock::saturating_nanos(policy.wait_in_open_min).max(1);
        let mut out = Vec::new();
        for (from, until) in self.failing_windows(plan, cut) {
            let inside = |t: SimTime| t >= from && t < until;
            // The first caller turned away without an API call, inside the window.
            let turned_away = self.first_turned_away(from, until);
            let split = turned_away.unwrap_or(until);
            let (mut before, mut after, mut held_max, mut abandoned, mut successes) =
                (0u64, 0u64, 0u64, 0u64, 0u64);
            let mut excused = 0u64;
            let excuse_until = match policy.trip {
                TripRule::Rate {
                    window: SlidingWindow::Time { size_secs },
                    ..
                } => from + SimDuration::from_secs(u64::from(size_secs)),
                _ => from,
            };
            for s in &self.seen {
                match *s {
                    Seen::Call { at, held, .. } if inside(at) => {
                        if at < excuse_until {
                            excused += 1;
                        } else if at < split {
                            before += 1;
                        } else {
                            after += 1;
                        }
                        if at < split {
                            held_max = held_max.max(held);
                        }
                    }
                    Seen::Abandoned { at, sent, request }
                        if inside(at) && sent >= split && self.gave_up.contains(&(request, at)) =>
                    {
                        abandoned += 1
                    }
                    Seen::Reply {
                        at,
                        reply: ApiReply::Ok,
                        ..
                    } if inside(at) => successes += 1,
                    _ => {}
                }
            }
            let length = (until - from).as_nanos();
            let (trip, forgetting) = match policy.trip {
                TripRule::ConsecutiveFailures { failures } => (u64::from(failures), 0),
                TripRule::Rate {
                    window: SlidingWindow::Count { size },
                    ..
                } => (u64::from(size), 0),
                TripRule::Rate {
                    window: SlidingWindow::Time { size_secs },
                    minimum_calls,
                    ..
                } => {
                    let size = u64::from(size_secs).max(1) * 1_000_000_000;
                    (
                        u64::from(minimum_calls),
                        length.div_ceil(size) * u64::from(minimum_calls),
                    )
                }
            };
            let episodes = length.div_ceil(wait_min) + 1 + abandoned;
            let retrip = trip + held_max;
            let bound = excused
                + trip
                + forgetting
                + held_max
                + successes.saturating_mul(retrip)
                + episodes.saturating_mul(permitted);
            let calls = excused + before + after;
            let over = (calls > bound).then(|| {
                Violation::new(
                    LOAD_BOUND,
                    format!(
                        "{calls} calls reached the API while every call failed in [{from}, {until}); \
                         the declared policy allows {bound}: {excused} while a time window of the \
                         outage's first seconds is excused, {trip} to trip + {forgetting} as a \
                         time window forgets + {held_max} held at once before the first caller \
                         was turned away ({}), {successes} successes x {retrip} to trip again, \
                         {episodes} half-open episodes x {permitted} probes ({before} calls came \
                         before that first turn-away, {after} after)",
                        turned_away.map_or_else(|| "none was".to_string(), |t| format!("at {t}"))
                    ),
                )
            });
            out.push(((from, until, calls, bound), over));
        }
        out
    }

    /// The white-box checks, where the stack exposes its transitions: they form a path
    /// from Closed (`breaker.accounting`); no call reaches the API after a transition to
    /// Open or ForcedOpen and before the next one (`breaker.no_call_while_open`; a call
    /// at the very instant of the transition is given the benefit of the doubt); a
    /// half-open episode, from its start up to the next transition, sends at most the
    /// declared probes + the calls abandoned or ignored in it (`breaker.half_open_limit`).
    fn check_white_box(&self) -> Result<(), Violation> {
        let mut state = State::Closed;
        for &(at, from, to) in &self.transitions {
            if from != state {
                return Err(Violation::new(
                    ACCOUNTING,
                    format!("at {at} the breaker reports {from} -> {to}, but it was {state}"),
                ));
            }
            state = to;
        }
        let calls: Vec<SimTime> = self
            .seen
            .iter()
            .filter_map(|s| match s {
                Seen::Call { at, .. } => Some(*at),
                _ => None,
            })
            .collect();
        let permitted = u64::from(self.stack.policy.half_open_calls_permitted);
        for (i, &(at, _, to)) in self.transitions.iter().enumerate() {
            let next = self.transitions.get(i + 1).map_or(SimTime::MAX, |t| t.0);
            if to.rejects_all() {
                if let Some(t) = calls.iter().find(|t| **t > at && **t < next) {
                    return Err(Violation::new(
                        NO_CALL_WHILE_OPEN,
                        format!(
                            "a call reached the API at {t}, while the breaker was {to} (from {at} to {next})"
                        ),
                    ));
                }
            } else if to == State::HalfOpen {
                let probes = calls.iter().filter(|t| **t >= at && **t < next).count() as u64;
                // A counter takes back the permit of a call abandoned or answered with a
                // bad request (ignored) in the episode, of any attempt.
                let given_back = self
                    .seen
                    .iter()
                    .filter(|s| match s {
                        Seen::Abandoned { at: t, .. } => *t >= at && *t < next,
                        Seen::Reply {
                            at: t,
                            reply: ApiReply::Err(ApiError::InvalidNumber),
                            ..
                        } => *t >= at && *t < next,
                        _ => false,
                    })
                    .count() as u64;
                if probes > permitted.saturating_add(given_back) {
                    return Err(Violation::new(
                        HALF_OPEN_LIMIT,
                        format!(
                            "{probes} calls reached the API in the half-open episode from {at}; \
                             at most {permitted} are permitted, + {given_back} given back by \
                             the calls abandoned or ignored in it"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn first_turned_away(&self, from: SimTime, until: SimTime) -> Option<SimTime> {
        self.turned_away_at
            .iter()
            .copied()
            .find(|t| *t >= from && *t < until)
    }
}

impl World for HostedSms {
    type Event = HostedEvent;

    fn marks(&self) -> Vec<&'static str> {
        HOSTED_MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        let mut host = TokioHost::new().map_err(|e| {
            Violation::new("sim.host", format!("the tokio runtime did not start: {e}"))
        })?;
        if let Some(follow) = &self.stack.follow {
            host = host.follow_time(follow(), None);
        }
        let api = Arc::new(Mutex::new(ApiState {
            faults: FaultState::new(ctx.plan().clone(), ctx.rng().fork("hosted.faults")),
            rng: ctx.rng().fork("hosted.api"),
            latency_ms: self.knobs.latency_ms,
            held: 0,
            receipts: Vec::new(),
            seen: Vec::new(),
            marks: Vec::new(),
        }));
        let handle = SmsApi {
            state: Arc::clone(&api),
            clock: host.clock(),
        };
        let built = host
            .enter(|| (self.stack.make)(&self.knobs, handle))
            .map_err(|e| Violation::new("sim.host", format!("the stack was not built: {e}")))?;
        self.run = Some(Running {
            host,
            api,
            caller: built.caller,
            transitions: built.transitions.filter(|_| self.stack.white_box),
            answers: Rc::new(RefCell::new(Vec::new())),
        });
        for source in [Source::Steady, Source::Burst, Source::Spike] {
            self.schedule(ctx, HostedEvent::Arrive(source));
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<HostedEvent>, event: HostedEvent) -> Result<(), Violation> {
        self.step(ctx)?;
        match event {
            HostedEvent::Cluster { left } => {
                self.arrive(ctx, false);
                self.schedule(ctx, HostedEvent::Cluster { left: left - 1 });
            }
            HostedEvent::Arrive(Source::Liveness) => {
                if !self.settled(ctx.now()) {
                    self.arrive(ctx, true);
                }
                self.schedule(ctx, event);
            }
            HostedEvent::Arrive(_) => {
                if self.rng_burst.below(100) < u64::from(self.knobs.burst_percent) {
                    let len = self
                        .rng_burst
                        .between(1, u64::from(self.knobs.burst_len_max));
                    self.schedule(ctx, HostedEvent::Cluster { left: len as u32 });
                }
                self.arrive(ctx, false);
                self.schedule(ctx, event);
            }
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        self.step(ctx)?;
        self.healed_at = Some(ctx.now());
        self.loads_measured = true;
        self.check_load(ctx)?;
        self.check_white_box()?;
        self.schedule(ctx, HostedEvent::Arrive(Source::Liveness));
        Ok(())
    }

    fn is_quiescent(&self, ctx: &Ctx<HostedEvent>) -> bool {
        self.pending == 0 && self.settled(ctx.now())
    }

    fn finish(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        self.step(ctx)?;
        self.check_white_box()
    }

    /// A run stopped before the faults healed: the failing windows' loads up to the
    /// stop (at the healing they are measured in full).
    fn stopped(&mut self, ctx: &Ctx<HostedEvent>) {
        if !self.loads_measured {
            self.stats.loads = self
                .window_loads(ctx.plan(), ctx.now())
                .into_iter()
                .map(|l| l.0)
                .collect();
        }
    }
}

impl HostedSms {
    /// True once the stack has delivered to three liveness callers in a row after the
    /// close deadline.
    fn settled(&self, now: SimTime) -> bool {
        self.close_deadline().is_some_and(|d| now > d) && self.delivered_in_a_row >= 3
    }
}

impl Rerun for HostedSms {
    fn fresh(&self) -> Self {
        HostedSms::new(self.knobs.clone(), self.stack.clone())
    }
}

/// Runs the hosted world of `knobs` with `stack` under `plan`, twice (the determinism
/// check).
pub fn run(
    knobs: &SmsKnobs,
    stack: Stack,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, HostedSms) {
    let world = HostedSms::new(knobs.clone(), stack);
    simulate(world, plan, trace)
}

/// Runs `world` under `plan`, twice (the determinism check).
pub fn simulate(world: HostedSms, plan: FaultPlan, trace: TraceMode) -> (RunReport, HostedSms) {
    let seed = world.knobs.seed;
    let sim = Simulation::new(seed).plan(plan).trace(trace);
    crate::harness::hosted::simulate_twice(&sim, world)
}

/// The breaker's tokio adapter ([`Resilient`]) run as real async code in the hosted SMS
/// world: `breaker-tokio` on the command line. A user's own stack runs in the same world
/// through [`Plugin`](crate::harness::Plugin) with a [`Stack`] of their own.
#[derive(Clone, Copy, Debug, Default)]
pub struct BreakerTokioPattern;

const fn hosted_metrics() -> [Metric<HostedSms>; 3] {
    [
        Metric {
            name: "worst failing-window load / bound",
            unit: "ratio",
            value: |w| {
                w.stats
                    .loads
                    .iter()
                    .filter(|l| l.3 > 0)
                    .map(|l| l.2 as f64 / l.3 as f64)
                    .reduce(f64::max)
            },
        },
        Metric {
            name: "longest wait for an answer",
            unit: "ms",
            value: |w| Some(w.stats.latency_max.as_nanos() as f64 / 1e6),
        },
        Metric {
            name: "turned away",
            unit: "%",
            value: |w| {
                let s = &w.stats;
                (s.callers > 0).then(|| 100.0 * s.turned_away as f64 / s.callers as f64)
            },
        },
    ]
}

fn hosted_with(k: &SmsKnobs, shape: ResilientShape) -> Result<HostedSms, ConfigError> {
    let policy = k.reference_policy()?;
    let retries = if shape == ResilientShape::RetriesOutside {
        k.attempts_max.max(2) - 1
    } else {
        0
    };
    Ok(HostedSms::new(
        k.clone(),
        Stack::new(policy, move |k, api| {
            resilient(k, shape)
                .map(|r| resilient_caller(r, api, retries, Duration::from_millis(k.timeout_ms)))
        }),
    ))
}

/// The async mutants: [`Resilient`] broken in the ways the issue names, each declaring
/// the reference's policy.
const HOSTED_MUTANTS: &[Mutant<BreakerTokioPattern>] = &[
    Mutant::new(
        "retries_outside",
        "one attempt through Resilient, then the retries straight to the API, past the breaker",
        LOAD_BOUND,
        |k| hosted_with(k, ResilientShape::RetriesOutside),
    ),
    Mutant::new(
        "no_timeout",
        "Resilient with no deadline: a caller waits as long as the API takes",
        RESPONSIVENESS,
        |k| hosted_with(k, ResilientShape::NoTimeout),
    ),
    Mutant::new(
        "half_open_admits_all",
        "the breaker lets every call through in half-open (10,000 probes), declaring the knobs' probes",
        HALF_OPEN_LIMIT,
        |k| hosted_with(k, ResilientShape::HalfOpenAdmitsAll),
    ),
    Mutant::new(
        "never_closes",
        "the breaker waits an hour in open, declaring the knobs' wait: it never probes the recovered API",
        CLOSES_AFTER_RECOVERY,
        |k| hosted_with(k, ResilientShape::NeverCloses),
    ),
];

impl Scenario for BreakerTokioPattern {
    type Knobs = SmsKnobs;
    type World = HostedSms;

    const NAME: &'static str = "breaker-tokio";
    const ABOUT: &'static str = "the breaker's tokio adapter (Resilient) as real async code, in the SMS world on a paused runtime";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::breaker::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = HOSTED_INVARIANTS;
    const METRICS: &'static [Metric<HostedSms>] = &hosted_metrics();
    const MUTANTS: &'static [Mutant<Self>] = HOSTED_MUTANTS;
    /// About 8 s on 2 cores, release (`faultline sweep breaker-tokio`; every seed runs
    /// twice).
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 1_000,
    };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        crate::breaker::pattern::SMS_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> SmsKnobs {
        SmsKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &SmsKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &SmsKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &SmsKnobs) -> Result<HostedSms, ConfigError> {
        Ok(HostedSms::new(knobs.clone(), reference_stack(knobs)?))
    }

    fn simulate(
        &self,
        world: HostedSms,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, HostedSms) {
        simulate(world, plan, trace)
    }

    fn describe(&self, knobs: &SmsKnobs, report: &RunReport, world: &HostedSms) -> Description {
        describe(knobs, report, world)
    }
}

crate::harness::host_own_world!(BreakerTokioPattern);

fn describe(_: &SmsKnobs, report: &RunReport, world: &HostedSms) -> Description {
    let s = &world.stats;
    let sends = world.seen.iter().filter_map(|s| match s {
        Seen::Call { at, .. } => Some(*at),
        _ => None,
    });
    let exposed = world.stack.white_box && !world.transitions.is_empty();
    let mut timeline = crate::breaker::pattern::sms_timeline(
        exposed.then_some(world.transitions.as_slice()),
        sends,
        s.answers.iter().copied(),
        report.end,
    );
    timeline.lanes.push(faultline_sim::report::model::Lane {
        name: "every call fails".into(),
        bands: s
            .loads
            .iter()
            .map(|(from, until, ..)| faultline_sim::report::model::Band {
                from: *from,
                until: *until,
                label: "failing".into(),
            })
            .collect(),
    });
    let loads = s
        .loads
        .iter()
        .map(|(a, b, calls, bound)| format!("[{a}, {b}): {calls} calls, bound {bound}"))
        .collect::<Vec<_>>()
        .join("; ");
    Description {
        notes: notes(HOSTED_INVARIANTS, |name| match name {
            LOAD_BOUND if !loads.is_empty() => loads.clone(),
            LOAD_BOUND => "no window in which every call failed".to_string(),
            RESPONSIVENESS => format!("longest wait {}", s.latency_max),
            _ => String::new(),
        }),
        figures: vec![
            ("callers".into(), s.callers.to_string()),
            ("API calls".into(), s.api_calls.to_string()),
            ("delivered".into(), s.delivered.to_string()),
            ("fallbacks".into(), s.fallbacks.to_string()),
            ("errors".into(), s.failed.to_string()),
            ("gave up".into(), s.gave_up.to_string()),
            ("turned away".into(), s.turned_away.to_string()),
        ],
        timeline,
    }
}
