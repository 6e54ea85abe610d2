//! The simulated checkout: customers check out at a steady rate; the orchestrator
//! writes its log to a durable store (each append takes disk time, and nothing after it
//! happens before it is durable), sends commands over links that drop, duplicate and
//! delay, to services that go down, get slow, or do the work and lose the reply; the
//! orchestrator itself crashes and recovers from its log. The checks run at rest.
//!
//! The log is modelled as a disk ([`DiskLog`]): the bytes of its encoded lines
//! ([`LogRecord::encode_line`]), of which a prefix is synced. An append writes its line
//! at once and is synced a disk time later; only then does the store acknowledge it
//! (as [`LogStore::append`](crate::saga::orchestrated::tokio::LogStore) promises) and
//! does what follows it go out. A crash (`crash` or `torn_crash` of the
//! `orchestrator`) drops every byte not synced; a `torn_crash` leaves a prefix of the
//! first unsynced line behind, as a process killed mid-write does. The recovery reads
//! the bytes back through [`decode_log`], the function the file log reads its file
//! with (a torn last line is dropped and cut off; a complete line that is not a record
//! is an error), then rebuilds the coordinator from the records
//! ([`SagaCoordinator::recovered`]).

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::saga::checkout::{Arrivals, COORDINATOR_NODE, SagaKnobs, Settling};
use crate::saga::invariants::{
    self, AT_REST, COMPENSATION_ORDER, CONFORMANCE, CompensationEffects, RETRIES,
    STARTED_AS_SUBMITTED, WRITE_AHEAD,
};
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::contract::{SagaCoordinator, SagaPolicy};
use crate::saga::orchestrated::core::{Flaw, Orchestrator, Output};
use crate::saga::orchestrated::driver::{Perform, Pipeline};
use crate::saga::orchestrated::log::{LogRecord, decode_log};
use crate::saga::participants::Participants;
use crate::saga::services::{
    Command, IdempotencyKey, Kind, Order, Refusal, Reply, SagaId, SagaState, Services, StepId,
};
use faultline_sim::TraceMode;
use faultline_sim::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Coverage marks of the saga world.
pub const MARKS: &[&str] = &[
    "saga.completed",
    "saga.compensated",
    "saga.failed",
    "saga.running_to_compensating",
    "saga.running_to_completed",
    "saga.compensating_to_compensated",
    "saga.compensating_to_failed",
    "saga.recovered_from_log",
    "saga.resumed_in_flight",
    "saga.unknown_outcome_timeout",
    "saga.compensation_retry",
    "saga.refused",
    "saga.duplicate_delivered",
    "saga.reply_lost",
    "saga.burst",
    "saga.unsynced_lost",
    "saga.torn_tail_recovered",
];

const ORCHESTRATOR: &str = COORDINATOR_NODE;

/// Under the `ack_before_sync` mutant, how long after bytes are first dirtied the
/// operating system writes them back: Linux's flusher wakes every 5 s
/// (`dirty_writeback_centisecs`; it writes pages dirty for 30 s, `dirty_expire_centisecs`,
/// so this is lenient to the mutant).
const WRITEBACK_MS: u64 = 5_000;

/// What the knobs mean for the orchestrated saga.
impl SagaKnobs {
    /// The orchestrator's configuration.
    pub fn config(&self) -> Result<SagaConfig, ConfigError> {
        self.config_builder().build()
    }

    /// The builder of the orchestrator's [`config`](SagaKnobs::config), for mutants to
    /// change.
    pub(crate) fn config_builder(&self) -> crate::saga::SagaConfigBuilder {
        SagaConfig::builder()
            .step_timeout(Duration::from_millis(self.step_timeout_ms))
            .attempts_max(self.attempts_max)
            .compensation_attempts_max(self.compensation_attempts_max)
            .backoff(
                Duration::from_millis(self.backoff_ms.0),
                Duration::from_millis(self.backoff_ms.1),
            )
            .seed(self.seed)
            .deadline_from_sent(true)
    }

    /// The fault plans the orchestrated checkout understands: those of
    /// [`fault_profile`](SagaKnobs::fault_profile), and `torn_crash` besides (its
    /// coordinator keeps a log of bytes to tear). The plans are the same plans as the
    /// other checkout worlds' with some crashes torn ([`FaultPlan::generate`] draws the
    /// tears from a stream of their own).
    pub fn orchestrated_fault_profile(&self) -> FaultProfile {
        self.fault_profile().kinds(FaultKindTag::ALL)
    }

    /// The fault plan this seed generates for the orchestrated checkout (under
    /// [`orchestrated_fault_profile`](SagaKnobs::orchestrated_fault_profile)).
    pub fn orchestrated_fault_plan(&self) -> FaultPlan {
        FaultPlan::generate(
            &mut SimRng::new(self.seed).fork("saga.plan"),
            &self.orchestrated_fault_profile(),
        )
    }

    /// The policy the reference declares for these knobs (its [`config`](SagaKnobs::config)'s):
    /// what [`saga.conformance`](invariants::CONFORMANCE) compares a declaration with.
    pub fn reference_policy(&self) -> Result<SagaPolicy, ConfigError> {
        Ok(SagaPolicy::from(&self.config()?))
    }

    /// How long a saga of a coordinator declaring `policy` may take to come to rest
    /// once no fault is active (not counting waits for the disk behind other sagas):
    /// once everything works, at most one attempt times out and backs off (it was in
    /// flight, or backing off, when the last fault ended); then every remaining action
    /// and compensation succeeds first time. That is one declared `step_timeout +
    /// retry_delay_max`, doubled for safety, plus a round trip and two log writes (the
    /// knobs' latency and disk time: the environment's) for each of the six commands a
    /// saga can send. Far below `step timeouts x attempts`, so it catches slow
    /// settling, not only none.
    pub fn settle_bound(&self, policy: &SagaPolicy) -> Duration {
        self.settle_bound_for(policy, 3)
    }

    /// [`settle_bound`](SagaKnobs::settle_bound) for a definition of `steps` steps: the
    /// same, with a round trip and two log writes for each of the `2 x steps` commands
    /// (an action and a compensation per step) a saga can send.
    pub fn settle_bound_for(&self, policy: &SagaPolicy, steps: usize) -> Duration {
        let commands = u32::try_from(steps.saturating_mul(2)).unwrap_or(u32::MAX);
        let per_command = Duration::from_millis(2 * self.latency_ms.1 + 2 * self.disk_ms);
        (policy.step_timeout.saturating_add(policy.retry_delay_max))
            .saturating_mul(2)
            .saturating_add(per_command.saturating_mul(commands))
    }
}

