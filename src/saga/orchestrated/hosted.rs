//! The orchestrated checkout in the tokio harness (`saga-tokio`): real async saga code
//! (the reference [`SagaRunner`], or your own orchestrator through a
//! [`HostedSagaFactory`]) runs on the [hosted runtime](crate::harness::hosted) against
//! the three checkout services as async endpoints, under the same seeds, knobs
//! ([`SagaKnobs`]) and fault plans as the sans-IO `saga` world.
//!
//! **The far side.** [`CheckoutServices::call`] is the network and the order,
//! inventory and payment services: it asks the run's
//! [`FaultState`] at the time of the call what the `to-*`
//! link does to the request (drop, duplicate, delay), whether the service is down when
//! the request arrives (no effect, no reply: a partition the caller only learns of by
//! its timeout) or crashed (no effect, and the caller is answered [`Reply::Failed`]
//! at once: a connection refused), how much slower it is, and whether it fails after
//! doing the work (an `errors` fault: the effect is applied and the caller is answered
//! [`Reply::Failed`], a 5xx), then what the `from-*` link does to the reply. So the
//! runner's "failed, retry now" path runs under the plans, beside silent attempts. The
//! services apply each request by its idempotency key exactly as
//! [`Services`] does. A request without its key
//! ([`Request::idempotency_key`] `None`, or a key other than its command's) cannot be
//! recognised as a retry: the order and inventory services still deduplicate it by
//! their natural keys (one order, one reservation per saga), but the payment service
//! has none: a charge without its key is charged again. Every request is logged with
//! its time, saga, step, action or compensation, key, and whether it was applied,
//! deduplicated or had no effect.
//!
//! **The workload.** Checkouts arrive as in the `saga` world (the same customers per
//! seed); each is submitted to the code under test ([`HostedSaga::submit`]); while the
//! orchestrator is crashed (a `crash` of `orchestrator`), the customers wait and are
//! submitted at its recovery. A crash drops the code under test (its tasks are
//! cancelled mid-call); the recovery builds it again from the factory over the same
//! durable log ([`SagaEnv::log`]). A tick every 10 ms drains the services' log.
//!
//! **The oracles**, black-box, from the services' own books and the requests they
//! saw (the sans-IO world's names):
//!
//! - [`saga.idempotent`](invariants::IDEMPOTENT): no request took effect twice for
//!   one key (a double charge).
//! - [`saga.conservation`](invariants::CONSERVATION): stock and money add up.
//! - [`saga.at_rest`](invariants::AT_REST): at rest, every accepted checkout reached
//!   the order service (called for it), and holds either all of its order, stock and payment (done)
//!   or none of them (compensated); done only if no compensation of it ever reached a
//!   service; half-done only for a saga the code under test alerted on (Failed).
//! - [`saga.compensation_order`](invariants::COMPENSATION_ORDER): the compensations
//!   that took effect at the services did so in reverse step order.
//! - [`saga.settling`](invariants::SETTLING): the code under test made every saga's
//!   last call to a service (a late copy held up in the network does not count) within the settling bound of the policy the code under test declares
//!   ([`SagaKnobs::settle_bound`]) after the later of its checkout and the end of the
//!   last fault.
//! - [`sim.determinism`](crate::harness::hosted::DETERMINISM): two runs of a seed
//!   agree.
//!
//! White-box (on unless [`SagaTokioWorld::black_box_only`]): where the code under test
//! reports its sagas' states ([`HostedSaga::states`]; the runner does), each saga it
//! reports Completed or Compensated must hold what that end says at the services
//! (`saga.conservation`). Not checked here: `saga.write_ahead`, `saga.retries` and
//! `saga.started_as_submitted`, which judge the orchestrator's log and sends; the
//! runner drives the same driver core the sans-IO world verifies them on.

use crate::config::ConfigError;
use crate::harness::hosted::{DETERMINISM, Rerun, TokioHost, VirtualClock, simulate_twice};
use crate::harness::{Description, Metric, Mutant, Scenario, notes};
use crate::rt::lock;
use crate::saga::checkout::{self, Arrivals, COORDINATOR_NODE, SagaKnobs, Settling, service_node};
use crate::saga::invariants::{self, AT_REST, CompensationEffects};
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::contract::SagaPolicy;
use crate::saga::orchestrated::tokio::{MemoryLog, SagaRunner};
use crate::saga::report::saga_timeline;
use crate::saga::services::{
    Command, IdempotencyKey, Kind, Order, Reply, SagaId, SagaState, Services, StepId,
};
use faultline_sim::prelude::*;
use faultline_sim::{FaultState, SeedRange};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Coverage marks of the hosted checkout.
pub const MARKS: &[&str] = &[
    "saga_tokio.applied",
    "saga_tokio.deduplicated",
    "saga_tokio.request_lost",
    "saga_tokio.service_down",
    "saga_tokio.reply_lost",
    "saga_tokio.duplicate_delivered",
    "saga_tokio.compensated",
    "saga_tokio.completed",
    "saga_tokio.orchestrator_crashed",
    "saga_tokio.recovered",
    "saga_tokio.failed_answer",
];

