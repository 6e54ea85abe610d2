//! The simulated profile sync, mixed with unique jobs: users update their profiles in
//! bursts (the same users several times in a row, now and then several times within a
//! millisecond, where a queue that races with itself shows it); the profile service
//! writes each change with its keyed jobs (one per target, latest version wins) and,
//! for some updates, a unique "notify" job to one target (now or at a run-at up to
//! half a second later), all staged in the same outbox write, and relays them to the
//! queue; N workers lease tasks and deliver them over links that
//! drop, duplicate and delay, to K target services that go down, get slow or fail; the
//! workers crash mid-task and the queue process restarts. An operator redrives the
//! dead-letter queue (now and then, and after the faults heal). The [`QueueChecker`]
//! checks every promise against the world's own records (which worker holds a delivery
//! of which task since when, the heartbeats the queue accepted, what the targets
//! applied), judged by the policy the queue declares ([`TaskQueue::policy`]);
//! conservation at every step.

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::name::Name;
use crate::queue::contract::{QueuePolicy, TaskQueue};
use crate::queue::core::{
    Applied, Enqueued, Flaw, Inbox, Job, JobKey, JobType, Lease, LeaseToken, Nacked, Outbox,
    Payload, Queue, QueueConfig,
};
pub use crate::queue::invariants::INVARIANTS;
use crate::queue::invariants::QueueChecker;
use crate::queue::profile::{self, ProfileId, ProfileService, Replica, TargetId};
use crate::queue::worker::{
    Beat, Next, Outcome, Settled, WorkerConfig, WorkerCore, heartbeat_every,
};
use faultline_sim::prelude::*;
use faultline_sim::{FaultKindTag, TraceMode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Coverage marks of the queue world.
pub const MARKS: &[&str] = &[
    "queue.coalesced",
    "queue.queued_behind_lease",
    "queue.lease_expired",
    "queue.heartbeat",
    "queue.fenced_ack",
    "queue.fenced_apply",
    "queue.retry",
    "queue.dead_letter",
    "queue.redrive",
    "queue.restart",
    "queue.outbox_waits_for_queue",
    "queue.worker_crash_mid_task",
    "queue.crashed_worker_task_released",
    "queue.duplicate_delivery",
    "queue.dropped_delivery",
    "queue.stale_delivery",
    "queue.delivery_timeout",
    "queue.superseded_after_failure",
    "queue.burst",
    "queue.unique_job",
    "queue.unique_run_later",
    "queue.unique_duplicate_delivery",
];

/// The job type of the world's unique jobs: a notification to one target.
pub const NOTIFY: JobType = JobType::from_static("notify");

const QUEUE_NODE: &str = "queue";

/// The error a worker nacks with when its target answered with a failure.
const TARGET_FAILED: &str = "the target failed";
/// The error a worker nacks with when no reply came within the delivery timeout.
const DELIVERY_TIMED_OUT: &str = "the delivery timed out";

/// Every knob of one profile-sync scenario, all from one seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueKnobs {
    /// The seed.
    pub seed: u64,
    /// End of the safety phase, ms.
    pub horizon_ms: u64,
    /// Users (profiles).
    pub profiles: u32,
    /// Target services (`target-0` ..).
    pub targets: u32,
    /// Workers (`worker-0` ..).
    pub workers: u32,
    /// Mean gap between bursts of updates, ms.
    pub burst_gap_ms: u64,
    /// Most users updated in one burst.
    pub burst_profiles_max: u32,
    /// Most updates of one user in one burst.
    pub burst_updates_max: u32,
    /// Gap between the updates of one user in a burst, ms.
    pub burst_spacing_ms: u64,
    /// The queue's visibility timeout, ms.
    pub visibility_timeout_ms: u64,
    /// Workers extend their leases with heartbeats (every third of the timeout).
    pub heartbeat: bool,
    /// How often an idle worker polls, ms.
    pub poll_ms: u64,
    /// Attempts before dead-lettering.
    pub attempts_max: u32,
    /// Retry backoff (base, cap), ms.
    pub backoff_ms: (u64, u64),
    /// A worker gives up waiting for a target's reply after this, ms.
    pub delivery_timeout_ms: u64,
    /// Per target: time to apply one delivery, ms (min, max).
    pub work_ms: Vec<(u64, u64)>,
    /// Link latency each way, ms (min, max).
    pub link_ms: (u64, u64),
    /// The operator redrives the dead-letter queue this often during the run, if at all.
    pub redrive_every_ms: Option<u64>,
    /// And this long after the faults heal (then again until the queue is empty).
    pub redrive_after_heal_ms: u64,
    /// Share of updates that the same user follows with a rapid burst of more updates
    /// of the same profile under a millisecond apart, percent.
    pub burst_percent: u32,
    /// Most updates in a rapid burst (after the one that starts it).
    pub burst_len_max: u32,
    /// Longest spacing between two updates of a rapid burst, µs (under a millisecond).
    pub burst_gap_us_max: u64,
    /// Share of updates that also commit a unique notify job to one target, percent.
    pub unique_percent: u32,
    /// Share of those that run later (a run-at up to `run_at_ms_max` ahead), percent.
    pub run_later_percent: u32,
    /// The latest run-at of a unique job, ms after its write.
    pub run_at_ms_max: u64,
    /// The queue's per-target lease limit, if any (`None` from every seed: set it to
    /// run the world with one). With a limit, every job the producers commit names its
    /// target (`target-K`), and `queue.single_lease` checks the limit from what the
    /// world sees held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases_per_target_max: Option<u32>,
}

impl QueueKnobs {
    /// One burst of updates at `now`, drawn from `rng`: when the next burst comes
    /// (`None` at or past `horizon`), and each update it brings, `(when, profile)`, in
    /// the order to schedule them. The one workload of both queue worlds, the sans-IO
    /// one and the hosted one.
    pub(crate) fn burst(
        &self,
        now: SimTime,
        horizon: SimTime,
        rng: &mut SimRng,
    ) -> (Option<SimTime>, Vec<(SimTime, u32)>) {
        let gap = self.burst_gap_ms;
        let next = now + SimDuration::from_millis(rng.between(gap / 2, gap + gap / 2));
        let mut updates = Vec::new();
        let users = rng.between(1, u64::from(self.burst_profiles_max));
        for _ in 0..users {
            let profile = rng.below(u64::from(self.profiles)) as u32;
            let n = rng.between(1, u64::from(self.burst_updates_max));
            for i in 0..n {
                let at = now + SimDuration::from_millis(i * self.burst_spacing_ms);
                if at < horizon {
                    updates.push((at, profile));
                }
            }
        }
        ((next < horizon).then_some(next), updates)
    }

