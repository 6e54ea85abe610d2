//! The queue in the tokio harness (`queue-tokio`): real async worker code, by default
//! faultline's own [`WorkerPool`], run on a paused tokio runtime against the same seeds
//! and fault plans as the sans-IO [queue world](crate::queue::world).
//!
//! - **Code under test**: the worker loop. A [`WorkerCode`] factory is called once per
//!   run inside the run's runtime with a [`Setup`] (the world's [`SharedQueue`], the
//!   [`Targets`] client, the knobs' worker count and poll interval) and spawns whatever
//!   workers it likes; what it returns is kept alive until the run ends. The reference
//!   ([`reference_code`]) is `WorkerPool::spawn_handlers` with one handler per job type
//!   ([`Handlers`]): profile copies through [`Targets::deliver`], the unique notify jobs
//!   through [`Targets::notify`], so the per-type dispatch runs under the plans.
//!   A worker loop of your own leases, heartbeats, acks and nacks through the public
//!   methods of [`SharedQueue`], and delivers each job with its type's client:
//!   [`Targets::deliver`] for [`SYNC_PROFILE`](profile::SYNC_PROFILE),
//!   [`Targets::notify`] for [`NOTIFY`].
//! - **The queue it runs over** is the reference [`Queue`](crate::queue::Queue) built
//!   from the knobs ([`QueueKnobs::queue_config`]); the world's producers write each
//!   profile update with its outbox rows and relay them into it. As in the sans-IO
//!   world (the same knobs and random stream), some updates stage a unique
//!   [`NOTIFY`] job to one target in the same outbox write, some with a run-at.
//! - **The far side**: the K target services as async endpoints. [`Targets::deliver`] is
//!   the client a worker calls (with the knobs' delivery timeout, as an HTTP client has
//!   one): the request crosses `link-K` (drops, duplicates, delays from the plan), the
//!   target `target-K` is down, slow or failing as the plan says at the time it is
//!   called, applies the version with a version and fence check
//!   ([`Replica`]) or a unique job once through its [`Inbox`] (dedupe by job id and
//!   fence; a request to the wrong endpoint fails), and the reply crosses the link
//!   back. Every
//!   delivery call is logged at its start and at its end (answer, timeout, or the worker
//!   dropping it), and every apply at the target.
//! - **Workload**: the sans-IO world's bursts and rapid bursts of profile updates
//!   (same knobs, same random streams), the operator's redrives during the run and after
//!   the faults heal; a 10 ms tick drains the observations while anything is pending.
//!
//! Invariants checked (names of the [sans-IO queue](crate::queue::invariants)), all but
//! the last black-box, from the observations only:
//!
//! 1. `queue.no_lost_update`: at rest, every target has applied the latest version of
//!    every profile, and the outbox is empty.
//! 2. `queue.never_backwards`: a target never applies an older version of a profile
//!    after a newer one.
//! 3. `queue.at_most_once`: an (update, target) takes effect once.
//! 4. `queue.single_lease`: leases are exclusive (the queue's declared policy), so two
//!    delivery calls of the same (profile, target) never overlap: a call that starts
//!    while another of its key is open is a violation.
//! 5. `queue.exactly_once`: each unique job the producers committed takes effect
//!    exactly once at its target (counted from the targets' applies), at rest at least
//!    once.
//! 6. `queue.not_before_run_at`: no delivery call of a unique job starts before the
//!    run-at its producer committed (on the world's clock).
//! 7. `queue.conservation` (white-box, on unless [`HostedQueueWorld::white_box`] is
//!    off): the queue's counts balance, and its count of enqueued tasks is the number
//!    the producers were told were accepted.
//!
//! Crash faults of `worker-N` and `queue` are not modelled here (the pool has no process
//! boundary to crash); plans keep them, and the report shows them as not fired.

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::harness::hosted::{Rerun, TokioHost, VirtualClock, simulate_twice};
use crate::harness::{Description, Metric, Mutant, Scenario, notes};
use crate::queue::core::{
    Applied, Enqueued, Inbox, Job, JobKey, Lease, Outbox, Payload, QueueConfig, QueueCounts,
};
use crate::queue::invariants::{self, QueueChecker};
use crate::queue::profile::{self, ProfileId, ProfileService, Replica, TargetId};
use crate::queue::tokio::{Handlers, PoolConfig, SharedQueue, WorkerPool};
use crate::queue::world::{NOTIFY, QueueKnobs};
use faultline_sim::report::model::Timeline;
use faultline_sim::{Ctx, Phase};
use faultline_sim::{
    FaultPlan, FaultProfile, FaultState, RunReport, SeedRange, SimDuration, SimRng, SimTime,
    Simulation, TraceMode, Violation, World,
};
use std::any::Any;
use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

/// The invariants the hosted queue world checks, in order (see the module docs).
pub const INVARIANTS: [&str; 7] = [
    invariants::NO_LOST_UPDATE,
    invariants::NEVER_BACKWARDS,
    invariants::AT_MOST_ONCE,
    invariants::SINGLE_LEASE,
    invariants::EXACTLY_ONCE,
    invariants::NOT_BEFORE_RUN_AT,
    invariants::CONSERVATION,
];

/// Coverage marks of the hosted queue world.
pub const MARKS: &[&str] = &[
    "queue.coalesced",
    "queue.queued_behind_lease",
    "queue.retry",
    "queue.dead_letter",
    "queue.redrive",
    "queue.lease_expired",
    "queue.duplicate_delivery",
    "queue.dropped_delivery",
    "queue.stale_delivery",
    "queue.delivery_timeout",
    "queue.target_down",
    "queue.target_error",
    "queue.burst",
    "queue.unique_job",
    "queue.unique_run_later",
    "queue.unique_duplicate_delivery",
];