/// The invariants the hosted checkout checks, in order.
pub const INVARIANTS: [&str; 6] = [
    invariants::AT_REST,
    invariants::CONSERVATION,
    invariants::COMPENSATION_ORDER,
    invariants::IDEMPOTENT,
    invariants::SETTLING,
    DETERMINISM,
];

const TICK: SimDuration = SimDuration::from_millis(10);

fn std_duration(d: SimDuration) -> Duration {
    Duration::from_nanos(d.as_nanos())
}

// ----- the far side -----

/// One request to a checkout service: the command, and the idempotency key it carries
/// (`Some(cmd.key())` for a well-behaved client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub cmd: Command,
    /// The key the service deduplicates by; `None` (or another key than the
    /// command's) is a request the service cannot recognise as a retry.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Request {
    /// `cmd` with its own idempotency key.
    pub fn keyed(cmd: Command) -> Self {
        Request {
            cmd,
            idempotency_key: Some(cmd.key()),
        }
    }

    fn is_keyed(&self) -> bool {
        self.idempotency_key == Some(self.cmd.key())
    }
}

/// What a service did with a request that reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It took effect (stock or money moved, an order placed or cancelled).
    Applied,
    /// It was recognised as a repeat and answered from the record.
    Deduplicated,
    /// Handled, without effect (a refusal, a tombstone, a no-op undo).
    NoEffect,
    /// The service was down or crashed: nothing happened, no reply.
    Down,
    /// The link lost the request on the way: the service never saw it.
    Lost,
}

/// One request as a service saw it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// When the code under test made the call.
    sent: SimTime,
    /// When the request reached the service (or was lost).
    at: SimTime,
    request: Request,
    effect: Effect,
    /// Effects of the command's key before and after.
    before: u32,
    after: u32,
    reply: Option<Reply>,
    /// The reply is lost (an `errors` fault: the caller is answered `Failed` instead).
    reply_lost: bool,
    /// The caller was answered [`Reply::Failed`] (a crashed service or an `errors`
    /// fault).
    failed: bool,
    /// A second copy of the request arrived (a duplicating link).
    copy: bool,
}

struct Far {
    faults: FaultState,
    services: Services,
    rng: SimRng,
    latency_ms: (u64, u64),
    seen: Vec<Seen>,
    lost_requests: u64,
}

impl Far {
    fn latency(&mut self) -> SimDuration {
        let (lo, hi) = self.latency_ms;
        SimDuration::from_micros(self.rng.between(lo * 1_000, hi * 1_000))
    }

    /// Applies `request` once, as the service owning its step would.
    fn apply(
        &mut self,
        sent: SimTime,
        at: SimTime,
        request: Request,
        copy: bool,
        reply_lost: bool,
    ) -> Reply {
        let cmd = request.cmd;
        let key = cmd.key();
        let before = self.services.effects(key);
        let duplicates = |s: &Services| {
            use crate::saga::services::CheckoutStep as S;
            match cmd.step.checkout() {
                Some(S::Order) => s.orders.ledger().duplicates(),
                Some(S::Inventory) => s.inventory.ledger().duplicates(),
                Some(S::Payment) => s.payment.ledger().duplicates(),
                None => 0,
            }
        };
        let dups = duplicates(&self.services);
        // Payment has no natural key: a charge without its key is a new charge.
        let keyless_charge =
            !request.is_keyed() && cmd.step == StepId::PAYMENT && cmd.kind == Kind::Action;
        let idempotent = self.services.payment.idempotent;
        if keyless_charge {
            self.services.payment.idempotent = false;
        }
        let reply = self.services.handle(&cmd);
        self.services.payment.idempotent = idempotent;
        let after = self.services.effects(key);
        let effect = if after > before {
            Effect::Applied
        } else if duplicates(&self.services) > dups {
            Effect::Deduplicated
        } else {
            Effect::NoEffect
        };
        self.seen.push(Seen {
            sent,
            at,
            request,
            effect,
            before,
            after,
            reply: Some(reply),
            reply_lost,
            failed: reply_lost,
            copy,
        });
        reply
    }
}

/// The order, inventory and payment services behind the network, as async endpoints
/// the code under test calls. Clones are handles to the same services. See the
/// [module docs](self).
#[derive(Clone)]
pub struct CheckoutServices {
    far: Arc<Mutex<Far>>,
    clock: VirtualClock,
}

impl std::fmt::Debug for CheckoutServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckoutServices").finish_non_exhaustive()
    }
}