    /// Expands `seed` into every knob.
    pub fn from_seed(seed: u64) -> QueueKnobs {
        let mut r = SimRng::new(seed).fork("queue.knobs");
        let targets = r.between(2, 4) as u32;
        let base = r.between(5, 200);
        // Drawn from their own stream, so every knob above and below keeps its value.
        let mut b = SimRng::new(seed).fork("queue.bursts");
        let mut j = SimRng::new(seed).fork("queue.unique_knobs");
        QueueKnobs {
            seed,
            horizon_ms: 10_000,
            profiles: r.between(2, 12) as u32,
            targets,
            workers: r.between(1, 4) as u32,
            burst_gap_ms: r.between(100, 1_500),
            burst_profiles_max: r.between(1, 3) as u32,
            burst_updates_max: r.between(1, 6) as u32,
            burst_spacing_ms: r.between(0, 30),
            visibility_timeout_ms: r.between(100, 1_500),
            heartbeat: r.below(4) != 0,
            poll_ms: r.between(5, 100),
            attempts_max: r.between(1, 6) as u32,
            backoff_ms: (base, base * r.between(1, 20)),
            delivery_timeout_ms: r.between(50, 1_000),
            work_ms: (0..targets)
                .map(|_| {
                    let lo = r.between(0, 10);
                    (lo, lo + r.between(0, 40))
                })
                .collect(),
            link_ms: {
                let lo = r.between(1, 5);
                (lo, lo + r.between(0, 10))
            },
            redrive_every_ms: (r.below(2) == 0).then(|| r.between(1_000, 5_000)),
            redrive_after_heal_ms: r.between(0, 1_000),
            burst_percent: b.between(2, 20) as u32,
            burst_len_max: b.between(1, 4) as u32,
            burst_gap_us_max: b.between(50, 900),
            unique_percent: j.between(10, 60) as u32,
            run_later_percent: j.between(0, 50) as u32,
            run_at_ms_max: j.between(1, 500),
            leases_per_target_max: None,
        }
    }

    /// The unique job an update commits, if it commits one (drawn from `rng`, the
    /// world's "queue.jobs" stream): a notification to one target, due now or at a
    /// later run-at. The one drawing of both queue worlds, the sans-IO and the hosted.
    pub(crate) fn draw_unique(
        &self,
        rng: &mut SimRng,
        now: SimTime,
    ) -> Option<(u32, Option<Instant>)> {
        if rng.below(100) >= u64::from(self.unique_percent) {
            return None;
        }
        let target = rng.below(u64::from(self.targets)) as u32;
        let later = rng.below(100) < u64::from(self.run_later_percent);
        let run_at = later.then(|| {
            let ms = rng.between(1, self.run_at_ms_max);
            Instant::from(now + SimDuration::from_millis(ms))
        });
        Some((target, run_at))
    }

    /// The name of target `k` (also its fault target).
    pub fn target_name(k: u32) -> String {
        format!("target-{k}")
    }

    /// The name of the link to target `k`.
    pub fn link_name(k: u32) -> String {
        format!("link-{k}")
    }

    /// The name of worker `i` (also its fault node).
    pub fn worker_name(i: u32) -> String {
        format!("worker-{i}")
    }

    /// The fault plans this world understands: target outages, slowness and errors;
    /// crashes of the workers and of the queue; drops, duplicates and delays on the
    /// links to the targets.
    pub fn fault_profile(&self) -> FaultProfile {
        let mut p = FaultProfile::new(self.horizon_ms)
            .kinds(FaultKindTag::UNTORN)
            .faults(1, 10)
            .duration_ms(50, 4_000)
            .latency_ms_max(1_500)
            .node(QUEUE_NODE);
        for k in 0..self.targets {
            p = p.target(Self::target_name(k)).link(Self::link_name(k));
        }
        for i in 0..self.workers {
            p = p.node(Self::worker_name(i));
        }
        p
    }

    /// The fault plan this seed generates.
    pub fn fault_plan(&self) -> FaultPlan {
        FaultPlan::generate(
            &mut SimRng::new(self.seed).fork("queue.plan"),
            &self.fault_profile(),
        )
    }

    /// The queue configuration.
    pub fn queue_config(&self) -> Result<QueueConfig, ConfigError> {
        let mut b = QueueConfig::builder()
            .visibility_timeout(Duration::from_millis(self.visibility_timeout_ms))
            .attempts_max(self.attempts_max)
            .backoff(
                Duration::from_millis(self.backoff_ms.0),
                Duration::from_millis(self.backoff_ms.1),
            );
        if let Some(n) = self.leases_per_target_max {
            b = b.leases_per_target_max(n);
        }
        b.build()
    }

    /// The reference queue for these knobs.
    pub fn reference_queue(&self) -> Result<Queue, ConfigError> {
        Ok(Queue::new(self.queue_config()?))
    }
}

/// What a target's reply says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Applied (or already held): ack.
    Delivered,
    /// The delivery's lease was taken over: drop it.
    Fenced,
    /// The target failed: nack.
    Failed,
}