/// How often the world drains what the endpoints observed while anything is pending.
const TICK: SimDuration = SimDuration::from_millis(10);

/// Why a delivery call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The target is down (an outage).
    #[error("the target is down")]
    Down,
    /// The target failed the request (an error fault).
    #[error("the target failed the request")]
    Failed,
    /// The target refused a stale fencing token: another worker holds the task now.
    #[error("the target refused the fencing token")]
    Fenced,
    /// No reply within the delivery timeout (the request or the reply was lost, or the
    /// target is slow).
    #[error("no reply within the delivery timeout")]
    Timeout,
}

/// How a delivery call ended, as the endpoint saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// The caller got an answer: `Ok` or the error.
    Answered(Result<(), DeliveryError>),
    /// The caller dropped the call before it ended.
    Dropped,
}

/// A job as the far side sees it: its key and version (a profile copy's, or a unique
/// notify job's, whose version is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// The job's key.
    pub key: JobKey,
    /// Its version.
    pub version: u64,
}

impl Task {
    /// The far side's view of `job`.
    pub fn of(job: &Job) -> Self {
        Task {
            key: job.key,
            version: job.version,
        }
    }

    /// The target of the job: a profile copy's from its key, a unique job's from the
    /// producers' routing table (target 0 when it is not there).
    fn target(&self, routes: &BTreeMap<JobKey, u32>) -> u32 {
        match profile::parse(&self.key) {
            Some((_, t)) => t.0,
            None => routes.get(&self.key).copied().unwrap_or(0),
        }
    }
}

/// Which endpoint of a target a request calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// Apply a profile copy (version and fence check).
    Sync,
    /// Apply a unique job once (the target's inbox dedupes by job id and fence).
    Notify,
    /// The defect of a mutant client: the request leaves the job's id out, so the
    /// target cannot dedupe and applies every copy that reaches it.
    NotifyWithoutId,
}

/// What the far side observed, with the time it observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A worker called the target to deliver `task` under lease `fence`.
    Start {
        /// The call's number.
        call: u64,
        /// The task delivered.
        task: Task,
        /// Its lease's fencing token.
        fence: u64,
    },
    /// The delivery call `call` of `task`, begun at `start`, ended.
    End {
        /// The call's number.
        call: u64,
        /// The task delivered.
        task: Task,
        /// When the call began.
        start: SimTime,
        /// How it ended.
        end: CallEnd,
    },
    /// A request reached the task's target and was answered there.
    Target {
        /// The task in the request.
        task: Task,
        /// The request's fencing token.
        fence: u64,
        /// What the target did: applied, stale, fenced, or refused (down, failed).
        result: Result<Applied, DeliveryError>,
    },
    /// A request or reply was dropped on the link.
    Dropped {
        /// The task in the request.
        task: Task,
    },
    /// A request was duplicated on the link.
    Duplicated {
        /// The task in the request.
        task: Task,
    },
}

/// The far side's shared state (behind a mutex, as the worker pool's tasks are `Send`;
/// there is one thread, so it is never contended).
struct FarSide {
    faults: FaultState,
    rng: SimRng,
    replicas: Vec<Replica>,
    /// Each target's inbox of unique jobs.
    inboxes: Vec<Inbox>,
    /// The target of every unique job the producers committed.
    routes: BTreeMap<JobKey, u32>,
    log: Vec<(SimTime, Seen)>,
    calls: u64,
    /// Duplicated request copies still travelling.
    copies: u64,
    work_ms: Vec<(u64, u64)>,
    link_ms: (u64, u64),
}

fn far_lock(far: &Mutex<FarSide>) -> std::sync::MutexGuard<'_, FarSide> {
    far.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The client of the target services a worker delivers through. Cheap to clone; only
/// usable inside the run's runtime.
#[derive(Clone)]
pub struct Targets {
    far: Arc<Mutex<FarSide>>,
    clock: VirtualClock,
    timeout: Duration,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Logs the end of a call, `Dropped` when the caller drops it unfinished.
struct CallLog {
    far: Arc<Mutex<FarSide>>,
    clock: VirtualClock,
    call: u64,
    task: Task,
    start: SimTime,
    end: Option<CallEnd>,
}

impl Drop for CallLog {
    fn drop(&mut self) {
        let end = self.end.unwrap_or(CallEnd::Dropped);
        let now = self.clock.now();
        far_lock(&self.far).log.push((
            now,
            Seen::End {
                call: self.call,
                task: self.task,
                start: self.start,
                end,
            },
        ));
    }
}

/// Counts a duplicated copy in flight until it is done or dropped.
struct CopyLog(Arc<Mutex<FarSide>>);

impl Drop for CopyLog {
    fn drop(&mut self) {
        let mut f = far_lock(&self.0);
        f.copies = f.copies.saturating_sub(1);
    }
}

impl Targets {
    /// Delivers the lease's profile copy ([`SYNC_PROFILE`](profile::SYNC_PROFILE)) to
    /// its target: `Ok` once the target applied it (or already held it), an error when
    /// it is down, failed (also for a job that is not a profile copy), refused the
    /// fencing token, or did not answer within the delivery timeout.
    pub async fn deliver(&self, lease: Lease) -> Result<(), DeliveryError> {
        self.call(lease, Endpoint::Sync).await
    }

    /// Delivers the lease's unique [`NOTIFY`] job to its target, with the job's id and
    /// fencing token, so the target's [`Inbox`] applies it once: `Ok` once applied (or
    /// already seen), errors as [`deliver`](Targets::deliver)'s (`Failed` for a keyed
    /// job).
    pub async fn notify(&self, lease: Lease) -> Result<(), DeliveryError> {
        self.call(lease, Endpoint::Notify).await
    }