impl CheckoutServices {
    /// Sends `request` to the service of its step and waits for the reply: `None` when
    /// there is none (the request or the reply was lost, or the service was down),
    /// `Some(Reply::Failed)` when the service was crashed (connection refused, nothing
    /// done) or failed after doing the work (a 5xx). Cancel-safe: dropping the future mid-call leaves
    /// whatever the service already did.
    pub async fn call(&self, request: Request) -> Option<Reply> {
        let svc = service_node(request.cmd.step);
        let sent = self.clock.now();
        let (there, copies) = {
            let mut far = lock(&self.far);
            let now = sent;
            let fate = far.faults.view(now).link(&format!("to-{svc}"));
            let latency = far.latency();
            if fate.dropped {
                far.lost_requests += 1;
                far.seen.push(Seen {
                    sent,
                    at: now,
                    request,
                    effect: Effect::Lost,
                    before: 0,
                    after: 0,
                    reply: None,
                    reply_lost: true,
                    failed: false,
                    copy: false,
                });
            }
            let copies = if fate.dropped { 0 } else { fate.copies };
            (latency + fate.extra_delay, copies)
        };
        ::tokio::time::sleep(std_duration(there)).await;
        if copies == 0 {
            return None;
        }
        let back = {
            let mut guard = lock(&self.far);
            let far: &mut Far = &mut guard;
            let now = self.clock.now();
            let mut view = far.faults.view(now);
            let crashed = view.is_crashed(svc);
            if view.is_down(svc) || crashed {
                far.seen.push(Seen {
                    sent,
                    at: now,
                    request,
                    effect: Effect::Down,
                    before: 0,
                    after: 0,
                    reply: None,
                    reply_lost: !crashed,
                    failed: crashed,
                    copy: false,
                });
                if !crashed {
                    return None;
                }
            }
            let extra = view.extra_latency(svc);
            let lose = view.injects_error(svc);
            let reply = if crashed {
                // Connection refused: nothing applied, the caller told at once.
                Reply::Failed
            } else {
                let mut reply = far.apply(sent, now, request, false, lose);
                for _ in 1..copies {
                    reply = far.apply(sent, now, request, true, lose);
                }
                // A 5xx after the work: the caller is told it failed.
                if lose { Reply::Failed } else { reply }
            };
            let fate = far.faults.view(now).link(&format!("from-{svc}"));
            if fate.dropped {
                return None;
            }
            (far.latency() + extra + fate.extra_delay, reply)
        };
        ::tokio::time::sleep(std_duration(back.0)).await;
        Some(back.1)
    }
}

// ----- the code under test -----

/// What the world gives the code under test when it builds it (at the start, and at
/// each recovery after a crash of `orchestrator`).
#[derive(Clone, Debug)]
pub struct SagaEnv {
    /// The checkout services to call.
    pub services: CheckoutServices,
    /// The durable log: it survives a crash of the orchestrator (the same records at
    /// each build of one run; empty at the start of a run).
    pub log: MemoryLog,
    /// False at the start of the run, true when rebuilt after a crash.
    pub recovering: bool,
}

/// One life of an async saga orchestrator in the hosted world (dropping it is a crash:
/// its tasks are cancelled).
pub trait HostedSaga {
    /// Submits a checkout: true when it is accepted (durably: it will be run to rest,
    /// even across a crash), or was already; false when the customer must try again.
    fn submit(&self, saga: SagaId, order: Order) -> bool;
    /// True when, as far as it knows, every saga it accepted is at rest: when the
    /// world checks the services' books.
    fn is_at_rest(&self) -> bool;
    /// The sagas it gave up on with an alert (half done, for a human).
    fn alerted(&self) -> Vec<SagaId>;
    /// Its sagas' states, for the white-box check (`None` if it does not say).
    fn states(&self) -> Option<Vec<(SagaId, SagaState)>> {
        None
    }
}

/// Builds the code under test, inside the hosted runtime, once per life (fresh state
/// each time: the determinism check builds it again on a fresh runtime).
pub trait HostedSagaFactory {
    /// The policy it declares: the settling bound is computed from it.
    fn policy(&self) -> SagaPolicy;
    /// One life of the orchestrator over `env`.
    ///
    /// # Errors
    ///
    /// Its own, in words; the run fails with `saga.at_rest`.
    fn build(&self, env: SagaEnv) -> Result<Box<dyn HostedSaga>, String>;
}

impl HostedSaga for SagaRunner {
    fn submit(&self, saga: SagaId, order: Order) -> bool {
        match self.start(saga, order) {
            Ok(()) | Err(crate::saga::orchestrated::tokio::RunnerError::AlreadyKnown(_)) => true,
            Err(_) => false,
        }
    }
    fn is_at_rest(&self) -> bool {
        SagaRunner::is_at_rest(self)
    }
    fn alerted(&self) -> Vec<SagaId> {
        self.alerts().into_iter().map(|(s, _)| s).collect()
    }
    fn states(&self) -> Option<Vec<(SagaId, SagaState)>> {
        Some(self.sagas())
    }
}

/// A deliberate defect of the reference factory's async code (the mutants); `None`
/// for the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerFlaw {
    /// The reference.
    None,
    /// The participant sends a command's first attempt with its idempotency key and
    /// every later call of it (the runner's retries, a recovery's resend) without.
    RetryWithoutKey,
    /// A compensation call with no answer within the step timeout is taken as done.
    CompensationTimeoutIsDone,
    /// Each life of the runner gets a log of its own: what was in flight at a crash
    /// is forgotten.
    LogNotDurable,
    /// An action answered [`Reply::Failed`] (a refused connection, a 5xx) is taken as
    /// done: the participant's client checks for a refusal only.
    FailedIsOk,
}