/// The world's events (`P`, `R`: the definition's payload and refusal reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SagaEvent<P = Order, R = Refusal> {
    /// A customer checks out.
    Checkout,
    /// The record being written is durable.
    AppendDone {
        /// The orchestrator's life (a crash ends it).
        life: u64,
    },
    /// A command reaches its service.
    Deliver {
        /// The command.
        cmd: Command<P>,
        /// Its attempt number.
        attempt: u32,
    },
    /// A reply reaches the orchestrator.
    Reply {
        /// The command answered.
        cmd: Command<P>,
        /// Its attempt number.
        attempt: u32,
        /// The answer.
        reply: Reply<R>,
    },
    /// A timer of the orchestrator may be due.
    Tick,
}

/// The events of the world of participants `S`.
type Ev<S> = SagaEvent<<S as Participants>::Payload, <S as Participants>::Refusal>;

/// Figures of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SagaStats {
    /// Sagas started.
    pub started: u64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
    /// Failed (with an alert).
    pub failed: u64,
    /// Orchestrator recoveries from the log.
    pub recoveries: u64,
    /// Commands sent.
    pub sends: u64,
    /// Log records made durable.
    pub records: u64,
    /// Replies sent as [`Reply::Failed`] (with
    /// [`answering_errors_as_failed`](SagaWorld::answering_errors_as_failed)).
    pub failed_replies: u64,
}

/// What the world saw of one command (a saga's action or compensation of one step):
/// the facts `saga.retries` and the Failed check rest on.
#[derive(Clone, Debug, Default)]
struct CommandSends {
    /// Sends the world carried out.
    sends: u32,
    /// The coordinator lives in which it was sent (a recovery may resend the attempt
    /// in flight at the crash once).
    lives: u32,
    /// The life of the last send.
    last_life: u64,
    /// The attempt number of the last send, and when it was emitted (polled).
    last: (u32, SimTime),
    /// A reply to this command reached the coordinator since the last send.
    replied: bool,
    /// The attempt numbers sent.
    numbers: BTreeSet<u32>,
}

/// The coordinator's log as its disk holds it: the bytes of its lines, each a record
/// encoded by [`LogRecord::encode_line`] and ended by `\n`, of which a prefix is synced
/// (durable). A crash keeps the synced prefix and, if it tears, a prefix of the next
/// line; what the recovery reads is these bytes, through [`decode_log`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskLog {
    bytes: Vec<u8>,
    synced: usize,
}

impl DiskLog {
    /// The bytes on the disk, synced or not.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many of them are synced (a crash keeps these).
    pub fn synced_len(&self) -> usize {
        self.synced
    }

    /// Writes `line` and its newline after what is there, unsynced.
    fn write(&mut self, line: &str) {
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
    }

    /// Syncs everything written so far.
    fn sync(&mut self) {
        self.synced = self.bytes.len();
    }

    /// The node died: the unsynced bytes are lost, except, when `tear` gives a stream
    /// to draw from, a prefix (at least one byte, never its newline) of the first
    /// unsynced line. Returns the bytes lost and the torn bytes kept.
    fn crash(&mut self, tear: Option<&mut SimRng>) -> (usize, usize) {
        let unsynced = self.bytes.len() - self.synced;
        let mut kept = 0;
        if let Some(rng) = tear {
            let first = self.bytes[self.synced..]
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(unsynced);
            if first > 0 {
                kept = rng.between(1, first as u64) as usize;
            }
        }
        self.bytes.truncate(self.synced + kept);
        (unsynced - kept, kept)
    }

    /// Cuts the log back to `len` bytes (a recovery dropping a torn tail, as the file
    /// log does when it opens).
    fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
        self.synced = self.synced.min(len);
    }
}

/// The orchestrated saga world around a [`SagaCoordinator`] (the reference
/// [`Orchestrator`] by default, or yours: [`SagaWorld::with_coordinator`]) and the
/// [`Participants`] of a definition (the checkout's [`Services`] by default, or any
/// other: [`SagaWorld::with_participants`]).
///
/// The world judges the coordinator by the [`SagaPolicy`] it declares
/// ([`SagaCoordinator::policy`]); [`conforming_to_reference`](SagaWorld::conforming_to_reference)
/// adds the check that the declaration is the reference's exact settings for the knobs.
pub struct SagaWorld<O = Orchestrator, S: Participants = Services> {
    knobs: SagaKnobs,
    /// The policy the coordinator declared when the world was made.
    policy: SagaPolicy,
    /// The policy it must declare, when conformance is checked.
    conform_to: Option<SagaPolicy>,
    /// A coordinator never run: what a recovery is built from (code and configuration).
    blueprint: O,
    orchestrator: Option<O>,
    life: u64,
    /// The log's records as the coordinator was told they are durable: each append the
    /// store acknowledged, replaced at every recovery by what the disk gave back.
    pub log: Vec<LogRecord<S::Payload, S::Refusal>>,
    /// The log as the disk holds it: what a recovery reads.
    pub disk: DiskLog,
    /// Where a torn crash's cut falls (`saga.disk`).
    disk_rng: SimRng,
    /// The store acknowledges an append when written, before it is synced (the
    /// `ack_before_sync` mutant); it is synced a disk time later.
    ack_before_sync: bool,
    /// Under `ack_before_sync`: dirty bytes wait for the write-back.
    writeback_pending: bool,
    /// The intents the store acknowledged as durable (for the write-ahead check, which
    /// judges the coordinator by what it was told; whether the store told the truth is
    /// judged by what survives a crash).
    durable_intents: BTreeSet<(SagaId, StepId, Kind, u32)>,
    /// The sagas whose `Started` record the store acknowledged as durable (for the
    /// write-ahead check): each one the customer was told is accepted.
    durable_started: BTreeSet<SagaId>,
    /// The outputs between the coordinator and the disk and links: the driver core the
    /// tokio runner drives too.
    pipeline: Pipeline<S::Payload, S::Refusal>,
    /// The participants (durable): the checkout's three services, or another
    /// definition's.
    pub services: S,
    /// The run's checkouts (made at start, up to the plan's horizon), and the next.
    arrivals: Arrivals<S::Payload>,
    waiting_starts: Vec<(SagaId, S::Payload)>,
    /// Every checkout the world submitted (every customer who arrived), with its
    /// order: each must end at rest, whatever the coordinator's log says.
    submitted: BTreeMap<SagaId, S::Payload>,
    /// The submitted sagas the world has not yet seen at rest, in id order.
    unsettled: BTreeSet<SagaId>,
    /// The sagas the coordinator names as come to rest ([`SagaCoordinator::take_rested`]),
    /// kept to reuse its allocation.
    rested: Vec<SagaId>,
    /// Every saga in `unsettled` is to be looked at, at the next note: the coordinator
    /// is new (made or recovered), so what it named before tells nothing.
    rescan: bool,
    /// Events noted since every saga in `unsettled` was last looked at.
    since_rescan: usize,
    alerts: BTreeSet<SagaId>,
    /// Actions sent, per (saga, step).
    sent: BTreeSet<(SagaId, StepId)>,
    /// What the world carried out of each command, per (saga, step, kind).
    attempts_sent: BTreeMap<(SagaId, StepId, Kind), CommandSends>,
    /// Each saga's last command sent: the command, its attempt and when.
    last_sent: BTreeMap<SagaId, (Command<S::Payload>, u32, SimTime)>,
    /// Compensations that took effect, per saga, in order.
    compensation_effects: CompensationEffects,
    tick_at: Option<SimTime>,
    rng: SimRng,
    /// Checkouts, rests, fault windows and queueing, for `saga.settling`.
    settling: Settling,
    /// Figures of the run.
    pub stats: SagaStats,
    /// An injected service error answers `Reply::Failed` instead of losing the reply.
    failed_replies: bool,
    /// Saga swimlanes: (saga, time, what).
    pub lanes: Vec<(SagaId, SimTime, String)>,
}