    /// The client of the lease's job type: [`notify`](Targets::notify) for a unique
    /// job, [`deliver`](Targets::deliver) for a profile copy.
    async fn dispatch(&self, lease: Lease) -> Result<(), DeliveryError> {
        if lease.job.job_type() == NOTIFY {
            self.notify(lease).await
        } else {
            self.deliver(lease).await
        }
    }

    async fn call(&self, lease: Lease, endpoint: Endpoint) -> Result<(), DeliveryError> {
        let task = Task::of(&lease.job);
        let fence = lease.token.fence();
        let start = self.clock.now();
        let call = {
            let mut f = far_lock(&self.far);
            f.calls += 1;
            let call = f.calls;
            f.log.push((start, Seen::Start { call, task, fence }));
            call
        };
        let mut log = CallLog {
            far: Arc::clone(&self.far),
            clock: self.clock,
            call,
            task,
            start,
            end: None,
        };
        let r = match ::tokio::time::timeout(self.timeout, self.exchange(task, fence, endpoint))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::Timeout),
        };
        log.end = Some(CallEnd::Answered(r));
        r
    }

    /// The link's fate for one message now and its latency.
    fn cross(&self, task: Task) -> Option<(u32, Duration)> {
        let now = self.clock.now();
        let mut f = far_lock(&self.far);
        let link = QueueKnobs::link_name(task.target(&f.routes));
        let fate = f.faults.view(now).link(&link);
        if fate.dropped {
            f.log.push((now, Seen::Dropped { task }));
            return None;
        }
        if fate.copies > 1 {
            f.log.push((now, Seen::Duplicated { task }));
        }
        let (lo, hi) = f.link_ms;
        let us = f.rng.between(lo * 1_000, hi * 1_000);
        let delay = Duration::from_micros(us) + Duration::from_nanos(fate.extra_delay.as_nanos());
        Some((fate.copies, delay))
    }

    async fn exchange(
        &self,
        task: Task,
        fence: u64,
        endpoint: Endpoint,
    ) -> Result<(), DeliveryError> {
        let Some((copies, delay)) = self.cross(task) else {
            return std::future::pending().await;
        };
        if copies > 1 {
            // The network's second copy: it reaches the target on its own; its reply
            // is lost.
            far_lock(&self.far).copies += 1;
            let copy = self.clone();
            let guard = CopyLog(Arc::clone(&self.far));
            let (_, again) = self.cross(task).unwrap_or((1, delay));
            ::tokio::spawn(async move {
                let _guard = guard;
                ::tokio::time::sleep(again).await;
                let _ = copy.target(task, fence, endpoint).await;
            });
        }
        ::tokio::time::sleep(delay).await;
        let answer = self.target(task, fence, endpoint).await;
        let Some((_, back)) = self.cross(task) else {
            return std::future::pending().await;
        };
        ::tokio::time::sleep(back).await;
        answer
    }

    /// The target service: down, slow or failing as the plan says when it is called;
    /// applies a profile copy with a version and fence check, a unique job through its
    /// inbox.
    async fn target(
        &self,
        task: Task,
        fence: u64,
        endpoint: Endpoint,
    ) -> Result<(), DeliveryError> {
        let (k, name, work) = {
            let now = self.clock.now();
            let mut f = far_lock(&self.far);
            let k = task.target(&f.routes);
            let name = QueueKnobs::target_name(k);
            if f.faults.view(now).is_down(&name) {
                f.log.push((
                    now,
                    Seen::Target {
                        task,
                        fence,
                        result: Err(DeliveryError::Down),
                    },
                ));
                return Err(DeliveryError::Down);
            }
            let (lo, hi) = f.work_ms.get(k as usize).copied().unwrap_or((0, 0));
            let us = f.rng.between(lo * 1_000, hi * 1_000);
            let extra = f.faults.view(now).extra_latency(&name);
            let work = Duration::from_micros(us) + Duration::from_nanos(extra.as_nanos());
            (k, name, work)
        };
        ::tokio::time::sleep(work).await;
        let now = self.clock.now();
        let mut f = far_lock(&self.far);
        let result = if f.faults.view(now).injects_error(&name) {
            Err(DeliveryError::Failed)
        } else {
            let unique = !task.key.is_keyed();
            match (endpoint, profile::parse(&task.key)) {
                (Endpoint::Sync, Some((p, _))) => match f.replicas.get_mut(k as usize) {
                    Some(r) => Ok(r.apply(p, task.version, fence)),
                    None => Err(DeliveryError::Failed),
                },
                (Endpoint::Notify, None) if unique => match f.inboxes.get_mut(k as usize) {
                    Some(i) => Ok(i.apply(task.key, fence)),
                    None => Err(DeliveryError::Failed),
                },
                (Endpoint::NotifyWithoutId, None) if unique => {
                    match f.inboxes.get_mut(k as usize) {
                        // No id to dedupe by: every copy takes effect.
                        Some(i) => {
                            let _ = i.apply(task.key, fence);
                            Ok(Applied::Applied)
                        }
                        None => Err(DeliveryError::Failed),
                    }
                }
                // A request for the wrong endpoint: refused.
                _ => Err(DeliveryError::Failed),
            }
        };
        f.log.push((
            now,
            Seen::Target {
                task,
                fence,
                result,
            },
        ));
        match result {
            Ok(Applied::Applied | Applied::Stale) => Ok(()),
            Ok(Applied::Fenced) => Err(DeliveryError::Fenced),
            Err(e) => Err(e),
        }
    }
}

/// What the code under test is given to build its workers from.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The queue to work off.
    pub queue: SharedQueue,
    /// The client of the target services.
    pub targets: Targets,
    /// How many workers the knobs ask for.
    pub workers: usize,
    /// How often an idle worker polls, as the knobs say.
    pub poll_interval: Duration,
}