/// The reference code under test: a [`SagaRunner`] whose participants call the
/// services with each command's idempotency key.
#[derive(Clone, Debug)]
pub struct RunnerFactory {
    config: SagaConfig,
    flaw: RunnerFlaw,
}

impl RunnerFactory {
    /// A runner configured by `config`.
    pub fn new(config: SagaConfig) -> Self {
        RunnerFactory {
            config,
            flaw: RunnerFlaw::None,
        }
    }

    /// The same, carrying `flaw`.
    pub fn with_flaw(mut self, flaw: RunnerFlaw) -> Self {
        self.flaw = flaw;
        self
    }
}

impl HostedSagaFactory for RunnerFactory {
    fn policy(&self) -> SagaPolicy {
        SagaPolicy::from(&self.config)
    }

    fn build(&self, env: SagaEnv) -> Result<Box<dyn HostedSaga>, String> {
        let flaw = self.flaw;
        let log = if flaw == RunnerFlaw::LogNotDurable {
            MemoryLog::new()
        } else {
            env.log
        };
        let sent: Arc<Mutex<BTreeSet<IdempotencyKey>>> = Arc::default();
        let services = env.services;
        let action = {
            let services = services.clone();
            move |cmd: Command| {
                let services = services.clone();
                let first = lock(&sent).insert(cmd.key());
                let request = if flaw == RunnerFlaw::RetryWithoutKey && !first {
                    Request {
                        cmd,
                        idempotency_key: None,
                    }
                } else {
                    Request::keyed(cmd)
                };
                async move {
                    match answer(services.call(request).await).await {
                        Reply::Failed if flaw == RunnerFlaw::FailedIsOk => Reply::Ok,
                        reply => reply,
                    }
                }
            }
        };
        let timeout = self.config.step_timeout();
        let compensation = move |cmd: Command| {
            let services = services.clone();
            async move {
                let call = services.call(Request::keyed(cmd));
                if flaw == RunnerFlaw::CompensationTimeoutIsDone {
                    match ::tokio::time::timeout(timeout, call).await {
                        Ok(Some(reply)) => reply,
                        _ => Reply::Ok,
                    }
                } else {
                    answer(call.await).await
                }
            }
        };
        let runner = SagaRunner::builder(self.config.clone(), log)
            .step(StepId::ORDER, action.clone(), compensation.clone())
            .step(StepId::INVENTORY, action.clone(), compensation.clone())
            .step(StepId::PAYMENT, action, compensation)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Box::new(runner))
    }
}

/// The runner's participant answer for a call's result: the reply, or, when there was
/// none (the request or reply lost, the service down), a future that never resolves, so the
/// attempt times out as it would over a real network that stays silent.
async fn answer(reply: Option<Reply>) -> Reply {
    match reply {
        Some(reply) => reply,
        None => std::future::pending().await,
    }
}

// ----- the world -----

/// Figures of one hosted run, from the services' books.
#[derive(Clone, Debug, Default)]
pub struct HostedStats {
    /// Checkouts submitted (customers who arrived).
    pub submitted: u64,
    /// Sagas done at rest (all three effects held).
    pub completed: u64,
    /// Sagas compensated at rest (none held).
    pub compensated: u64,
    /// Sagas half done with an alert.
    pub failed: u64,
    /// True once the books were read at rest. A run stopped before it came to rest
    /// leaves it false: its sagas' endings (the three counts above) cannot be told from
    /// books still moving, and are not judged.
    pub at_rest: bool,
    /// Requests that reached a service.
    pub requests: u64,
    /// Requests that took effect.
    pub applied: u64,
    /// Requests answered from the record.
    pub deduplicated: u64,
    /// Requests without their idempotency key.
    pub keyless: u64,
    /// Requests lost on the way.
    pub lost: u64,
    /// Orchestrator recoveries.
    pub recoveries: u64,
}

/// The hosted checkout world around async saga code. See the [module docs](self).
pub struct SagaTokioWorld {
    knobs: SagaKnobs,
    factory: Arc<dyn HostedSagaFactory>,
    policy: SagaPolicy,
    white_box: bool,
    host: Option<TokioHost>,
    far: Option<Arc<Mutex<Far>>>,
    log: MemoryLog,
    orchestrator: Option<Box<dyn HostedSaga>>,
    arrivals: Arrivals,
    waiting: Vec<(SagaId, Order)>,
    submitted: BTreeMap<SagaId, Order>,
    accepted: BTreeSet<SagaId>,
    alerted: BTreeSet<SagaId>,
    /// The order service was called for the saga (whatever became of the request).
    called_orders: BTreeSet<SagaId>,
    /// A compensation of the saga reached a service: (service, when), the first.
    compensation_seen: BTreeMap<SagaId, (&'static str, SimTime)>,
    /// When the code under test last called a service for each saga.
    last_request: BTreeMap<SagaId, SimTime>,
    compensation_effects: CompensationEffects,
    settling: Settling,
    at_rest: bool,
    /// Figures of the run.
    pub stats: HostedStats,
    lanes: Vec<(SagaId, SimTime, String)>,
}

impl SagaTokioWorld {
    /// The world for `knobs` around the code `factory` builds, judged by the policy
    /// it declares.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the declared policy is not valid.
    pub fn new(knobs: SagaKnobs, factory: Arc<dyn HostedSagaFactory>) -> Result<Self, ConfigError> {
        let policy = factory.policy();
        policy.validate()?;
        Ok(SagaTokioWorld::blank(knobs, factory, policy, true))
    }