/// The queue world's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// A burst of updates starts.
    Burst,
    /// A user updates profile `profile`.
    Update {
        /// The profile.
        profile: u32,
    },
    /// The next update of a rapid burst of profile `profile` (under a millisecond after
    /// the one before).
    Rapid {
        /// The profile.
        profile: u32,
        /// Updates of the burst still to come, this one included.
        left: u32,
    },
    /// Worker `worker` polls the queue (`round` tells stale polls apart).
    Poll {
        /// The worker.
        worker: u32,
        /// The worker's poll round.
        round: u64,
    },
    /// A delivery reaches its target.
    Arrive {
        /// The sending worker.
        worker: u32,
        /// Its job number.
        job: u64,
        /// The job.
        task: Job,
        /// The lease's fencing token.
        fence: u64,
    },
    /// The target has done the work and applies the delivery.
    Apply {
        /// The sending worker.
        worker: u32,
        /// Its job number.
        job: u64,
        /// The job.
        task: Job,
        /// The lease's fencing token.
        fence: u64,
    },
    /// The target's reply reaches the worker.
    Reply {
        /// The worker.
        worker: u32,
        /// Its job number.
        job: u64,
        /// What the target said.
        outcome: Answer,
    },
    /// The worker stops waiting for the reply.
    Timeout {
        /// The worker.
        worker: u32,
        /// Its job number.
        job: u64,
    },
    /// The worker extends its lease.
    Heartbeat {
        /// The worker.
        worker: u32,
        /// Its job number.
        job: u64,
    },
    /// The lease of a crashed worker must have ended by now.
    LeaseCheck {
        /// The job's key.
        key: JobKey,
        /// The crashed worker's fencing token.
        fence: u64,
    },
    /// The operator redrives the dead-letter queue.
    Redrive,
    /// The last fault has healed: what was written until now must converge.
    LastFaultHealed,
}

/// The world's bookkeeping of the delivery in hand (the lease itself is the core's).
#[derive(Clone, Copy, Debug)]
struct InHand {
    id: u64,
    /// Acked before delivery (the mutant).
    acked: bool,
}

/// One simulated worker: the same sans-IO [`WorkerCore`] the tokio
/// [`WorkerPool`](crate::queue::tokio::WorkerPool) drives decides its every step; the
/// world carries the steps out as events.
#[derive(Clone, Debug)]
struct Worker {
    down: u32,
    round: u64,
    jobs: u64,
    job: Option<InHand>,
    core: WorkerCore,
}

/// Figures of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    /// Profile updates committed.
    pub updates: u64,
    /// Tasks the queue accepted.
    pub accepted: u64,
    /// Tasks coalesced with a waiting older version.
    pub coalesced: u64,
    /// Deliveries sent by workers.
    pub deliveries: u64,
    /// Deliveries dropped on a link.
    pub dropped: u64,
    /// Deliveries duplicated on a link.
    pub duplicated: u64,
    /// Applies that took effect.
    pub applied: u64,
    /// Deliveries acknowledged without effect (stale or duplicate).
    pub stale: u64,
    /// Applies refused for an old fencing token.
    pub fenced_applies: u64,
    /// Acks, nacks and heartbeats refused for an expired lease.
    pub fenced_acks: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Tasks dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters redriven.
    pub redriven: u64,
    /// Leases that expired.
    pub expired: u64,
    /// Queue restarts.
    pub restarts: u64,
    /// Worker crashes with a task in hand.
    pub crashes_mid_task: u64,
    /// Tasks lost by a dual write (the non-atomic outbox mutant only).
    pub dual_write_lost: u64,
    /// Unique jobs committed.
    pub unique_jobs: u64,
    /// Unique jobs that took effect.
    pub unique_effects: u64,
    /// When the last fault healed.
    pub last_fault_healed: Option<SimTime>,
    /// Per target: when it held everything written before the last fault healed.
    pub converged_at: Vec<Option<SimTime>>,
    /// Profile copies the targets still lacked when the last fault healed (summed over
    /// the targets): what they had to catch up on.
    pub missing_at_last_heal: u64,
}

impl QueueStats {
    /// Milliseconds from the last fault's healing until every target held every update
    /// written before it; `None` without faults, when every target already held them
    /// as the last fault healed (nothing to converge: a 0 there would only swamp the
    /// seeds that had to catch up), or when it never converged.
    pub fn convergence_ms(&self) -> Option<f64> {
        let healed = self.last_fault_healed?;
        if self.missing_at_last_heal == 0 {
            return None;
        }
        let mut last = healed;
        for c in &self.converged_at {
            last = last.max((*c)?);
        }
        Some(last.saturating_since(healed).as_nanos() as f64 / 1e6)
    }
}

/// The worker core's settings in a world: heartbeats (when the knobs have them) every
/// third of the declared visibility timeout, the knobs' poll interval and delivery
/// timeout.
fn worker_config(knobs: &QueueKnobs, policy: &QueuePolicy) -> WorkerConfig {
    WorkerConfig {
        heartbeat: knobs
            .heartbeat
            .then(|| heartbeat_every(policy.visibility_timeout)),
        poll: Duration::from_millis(knobs.poll_ms),
        delivery_timeout: Some(Duration::from_millis(knobs.delivery_timeout_ms)),
    }
}

/// The time from `now` until `at` (zero if it has passed).
fn until(now: Instant, at: Instant) -> SimDuration {
    SimDuration::from_nanos(at.saturating_since(now).as_nanos() as u64)
}

/// The queue world, generic over the queue under test.
pub struct QueueWorld<Q: TaskQueue> {
    knobs: QueueKnobs,
    queue: Q,
    queue_down: u32,
    profiles: ProfileService,
    outbox: Outbox,
    replicas: Vec<Replica>,
    inboxes: Vec<Inbox>,
    /// The target of every unique job committed (the world's routing table).
    unique_targets: BTreeMap<JobKey, u32>,
    workers: Vec<Worker>,
    flaw: Flaw,
    /// The invariant checker.
    pub checker: QueueChecker,
    rng_burst: SimRng,
    rng_rapid: SimRng,
    rng_net: SimRng,
    rng_jobs: SimRng,
    last_expired: u64,
    last_dead: u64,
    /// What was written when the last fault healed: profile -> version.
    snapshot: Option<BTreeMap<ProfileId, u64>>,
    /// Per target: profiles it still misses from the snapshot.
    remaining: Vec<usize>,
    /// Per target: profiles whose latest version it misses now.
    behind: Vec<usize>,
    /// Figures of the run.
    pub stats: QueueStats,
    /// Per target: (time, profiles behind) at every change.
    pub behind_series: Vec<Vec<(SimTime, f64)>>,
    /// Per target: (time, in sync) at every change.
    pub sync_states: Vec<Vec<(SimTime, bool)>>,
    /// (time, dead letters waiting) at every change.
    pub dead_series: Vec<(SimTime, f64)>,
    /// Queue process changes: (time, up).
    pub queue_states: Vec<(SimTime, bool)>,
}