/// The code under test: called once per run, inside the run's runtime, to spawn the
/// workers; what it returns is kept until the run ends. An error fails the run's setup.
pub type WorkerCode = Rc<dyn Fn(&Setup) -> Result<Box<dyn Any>, String>>;

/// The reference code under test: a [`WorkerPool`] of `setup.workers` workers with
/// one handler per job type ([`Handlers`]): profile copies through
/// [`Targets::deliver`], unique notify jobs through [`Targets::notify`].
pub fn reference_code() -> WorkerCode {
    handler_code(Endpoint::Notify)
}

/// A pool whose notify handler calls the target's `endpoint` (the reference's is
/// `Notify`).
fn handler_code(endpoint: Endpoint) -> WorkerCode {
    Rc::new(move |setup: &Setup| {
        let config = PoolConfig::builder()
            .workers(setup.workers)
            .poll_interval(setup.poll_interval)
            .build()
            .map_err(|e| e.to_string())?;
        let sync = setup.targets.clone();
        let notify = setup.targets.clone();
        let handlers = Handlers::new()
            .on(profile::SYNC_PROFILE, move |lease| {
                let targets = sync.clone();
                async move { targets.deliver(lease).await }
            })
            .on(NOTIFY, move |lease| {
                let targets = notify.clone();
                async move { targets.call(lease, endpoint).await }
            });
        let pool = WorkerPool::spawn_handlers(&setup.queue, config, handlers)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(pool) as Box<dyn Any>)
    })
}

/// Figures of one hosted run.
#[derive(Clone, Debug, Default)]
pub struct HostedQueueStats {
    /// Profile updates committed.
    pub updates: u64,
    /// Tasks the queue accepted.
    pub accepted: u64,
    /// Unique notify jobs committed.
    pub unique_jobs: u64,
    /// Unique jobs that took effect at their target.
    pub unique_effects: u64,
    /// Delivery calls begun.
    pub deliveries: u64,
    /// Delivery calls answered with an error.
    pub failed: u64,
    /// Delivery calls that timed out.
    pub timeouts: u64,
    /// Delivery calls the worker dropped.
    pub dropped_calls: u64,
    /// Applies that took effect at a target.
    pub applied: u64,
    /// Requests a target answered without effect (it held that version or newer).
    pub stale: u64,
    /// Dead letters redriven.
    pub redriven: u64,
    /// The queue's counts at the end.
    pub counts: QueueCounts,
}

/// The world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostedQueueEvent {
    /// A burst of updates starts.
    Burst,
    /// A user updates profile `profile`.
    Update {
        /// The profile.
        profile: u32,
    },
    /// The next update of a rapid burst.
    Rapid {
        /// The profile.
        profile: u32,
        /// Updates still to come, this one included.
        left: u32,
    },
    /// The operator redrives the dead-letter queue.
    Redrive,
    /// Drain the observations.
    Tick,
}

/// The profile sync with real async workers: see the [module docs](self).
pub struct HostedQueueWorld {
    knobs: QueueKnobs,
    code: WorkerCode,
    config: QueueConfig,
    /// Run the white-box invariant (`queue.conservation`, from the queue's counts).
    pub white_box: bool,
    host: Option<TokioHost>,
    queue: Option<SharedQueue>,
    far: Option<Arc<Mutex<FarSide>>>,
    running: Option<Box<dyn Any>>,
    profiles: ProfileService,
    outbox: Outbox,
    /// The black-box checker (its `held` map is what the targets applied).
    pub checker: QueueChecker,
    /// Open delivery calls: key -> (call, fence, version, start).
    open: BTreeMap<JobKey, (u64, u64, u64, SimTime)>,
    rng_burst: SimRng,
    rng_rapid: SimRng,
    rng_jobs: SimRng,
    /// A mutant producer's defect: it stages its unique jobs without the run-at it
    /// committed to.
    drops_run_at: bool,
    /// The target of every unique job committed (the producers' routing table).
    unique_targets: BTreeMap<JobKey, u32>,
    ticking: bool,
    last: QueueCounts,
    /// Figures of the run.
    pub stats: HostedQueueStats,
}

impl HostedQueueWorld {
    /// A world for `knobs` around the worker code `code`.
    pub fn new(knobs: QueueKnobs, code: WorkerCode) -> Result<Self, ConfigError> {
        let config = knobs.queue_config()?;
        Ok(Self::build(knobs, code, config))
    }

    fn build(knobs: QueueKnobs, code: WorkerCode, config: QueueConfig) -> Self {
        let policy = crate::queue::QueuePolicy::from(&config);
        let root = SimRng::new(knobs.seed);
        let targets: Vec<TargetId> = (0..knobs.targets).map(TargetId).collect();
        HostedQueueWorld {
            code,
            config,
            white_box: true,
            host: None,
            queue: None,
            far: None,
            running: None,
            profiles: ProfileService::new(&targets),
            outbox: Outbox::new(),
            checker: QueueChecker::new(policy),
            open: BTreeMap::new(),
            rng_burst: root.fork("queue.burst"),
            rng_rapid: root.fork("queue.rapid"),
            rng_jobs: root.fork("queue.jobs"),
            drops_run_at: false,
            unique_targets: BTreeMap::new(),
            ticking: false,
            last: QueueCounts::default(),
            stats: HostedQueueStats::default(),
            knobs,
        }
    }

    /// The reference: a [`WorkerPool`] ([`reference_code`]).
    pub fn reference(knobs: QueueKnobs) -> Result<Self, ConfigError> {
        Self::new(knobs, reference_code())
    }

    /// The knobs.
    pub fn knobs(&self) -> &QueueKnobs {
        &self.knobs
    }

    fn host(&mut self) -> Result<&mut TokioHost, Violation> {
        self.host
            .as_mut()
            .ok_or_else(|| Violation::new("sim.setup", "the world was not started"))
    }