    fn blank(
        knobs: SagaKnobs,
        factory: Arc<dyn HostedSagaFactory>,
        policy: SagaPolicy,
        white_box: bool,
    ) -> Self {
        SagaTokioWorld {
            knobs,
            factory,
            policy,
            white_box,
            host: None,
            far: None,
            log: MemoryLog::new(),
            orchestrator: None,
            arrivals: Arrivals::default(),
            waiting: Vec::new(),
            submitted: BTreeMap::new(),
            accepted: BTreeSet::new(),
            alerted: BTreeSet::new(),
            called_orders: BTreeSet::new(),
            compensation_seen: BTreeMap::new(),
            last_request: BTreeMap::new(),
            compensation_effects: CompensationEffects::default(),
            settling: Settling::default(),
            at_rest: false,
            stats: HostedStats::default(),
            lanes: Vec::new(),
        }
    }

    /// The reference: a [`SagaRunner`] configured by the knobs' configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the knobs do not make a valid configuration.
    pub fn reference(knobs: SagaKnobs) -> Result<Self, ConfigError> {
        SagaTokioWorld::flawed(knobs, RunnerFlaw::None)
    }

    /// The reference factory carrying `flaw`.
    ///
    /// # Errors
    ///
    /// As [`reference`](SagaTokioWorld::reference).
    pub fn flawed(knobs: SagaKnobs, flaw: RunnerFlaw) -> Result<Self, ConfigError> {
        let config = knobs.config()?;
        let factory = RunnerFactory::new(config).with_flaw(flaw);
        SagaTokioWorld::new(knobs, Arc::new(factory))
    }

    /// Turns the white-box check off: the services' books alone judge the run.
    pub fn black_box_only(mut self) -> Self {
        self.white_box = false;
        self
    }

    /// The knobs.
    pub fn knobs(&self) -> &SagaKnobs {
        &self.knobs
    }

    /// The policy the code under test declared.
    pub fn policy(&self) -> &SagaPolicy {
        &self.policy
    }

    fn build(&mut self, ctx: &mut Ctx<HostedEvent>, recovering: bool) -> Result<(), Violation> {
        let (Some(host), Some(far)) = (self.host.as_mut(), self.far.as_ref()) else {
            return Ok(());
        };
        let env = SagaEnv {
            services: CheckoutServices {
                far: Arc::clone(far),
                clock: host.clock(),
            },
            log: self.log.clone(),
            recovering,
        };
        let factory = Arc::clone(&self.factory);
        let built = host.block_on(async move { factory.build(env) });
        match built {
            Ok(o) => {
                self.orchestrator = Some(o);
                Ok(())
            }
            Err(e) => {
                ctx.record(COORDINATOR_NODE, format_args!("build failed: {e}"));
                Err(Violation::new(
                    AT_REST,
                    format!("the code under test could not be built: {e}"),
                ))
            }
        }
    }

    /// Submits the waiting customers (the orchestrator is up).
    fn submit_waiting(&mut self, ctx: &mut Ctx<HostedEvent>) {
        let (Some(host), Some(o)) = (self.host.as_mut(), self.orchestrator.as_ref()) else {
            return;
        };
        let waiting = std::mem::take(&mut self.waiting);
        let results: Vec<bool> = host.block_on(async {
            waiting
                .iter()
                .map(|(saga, order)| o.submit(*saga, *order))
                .collect()
        });
        for ((saga, order), ok) in waiting.into_iter().zip(results) {
            if ok {
                self.accepted.insert(saga);
                self.lanes.push((saga, ctx.now(), "accepted".into()));
            } else {
                self.waiting.push((saga, order));
            }
        }
    }

    /// Runs the tasks until now, then takes in what the services saw, in order.
    fn step(&mut self, ctx: &mut Ctx<HostedEvent>) {
        let (Some(host), Some(far)) = (self.host.as_mut(), self.far.as_ref()) else {
            return;
        };
        host.advance_to(ctx.now());
        let (seen, hits, lost) = {
            let mut far = lock(far);
            let lost = std::mem::take(&mut far.lost_requests);
            (std::mem::take(&mut far.seen), far.faults.take_hits(), lost)
        };
        ctx.add_fault_hits(&hits);
        self.stats.lost += lost;
        if lost > 0 {
            ctx.cover("saga_tokio.request_lost");
        }
        for s in seen {
            self.observe(ctx, s);
        }
        if let Some(o) = &self.orchestrator {
            self.alerted.extend(o.alerted());
            self.at_rest = o.is_at_rest();
        } else {
            self.at_rest = false;
        }
    }