/// The `started_wrong_order` mutant's tamper: the order with one unit more (the only
/// place that alters a payload: the core never looks inside one).
fn one_more_unit(order: &Order) -> Order {
    Order {
        qty: order.qty.saturating_add(1),
        ..*order
    }
}

impl SagaWorld<Orchestrator> {
    /// A world for `knobs`; `flaw` is `None` for the reference.
    /// A world for `knobs` whose orchestrator is configured by `config` and carries
    /// `flaw` (`None` for the reference), payment idempotent or not; conformance to the
    /// reference's policy is checked.
    pub(crate) fn with_config(
        knobs: SagaKnobs,
        config: SagaConfig,
        flaw: Flaw,
        idempotent_payment: bool,
    ) -> Result<Self, ConfigError> {
        let coordinator = Orchestrator::new(config)
            .with_flaw(flaw)
            .with_tamper(one_more_unit);
        let services = knobs.services(idempotent_payment);
        SagaWorld::build(knobs, coordinator, services)?.conforming_to_reference()
    }

    /// A world for `knobs` with the knobs' configuration; `flaw` is `None` for the
    /// reference.
    pub(crate) fn with(
        knobs: SagaKnobs,
        flaw: Flaw,
        idempotent_payment: bool,
    ) -> Result<Self, ConfigError> {
        let config: SagaConfig = knobs.config()?;
        SagaWorld::with_config(knobs, config, flaw, idempotent_payment)
    }

    /// The reference world for `knobs` (conformance to the reference's policy
    /// included).
    pub fn new(knobs: SagaKnobs) -> Result<Self, ConfigError> {
        Self::with(knobs, Flaw::None, true)
    }
}

impl<O: SagaCoordinator> SagaWorld<O> {
    /// The checkout world for `knobs` around your coordinator, judged by the policy it declares
    /// ([`SagaCoordinator::policy`]); the knobs shape the customers, the services, the
    /// network and the disk, the coordinator's settings are its own.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the declared policy is not valid ([`SagaPolicy::validate`]).
    pub fn with_coordinator(knobs: SagaKnobs, coordinator: O) -> Result<Self, ConfigError> {
        let services = knobs.services(true);
        SagaWorld::build(knobs, coordinator, services)
    }
}

impl<O: SagaCoordinator<S::Payload, S::Refusal>, S: Participants> SagaWorld<O, S> {
    /// The world for `knobs` around `coordinator` and the participants `services` of
    /// any definition (the coordinator's configuration must name the same steps), judged
    /// by the policy the coordinator declares; the knobs shape the network, the disk and
    /// the rate of submissions, `services` the steps, the nodes and the customers.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the declared policy is not valid ([`SagaPolicy::validate`]).
    pub fn with_participants(
        knobs: SagaKnobs,
        coordinator: O,
        services: S,
    ) -> Result<Self, ConfigError> {
        SagaWorld::build(knobs, coordinator, services)
    }

    /// Also checks [`saga.conformance`](invariants::CONFORMANCE): the coordinator's
    /// declared policy must be the reference's for these knobs
    /// ([`SagaKnobs::reference_policy`]). On for the reference and its mutants.
    pub fn conforming_to_reference(mut self) -> Result<Self, ConfigError> {
        self.conform_to = Some(self.knobs.reference_policy()?);
        Ok(self)
    }

    /// The policy the coordinator declared, which the world judges it by.
    pub fn policy(&self) -> &SagaPolicy {
        &self.policy
    }

    fn build(knobs: SagaKnobs, coordinator: O, services: S) -> Result<Self, ConfigError> {
        let policy = coordinator.policy();
        policy.validate()?;
        Ok(SagaWorld {
            policy,
            conform_to: None,
            orchestrator: Some(coordinator.recovered(&[], Instant::ZERO)),
            blueprint: coordinator,
            life: 0,
            log: Vec::new(),
            disk: DiskLog::default(),
            disk_rng: SimRng::new(knobs.seed).fork("saga.disk"),
            ack_before_sync: false,
            writeback_pending: false,
            durable_intents: BTreeSet::new(),
            durable_started: BTreeSet::new(),
            pipeline: Pipeline::new(),
            services,
            arrivals: Arrivals::default(),
            waiting_starts: Vec::new(),
            submitted: BTreeMap::new(),
            unsettled: BTreeSet::new(),
            rested: Vec::new(),
            rescan: true,
            since_rescan: 0,
            alerts: BTreeSet::new(),
            sent: BTreeSet::new(),
            attempts_sent: BTreeMap::new(),
            last_sent: BTreeMap::new(),
            compensation_effects: CompensationEffects::default(),
            tick_at: None,
            rng: SimRng::new(knobs.seed).fork("saga.world"),
            settling: Settling::default(),
            stats: SagaStats::default(),
            failed_replies: false,
            lanes: Vec::new(),
            knobs,
        })
    }