    /// Runs the runtime to `now`, then judges what the endpoints observed meanwhile.
    fn advance(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        let now = ctx.now();
        self.host()?.advance_to(now);
        let (log, hits) = match &self.far {
            Some(far) => {
                let mut f = far_lock(far);
                (std::mem::take(&mut f.log), f.faults.take_hits())
            }
            None => return Ok(()),
        };
        ctx.add_fault_hits(&hits);
        for (t, seen) in log {
            self.observe(ctx, t, seen)?;
        }
        self.step(ctx)
    }

    fn observe(
        &mut self,
        ctx: &mut Ctx<HostedQueueEvent>,
        t: SimTime,
        seen: Seen,
    ) -> Result<(), Violation> {
        match seen {
            Seen::Start { call, task, fence } => {
                self.stats.deliveries += 1;
                ctx.record(
                    "workers",
                    format_args!(
                        "at {t}: call {call} delivers {} v{} fence {fence}",
                        task.key, task.version
                    ),
                );
                if let Some(at) = self.checker.run_at.get(&task.key)
                    && Instant::from(t) < *at
                {
                    return Err(Violation::new(
                        invariants::NOT_BEFORE_RUN_AT,
                        format!(
                            "{} was delivered by call {call} (fence {fence}) at {t}, before the run-at {at} \
                             its producer committed",
                            task.key
                        ),
                    ));
                }
                if let Some((other, f, v, since)) = self.open.get(&task.key) {
                    return Err(Violation::new(
                        invariants::SINGLE_LEASE,
                        format!(
                            "{} version {} (fence {fence}) was delivered by call {call} at {t} while call {other} \
                             of version {v} (fence {f}) has been open since {since}: two workers deliver the \
                             same task at once, though leases are exclusive",
                            task.key, task.version
                        ),
                    ));
                }
                self.open.insert(task.key, (call, fence, task.version, t));
            }
            Seen::End {
                call,
                task,
                start,
                end,
            } => {
                if self.open.get(&task.key).is_some_and(|o| o.0 == call) {
                    self.open.remove(&task.key);
                }
                match end {
                    CallEnd::Answered(Ok(())) => {}
                    CallEnd::Answered(Err(DeliveryError::Timeout)) => {
                        ctx.cover("queue.delivery_timeout");
                        self.stats.timeouts += 1;
                    }
                    CallEnd::Answered(Err(_)) => self.stats.failed += 1,
                    CallEnd::Dropped => self.stats.dropped_calls += 1,
                }
                ctx.record(
                    "workers",
                    format_args!(
                        "at {t}: call {call} of {} v{} (from {start}) ends: {end:?}",
                        task.key, task.version
                    ),
                );
            }
            Seen::Target {
                task,
                fence,
                result,
            } => {
                ctx.record(
                    QueueKnobs::target_name(task.target(&self.unique_targets)),
                    format_args!(
                        "at {t}: {} v{} fence {fence}: {result:?}",
                        task.key, task.version
                    ),
                );
                let unique = !task.key.is_keyed();
                match result {
                    Ok(Applied::Applied) if unique => {
                        self.stats.unique_effects += 1;
                        self.checker.on_effect(task.key)?;
                    }
                    Ok(Applied::Stale) if unique => {
                        ctx.cover("queue.unique_duplicate_delivery");
                        self.stats.stale += 1;
                    }
                    Ok(Applied::Applied) => {
                        self.stats.applied += 1;
                        self.checker.on_applied(task.key, task.version)?;
                    }
                    Ok(Applied::Stale) => {
                        ctx.cover("queue.stale_delivery");
                        self.stats.stale += 1;
                    }
                    Ok(Applied::Fenced) => {}
                    Err(DeliveryError::Down) => ctx.cover("queue.target_down"),
                    Err(_) => ctx.cover("queue.target_error"),
                }
            }
            Seen::Dropped { task } => {
                ctx.cover("queue.dropped_delivery");
                ctx.record(
                    "links",
                    format_args!("at {t}: drops a message of {}", task.key),
                );
            }
            Seen::Duplicated { task } => {
                ctx.cover("queue.duplicate_delivery");
                ctx.record(
                    "links",
                    format_args!("at {t}: duplicates a request of {}", task.key),
                );
            }
        }
        Ok(())
    }

    /// Marks from the queue's counts, and the white-box check.
    fn step(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        let Some(q) = &self.queue else {
            return Ok(());
        };
        let c = q.counts();
        if c.retries > self.last.retries {
            ctx.cover("queue.retry");
        }
        if c.dead > self.last.dead {
            ctx.cover("queue.dead_letter");
        }
        if c.expired > self.last.expired {
            ctx.cover("queue.lease_expired");
        }
        self.last = c;
        self.stats.counts = c;
        if self.white_box {
            self.checker.check_conservation(&c)?;
        }
        Ok(())
    }

    fn relay(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        let Some(q) = self.queue.clone() else {
            return Ok(());
        };
        let mut done = Vec::new();
        let outbox = &mut self.outbox;
        self.host
            .as_mut()
            .ok_or_else(|| Violation::new("sim.setup", "the world was not started"))?
            .block_on(async {
                outbox.relay(|job| {
                    let r = q.enqueue(job.clone());
                    done.push((job, r));
                    true
                });
            });
        for (task, r) in done {
            match r {
                Enqueued::Duplicate => continue,
                Enqueued::Coalesced => ctx.cover("queue.coalesced"),
                Enqueued::Queued => ctx.cover("queue.queued_behind_lease"),
                Enqueued::New => {}
            }
            self.stats.accepted += 1;
            self.checker.on_accepted(&task);
        }
        Ok(())
    }