impl<Q: TaskQueue> QueueWorld<Q> {
    /// A world for `knobs` around `queue`, judged by the policy `queue` declares
    /// ([`TaskQueue::policy`]); an error if that declaration makes no sense.
    pub fn new(knobs: QueueKnobs, queue: Q) -> Result<Self, ConfigError> {
        Self::with_flaw(knobs, queue, Flaw::None)
    }

    pub(crate) fn with_flaw(knobs: QueueKnobs, queue: Q, flaw: Flaw) -> Result<Self, ConfigError> {
        let policy = queue.policy();
        policy.validate()?;
        let root = SimRng::new(knobs.seed);
        let k = knobs.targets as usize;
        let targets: Vec<TargetId> = (0..knobs.targets).map(TargetId).collect();
        let replica_flaw =
            matches!(flaw, Flaw::NoVersionCheck | Flaw::ReapplySameVersion).then_some(flaw);
        let inbox_flaw = (flaw == Flaw::NoDedupe).then_some(flaw);
        Ok(QueueWorld {
            checker: QueueChecker::new(policy),
            queue,
            queue_down: 0,
            profiles: ProfileService::new(&targets),
            outbox: Outbox::new(),
            replicas: (0..k)
                .map(|_| {
                    let mut r = Replica::new();
                    r.flaw = replica_flaw;
                    r
                })
                .collect(),
            inboxes: (0..k)
                .map(|_| {
                    let mut i = Inbox::new();
                    i.flaw = inbox_flaw;
                    i
                })
                .collect(),
            unique_targets: BTreeMap::new(),
            workers: vec![
                Worker {
                    down: 0,
                    round: 0,
                    jobs: 0,
                    job: None,
                    core: WorkerCore::new(worker_config(&knobs, &policy)),
                };
                knobs.workers as usize
            ],
            flaw,
            rng_burst: root.fork("queue.burst"),
            rng_rapid: root.fork("queue.rapid"),
            rng_net: root.fork("queue.net"),
            rng_jobs: root.fork("queue.jobs"),
            last_expired: 0,
            last_dead: 0,
            snapshot: None,
            remaining: vec![0; k],
            behind: vec![0; k],
            stats: QueueStats {
                converged_at: vec![None; k],
                ..QueueStats::default()
            },
            behind_series: vec![Vec::new(); k],
            sync_states: vec![vec![(SimTime::ZERO, true)]; k],
            dead_series: Vec::new(),
            queue_states: vec![(SimTime::ZERO, true)],
            knobs,
        })
    }

    /// The knobs.
    pub fn knobs(&self) -> &QueueKnobs {
        &self.knobs
    }

    /// The queue under test.
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    fn link_delay(&mut self) -> SimDuration {
        let (lo, hi) = self.knobs.link_ms;
        SimDuration::from_micros(self.rng_net.between(lo * 1_000, hi * 1_000))
    }

    fn schedule_poll(&mut self, ctx: &mut Ctx<QueueEvent>, worker: u32, delay: SimDuration) {
        let w = &mut self.workers[worker as usize];
        if w.down > 0 {
            return;
        }
        w.round += 1;
        let round = w.round;
        ctx.schedule_in(delay, QueueEvent::Poll { worker, round });
    }

    /// Schedules the next update of a rapid burst of `profile`, under a millisecond
    /// from now (none when `left` is 0 or the safety phase is over).
    fn schedule_rapid(&mut self, ctx: &mut Ctx<QueueEvent>, profile: u32, left: u32) {
        let gap_ns = self
            .rng_rapid
            .between(20_000, self.knobs.burst_gap_us_max * 1_000);
        let at = ctx.now() + SimDuration::from_nanos(gap_ns);
        if left > 0 && at < ctx.horizon() {
            ctx.schedule_at(at, QueueEvent::Rapid { profile, left });
        }
    }

    /// The version `profile`'s copy at `target` holds.
    fn held(&self, profile: ProfileId, target: u32) -> u64 {
        self.replicas
            .get(target as usize)
            .and_then(|r| r.version(profile))
            .unwrap_or(0)
    }

    /// The target of a job: a profile copy's from its key, a unique job's from the
    /// world's routing table.
    fn target_of(&self, key: &JobKey) -> u32 {
        match profile::parse(key) {
            Some((_, t)) => t.0,
            None => self.unique_targets.get(key).copied().unwrap_or(0),
        }
    }

    fn set_behind(&mut self, ctx: &Ctx<QueueEvent>, k: usize, delta: isize) {
        if delta == 0 {
            return;
        }
        let before = self.behind[k];
        self.behind[k] = before.saturating_add_signed(delta);
        self.behind_series[k].push((ctx.now(), self.behind[k] as f64));
        if (before == 0) != (self.behind[k] == 0) {
            self.sync_states[k].push((ctx.now(), self.behind[k] == 0));
        }
    }

    /// Accepts the results of enqueues: counts, marks, checker.
    fn on_enqueued(&mut self, ctx: &mut Ctx<QueueEvent>, task: &Job, r: Enqueued) {
        match r {
            Enqueued::Duplicate => return,
            Enqueued::Coalesced => {
                ctx.cover("queue.coalesced");
                self.stats.coalesced += 1;
            }
            Enqueued::Queued => ctx.cover("queue.queued_behind_lease"),
            Enqueued::New => {}
        }
        self.stats.accepted += 1;
        self.checker.on_accepted(task);
    }

    fn relay(&mut self, ctx: &mut Ctx<QueueEvent>) {
        if self.queue_down > 0 {
            if self.outbox.backlog() > 0 {
                ctx.cover("queue.outbox_waits_for_queue");
            }
            return;
        }
        let now = Instant::from(ctx.now());
        let queue = &mut self.queue;
        let unique_targets = &self.unique_targets;
        let aim = self.knobs.leases_per_target_max.is_some();
        let mut done = Vec::new();
        self.outbox.relay(|mut task| {
            if aim {
                // Each job names its target, as the world knows it.
                let k = match profile::parse(&task.key) {
                    Some((_, t)) => t.0,
                    None => unique_targets.get(&task.key).copied().unwrap_or(0),
                };
                task.target = Name::new(&QueueKnobs::target_name(k)).ok();
            }
            let r = queue.enqueue(task.clone(), now);
            done.push((task, r));
            true
        });
        for (task, r) in done {
            if let Some(t) = task.target {
                self.checker.on_committed_target(task.key, t);
            }
            self.on_enqueued(ctx, &task, r);
        }
    }