    fn observe(&mut self, ctx: &mut Ctx<HostedEvent>, s: Seen) {
        let cmd = s.request.cmd;
        let svc = service_node(cmd.step);
        let key = if s.request.is_keyed() {
            "keyed".to_string()
        } else {
            self.stats.keyless += 1;
            match s.request.idempotency_key {
                None => "no key".to_string(),
                Some(k) => format!("foreign key {k}"),
            }
        };
        let what = match s.effect {
            Effect::Applied => "applied",
            Effect::Deduplicated => "deduplicated",
            Effect::NoEffect => "no effect",
            Effect::Down => "down",
            Effect::Lost => "lost on the way",
        };
        ctx.record(
            svc,
            format_args!(
                "at {} {cmd} ({key}){} -> {what}, {:?}{}",
                s.at,
                if s.copy { " copy" } else { "" },
                s.reply,
                if s.failed {
                    ", answered failed"
                } else if s.reply_lost && s.effect != Effect::Down {
                    ", reply lost"
                } else {
                    ""
                }
            ),
        );
        if cmd.step == StepId::ORDER {
            self.called_orders.insert(cmd.saga);
        }
        let last = self.last_request.entry(cmd.saga).or_insert(s.sent);
        *last = (*last).max(s.sent);
        if s.effect == Effect::Lost {
            return;
        }
        if s.failed {
            ctx.cover("saga_tokio.failed_answer");
        }
        self.stats.requests += 1;
        match s.effect {
            Effect::Applied => {
                self.stats.applied += 1;
                ctx.cover("saga_tokio.applied");
            }
            Effect::Deduplicated => {
                self.stats.deduplicated += 1;
                ctx.cover("saga_tokio.deduplicated");
            }
            Effect::NoEffect | Effect::Lost => {}
            Effect::Down => {
                ctx.cover("saga_tokio.service_down");
                return;
            }
        }
        if s.copy {
            ctx.cover("saga_tokio.duplicate_delivered");
        }
        if s.reply_lost {
            ctx.cover("saga_tokio.reply_lost");
        }
        if cmd.kind == Kind::Compensation {
            self.compensation_seen
                .entry(cmd.saga)
                .or_insert((svc, s.at));
        }
        self.compensation_effects.observe(&cmd, s.before, s.after);
        let verb = if cmd.kind == Kind::Action {
            "do"
        } else {
            "undo"
        };
        self.lanes
            .push((cmd.saga, s.at, format!("{verb} {:?}: {what}", cmd.step)));
    }

    fn services_books(&self) -> Option<Services> {
        self.far.as_ref().map(|f| lock(f).services.clone())
    }

    fn handle_event(
        &mut self,
        ctx: &mut Ctx<HostedEvent>,
        event: HostedEvent,
    ) -> Result<(), Violation> {
        match event {
            HostedEvent::Checkout => {
                if let Some((saga, order, then)) = self.arrivals.arrive() {
                    if let Some(next) = then {
                        ctx.schedule_at(next, HostedEvent::Checkout);
                    }
                    self.settling.checkout(saga, ctx.now());
                    self.submitted.insert(saga, order);
                    self.stats.submitted += 1;
                    self.waiting.push((saga, order));
                    self.submit_waiting(ctx);
                }
            }
            HostedEvent::Tick => {
                if !self.waiting.is_empty() {
                    self.submit_waiting(ctx);
                }
                ctx.schedule_in(TICK, HostedEvent::Tick);
            }
        }
        Ok(())
    }

    /// The sagas not at rest, in words (for a run that does not settle).
    pub fn pending(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.orchestrator.is_none() {
            parts.push("the orchestrator is down".to_string());
        } else if !self.at_rest {
            parts.push("the code under test reports sagas not at rest".to_string());
        }
        if !self.waiting.is_empty() {
            parts.push(format!("{} checkout(s) not accepted", self.waiting.len()));
        }
        if parts.is_empty() {
            None
        } else {
            Some(parts.join("; "))
        }
    }
}

/// The hosted world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostedEvent {
    /// A customer checks out.
    Checkout,
    /// Run the tasks and take in what the services saw.
    Tick,
}

impl Rerun for SagaTokioWorld {
    fn fresh(&self) -> Self {
        SagaTokioWorld::blank(
            self.knobs.clone(),
            Arc::clone(&self.factory),
            self.policy,
            self.white_box,
        )
    }
}