    fn update(&mut self, ctx: &mut Ctx<HostedQueueEvent>, profile: u32) -> Result<(), Violation> {
        let now = ctx.now();
        let unique = self.knobs.draw_unique(&mut self.rng_jobs, now);
        // A run-at on the queue's clock: its instant now, plus the same delay.
        let queue_now = match (&unique, self.queue.clone()) {
            (Some((_, Some(_))), Some(q)) => Some(self.host()?.block_on(async move { q.now() })),
            _ => None,
        };
        let profiles = &mut self.profiles;
        let drops_run_at = self.drops_run_at;
        let Ok((v, notify)) = self.outbox.write(|tx| {
            let v = profiles.update(tx, ProfileId(u64::from(profile)))?;
            let notify = unique.map(|(target, run_at)| {
                let id = crate::queue::Staging::next_id(tx);
                let mut job = Job::unique(NOTIFY, id, Payload::default());
                job.run_at = run_at.filter(|_| !drops_run_at).map(|at| {
                    let delay = at.saturating_since(Instant::from(now));
                    queue_now.unwrap_or(Instant::ZERO).saturating_add(delay)
                });
                let key = job.key;
                tx.stage(job);
                (key, target, run_at)
            });
            Ok::<_, std::convert::Infallible>((v, notify))
        });
        if let Some((key, target, run_at)) = notify {
            ctx.cover("queue.unique_job");
            if run_at.is_some() {
                ctx.cover("queue.unique_run_later");
            }
            self.stats.unique_jobs += 1;
            self.unique_targets.insert(key, target);
            if let Some(far) = &self.far {
                far_lock(far).routes.insert(key, target);
            }
            self.checker.on_committed_unique(key);
            // The checker's run-at is on the world's clock, where deliveries are seen.
            if let Some(at) = run_at {
                self.checker.on_committed_run_at(key, at);
            }
            ctx.record("profiles", format_args!("commits {key} to target-{target}"));
        }
        self.stats.updates += 1;
        ctx.record("profiles", format_args!("p{profile} -> version {v}"));
        self.relay(ctx)
    }

    fn schedule_rapid(&mut self, ctx: &mut Ctx<HostedQueueEvent>, profile: u32, left: u32) {
        let gap_ns = self
            .rng_rapid
            .between(20_000, self.knobs.burst_gap_us_max * 1_000);
        let at = ctx.now() + SimDuration::from_nanos(gap_ns);
        if left > 0 && at < ctx.horizon() {
            ctx.schedule_at(at, HostedQueueEvent::Rapid { profile, left });
        }
    }

    fn redrive(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        let Some(q) = self.queue.clone() else {
            return Ok(());
        };
        if q.counts().dead == 0 {
            return Ok(());
        }
        let n = self.host()?.block_on(async { q.redrive() });
        if n > 0 {
            ctx.cover("queue.redrive");
            self.stats.redriven += n as u64;
            ctx.record("operator", format_args!("redrives {n} dead letters"));
        }
        Ok(())
    }

    fn is_quiet(&self) -> bool {
        let copies = self.far.as_ref().map_or(0, |f| far_lock(f).copies);
        let c = self.queue.as_ref().map(SharedQueue::counts);
        self.outbox.backlog() == 0
            && self.open.is_empty()
            && copies == 0
            && c.is_some_and(|c| c.in_flight() == 0 && c.dead == 0)
    }

    fn keep_ticking(&mut self, ctx: &mut Ctx<HostedQueueEvent>) {
        if !self.ticking && (ctx.phase() == Phase::Safety || !self.is_quiet()) {
            self.ticking = true;
            ctx.schedule_in(TICK, HostedQueueEvent::Tick);
        }
    }
}