    /// The world with a variant of its faults: a service's injected error (it did the
    /// work, then failed) answers [`Reply::Failed`] ("failed, retry now": the outcome
    /// is unknown) instead of losing the reply, so the coordinator retries after its
    /// backoff rather than its step timeout. Off by default (the golden runs lose the
    /// reply); every invariant holds either way.
    pub fn answering_errors_as_failed(mut self) -> Self {
        self.failed_replies = true;
        self
    }

    /// The world with a log store that acknowledges each append as soon as it is
    /// written and leaves the sync to the operating system's write-back, 5 s after the
    /// bytes were first dirtied (a file log that skips its fsync): the
    /// `ack_before_sync` mutant. Commands and acceptances go out on records that a
    /// crash in that window loses.
    pub(crate) fn acking_before_sync(mut self) -> Self {
        self.ack_before_sync = true;
        self
    }

    /// For each saga at rest: how long it took to come to rest after the later of its
    /// checkout and the end of the last fault that began before it came to rest, not
    /// counting the time its log records and commands waited behind other sagas' for
    /// the disk (the log's throughput is the environment's, not the retry logic's).
    pub fn settle_times(&self) -> Vec<(SagaId, SimDuration)> {
        self.settling.settle_times()
    }

    /// Each saga's time from checkout to rest, in saga order.
    pub fn latencies(&self) -> Vec<SimDuration> {
        self.settling.latencies()
    }

    /// Every saga the (live) orchestrator knows, with its state, in id order; empty
    /// while it is down.
    pub fn saga_states(&self) -> Vec<(SagaId, SagaState)> {
        self.orchestrator
            .as_ref()
            .map(|o| o.sagas())
            .unwrap_or_default()
    }

    /// The knobs.
    pub fn knobs(&self) -> &SagaKnobs {
        &self.knobs
    }

    fn latency(&mut self) -> SimDuration {
        let (lo, hi) = self.knobs.latency_ms;
        SimDuration::from_micros(self.rng.between(lo * 1_000, hi * 1_000))
    }

    /// Drains the orchestrator's outputs into the pipeline and runs it.
    fn pump(&mut self, ctx: &mut Ctx<Ev<S>>) -> Result<(), Violation> {
        let Some(o) = self.orchestrator.as_mut() else {
            return Ok(());
        };
        self.pipeline.pull(o, Instant::from(ctx.now()));
        self.run_pipeline(ctx)
    }

    /// Makes sure a tick comes at the orchestrator's next deadline or retry time.
    fn arm_tick(&mut self, ctx: &mut Ctx<Ev<S>>) {
        if let Some(o) = &self.orchestrator
            && let Some(at) = Pipeline::wake_at(o, Instant::from(ctx.now()))
        {
            let at = SimTime::from_nanos(at.as_nanos());
            if self.tick_at.is_none_or(|t| at < t || t < ctx.now()) {
                self.tick_at = Some(at);
                ctx.schedule_at(at, SagaEvent::Tick);
            }
        }
    }

    /// Carries out outputs in order, then arms the tick (a send reported with
    /// `on_sent` may have armed a deadline).
    fn run_pipeline(&mut self, ctx: &mut Ctx<Ev<S>>) -> Result<(), Violation> {
        let result = self.drain_pipeline(ctx);
        self.arm_tick(ctx);
        result
    }