    fn update(&mut self, ctx: &mut Ctx<QueueEvent>, profile: ProfileId) {
        let old = self.profiles.version(profile).unwrap_or(0);
        let unique = self.knobs.draw_unique(&mut self.rng_jobs, ctx.now());
        let payload = Payload::default();
        let (v, notify) = if self.flaw == Flaw::NonAtomicOutbox {
            // The defect: the write commits, then the jobs go straight to the queue.
            let v = self.profiles.write(profile);
            let now = Instant::from(ctx.now());
            let mut jobs: Vec<Job> = (0..self.knobs.targets)
                .map(|k| profile::job(profile, TargetId(k), v))
                .collect();
            let mut notify = None;
            if let Some((target, run_at)) = unique {
                // Ids from the outbox's counter, so they are unique all the same.
                let id = self
                    .outbox
                    .write(|tx| Ok::<_, ()>(crate::queue::Staging::next_id(tx)))
                    .unwrap_or(crate::queue::JobId(0));
                let mut job = Job::unique(NOTIFY, id, payload);
                job.run_at = run_at;
                notify = Some((job.key, target, run_at));
                jobs.push(job);
            }
            for job in jobs {
                if self.queue_down > 0 {
                    self.stats.dual_write_lost += 1;
                } else {
                    let r = self.queue.enqueue(job.clone(), now);
                    self.on_enqueued(ctx, &job, r);
                }
            }
            (v, notify)
        } else {
            let profiles = &mut self.profiles;
            let written = self.outbox.write(|tx| {
                let v = profiles.update(tx, profile)?;
                let notify = unique.map(|(target, run_at)| {
                    let id = crate::queue::Staging::next_id(tx);
                    let mut job = Job::unique(NOTIFY, id, payload);
                    job.run_at = run_at;
                    let key = job.key;
                    tx.stage(job);
                    (key, target, run_at)
                });
                Ok::<_, std::convert::Infallible>((v, notify))
            });
            let Ok(written) = written;
            written
        };
        if let Some((key, target, run_at)) = notify {
            ctx.cover("queue.unique_job");
            if run_at.is_some() {
                ctx.cover("queue.unique_run_later");
            }
            self.stats.unique_jobs += 1;
            self.unique_targets.insert(key, target);
            self.checker.on_committed_unique(key);
            if let Some(at) = run_at {
                self.checker.on_committed_run_at(key, at);
            }
            ctx.record("profiles", format_args!("commits {key} to target-{target}"));
        }
        if self.flaw != Flaw::NonAtomicOutbox {
            self.relay(ctx);
        }
        self.stats.updates += 1;
        ctx.record("profiles", format_args!("p{} -> version {v}", profile.0));
        for k in 0..self.knobs.targets {
            let held = self.held(profile, k);
            if held >= old {
                self.set_behind(ctx, k as usize, 1);
            }
        }
    }

    /// Carries out the core's step `next` for an idle worker: a poll now or after a
    /// sleep (the world's workers are never stopped).
    fn idle(&mut self, ctx: &mut Ctx<QueueEvent>, worker: u32, next: Next) {
        let now = Instant::from(ctx.now());
        match next {
            Next::Sleep { until: at } => self.schedule_poll(ctx, worker, until(now, at)),
            _ => self.schedule_poll(ctx, worker, SimDuration::ZERO),
        }
    }