impl World for HostedQueueWorld {
    type Event = HostedQueueEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        let setup_err = |e: String| Violation::new("sim.setup", e);
        let mut host = TokioHost::new().map_err(|e| setup_err(e.to_string()))?;
        let config = self.config;
        let far = Arc::new(Mutex::new(FarSide {
            faults: FaultState::new(ctx.plan().clone(), ctx.rng().fork("hosted.faults")),
            rng: SimRng::new(self.knobs.seed).fork("queue.hosted.net"),
            replicas: vec![Replica::new(); self.knobs.targets as usize],
            inboxes: vec![Inbox::new(); self.knobs.targets as usize],
            routes: BTreeMap::new(),
            log: Vec::new(),
            calls: 0,
            copies: 0,
            work_ms: self.knobs.work_ms.clone(),
            link_ms: self.knobs.link_ms,
        }));
        let targets = Targets {
            far: Arc::clone(&far),
            clock: host.clock(),
            timeout: Duration::from_millis(self.knobs.delivery_timeout_ms),
        };
        let code = Rc::clone(&self.code);
        let workers = self.knobs.workers as usize;
        let poll_interval = Duration::from_millis(self.knobs.poll_ms);
        let (queue, running) = host.block_on(async move {
            let queue = SharedQueue::new(config);
            let setup = Setup {
                queue: queue.clone(),
                targets,
                workers,
                poll_interval,
            };
            (queue, code(&setup))
        });
        self.running = Some(running.map_err(setup_err)?);
        self.queue = Some(queue);
        self.far = Some(far);
        self.host = Some(host);
        ctx.record("workers", "spawned by the code under test");
        ctx.schedule_at(SimTime::ZERO, HostedQueueEvent::Burst);
        if let Some(every) = self.knobs.redrive_every_ms {
            ctx.schedule_at(SimTime::from_millis(every), HostedQueueEvent::Redrive);
        }
        self.keep_ticking(ctx);
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<HostedQueueEvent>,
        event: HostedQueueEvent,
    ) -> Result<(), Violation> {
        self.advance(ctx)?;
        match event {
            HostedQueueEvent::Burst => {
                let (next, updates) =
                    self.knobs
                        .burst(ctx.now(), ctx.horizon(), &mut self.rng_burst);
                if let Some(next) = next {
                    ctx.schedule_at(next, HostedQueueEvent::Burst);
                }
                for (at, profile) in updates {
                    ctx.schedule_at(at, HostedQueueEvent::Update { profile });
                }
            }
            HostedQueueEvent::Update { profile } => {
                if self.rng_rapid.below(100) < u64::from(self.knobs.burst_percent) {
                    let len = self
                        .rng_rapid
                        .between(1, u64::from(self.knobs.burst_len_max));
                    self.schedule_rapid(ctx, profile, len as u32);
                }
                self.update(ctx, profile)?;
            }
            HostedQueueEvent::Rapid { profile, left } => {
                ctx.cover("queue.burst");
                self.schedule_rapid(ctx, profile, left - 1);
                self.update(ctx, profile)?;
            }
            HostedQueueEvent::Redrive => {
                self.redrive(ctx)?;
                let every = if ctx.is_healed() {
                    Some(self.knobs.redrive_after_heal_ms.max(100))
                } else {
                    self.knobs.redrive_every_ms
                };
                if let Some(every) = every
                    && ((ctx.is_healed() && !self.is_quiet())
                        || ctx.now() + SimDuration::from_millis(every) < ctx.horizon())
                {
                    ctx.schedule_in(SimDuration::from_millis(every), HostedQueueEvent::Redrive);
                }
            }
            HostedQueueEvent::Tick => self.ticking = false,
        }
        self.step(ctx)?;
        self.keep_ticking(ctx);
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        self.advance(ctx)?;
        ctx.schedule_in(
            SimDuration::from_millis(self.knobs.redrive_after_heal_ms),
            HostedQueueEvent::Redrive,
        );
        self.relay(ctx)?;
        self.keep_ticking(ctx);
        self.step(ctx)
    }

    fn is_quiescent(&self, ctx: &Ctx<HostedQueueEvent>) -> bool {
        ctx.is_healed() && self.is_quiet()
    }

    fn finish(&mut self, ctx: &mut Ctx<HostedQueueEvent>) -> Result<(), Violation> {
        self.advance(ctx)?;
        let mut latest = Vec::new();
        for (p, v) in self.profiles.versions() {
            for k in 0..self.knobs.targets {
                latest.push((profile::key(*p, TargetId(k)), *v));
            }
        }
        let counts = self.stats.counts;
        match self.checker.finish(&latest, self.outbox.backlog(), &counts) {
            Err(v) if !self.white_box && v.invariant == invariants::CONSERVATION => Ok(()),
            r => r,
        }
    }
}

impl Rerun for HostedQueueWorld {
    fn fresh(&self) -> Self {
        let mut w = HostedQueueWorld::build(self.knobs.clone(), Rc::clone(&self.code), self.config);
        w.white_box = self.white_box;
        w.drops_run_at = self.drops_run_at;
        w
    }
}

/// Runs `world` under `plan` twice (the determinism check), the one way the hosted
/// queue world is run.
pub fn run(
    world: HostedQueueWorld,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, HostedQueueWorld) {
    let sim = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(2_000_000)
        .liveness_max(SimDuration::from_secs(300))
        .replay_hint("cargo run --release -- replay queue-tokio --seed {seed}");
    simulate_twice(&sim, world)
}

/// Whichever of `a` and `b` finishes first (`a` when both are ready): no randomness.
async fn first<A: Future, B: Future>(a: A, b: B) -> Result<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Err(y));
        }
        Poll::Pending
    })
    .await
}

/// How a mutant worker loop is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorkerFlaw {
    /// Acks the lease, then delivers.
    AckBeforeDelivery,
    /// Acks whatever the delivery's outcome: a failed delivery is dropped, not nacked.
    AckOnError,
    /// Never heartbeats: a slow delivery outlives its lease.
    NoHeartbeat,
}

/// Delivers `lease`, heartbeating every third of the visibility timeout; `None` when a
/// heartbeat is refused (the delivery is dropped then).
async fn with_heartbeats(
    queue: &SharedQueue,
    targets: &Targets,
    lease: Lease,
    every: Duration,
) -> Option<Result<(), DeliveryError>> {
    let token = lease.token;
    let beats = async {
        loop {
            ::tokio::time::sleep(every).await;
            if queue.heartbeat(&token).is_err() {
                return;
            }
        }
    };
    first(targets.dispatch(lease), beats).await.ok()
}

/// A hand-written async worker loop, broken as `flaw` says.
async fn flawed_worker(queue: SharedQueue, targets: Targets, poll: Duration, flaw: WorkerFlaw) {
    let vt = queue.visibility_timeout();
    let every = Duration::from_millis((vt.as_millis() as u64 / 3).max(1));
    loop {
        let Some(lease) = queue.lease() else {
            ::tokio::time::sleep(poll).await;
            continue;
        };
        let token = lease.token;
        match flaw {
            WorkerFlaw::AckBeforeDelivery => {
                let _ = queue.ack(&token);
                let _ = targets.dispatch(lease).await;
            }
            WorkerFlaw::AckOnError => {
                if with_heartbeats(&queue, &targets, lease, every)
                    .await
                    .is_some()
                {
                    let _ = queue.ack(&token);
                }
            }
            WorkerFlaw::NoHeartbeat => {
                let r = targets.dispatch(lease).await;
                let _ = if r.is_ok() {
                    queue.ack(&token).map(|_| ())
                } else {
                    queue
                        .nack(&token, &r.err().map(|e| e.to_string()).unwrap_or_default())
                        .map(|_| ())
                };
            }
        }
    }
}

fn flawed_code(flaw: WorkerFlaw) -> WorkerCode {
    Rc::new(move |setup: &Setup| {
        let handles: Vec<::tokio::task::JoinHandle<()>> = (0..setup.workers)
            .map(|_| {
                ::tokio::spawn(flawed_worker(
                    setup.queue.clone(),
                    setup.targets.clone(),
                    setup.poll_interval,
                    flaw,
                ))
            })
            .collect();
        Ok(Box::new(handles) as Box<dyn Any>)
    })
}