    /// Carries out what the pipeline hands out, in order; an append blocks what
    /// follows until durable (the disk takes its time).
    fn drain_pipeline(&mut self, ctx: &mut Ctx<Ev<S>>) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        loop {
            let Some(o) = self.orchestrator.as_mut() else {
                return Ok(());
            };
            let Some(due) = self.pipeline.next(o, now) else {
                return Ok(());
            };
            let emitted = SimTime::from_nanos(due.emitted.as_nanos());
            self.settling.queued(due.perform.saga(), emitted, ctx.now());
            match due.perform {
                Perform::Write(record) => {
                    self.disk.write(&record.encode_line());
                    if self.ack_before_sync {
                        // Acknowledged as written; the operating system writes the
                        // dirty bytes back a while after they were first dirtied.
                        if !self.writeback_pending {
                            self.writeback_pending = true;
                            ctx.schedule_in(
                                SimDuration::from_millis(WRITEBACK_MS),
                                SagaEvent::AppendDone { life: self.life },
                            );
                        }
                        self.acknowledge()?;
                        continue;
                    }
                    ctx.schedule_in(
                        SimDuration::from_millis(self.knobs.disk_ms),
                        SagaEvent::AppendDone { life: self.life },
                    );
                    return Ok(());
                }
                Perform::Send(cmd, attempt) => self.send(ctx, cmd, attempt, emitted)?,
                Perform::Alert(saga, reason) => {
                    ctx.record(ORCHESTRATOR, format_args!("ALERT {saga}: {reason}"));
                    self.alerts.insert(saga);
                }
            }
        }
    }

    /// The store acknowledges the record being written: it is durable as far as the
    /// coordinator is told, and what follows it may go out.
    fn acknowledge(&mut self) -> Result<(), Violation> {
        let Some(record) = self.pipeline.durable() else {
            return Ok(());
        };
        match record {
            LogRecord::StepIntent {
                saga,
                step,
                attempt,
            } => {
                self.durable_intents
                    .insert((saga, step, Kind::Action, attempt));
            }
            LogRecord::CompensationIntent {
                saga,
                step,
                attempt,
            } => {
                self.durable_intents
                    .insert((saga, step, Kind::Compensation, attempt));
            }
            LogRecord::Started {
                saga,
                payload: order,
            } => {
                self.check_started(saga, &order)?;
                // Only now is the checkout accepted (durably, as the store says).
                self.durable_started.insert(saga);
                self.stats.started += 1;
            }
            _ => {}
        }
        self.log.push(record);
        self.stats.records += 1;
        Ok(())
    }

    /// Carries out `cmd` (attempt `attempt`, which the coordinator emitted at
    /// `emitted`, and was told has left), after the checks of the log and of the
    /// declared retries.
    fn send(
        &mut self,
        ctx: &mut Ctx<Ev<S>>,
        cmd: Command<S::Payload>,
        attempt: u32,
        emitted: SimTime,
    ) -> Result<(), Violation> {
        // Write-ahead: the intent must be durable before its command leaves.
        if !self
            .durable_intents
            .contains(&(cmd.saga, cmd.step, cmd.kind, attempt))
        {
            return Err(Violation::new(
                WRITE_AHEAD,
                format!(
                    "{} (attempt {attempt}) was sent before the log recorded its intent",
                    self.services.command_text(&cmd)
                ),
            ));
        }
        // ... and the saga's start (its order) before its first command: a recovery
        // ignores the records of a saga it has no start of, so whatever was sent would
        // be left in place.
        if !self.durable_started.contains(&cmd.saga) {
            return Err(Violation::new(
                WRITE_AHEAD,
                format!(
                    "{} (attempt {attempt}) was sent before the log recorded the start of {}: a recovery from this log would not know the saga",
                    self.services.command_text(&cmd),
                    cmd.saga
                ),
            ));
        }
        // A compensation only for a step whose action the log says was attempted.
        if cmd.kind == Kind::Compensation
            && !self
                .durable_intents
                .range(
                    (cmd.saga, cmd.step, Kind::Action, 0)
                        ..=(cmd.saga, cmd.step, Kind::Action, u32::MAX),
                )
                .any(|_| true)
        {
            return Err(Violation::new(
                COMPENSATION_ORDER,
                format!(
                    "{} compensates a step whose action was never attempted",
                    self.services.command_text(&cmd)
                ),
            ));
        }
        self.stats.sends += 1;
        if cmd.kind == Kind::Action {
            self.sent.insert((cmd.saga, cmd.step));
        }
        self.count_send(cmd, attempt, emitted)?;
        self.last_sent.insert(cmd.saga, (cmd, attempt, ctx.now()));
        if attempt > 1 && cmd.kind == Kind::Compensation {
            ctx.cover("saga.compensation_retry");
        }
        ctx.record(
            ORCHESTRATOR,
            format_args!(
                "send {} attempt {attempt}",
                self.services.command_text(&cmd)
            ),
        );
        let verb = match cmd.kind {
            Kind::Action => "do",
            Kind::Compensation => "undo",
        };
        self.lanes.push((
            cmd.saga,
            ctx.now(),
            format!("{verb} {:?} #{attempt}", cmd.step),
        ));
        let svc = self.services.node(cmd.step);
        let fate = ctx.faults().link(&format!("to-{svc}"));
        if fate.copies > 1 {
            ctx.cover("saga.duplicate_delivered");
        }
        for _ in 0..fate.copies {
            let delay = self.latency() + fate.extra_delay;
            ctx.schedule_in(delay, SagaEvent::Deliver { cmd, attempt });
        }
        Ok(())
    }

    /// [`RETRIES`]: notes that `cmd` attempt `attempt`, emitted at `emitted`, is sent,
    /// and checks it against the declared policy: an attempt number within the declared
    /// attempts; no more sends than the declared attempts, plus one resend per
    /// coordinator life after the first (a recovery resends the attempt in flight); and,
    /// in one life, the next send after a silent attempt (no reply to the command
    /// reached the coordinator since) no sooner than the declared step timeout after
    /// it. Emission times are used, so a deadline counted from the send, which is later,
    /// only widens the gap.
    fn count_send(
        &mut self,
        cmd: Command<S::Payload>,
        attempt: u32,
        emitted: SimTime,
    ) -> Result<(), Violation> {
        let (max, what) = match cmd.kind {
            Kind::Action => (self.policy.attempts_max, "attempts per action"),
            Kind::Compensation => (
                self.policy.compensation_attempts_max,
                "attempts per compensation",
            ),
        };
        let op = cmd.step.operation(cmd.kind);
        let saga = cmd.saga;
        if attempt == 0 || attempt > max {
            return Err(Violation::new(
                RETRIES,
                format!(
                    "{saga}'s {op} was sent as attempt {attempt}, but the coordinator declares {max} {what}"
                ),
            ));
        }
        let timeout = self.policy.step_timeout;
        let life = self.life;
        let c = self
            .attempts_sent
            .entry((saga, cmd.step, cmd.kind))
            .or_default();
        if c.sends > 0 && c.last_life == life && !c.replied {
            let (before, at) = c.last;
            let gap = emitted - at;
            if u128::from(gap.as_nanos()) < timeout.as_nanos() {
                return Err(Violation::new(
                    RETRIES,
                    format!(
                        "{saga}'s {op} attempt {attempt} was emitted {gap} after attempt {before}, which had no reply, sooner than the declared step timeout of {timeout:?}"
                    ),
                ));
            }
        }
        if c.sends == 0 || c.last_life != life {
            c.lives += 1;
        }
        c.sends += 1;
        c.last_life = life;
        c.last = (attempt, emitted);
        c.replied = false;
        c.numbers.insert(attempt);
        let allowed = max.saturating_add(c.lives - 1);
        if c.sends > allowed {
            return Err(Violation::new(
                RETRIES,
                format!(
                    "{saga}'s {op} was sent {} times over {} coordinator life(s), more than the {max} {what} the coordinator declares (and one resend per recovery)",
                    c.sends, c.lives
                ),
            ));
        }
        Ok(())
    }

    /// [`STARTED_AS_SUBMITTED`]: the `Started` record of `saga` with `order`, now
    /// durable, names a saga the world submitted, with the order it submitted, and is
    /// the first durable one for it.
    fn check_started(&self, saga: SagaId, payload: &S::Payload) -> Result<(), Violation> {
        let Some(submitted) = self.submitted.get(&saga) else {
            return Err(Violation::new(
                STARTED_AS_SUBMITTED,
                format!(
                    "the log records the start of {saga} ({}), which the world never submitted",
                    self.services.payload_text(payload)
                ),
            ));
        };
        if submitted != payload {
            return Err(Violation::new(
                STARTED_AS_SUBMITTED,
                format!(
                    "the log's start record of {saga} has a payload other than the one the world submitted: {}",
                    self.services.payload_diff(submitted, payload)
                ),
            ));
        }
        if self.durable_started.contains(&saga) {
            return Err(Violation::new(
                STARTED_AS_SUBMITTED,
                format!(
                    "the log records the start of {saga} a second time (the world submitted it once)"
                ),
            ));
        }
        Ok(())
    }

    fn start_saga(
        &mut self,
        ctx: &mut Ctx<Ev<S>>,
        saga: SagaId,
        order: S::Payload,
    ) -> Result<(), Violation> {
        if let Some(o) = self.orchestrator.as_mut() {
            self.pipeline
                .start(o, saga, order, Instant::from(ctx.now()));
            self.lanes.push((saga, ctx.now(), "started".into()));
            self.pump(ctx)
        } else {
            self.waiting_starts.push((saga, order));
            Ok(())
        }
    }

    /// Notes the submitted sagas the coordinator now reports at rest, in id order (the
    /// world asks about each one it has not yet seen at rest; its counters are not
    /// relied on). When the coordinator names the sagas that came to rest
    /// ([`SagaCoordinator::take_rested`]), only those are asked about, so an event costs
    /// no more with a thousand sagas in flight than with one; every one not yet seen at
    /// rest is asked about still once per coordinator life and again once as many events
    /// have passed as there are sagas in flight (so a saga the list leaves out is seen
    /// late, never missed, at a constant cost per event).
    fn note_rest_states(&mut self, ctx: &mut Ctx<Ev<S>>) {
        let Some(o) = self.orchestrator.as_mut() else {
            return;
        };
        let mut named = std::mem::take(&mut self.rested);
        named.clear();
        let tracked = o.take_rested(&mut named);
        self.since_rescan += 1;
        let every = !tracked || self.rescan || self.since_rescan > self.unsettled.len();
        let at_rest = |s: SagaId| o.state(s).filter(|st| st.is_at_rest()).map(|st| (s, st));
        let ended: Vec<(SagaId, SagaState)> = if every {
            self.rescan = false;
            self.since_rescan = 0;
            self.unsettled.iter().filter_map(|s| at_rest(*s)).collect()
        } else {
            named.sort_unstable();
            named.dedup();
            named
                .iter()
                .filter(|s| self.unsettled.contains(s))
                .filter_map(|s| at_rest(*s))
                .collect()
        };
        self.rested = named;
        for (s, st) in ended {
            self.unsettled.remove(&s);
            if !self.settling.ended(s, ctx.now(), st) {
                continue;
            }
            let mark = match st {
                SagaState::Completed => "saga.running_to_completed",
                SagaState::Failed => "saga.compensating_to_failed",
                _ => "saga.compensating_to_compensated",
            };
            if st != SagaState::Completed {
                // Running -> Compensating happened, with or without a step to undo.
                ctx.cover("saga.running_to_compensating");
            }
            ctx.cover(mark);
            self.lanes.push((s, ctx.now(), format!("ended {st:?}")));
        }
    }

    /// Why `saga` does not hold at `step` what its end says (the `kind` command
    /// missing), from what the world sent and the services did: never sent, sent and
    /// never taken effect, or taken effect and then reverted.
    fn holding_cause(&self, saga: SagaId, step: StepId, kind: Kind) -> Option<String> {
        let op = step.operation(kind);
        let key = IdempotencyKey { saga, step, kind };
        Some(match self.attempts_sent.get(&(saga, step, kind)) {
            None => format!("the coordinator never sent its {op}"),
            Some(c) if self.services.effects(key) == 0 => format!(
                "its {op} was sent ({} attempt(s)) and never took effect, and the coordinator did not go on trying",
                c.numbers.len()
            ),
            Some(_) => format!("its {op} took effect, and a later command reverted it"),
        })
    }

    /// The sagas not at rest, in words: each one's state as the coordinator reports
    /// it (or that it does not know it, or is down) and the last command the world
    /// sent for it. `None` when every submitted saga is at rest. The failure of a run
    /// that stalls or does not settle ends with this.
    pub fn pending(&self) -> Option<String> {
        let stuck: Vec<(SagaId, String)> = self
            .submitted
            .keys()
            .filter_map(|saga| {
                let state = match &self.orchestrator {
                    None => "waiting (the coordinator is down)".to_string(),
                    Some(o) => match o.state(*saga) {
                        Some(st) if st.is_at_rest() => return None,
                        Some(st) => format!("{st:?}"),
                        None => "unknown to the coordinator".to_string(),
                    },
                };
                let last = match self.last_sent.get(saga) {
                    Some((cmd, attempt, at)) => format!(
                        ", last command sent: {} attempt {attempt} at {at}",
                        cmd.step.operation(cmd.kind)
                    ),
                    None => ", no command sent".to_string(),
                };
                Some((*saga, format!("{saga} {state}{last}")))
            })
            .collect();
        if stuck.is_empty() {
            return None;
        }
        let shown: Vec<&str> = stuck.iter().take(5).map(|(_, w)| w.as_str()).collect();
        let more = stuck.len().saturating_sub(shown.len());
        let timer = match self.orchestrator.as_ref().map(|o| o.poll_timeout()) {
            Some(None) => "; the coordinator has no timer armed",
            _ => "",
        };
        Some(format!(
            "{} saga(s) not at rest: {}{}{timer}",
            stuck.len(),
            shown.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

impl<O: SagaCoordinator<S::Payload, S::Refusal>, S: Participants> World for SagaWorld<O, S> {
    type Event = Ev<S>;

    fn marks(&self) -> Vec<&'static str> {
        let mut marks = MARKS.to_vec();
        marks.extend(self.services.marks());
        marks
    }

    fn start(&mut self, ctx: &mut Ctx<Ev<S>>) -> Result<(), Violation> {
        if let Some(reference) = self.conform_to
            && self.policy != reference
        {
            return Err(Violation::new(
                CONFORMANCE,
                format!(
                    "the coordinator declares {:?}, but the reference's settings for these knobs are {reference:?}",
                    self.policy
                ),
            ));
        }
        for mark in self.services.start_marks() {
            ctx.cover(mark);
        }
        self.arrivals = Arrivals::from_list(self.services.customers(&self.knobs, ctx.horizon()));
        if let Some(at) = self.arrivals.first_at() {
            ctx.schedule_at(at, SagaEvent::Checkout);
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<Ev<S>>, event: Ev<S>) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        match event {
            SagaEvent::Checkout => {
                let Some((saga, order, then)) = self.arrivals.arrive() else {
                    return Ok(());
                };
                if let Some(next) = then {
                    ctx.schedule_at(next, SagaEvent::Checkout);
                }
                if self.arrivals.in_burst() {
                    ctx.cover("saga.burst");
                }
                self.settling.checkout(saga, ctx.now());
                self.submitted.insert(saga, order);
                self.unsettled.insert(saga);
                self.start_saga(ctx, saga, order)?;
            }
            SagaEvent::AppendDone { life } => {
                if life != self.life || self.orchestrator.is_none() {
                    return Ok(());
                }
                // The disk time is up (or, acking before the sync, the write-back
                // time): what was written is synced.
                self.disk.sync();
                self.writeback_pending = false;
                if !self.ack_before_sync {
                    self.acknowledge()?;
                }
                self.run_pipeline(ctx)?;
            }
            SagaEvent::Deliver { cmd, attempt } => {
                let svc = self.services.node(cmd.step);
                let mut faults = ctx.faults();
                if faults.is_down(svc) || faults.is_crashed(svc) {
                    return Ok(());
                }
                let extra = faults.extra_latency(svc);
                let lose_reply = faults.injects_error(svc);
                let key = cmd.key();
                let before = self.services.effects(key);
                let mut reply = self.services.handle(&cmd);
                self.compensation_effects
                    .observe(&cmd, before, self.services.effects(key));
                if !reply.is_ok() && cmd.kind == Kind::Action {
                    ctx.cover("saga.refused");
                }
                if let Some(mark) = self.services.reply_mark(&cmd, &reply) {
                    ctx.cover(mark);
                }
                ctx.record(
                    svc,
                    format_args!(
                        "{} attempt {attempt} -> {reply:?}",
                        self.services.command_text(&cmd)
                    ),
                );
                if lose_reply && self.failed_replies {
                    // The work is done, and the caller is told "failed, retry now".
                    self.stats.failed_replies += 1;
                    reply = Reply::Failed;
                } else if lose_reply {
                    ctx.cover("saga.reply_lost");
                    return Ok(());
                }
                if reply.is_failed() {
                    self.settling.disrupted(cmd.saga, ctx.now());
                }
                let fate = ctx.faults().link(&format!("from-{svc}"));
                for _ in 0..fate.copies {
                    let delay = self.latency() + extra + fate.extra_delay;
                    ctx.schedule_in(
                        delay,
                        SagaEvent::Reply {
                            cmd,
                            attempt,
                            reply,
                        },
                    );
                }
            }
            SagaEvent::Reply {
                cmd,
                attempt,
                reply,
            } => {
                if let Some(o) = self.orchestrator.as_mut() {
                    if let Some(c) = self.attempts_sent.get_mut(&(cmd.saga, cmd.step, cmd.kind)) {
                        c.replied = true;
                    }
                    if !self.pipeline.reply(o, &cmd, attempt, Some(reply), now) {
                        ctx.record(
                            ORCHESTRATOR,
                            format_args!(
                                "stale reply to {} attempt {attempt}: {reply:?}",
                                self.services.command_text(&cmd)
                            ),
                        );
                    }
                    self.pump(ctx)?;
                }
            }
            SagaEvent::Tick => {
                self.tick_at = None;
                if let Some(o) = self.orchestrator.as_mut() {
                    let before = o.totals().timeouts;
                    self.pipeline.timer(o, now);
                    if o.totals().timeouts > before {
                        ctx.cover("saga.unknown_outcome_timeout");
                    }
                    self.pump(ctx)?;
                }
            }
        }
        self.note_rest_states(ctx);
        Ok(())
    }

    fn on_fault(&mut self, ctx: &mut Ctx<Ev<S>>, edge: FaultEdge) -> Result<(), Violation> {
        self.settling.fault_edge(edge.started, ctx.now());
        if !edge.fault.kind.is_crash() || edge.fault.target != ORCHESTRATOR {
            return Ok(());
        }
        if edge.started && self.orchestrator.is_some() {
            // The disk keeps what was synced (and, torn, a prefix of the next line).
            let tear = (edge.fault.kind == FaultKind::TornCrash).then_some(&mut self.disk_rng);
            let (lost_bytes, torn_bytes) = self.disk.crash(tear);
            if lost_bytes + torn_bytes > 0 {
                ctx.cover("saga.unsynced_lost");
            }
            // Memory is lost: what was not durable is gone. Checkouts whose start was
            // not yet durable were never accepted: their customers try again.
            let lost = self.pipeline.crash();
            let outputs = lost.writing.map(Output::Append).into_iter();
            for out in outputs.chain(lost.waiting.iter().map(|(out, _)| *out)) {
                if let Output::Append(LogRecord::Started {
                    saga,
                    payload: order,
                }) = out
                {
                    self.waiting_starts.push((saga, order));
                }
            }
            // What was still queued for the disk waited until now (the record being
            // written, if any, left the queue already).
            for (out, queued) in &lost.waiting {
                let saga = match out {
                    Output::Append(r) => r.saga(),
                    Output::Send(cmd, _) => cmd.saga,
                    Output::Alert { saga, .. } => *saga,
                };
                let queued = SimTime::from_nanos(queued.as_nanos());
                self.settling.queued(saga, queued, ctx.now());
            }
            self.orchestrator = None;
            self.pipeline = Pipeline::new();
            self.writeback_pending = false;
            self.life += 1;
            ctx.record(ORCHESTRATOR, "crashed");
        } else if !edge.started && self.orchestrator.is_none() {
            let now = Instant::from(ctx.now());
            // Read the disk back as the file log reads its file.
            let (records, tail) = decode_log(self.disk.bytes()).map_err(|e| {
                Violation::new(
                    WRITE_AHEAD,
                    format!("the log on the disk cannot be read back: {e}"),
                )
            })?;
            if tail.is_torn() {
                self.disk.truncate(tail.complete);
                ctx.cover("saga.torn_tail_recovered");
            }
            self.log = records;
            // A new coordinator: whatever it names from now on, every saga is looked
            // at once.
            self.rescan = true;
            let mut o = self.blueprint.recovered(&self.log, now);
            self.pipeline = Pipeline::recovering(&mut o, now);
            self.orchestrator = Some(o);
            self.stats.recoveries += 1;
            ctx.cover("saga.recovered_from_log");
            if self
                .orchestrator
                .as_ref()
                .is_some_and(|o| o.totals().resumed > 0)
            {
                ctx.cover("saga.resumed_in_flight");
            }
            ctx.record(
                ORCHESTRATOR,
                format_args!("recovered from {} log records", self.log.len()),
            );
            for (saga, order) in std::mem::take(&mut self.waiting_starts) {
                self.start_saga(ctx, saga, order)?;
            }
            self.pump(ctx)?;
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<Ev<S>>) -> Result<(), Violation> {
        self.pump(ctx)
    }

    fn is_quiescent(&self, ctx: &Ctx<Ev<S>>) -> bool {
        ctx.is_healed()
            && self.waiting_starts.is_empty()
            && self
                .orchestrator
                .as_ref()
                .is_some_and(|o| self.pipeline.is_at_rest(o))
    }

    fn finish(&mut self, ctx: &mut Ctx<Ev<S>>) -> Result<(), Violation> {
        let Some(o) = &self.orchestrator else {
            return Err(Violation::new(AT_REST, "the orchestrator is down at rest"));
        };
        // 1. Every saga the world submitted is at rest (the coordinator's log and
        //    counters are not relied on); Failed only with an alert, after the world
        //    sent the last attempt a compensation had.
        for saga in self.submitted.keys() {
            match o.state(*saga) {
                None => {
                    let why = if self.durable_started.contains(saga) {
                        "though the coordinator's store acknowledged its start record (the customer was told it was accepted)"
                    } else {
                        "and no start record of it ever became durable (a crash lost it, or the coordinator never accepted it)"
                    };
                    return Err(Violation::new(
                        AT_REST,
                        format!("{saga} was submitted but is unknown to the coordinator, {why}"),
                    ));
                }
                Some(st) if !st.is_at_rest() => return Err(invariants::left_in(*saga, st)),
                Some(SagaState::Failed) => {
                    ctx.cover("saga.failed");
                    self.stats.failed += 1;
                    let max = self.policy.compensation_attempts_max;
                    // The compensation the world sent most distinct attempts of.
                    // (Ties go to the later step of the definition.)
                    let most = self
                        .services
                        .steps()
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| {
                            let c = self.attempts_sent.get(&(*saga, *s, Kind::Compensation))?;
                            Some((c.numbers.len(), i, *s))
                        })
                        .max()
                        .map(|(n, _, s)| (n, s));
                    let why = match most {
                        _ if !self.alerts.contains(saga) => Some("without an alert".to_string()),
                        None => Some(
                            "though the world never sent a compensation of it (Failed is for a compensation whose last attempt failed)"
                                .to_string(),
                        ),
                        Some((n, step)) if (n as u64) < u64::from(max) => Some(format!(
                            "before a compensation's last declared attempt: the world sent {n} attempt(s) of its {}, the most of any, and the coordinator declares {max} attempts per compensation",
                            step.operation(Kind::Compensation)
                        )),
                        Some(_) => None,
                    };
                    if let Some(why) = why {
                        return Err(Violation::new(
                            AT_REST,
                            format!("{saga} ended Failed {why}"),
                        ));
                    }
                }
                Some(SagaState::Completed) => {
                    ctx.cover("saga.completed");
                    self.stats.completed += 1;
                }
                Some(_) => {
                    ctx.cover("saga.compensated");
                    self.stats.compensated += 1;
                }
            }
        }
        // 4. Duplicates had no extra effect.
        invariants::check_idempotent(&self.services)?;
        // 2. Conservation.
        self.services.check_conserved()?;
        for saga in self.submitted.keys() {
            if let Some(st) = o.state(*saga) {
                invariants::check_holdings(&self.services, *saga, st, |s, step, kind| {
                    self.holding_cause(s, step, kind)
                })?;
            }
        }
        // 6. Each saga came to rest within its retry budget of the later of its
        //    checkout and the end of the last fault before it came to rest.
        let bound = self
            .knobs
            .settle_bound_for(&self.policy, self.services.steps().len());
        let bound = SimDuration::from_nanos(u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX));
        self.settling.check(bound)?;
        // 3. Compensations in reverse order, only for steps that were sent.
        self.compensation_effects
            .check_reverse_order(self.services.steps())?;
        for key in self.services.all_effects() {
            let (k, n) = key;
            if n > 0 && k.kind == Kind::Compensation && !self.sent.contains(&(k.saga, k.step)) {
                return Err(Violation::new(
                    COMPENSATION_ORDER,
                    format!(
                        "{} of {:?} was compensated though its action was never sent",
                        k.saga, k.step
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The run stopped before it came to rest: its sagas' endings as the world saw
    /// them come to rest up to the stop (a coordinator down at the stop cannot be
    /// asked, and the sagas still running are neither).
    fn stopped(&mut self, _ctx: &Ctx<Ev<S>>) {
        let e = self.settling.endings();
        self.stats.completed = e.completed;
        self.stats.compensated = e.compensated;
        self.stats.failed = e.failed;
    }
}

/// Runs `world` under `plan`, the one way the checkout world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<O: SagaCoordinator<S::Payload, S::Refusal>, S: Participants>(
    world: SagaWorld<O, S>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, SagaWorld<O, S>) {
    run_as(world, plan, trace, "saga")
}

/// [`run`], the replay hint naming the pattern `pattern`.
pub(crate) fn run_as<O: SagaCoordinator<S::Payload, S::Refusal>, S: Participants>(
    mut world: SagaWorld<O, S>,
    plan: FaultPlan,
    trace: TraceMode,
    pattern: &str,
) -> (RunReport, SagaWorld<O, S>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint(format!(
            "cargo run --release -- replay {pattern} --seed {{seed}}"
        ))
        .run_explained(&mut world, SagaWorld::pending);
    (report, world)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> String {
        LogRecord::<Order, Refusal>::Ended {
            saga: SagaId(i),
            state: SagaState::Completed,
        }
        .encode_line()
    }

    /// A crash keeps the synced prefix; a torn one also keeps 1 to all-but-the-newline
    /// bytes of the first unsynced line, which the recovery's decoding drops.
    #[test]
    fn a_crash_keeps_the_synced_prefix_and_a_tear_only_part_of_the_next_line() {
        let mut rng = SimRng::new(1);
        for round in 0..200u64 {
            let mut disk = DiskLog::default();
            disk.write(&line(1));
            disk.sync();
            let synced = disk.bytes().to_vec();
            disk.write(&line(round));
            disk.write(&line(3));
            let unsynced = disk.bytes().len() - synced.len();
            let torn = round % 2 == 1;
            let (lost, kept) = disk.crash(torn.then_some(&mut rng));
            assert_eq!(lost + kept, unsynced);
            assert_eq!(&disk.bytes()[..synced.len()], &synced[..]);
            if torn {
                assert!((1..=line(round).len()).contains(&kept), "{kept}");
            } else {
                assert_eq!(kept, 0);
            }
            let (records, tail) = decode_log::<Order, Refusal>(disk.bytes()).unwrap();
            assert_eq!(records.len(), 1);
            assert_eq!((tail.complete, tail.torn), (synced.len(), kept));
            disk.truncate(tail.complete);
            assert_eq!(disk.bytes(), &synced[..]);
        }
        let mut empty = DiskLog::default();
        assert_eq!(empty.crash(Some(&mut rng)), (0, 0));
    }
}