    fn poll(&mut self, ctx: &mut Ctx<QueueEvent>, worker: u32) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        // A queue that is down answers nothing; the world's workers do not read the
        // queue's due-time hint (a plug-in's is not trusted).
        let lease = if self.queue_down > 0 {
            None
        } else {
            self.queue.lease(now)
        };
        let next = self.workers[worker as usize]
            .core
            .on_lease(now, lease, None);
        let Next::Deliver(lease) = next else {
            self.idle(ctx, worker, next);
            return Ok(());
        };
        let lease = *lease;
        self.checker.on_lease(&lease, worker, now)?;
        if lease.attempt > 1 {
            ctx.cover("queue.retry");
        }
        let w = &mut self.workers[worker as usize];
        w.jobs += 1;
        let id = w.jobs;
        let mut job = InHand { id, acked: false };
        ctx.record(
            QueueKnobs::worker_name(worker),
            format_args!(
                "leases {} v{} attempt {} fence {}",
                lease.job.key,
                lease.job.version,
                lease.attempt,
                lease.token.fence()
            ),
        );
        if self.flaw == Flaw::AckBeforeDelivery {
            // The defect: the task is acknowledged before it is delivered.
            if self.queue.ack(&lease.token, now).is_ok() {
                self.checker
                    .on_ack(lease.job.key, lease.token.fence(), lease.attempt);
            }
            job.acked = true;
        }
        let w = &mut self.workers[worker as usize];
        w.job = Some(job);
        let (deadline, beat) = (w.core.deadline(), w.core.next_beat());
        self.send(ctx, worker, job.id, lease);
        if let Some(at) = deadline {
            ctx.schedule_in(until(now, at), QueueEvent::Timeout { worker, job: id });
        }
        if let Some(at) = beat {
            ctx.schedule_in(until(now, at), QueueEvent::Heartbeat { worker, job: id });
        }
        Ok(())
    }

    fn send(&mut self, ctx: &mut Ctx<QueueEvent>, worker: u32, job: u64, lease: Lease) {
        self.stats.deliveries += 1;
        let link = QueueKnobs::link_name(self.target_of(&lease.job.key));
        let fate = ctx.faults().link(&link);
        if fate.dropped {
            ctx.cover("queue.dropped_delivery");
            self.stats.dropped += 1;
            return;
        }
        if fate.copies > 1 {
            ctx.cover("queue.duplicate_delivery");
            self.stats.duplicated += 1;
        }
        for _ in 0..fate.copies {
            let delay = self.link_delay() + fate.extra_delay;
            ctx.schedule_in(
                delay,
                QueueEvent::Arrive {
                    worker,
                    job,
                    task: lease.job.clone(),
                    fence: lease.token.fence(),
                },
            );
        }
    }

    fn reply(&mut self, ctx: &mut Ctx<QueueEvent>, worker: u32, job: u64, outcome: Answer, k: u32) {
        let fate = ctx.faults().link(&QueueKnobs::link_name(k));
        if fate.dropped {
            ctx.cover("queue.dropped_delivery");
            return;
        }
        let delay = self.link_delay() + fate.extra_delay;
        ctx.schedule_in(
            delay,
            QueueEvent::Reply {
                worker,
                job,
                outcome,
            },
        );
    }

    fn apply(
        &mut self,
        ctx: &mut Ctx<QueueEvent>,
        worker: u32,
        job: u64,
        task: Job,
        fence: u64,
    ) -> Result<(), Violation> {
        let k = self.target_of(&task.key);
        let name = QueueKnobs::target_name(k);
        if ctx.faults().is_down(&name) || ctx.faults().injects_error(&name) {
            self.reply(ctx, worker, job, Answer::Failed, k);
            return Ok(());
        }
        let Some((profile, _)) = profile::parse(&task.key) else {
            return self.apply_unique(ctx, worker, job, &task, fence, k);
        };
        let before = self.held(profile, k);
        let r = self.replicas[k as usize].apply(profile, task.version, fence);
        ctx.record(
            name,
            format_args!("{} v{} fence {fence}: {r:?}", task.key, task.version),
        );
        let outcome = match r {
            Applied::Applied => {
                self.stats.applied += 1;
                self.checker.on_applied(task.key, task.version)?;
                self.after_apply(ctx, profile, k, task.version, before);
                Answer::Delivered
            }
            Applied::Stale => {
                ctx.cover("queue.stale_delivery");
                self.stats.stale += 1;
                Answer::Delivered
            }
            Applied::Fenced => {
                ctx.cover("queue.fenced_apply");
                self.stats.fenced_applies += 1;
                Answer::Fenced
            }
        };
        self.reply(ctx, worker, job, outcome, k);
        Ok(())
    }

    /// A unique job arrived at target `k`: its inbox applies it once (dedupe by job
    /// and fence); the effect is counted for `queue.exactly_once`.
    fn apply_unique(
        &mut self,
        ctx: &mut Ctx<QueueEvent>,
        worker: u32,
        job: u64,
        task: &Job,
        fence: u64,
        k: u32,
    ) -> Result<(), Violation> {
        let r = self.inboxes[k as usize].apply(task.key, fence);
        ctx.record(
            QueueKnobs::target_name(k),
            format_args!("{} fence {fence}: {r:?}", task.key),
        );
        let outcome = match r {
            Applied::Applied => {
                self.stats.unique_effects += 1;
                self.checker.on_effect(task.key)?;
                Answer::Delivered
            }
            Applied::Stale => {
                ctx.cover("queue.unique_duplicate_delivery");
                self.stats.stale += 1;
                Answer::Delivered
            }
            Applied::Fenced => {
                ctx.cover("queue.fenced_apply");
                self.stats.fenced_applies += 1;
                Answer::Fenced
            }
        };
        self.reply(ctx, worker, job, outcome, k);
        Ok(())
    }

    /// Tracks who is behind and convergence after an apply that took effect.
    fn after_apply(
        &mut self,
        ctx: &mut Ctx<QueueEvent>,
        profile: ProfileId,
        k: u32,
        version: u64,
        before: u64,
    ) {
        let k = k as usize;
        let latest = self.profiles.version(profile).unwrap_or(0);
        let was = before < latest;
        let is = version < latest;
        self.set_behind(ctx, k, isize::from(is) - isize::from(was));
        if let Some(snap) = &self.snapshot
            && self.stats.converged_at[k].is_none()
        {
            let want = snap.get(&profile).copied().unwrap_or(0);
            if before < want && version >= want {
                self.remaining[k] = self.remaining[k].saturating_sub(1);
                if self.remaining[k] == 0 {
                    self.stats.converged_at[k] = Some(ctx.now());
                }
            }
        }
    }

    /// Carries out the core's heartbeat of `token`, then what the core says next: the
    /// next beat, or dropping the delivery when the queue refused it.
    fn heartbeat(
        &mut self,
        ctx: &mut Ctx<QueueEvent>,
        worker: u32,
        token: LeaseToken,
    ) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        let beat = if self.queue_down > 0 {
            Beat::Unavailable
        } else {
            match self.queue.heartbeat(&token, now) {
                Ok(deadline) => {
                    ctx.cover("queue.heartbeat");
                    self.checker
                        .on_heartbeat(token.key(), token.fence(), deadline, now)?;
                    Beat::Extended
                }
                Err(_) => {
                    // The lease is gone: stop working on it.
                    ctx.cover("queue.fenced_ack");
                    self.stats.fenced_acks += 1;
                    Beat::Refused
                }
            }
        };
        let w = &mut self.workers[worker as usize];
        match w.core.on_heartbeat(now, beat) {
            Next::Abandon => {
                w.job = None;
                let next = w.core.abandon();
                self.idle(ctx, worker, next);
            }
            _ => {
                if let (Some(at), Some(j)) = (w.core.next_beat(), w.job) {
                    ctx.schedule_in(until(now, at), QueueEvent::Heartbeat { worker, job: j.id });
                }
            }
        }
        Ok(())
    }

    fn current_job(&self, worker: u32, job: u64) -> Option<InHand> {
        let w = &self.workers[worker as usize];
        w.job.filter(|j| j.id == job && w.down == 0)
    }

    /// Carries out the core's step `next` for the delivery in hand (`job`): an ack, a
    /// nack or dropping it; then the worker polls again as the core says.
    fn settle(
        &mut self,
        ctx: &mut Ctx<QueueEvent>,
        worker: u32,
        job: InHand,
        next: Next,
        error: &str,
    ) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        let w = &mut self.workers[worker as usize];
        w.job = None;
        let Some((l, _)) = w.core.in_hand() else {
            return Ok(());
        };
        let mut checked = Ok(());
        let settled = match next {
            // The mutant acked it already; nothing is left to settle.
            _ if job.acked => None,
            Next::Ack(_) | Next::Nack(_) if self.queue_down > 0 => Some(Settled::Unavailable),
            Next::Ack(token) => Some(match self.queue.ack(&token, now) {
                Ok(()) => {
                    self.checker.on_ack(l.job.key, l.token.fence(), l.attempt);
                    Settled::Acked
                }
                Err(_) => {
                    ctx.cover("queue.fenced_ack");
                    self.stats.fenced_acks += 1;
                    Settled::Refused
                }
            }),
            Next::Nack(token) => Some(match self.queue.nack(&token, error, now) {
                Ok(r) => {
                    match r {
                        Nacked::Retry { .. } => self.stats.retries += 1,
                        Nacked::DeadLettered => {
                            ctx.cover("queue.dead_letter");
                            self.stats.dead_lettered += 1;
                        }
                        Nacked::Superseded => ctx.cover("queue.superseded_after_failure"),
                    }
                    let dead = if r == Nacked::DeadLettered {
                        self.queue.dead_letters()
                    } else {
                        Vec::new()
                    };
                    checked = self.checker.on_nack(
                        &l.job,
                        l.token.fence(),
                        l.attempt,
                        r,
                        error,
                        now,
                        &dead,
                    );
                    Settled::Nacked(r)
                }
                Err(_) => {
                    ctx.cover("queue.fenced_ack");
                    self.stats.fenced_acks += 1;
                    Settled::Refused
                }
            }),
            _ => None,
        };
        let core = &mut self.workers[worker as usize].core;
        let next = match settled {
            Some(s) => core.on_settled(s),
            None => core.abandon(),
        };
        self.idle(ctx, worker, next);
        checked
    }

    fn redrive(&mut self, ctx: &mut Ctx<QueueEvent>) {
        if self.queue_down > 0 || self.queue.counts().dead == 0 {
            return;
        }
        let n = self.queue.redrive(Instant::from(ctx.now()));
        if n > 0 {
            ctx.cover("queue.redrive");
            self.stats.redriven += n as u64;
            ctx.record("operator", format_args!("redrives {n} dead letters"));
        }
    }

    /// The checks and bookkeeping after every step.
    fn step(&mut self, ctx: &mut Ctx<QueueEvent>) -> Result<(), Violation> {
        let c = self.queue.counts();
        if c.expired > self.last_expired {
            ctx.cover("queue.lease_expired");
            self.stats.expired += c.expired - self.last_expired;
            self.last_expired = c.expired;
        }
        if c.dead != self.last_dead {
            self.last_dead = c.dead;
            self.dead_series.push((ctx.now(), c.dead as f64));
        }
        self.checker.check_conservation(&c)
    }

    fn is_quiet(&self) -> bool {
        let c = self.queue.counts();
        self.queue_down == 0
            && self.outbox.backlog() == 0
            && c.in_flight() == 0
            && c.dead == 0
            && self.workers.iter().all(|w| w.job.is_none())
    }

    fn handle_event(
        &mut self,
        ctx: &mut Ctx<QueueEvent>,
        event: QueueEvent,
    ) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        match event {
            QueueEvent::Burst => {
                let (next, updates) =
                    self.knobs
                        .burst(ctx.now(), ctx.horizon(), &mut self.rng_burst);
                if let Some(next) = next {
                    ctx.schedule_at(next, QueueEvent::Burst);
                }
                for (at, profile) in updates {
                    ctx.schedule_at(at, QueueEvent::Update { profile });
                }
            }
            QueueEvent::Update { profile } => {
                if self.rng_rapid.below(100) < u64::from(self.knobs.burst_percent) {
                    let len = self
                        .rng_rapid
                        .between(1, u64::from(self.knobs.burst_len_max));
                    self.schedule_rapid(ctx, profile, len as u32);
                }
                self.update(ctx, ProfileId(u64::from(profile)));
            }
            QueueEvent::Rapid { profile, left } => {
                ctx.cover("queue.burst");
                self.schedule_rapid(ctx, profile, left - 1);
                self.update(ctx, ProfileId(u64::from(profile)));
            }
            QueueEvent::Poll { worker, round } => {
                let w = &self.workers[worker as usize];
                if w.round == round && w.down == 0 && w.job.is_none() {
                    self.poll(ctx, worker)?;
                }
            }
            QueueEvent::Arrive {
                worker,
                job,
                task,
                fence,
            } => {
                let k = self.target_of(&task.key);
                let name = QueueKnobs::target_name(k);
                if ctx.faults().is_down(&name) {
                    self.reply(ctx, worker, job, Answer::Failed, k);
                } else {
                    let (lo, hi) = self.knobs.work_ms[k as usize];
                    let work =
                        SimDuration::from_micros(self.rng_net.between(lo * 1_000, hi * 1_000))
                            + ctx.faults().extra_latency(&name);
                    ctx.schedule_in(
                        work,
                        QueueEvent::Apply {
                            worker,
                            job,
                            task,
                            fence,
                        },
                    );
                }
            }
            QueueEvent::Apply {
                worker,
                job,
                task,
                fence,
            } => self.apply(ctx, worker, job, task, fence)?,
            QueueEvent::Reply {
                worker,
                job,
                outcome,
            } => {
                if let Some(j) = self.current_job(worker, job) {
                    let core = &mut self.workers[worker as usize].core;
                    if outcome == Answer::Fenced
                        && let Some((l, _)) = core.in_hand()
                    {
                        ctx.record(
                            QueueKnobs::worker_name(worker),
                            format_args!("fenced by the target: drops {}", l.job.key),
                        );
                    }
                    let next = core.on_outcome(match outcome {
                        Answer::Delivered => Outcome::Delivered,
                        Answer::Failed => Outcome::Failed,
                        Answer::Fenced => Outcome::Fenced,
                    });
                    self.settle(ctx, worker, j, next, TARGET_FAILED)?;
                }
            }
            QueueEvent::Timeout { worker, job } => {
                if let Some(j) = self.current_job(worker, job) {
                    ctx.cover("queue.delivery_timeout");
                    let next = self.workers[worker as usize].core.on_timer(now);
                    self.settle(ctx, worker, j, next, DELIVERY_TIMED_OUT)?;
                }
            }
            QueueEvent::Heartbeat { worker, job } => {
                if let Some(j) = self.current_job(worker, job).filter(|j| !j.acked) {
                    match self.workers[worker as usize].core.on_timer(now) {
                        Next::Heartbeat(token) => self.heartbeat(ctx, worker, token)?,
                        next @ (Next::Ack(_) | Next::Nack(_) | Next::Abandon) => {
                            self.settle(ctx, worker, j, next, DELIVERY_TIMED_OUT)?;
                        }
                        _ => {}
                    }
                }
            }
            QueueEvent::LeaseCheck { key, fence } => {
                let still = self.queue.lease_of(key, now).map(|t| t.fence());
                self.checker
                    .on_crashed_lease_check(key, fence, still, now)?;
                if still != Some(fence) {
                    ctx.cover("queue.crashed_worker_task_released");
                }
            }
            QueueEvent::Redrive => {
                self.redrive(ctx);
                let every = if ctx.is_healed() {
                    Some(self.knobs.redrive_after_heal_ms.max(100))
                } else {
                    self.knobs.redrive_every_ms
                };
                if let Some(every) = every
                    && (ctx.is_healed()
                        || ctx.now() + SimDuration::from_millis(every) < ctx.horizon())
                {
                    ctx.schedule_in(SimDuration::from_millis(every), QueueEvent::Redrive);
                }
            }
            QueueEvent::LastFaultHealed => {
                let snap = self.profiles.versions().clone();
                for k in 0..self.knobs.targets {
                    let missing = snap.iter().filter(|(p, v)| self.held(**p, k) < **v).count();
                    self.remaining[k as usize] = missing;
                    self.stats.missing_at_last_heal += missing as u64;
                    if missing == 0 {
                        self.stats.converged_at[k as usize] = Some(ctx.now());
                    }
                }
                self.stats.last_fault_healed = Some(ctx.now());
                self.snapshot = Some(snap);
            }
        }
        Ok(())
    }
}