impl World for SagaTokioWorld {
    type Event = HostedEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        let host = TokioHost::new().map_err(|e| {
            Violation::new(AT_REST, format!("the tokio runtime would not start: {e}"))
        })?;
        let faults = FaultState::new(ctx.plan().clone(), ctx.rng().fork("hosted.faults"));
        self.far = Some(Arc::new(Mutex::new(Far {
            faults,
            services: self.knobs.services(true),
            rng: SimRng::new(self.knobs.seed).fork("saga_tokio.latency"),
            latency_ms: self.knobs.latency_ms,
            seen: Vec::new(),
            lost_requests: 0,
        })));
        self.host = Some(host);
        self.build(ctx, false)?;
        self.arrivals = Arrivals::new(&self.knobs, ctx.horizon());
        if let Some(at) = self.arrivals.first_at() {
            ctx.schedule_at(at, HostedEvent::Checkout);
        }
        ctx.schedule_in(TICK, HostedEvent::Tick);
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<HostedEvent>, event: HostedEvent) -> Result<(), Violation> {
        self.step(ctx);
        let result = self.handle_event(ctx, event);
        self.at_rest = self.orchestrator.as_ref().is_some_and(|o| o.is_at_rest());
        result
    }

    fn on_fault(&mut self, ctx: &mut Ctx<HostedEvent>, edge: FaultEdge) -> Result<(), Violation> {
        self.step(ctx);
        self.settling.fault_edge(edge.started, ctx.now());
        if !edge.fault.kind.is_crash() || edge.fault.target != COORDINATOR_NODE {
            return Ok(());
        }
        if edge.started && self.orchestrator.is_some() {
            let gone = self.orchestrator.take();
            if let Some(host) = self.host.as_mut() {
                host.block_on(async move { drop(gone) });
            }
            ctx.cover("saga_tokio.orchestrator_crashed");
            ctx.record(COORDINATOR_NODE, "crashed");
            self.at_rest = false;
        } else if !edge.started && self.orchestrator.is_none() {
            self.build(ctx, true)?;
            self.stats.recoveries += 1;
            ctx.cover("saga_tokio.recovered");
            ctx.record(
                COORDINATOR_NODE,
                format_args!("recovered over {} log records", self.log.len()),
            );
            self.submit_waiting(ctx);
            self.step(ctx);
        }
        self.at_rest = self.orchestrator.as_ref().is_some_and(|o| o.is_at_rest());
        Ok(())
    }

    fn is_quiescent(&self, ctx: &Ctx<HostedEvent>) -> bool {
        ctx.is_healed() && self.waiting.is_empty() && self.orchestrator.is_some() && self.at_rest
    }

    fn finish(&mut self, ctx: &mut Ctx<HostedEvent>) -> Result<(), Violation> {
        self.step(ctx);
        let Some(services) = self.services_books() else {
            return Ok(());
        };
        // No double effect, then the stock and the money.
        invariants::check_idempotent(&services)?;
        invariants::check_conserved(&services)?;
        self.stats.at_rest = true;
        // Each accepted checkout at rest, from the books: all or nothing.
        for saga in self.submitted.keys() {
            if !self.accepted.contains(saga) {
                return Err(Violation::new(
                    AT_REST,
                    format!("{saga} was submitted and never accepted"),
                ));
            }
            if !self.called_orders.contains(saga) {
                return Err(Violation::new(
                    AT_REST,
                    format!("{saga} was accepted, but the order service was never called for it"),
                ));
            }
            let all = services.holds_all(*saga);
            let any = services.holds(*saga);
            if all {
                if let Some((svc, at)) = self.compensation_seen.get(saga) {
                    return Err(Violation::new(
                        AT_REST,
                        format!(
                            "{saga} holds its order, stock and payment, yet a compensation of it reached {svc} at {at}: a saga being compensated must end with nothing held"
                        ),
                    ));
                }
                ctx.cover("saga_tokio.completed");
                self.stats.completed += 1;
            } else if !any {
                ctx.cover("saga_tokio.compensated");
                self.stats.compensated += 1;
            } else if self.alerted.contains(saga) {
                self.stats.failed += 1;
            } else {
                let held: Vec<&str> = [
                    (
                        services.orders.status(*saga)
                            == Some(crate::saga::services::OrderStatus::Placed),
                        "its order is placed",
                    ),
                    (
                        services.inventory.reservation(*saga).is_some_and(|r| {
                            r.state == crate::saga::services::ReservationState::Reserved
                        }),
                        "its stock is reserved",
                    ),
                    (
                        services.payment.charge(*saga).is_some_and(|c| {
                            c.state == crate::saga::services::ChargeState::Captured
                        }),
                        "its payment is captured",
                    ),
                ]
                .into_iter()
                .filter_map(|(h, w)| h.then_some(w))
                .collect();
                return Err(Violation::new(
                    AT_REST,
                    format!(
                        "{saga} is at rest half done, without an alert: {} (and nothing else)",
                        held.join(", ")
                    ),
                ));
            }
        }
        self.compensation_effects
            .check_reverse_order(&checkout::STEPS)?;
        // Settling: the last request of each saga, from its checkout or the last fault.
        for (saga, at) in &self.last_request {
            self.settling.rested(*saga, *at);
        }
        let bound = self.knobs.settle_bound(&self.policy);
        let bound = SimDuration::from_nanos(u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX));
        self.settling.check(bound)?;
        // White-box: what the code under test says of each saga, against the books.
        if self.white_box
            && let Some(states) = self.orchestrator.as_ref().and_then(|o| o.states())
        {
            for (saga, state) in states {
                invariants::check_holdings(&services, saga, state, |_, _, _| None)?;
            }
        }
        Ok(())
    }
}