fn flawed(knobs: &QueueKnobs, flaw: WorkerFlaw) -> Result<HostedQueueWorld, ConfigError> {
    HostedQueueWorld::new(knobs.clone(), flawed_code(flaw))
}

/// The async mutants: worker loops (tokio code) broken the ways real ones are.
pub const CATALOG: &[Mutant<QueueTokioPattern>] = &[
    Mutant::new(
        "ack_before_delivery",
        "an async worker acks the task, then delivers it: a delivery that fails is never retried",
        invariants::NO_LOST_UPDATE,
        |k| flawed(k, WorkerFlaw::AckBeforeDelivery),
    ),
    Mutant::new(
        "ack_on_error",
        "an async worker drops a task whose delivery failed (acks it instead of nacking)",
        invariants::NO_LOST_UPDATE,
        |k| flawed(k, WorkerFlaw::AckOnError),
    ),
    Mutant::new(
        "no_heartbeat",
        "an async worker never extends its lease: a slow delivery outlives it and another worker delivers the same task meanwhile",
        invariants::SINGLE_LEASE,
        |k| flawed(k, WorkerFlaw::NoHeartbeat),
    ),
    Mutant::new(
        "notify_without_id",
        "the pool's notify handler sends the job without its id, so the target cannot dedupe: a retried or duplicated notification takes effect twice",
        invariants::EXACTLY_ONCE,
        |k: &QueueKnobs| HostedQueueWorld::new(k.clone(), handler_code(Endpoint::NotifyWithoutId)),
    ),
    Mutant::new(
        "run_at_dropped",
        "the producer commits a notification for later but stages its job without the run-at: the pool delivers it at once",
        invariants::NOT_BEFORE_RUN_AT,
        |k: &QueueKnobs| {
            let mut w = HostedQueueWorld::reference(k.clone())?;
            w.drops_run_at = true;
            Ok(w)
        },
    ),
];

/// The queue's [`WorkerPool`] (or your async worker loop) in the tokio harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueTokioPattern;

const METRICS: [Metric<HostedQueueWorld>; 4] = [
    Metric {
        name: "deliveries",
        unit: "count",
        value: |w| Some(w.stats.deliveries as f64),
    },
    Metric {
        name: "retries",
        unit: "count",
        value: |w| Some(w.stats.counts.retries as f64),
    },
    Metric {
        name: "dead letters",
        unit: "count",
        value: |w| Some(w.stats.counts.dead as f64 + w.stats.redriven as f64),
    },
    Metric {
        name: "delivery timeouts",
        unit: "count",
        value: |w| Some(w.stats.timeouts as f64),
    },
];

impl Scenario for QueueTokioPattern {
    type Knobs = QueueKnobs;
    type World = HostedQueueWorld;

    const NAME: &'static str = "queue-tokio";
    const ABOUT: &'static str = "the queue's tokio WorkerPool (or your async worker loop) against async targets: no lost update, never backwards, exclusive deliveries";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::queue::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<HostedQueueWorld>] = &METRICS;
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    const DEFAULT_SEEDS: SeedRange = SeedRange { start: 0, end: 500 };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        crate::queue::pattern::QUEUE_KNOB_FIELDS;

    fn seed_knobs(&self, seed: u64) -> QueueKnobs {
        QueueKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &QueueKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &QueueKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &QueueKnobs) -> Result<HostedQueueWorld, ConfigError> {
        HostedQueueWorld::reference(knobs.clone())
    }

    fn simulate(
        &self,
        world: HostedQueueWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, HostedQueueWorld) {
        run(world, plan, trace)
    }

    fn describe(
        &self,
        knobs: &QueueKnobs,
        _report: &RunReport,
        world: &HostedQueueWorld,
    ) -> Description {
        let s = &world.stats;
        let c = s.counts;
        let notes = notes(&INVARIANTS, |name| match name {
            invariants::NO_LOST_UPDATE => format!(
                "{} updates to {} targets, {} applies took effect",
                s.updates, knobs.targets, s.applied
            ),
            invariants::SINGLE_LEASE => format!(
                "{} delivery calls, none overlapping another of its (profile, target)",
                s.deliveries
            ),
            invariants::EXACTLY_ONCE => format!(
                "{} unique jobs committed, {} effects at their targets",
                s.unique_jobs, s.unique_effects
            ),
            invariants::CONSERVATION => format!(
                "{} enqueued = {} done + {} superseded + {} pending + {} leased + {} retrying + {} dead",
                c.enqueued, c.done, c.superseded, c.pending, c.leased, c.retrying, c.dead
            ),
            _ => String::new(),
        });
        let figures = vec![
            ("profile updates".into(), s.updates.to_string()),
            ("tasks accepted".into(), s.accepted.to_string()),
            ("unique jobs committed".into(), s.unique_jobs.to_string()),
            ("delivery calls".into(), s.deliveries.to_string()),
            (
                "failed / timed out / dropped calls".into(),
                format!("{} / {} / {}", s.failed, s.timeouts, s.dropped_calls),
            ),
            ("applies with effect".into(), s.applied.to_string()),
            ("requests without effect".into(), s.stale.to_string()),
            ("retries".into(), c.retries.to_string()),
            ("dead letters redriven".into(), s.redriven.to_string()),
            ("leases expired".into(), c.expired.to_string()),
        ];
        Description {
            notes,
            figures,
            timeline: Timeline {
                lanes: Vec::new(),
                series: Vec::new(),

                shown: String::new(),
            },
        }
    }
}

crate::harness::host_own_world!(QueueTokioPattern);