impl<Q: TaskQueue> World for QueueWorld<Q> {
    type Event = QueueEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<QueueEvent>) -> Result<(), Violation> {
        ctx.schedule_at(SimTime::ZERO, QueueEvent::Burst);
        for i in 0..self.knobs.workers {
            self.schedule_poll(ctx, i, SimDuration::ZERO);
        }
        if let Some(every) = self.knobs.redrive_every_ms {
            ctx.schedule_at(SimTime::from_millis(every), QueueEvent::Redrive);
        }
        let horizon = ctx.horizon();
        let healed = ctx
            .plan()
            .faults
            .iter()
            .filter(|f| f.from() < horizon)
            .map(|f| f.until().min(horizon))
            .max();
        if let Some(at) = healed {
            ctx.schedule_at(at, QueueEvent::LastFaultHealed);
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<QueueEvent>, event: QueueEvent) -> Result<(), Violation> {
        self.handle_event(ctx, event)?;
        self.step(ctx)
    }

    fn on_fault(&mut self, ctx: &mut Ctx<QueueEvent>, edge: FaultEdge) -> Result<(), Violation> {
        if !edge.fault.kind.is_crash() {
            return Ok(());
        }
        let now = Instant::from(ctx.now());
        if edge.started {
            // Counts the crash as fired in the report (the node goes down now).
            let _ = ctx.faults().is_crashed(&edge.fault.target);
        }
        if edge.fault.target == QUEUE_NODE {
            if edge.started {
                self.queue_down += 1;
                if self.queue_down == 1 {
                    self.queue_states.push((ctx.now(), false));
                    ctx.record(QUEUE_NODE, "crashes");
                }
            } else if self.queue_down > 0 {
                self.queue_down -= 1;
                if self.queue_down == 0 {
                    self.queue.restart(now);
                    ctx.cover("queue.restart");
                    self.stats.restarts += 1;
                    self.queue_states.push((ctx.now(), true));
                    ctx.record(QUEUE_NODE, "restarts from its durable store");
                    self.relay(ctx);
                }
            }
            return self.step(ctx);
        }
        let Some(i) =
            (0..self.knobs.workers).find(|i| QueueKnobs::worker_name(*i) == edge.fault.target)
        else {
            return Ok(());
        };
        let fresh = WorkerCore::new(worker_config(&self.knobs, &self.checker.policy));
        let w = &mut self.workers[i as usize];
        if edge.started {
            w.down += 1;
            w.round += 1;
            // Nothing of the worker survives the crash.
            let in_hand = std::mem::replace(&mut w.core, fresh).in_hand();
            if let (Some(job), Some((lease, since))) = (w.job.take(), in_hand) {
                ctx.cover("queue.worker_crash_mid_task");
                self.stats.crashes_mid_task += 1;
                let key = lease.job.key;
                let fence = lease.token.fence();
                // The world's own deadline (the queue's report is not used).
                let deadline = self.checker.hold_deadline(key, fence).unwrap_or_else(|| {
                    since.saturating_add(self.checker.policy.visibility_timeout)
                });
                if !job.acked {
                    let at = SimTime::from_nanos(deadline.as_nanos());
                    ctx.schedule_at(at, QueueEvent::LeaseCheck { key, fence });
                }
            }
            ctx.record(QueueKnobs::worker_name(i), "crashes");
        } else if w.down > 0 {
            w.down -= 1;
            if w.down == 0 {
                ctx.record(QueueKnobs::worker_name(i), "restarts");
                self.schedule_poll(ctx, i, SimDuration::ZERO);
            }
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<QueueEvent>) -> Result<(), Violation> {
        // The operator redrives the dead letters once the faults are over.
        ctx.schedule_in(
            SimDuration::from_millis(self.knobs.redrive_after_heal_ms),
            QueueEvent::Redrive,
        );
        self.relay(ctx);
        self.step(ctx)
    }

    fn is_quiescent(&self, ctx: &Ctx<QueueEvent>) -> bool {
        ctx.is_healed() && self.is_quiet()
    }

    fn finish(&mut self, _ctx: &mut Ctx<QueueEvent>) -> Result<(), Violation> {
        let mut latest = Vec::new();
        for (p, v) in self.profiles.versions() {
            for k in 0..self.knobs.targets {
                latest.push((profile::key(*p, TargetId(k)), *v));
            }
        }
        self.checker
            .finish(&latest, self.outbox.backlog(), &self.queue.counts())
    }
}

/// Runs `world` under `plan`, the one way the queue world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<Q: TaskQueue>(
    mut world: QueueWorld<Q>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, QueueWorld<Q>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay queue --seed {seed}")
        .run(&mut world);
    (report, world)
}