// ----- the scenario -----

/// The orchestrated checkout saga in the tokio harness: the reference [`SagaRunner`]
/// (or your async orchestrator) against async checkout services.
#[derive(Clone, Copy, Debug, Default)]
pub struct SagaTokioPattern;

/// The catalog of async mutants: broken versions of the runner's tokio code.
pub const CATALOG: &[Mutant<SagaTokioPattern>] = &[
    Mutant::new(
        "retry_without_key",
        "a participant call is retried without its idempotency key (a charge whose reply was lost is charged again)",
        invariants::IDEMPOTENT,
        |k: &SagaKnobs| SagaTokioWorld::flawed(k.clone(), RunnerFlaw::RetryWithoutKey),
    ),
    Mutant::new(
        "compensation_timeout_is_done",
        "a compensation call with no answer within the step timeout is taken as done (the undo is forgotten)",
        invariants::AT_REST,
        |k: &SagaKnobs| SagaTokioWorld::flawed(k.clone(), RunnerFlaw::CompensationTimeoutIsDone),
    ),
    Mutant::new(
        "failed_is_ok",
        "an action answered \"failed, retry now\" (a refused connection, a 5xx) is taken as done, as by a client that only looks for a refusal",
        invariants::AT_REST,
        |k: &SagaKnobs| SagaTokioWorld::flawed(k.clone(), RunnerFlaw::FailedIsOk),
    ),
    Mutant::new(
        "log_not_durable",
        "each runner life gets a fresh in-memory log: sagas in flight at a crash are forgotten",
        invariants::AT_REST,
        |k: &SagaKnobs| SagaTokioWorld::flawed(k.clone(), RunnerFlaw::LogNotDurable),
    ),
];

const METRICS: &[Metric<SagaTokioWorld>] = &[
    Metric {
        name: "sagas completed",
        unit: "%",
        value: |w| {
            (w.stats.at_rest)
                .then(|| 100.0 * w.stats.completed as f64 / w.stats.submitted.max(1) as f64)
        },
    },
    Metric {
        name: "sagas compensated",
        unit: "%",
        value: |w| {
            (w.stats.at_rest)
                .then(|| 100.0 * w.stats.compensated as f64 / w.stats.submitted.max(1) as f64)
        },
    },
    Metric {
        name: "requests deduplicated",
        unit: "count",
        value: |w| Some(w.stats.deduplicated as f64),
    },
    Metric {
        name: "orchestrator recoveries",
        unit: "count",
        value: |w| Some(w.stats.recoveries as f64),
    },
];

/// Runs `world` under `plan` twice (the determinism check), the one way the hosted
/// checkout is run.
pub fn run(
    world: SagaTokioWorld,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, SagaTokioWorld) {
    let sim = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(2_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay saga-tokio --seed {seed}");
    simulate_twice(&sim, world)
}

impl Scenario for SagaTokioPattern {
    type Knobs = SagaKnobs;
    type World = SagaTokioWorld;

    const NAME: &'static str = "saga-tokio";
    const ABOUT: &'static str =
        "the tokio SagaRunner (real async code) against async checkout services";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::saga::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<SagaTokioWorld>] = METRICS;
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    /// 6.8 s release on one core, both runs of each seed (`taskset -c 0 faultline sweep saga-tokio`).
    const DEFAULT_SEEDS: SeedRange = SeedRange { start: 0, end: 300 };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        crate::saga::report::CHECKOUT_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> SagaKnobs {
        SagaKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &SagaKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &SagaKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &SagaKnobs) -> Result<SagaTokioWorld, ConfigError> {
        SagaTokioWorld::reference(knobs.clone())
    }

    fn simulate(
        &self,
        world: SagaTokioWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SagaTokioWorld) {
        run(world, plan, trace)
    }

    fn describe(&self, _: &SagaKnobs, report: &RunReport, world: &SagaTokioWorld) -> Description {
        let s = &world.stats;
        let judged = |n: u64| {
            if s.at_rest {
                n.to_string()
            } else {
                crate::harness::NOT_JUDGED.to_string()
            }
        };
        Description {
            notes: notes(&INVARIANTS, |_| String::new()),
            figures: vec![
                ("checkouts submitted".into(), s.submitted.to_string()),
                ("done (books)".into(), judged(s.completed)),
                ("compensated (books)".into(), judged(s.compensated)),
                ("half done, alerted".into(), judged(s.failed)),
                ("requests at the services".into(), s.requests.to_string()),
                ("applied".into(), s.applied.to_string()),
                ("deduplicated".into(), s.deduplicated.to_string()),
                ("without their key".into(), s.keyless.to_string()),
                ("requests lost".into(), s.lost.to_string()),
                ("orchestrator recoveries".into(), s.recoveries.to_string()),
            ],
            timeline: saga_timeline(&world.lanes, report.end),
        }
    }
}

crate::harness::host_own_world!(SagaTokioPattern);
