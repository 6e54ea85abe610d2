//! The checkout run as two-phase commit, in the same simulated world as the saga: the
//! same [`SagaKnobs`] (one seed gives the same rate, stock, declined cards, latency
//! range, disk time and timeout) and the same fault plans (the node `orchestrator` is
//! the coordinator; `orders`, `inventory` and `payment` are the participants, over the
//! same `to-*` and `from-*` links). Arrivals and orders come from [`checkouts`], a
//! stream of their own, so they do not depend on how many messages the protocol sends.
//! The coordinator's log is durable (each append takes disk time and nothing after it
//! happens before it is durable); a coordinator crash loses its memory, and every
//! participant in doubt keeps its locks until the recovered coordinator re-sends the
//! decision. The checks run at rest.
//!
//! The world drives the coordinator through [`TwoPcCoordinator`] (the reference
//! [`Coordinator`] by default; yours with [`TwoPcWorld::with_coordinator`]), and the
//! reference [`Cohort`]s directly: they are the services.

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::saga::checkout::{self, COORDINATOR_NODE, SagaKnobs, service_node};
use crate::saga::services::{Order, SagaId, StepId};
use crate::saga::twopc::contract::TwoPcCoordinator;
use crate::saga::twopc::core::{
    Cohort, Coordinator, CoordinatorOutput, Decision, Flaw, Local, Request, Response,
    ToCoordinator, ToParticipant, TwoPcConfig, TxRecord, TxState, Vote, step_index,
};
use crate::saga::twopc::invariants::{self, AT_REST, WRITE_AHEAD};
use faultline_sim::TraceMode;
use faultline_sim::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Coverage marks of the 2PC world.
pub const MARKS: &[&str] = &[
    "twopc.commit",
    "twopc.abort",
    "twopc.vote_no",
    "twopc.vote_timeout",
    "twopc.lock_conflict",
    "twopc.in_doubt_blocked_by_crash",
    "twopc.recovered_from_log",
    "twopc.presumed_abort",
    "twopc.decision_resent",
    "twopc.duplicate_delivered",
    "twopc.reply_lost",
];

const COORDINATOR: &str = COORDINATOR_NODE;

/// The 2PC configuration for `knobs`: the vote timeout is the saga's step timeout, and
/// messages are re-sent at the saga's base backoff.
pub fn config_of(knobs: &SagaKnobs) -> Result<TwoPcConfig, ConfigError> {
    TwoPcConfig::builder()
        .vote_timeout(Duration::from_millis(knobs.step_timeout_ms))
        .resend_interval(Duration::from_millis(knobs.backoff_ms.0))
        .build()
}

/// The checkouts of a run, from the knobs alone: (arrival, transaction, order), in
/// arrival order, up to the knobs' horizon. The same as the orchestrated and
/// choreographed worlds see: see [`crate::saga::checkout::checkouts`].
pub fn checkouts(knobs: &SagaKnobs) -> Vec<(SimTime, SagaId, Order)> {
    checkout::checkouts(knobs, SimTime::from_millis(knobs.horizon_ms))
}

/// The world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoPcEvent {
    /// A customer checks out: the checkout of this index in [`checkouts`].
    Checkout(usize),
    /// The record being written is durable.
    AppendDone {
        /// The coordinator's life (a crash ends it).
        life: u64,
    },
    /// A request reaches its participant.
    Deliver(ToParticipant),
    /// An answer reaches the coordinator.
    Answer(ToCoordinator),
    /// A timer of the coordinator may be due.
    Tick,
    /// A timer of the participant (by step index) may be due.
    ParticipantTick(usize),
}

/// One lock held by a participant for a transaction, from its Yes vote to the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockHold {
    /// The participant.
    pub participant: StepId,
    /// The transaction.
    pub tx: SagaId,
    /// Acquired.
    pub from: SimTime,
    /// Released.
    pub until: SimTime,
}

impl LockHold {
    /// How long it was held.
    pub fn duration(&self) -> SimDuration {
        self.until - self.from
    }
}

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct TwoPcStats {
    /// Transactions started (checkouts).
    pub started: u64,
    /// Committed at rest (for a run stopped early: decided Commit up to the stop).
    pub committed: u64,
    /// Aborted at rest (by decision or presumed; for a run stopped early: up to the
    /// stop).
    pub aborted: u64,
    /// Of those, aborted by presumption (the coordinator crashed before deciding).
    pub presumed_aborted: u64,
    /// Coordinator recoveries from the log.
    pub recoveries: u64,
    /// Messages sent by the coordinator.
    pub sends: u64,
    /// Log records made durable.
    pub records: u64,
    /// Per transaction: checkout to the decision known to the client (durable, or
    /// presumed at recovery).
    pub latencies: Vec<SimDuration>,
    /// Every lock released, acquire to release.
    pub lock_holds: Vec<LockHold>,
    /// The longest of them.
    pub longest_lock_hold: SimDuration,
    /// Lock-held time (summed over locks) that fell inside a coordinator crash window.
    pub locked_during_crash: SimDuration,
    /// Coordinator crash windows.
    pub crashes: Vec<(SimTime, SimTime)>,
    /// Transactions that met a locked stock row at least once (delayed by locks).
    pub delayed_by_locks: u64,
    /// Of those, transactions that ended aborted.
    pub refused_by_locks: u64,
    /// Transactions whose participants disagree at rest (atomicity broken); `None`
    /// where the run did not come to rest to be judged (it stopped early, or the
    /// coordinator was down at rest, or a transaction was never decided).
    pub inconsistent: Option<u64>,
    /// End of the arrivals (the horizon).
    pub horizon: SimDuration,
}

impl TwoPcStats {
    /// Committed transactions per simulated second of arrivals.
    pub fn throughput_per_sec(&self) -> f64 {
        let secs = self.horizon.as_nanos() as f64 / 1e9;
        if secs > 0.0 {
            self.committed as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`-th percentile (0 to 100, nearest rank) of the latencies, in ms.
    pub fn latency_ms(&self, p: u32) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.latencies.iter().map(|d| d.as_nanos()).collect();
        v.sort_unstable();
        let rank = (u64::from(p.min(100)) * v.len() as u64)
            .div_ceil(100)
            .max(1);
        let i = usize::try_from(rank).unwrap_or(usize::MAX).min(v.len()) - 1;
        Some(v[i] as f64 / 1e6)
    }
}

/// The 2PC checkout world around a [`TwoPcCoordinator`] (the reference [`Coordinator`]
/// by default, or yours: [`TwoPcWorld::with_coordinator`]) and the reference
/// [`Cohort`]s.
pub struct TwoPcWorld<C: TwoPcCoordinator = Coordinator> {
    knobs: SagaKnobs,
    /// A coordinator never run: what a recovery is built from (code and configuration).
    blueprint: C,
    coordinator: Option<C>,
    life: u64,
    /// The durable log.
    pub log: Vec<TxRecord>,
    durable: BTreeMap<SagaId, Decision>,
    pipeline: VecDeque<CoordinatorOutput>,
    writing: bool,
    /// The participants (durable), by step index.
    pub participants: [Cohort; 3],
    participant_tick_at: [Option<SimTime>; 3],
    checkouts: Vec<(SimTime, SagaId, Order)>,
    waiting_starts: Vec<(SagaId, Order)>,
    orders: BTreeMap<SagaId, Order>,
    /// The transactions the world asked the living coordinator to start (since its last
    /// recovery): the ones it must know.
    started_this_life: BTreeSet<SagaId>,
    arrived: BTreeMap<SagaId, SimTime>,
    known: BTreeSet<SagaId>,
    presumed: BTreeSet<SagaId>,
    locked_out: BTreeSet<SagaId>,
    lock_since: BTreeMap<(usize, SagaId), SimTime>,
    crashed_at: Option<SimTime>,
    tick_at: Option<SimTime>,
    rng: SimRng,
    /// Figures of the run.
    pub stats: TwoPcStats,
    /// Transaction swimlanes: (transaction, time, what).
    pub lanes: Vec<(SagaId, SimTime, String)>,
}

impl TwoPcWorld<Coordinator> {
    /// A world for `knobs`; `flaw` is `None` for the reference.
    pub(crate) fn with(knobs: SagaKnobs, flaw: Flaw) -> Result<Self, ConfigError> {
        let config = config_of(&knobs)?;
        let coordinator = Coordinator::new(config.clone()).with_flaw(flaw);
        Ok(TwoPcWorld::build(knobs, config, coordinator, flaw))
    }

    /// The reference world for `knobs`.
    pub fn new(knobs: SagaKnobs) -> Result<Self, ConfigError> {
        Self::with(knobs, Flaw::None)
    }
}

impl<C: TwoPcCoordinator> TwoPcWorld<C> {
    /// The world for `knobs` around your coordinator, with the reference participants
    /// configured by [`config_of`] (yours may take its timing from it too, or keep its
    /// own: no check reads a coordinator's vote timeout or re-send interval). Fails if
    /// the knobs make no valid configuration.
    pub fn with_coordinator(knobs: SagaKnobs, coordinator: C) -> Result<Self, ConfigError> {
        let config = config_of(&knobs)?;
        Ok(TwoPcWorld::build(knobs, config, coordinator, Flaw::None))
    }

    /// `flaw` goes to the participants (the coordinator carries its own).
    fn build(knobs: SagaKnobs, config: TwoPcConfig, coordinator: C, flaw: Flaw) -> Self {
        // The same declined cards as the saga world's.
        let declined = knobs.declined();
        let stock = knobs.stock_rows();
        let participants = [
            Cohort::orders(config.clone()).with_flaw(flaw),
            Cohort::inventory(config.clone(), stock).with_flaw(flaw),
            Cohort::payment(config, declined).with_flaw(flaw),
        ];
        TwoPcWorld {
            coordinator: Some(coordinator.recovered(&[], Instant::ZERO)),
            blueprint: coordinator,
            life: 0,
            log: Vec::new(),
            durable: BTreeMap::new(),
            pipeline: VecDeque::new(),
            writing: false,
            participants,
            participant_tick_at: [None; 3],
            checkouts: checkouts(&knobs),
            waiting_starts: Vec::new(),
            orders: BTreeMap::new(),
            started_this_life: BTreeSet::new(),
            arrived: BTreeMap::new(),
            known: BTreeSet::new(),
            presumed: BTreeSet::new(),
            locked_out: BTreeSet::new(),
            lock_since: BTreeMap::new(),
            crashed_at: None,
            tick_at: None,
            rng: SimRng::new(knobs.seed).fork("twopc.world"),
            stats: TwoPcStats {
                horizon: SimDuration::from_millis(knobs.horizon_ms),
                ..TwoPcStats::default()
            },
            lanes: Vec::new(),
            knobs,
        }
    }

    /// The knobs.
    pub fn knobs(&self) -> &SagaKnobs {
        &self.knobs
    }

    /// The coordinator, unless it is crashed.
    pub fn coordinator(&self) -> Option<&C> {
        self.coordinator.as_ref()
    }

    fn latency(&mut self) -> SimDuration {
        let (lo, hi) = self.knobs.latency_ms;
        SimDuration::from_micros(self.rng.between(lo * 1_000, hi * 1_000))
    }

    fn note_totals(ctx: &mut Ctx<TwoPcEvent>, c: &C, before: (u64, u64, u64)) {
        let t = c.totals();
        if t.vote_timeouts > before.0 {
            ctx.cover("twopc.vote_timeout");
        }
        if t.presumed_aborts > before.1 {
            ctx.cover("twopc.presumed_abort");
        }
        if t.decisions_resent > before.2 {
            ctx.cover("twopc.decision_resent");
        }
    }

    fn totals_key(c: &C) -> (u64, u64, u64) {
        let t = c.totals();
        (t.vote_timeouts, t.presumed_aborts, t.decisions_resent)
    }

    /// Drains the coordinator's outputs into the pipeline and runs it.
    fn pump(&mut self, ctx: &mut Ctx<TwoPcEvent>) -> Result<(), Violation> {
        let Some(c) = self.coordinator.as_mut() else {
            return Ok(());
        };
        while let Some(out) = c.poll_output() {
            self.pipeline.push_back(out);
        }
        self.run_pipeline(ctx)?;
        if let Some(c) = &self.coordinator
            && let Some(at) = c.poll_timeout()
        {
            let at = SimTime::from_nanos(at.as_nanos()).max(ctx.now());
            if self.tick_at.is_none_or(|t| at < t || t < ctx.now()) {
                self.tick_at = Some(at);
                ctx.schedule_at(at, TwoPcEvent::Tick);
            }
        }
        Ok(())
    }

    /// Carries out outputs in order; an append blocks what follows until durable.
    fn run_pipeline(&mut self, ctx: &mut Ctx<TwoPcEvent>) -> Result<(), Violation> {
        while !self.writing {
            let Some(out) = self.pipeline.front().copied() else {
                return Ok(());
            };
            match out {
                CoordinatorOutput::Append(_) => {
                    self.writing = true;
                    ctx.schedule_in(
                        SimDuration::from_millis(self.knobs.disk_ms),
                        TwoPcEvent::AppendDone { life: self.life },
                    );
                    return Ok(());
                }
                CoordinatorOutput::Send(msg) => {
                    self.pipeline.pop_front();
                    self.send(ctx, msg)?;
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, ctx: &mut Ctx<TwoPcEvent>, msg: ToParticipant) -> Result<(), Violation> {
        // Write-ahead: a decision leaves only once it is durable; an abort without a
        // record only for a transaction the coordinator does not know (presumed abort).
        // What it knows is what the world saw: the transactions it asked this life of
        // the coordinator to start (whatever `state` says of them).
        if let Request::Decide(d) = msg.request {
            let known = self.started_this_life.contains(&msg.tx);
            let ok = match self.durable.get(&msg.tx) {
                Some(logged) => *logged == d,
                None => d == Decision::Abort && !known,
            };
            if !ok {
                let why = if known && !self.durable.contains_key(&msg.tx) {
                    " (this coordinator was asked to start it, so no Abort is presumed)"
                } else {
                    ""
                };
                return Err(Violation::new(
                    WRITE_AHEAD,
                    format!(
                        "{msg} was sent while the log holds {:?} for it{why}",
                        self.durable.get(&msg.tx)
                    ),
                ));
            }
        }
        self.stats.sends += 1;
        ctx.record(COORDINATOR, format_args!("send {msg}"));
        let svc = service_node(msg.step);
        let fate = ctx.faults().link(&format!("to-{svc}"));
        if fate.copies > 1 {
            ctx.cover("twopc.duplicate_delivered");
        }
        for _ in 0..fate.copies {
            let delay = self.latency() + fate.extra_delay;
            ctx.schedule_in(delay, TwoPcEvent::Deliver(msg));
        }
        Ok(())
    }

    /// Sends a participant's answer back over its link (unless the node is down).
    fn answer(&mut self, ctx: &mut Ctx<TwoPcEvent>, msg: ToCoordinator, extra: SimDuration) {
        let svc = service_node(msg.step);
        let fate = ctx.faults().link(&format!("from-{svc}"));
        if fate.copies > 1 {
            ctx.cover("twopc.duplicate_delivered");
        }
        for _ in 0..fate.copies {
            let delay = self.latency() + extra + fate.extra_delay;
            ctx.schedule_in(delay, TwoPcEvent::Answer(msg));
        }
    }

    /// Notes locks taken or released by participant `i` for `txs`.
    fn sync_locks(&mut self, ctx: &Ctx<TwoPcEvent>, i: usize, txs: &[SagaId]) {
        for tx in txs {
            let locked = self.participants[i].is_locked(*tx);
            match (self.lock_since.get(&(i, *tx)).copied(), locked) {
                (None, true) => {
                    self.lock_since.insert((i, *tx), ctx.now());
                }
                (Some(from), false) => {
                    self.lock_since.remove(&(i, *tx));
                    self.stats.lock_holds.push(LockHold {
                        participant: StepId::ALL[i],
                        tx: *tx,
                        from,
                        until: ctx.now(),
                    });
                }
                _ => {}
            }
        }
    }

    fn arm_participant(&mut self, ctx: &mut Ctx<TwoPcEvent>, i: usize) {
        if let Some(at) = self.participants[i].poll_timeout() {
            let at = SimTime::from_nanos(at.as_nanos()).max(ctx.now());
            let armed = self.participant_tick_at[i];
            if armed.is_none_or(|t| at < t || t < ctx.now()) {
                self.participant_tick_at[i] = Some(at);
                ctx.schedule_at(at, TwoPcEvent::ParticipantTick(i));
            }
        }
    }

    fn start_tx(
        &mut self,
        ctx: &mut Ctx<TwoPcEvent>,
        tx: SagaId,
        order: Order,
    ) -> Result<(), Violation> {
        if let Some(c) = self.coordinator.as_mut() {
            c.start(tx, order, Instant::from(ctx.now()));
            self.orders.insert(tx, order);
            self.started_this_life.insert(tx);
            self.stats.started += 1;
            self.lanes.push((tx, ctx.now(), "started".into()));
            self.pump(ctx)
        } else {
            self.waiting_starts.push((tx, order));
            Ok(())
        }
    }

    fn client_knows(&mut self, ctx: &Ctx<TwoPcEvent>, tx: SagaId, what: &str) {
        if self.known.insert(tx) {
            if let Some(at) = self.arrived.get(&tx) {
                self.stats.latencies.push(ctx.now() - *at);
            }
            self.lanes.push((tx, ctx.now(), what.to_string()));
        }
    }

    /// The decision of `tx` as the world knows it: durable in the log, or presumed
    /// aborted by a coordinator crash since it started; `None` while undecided.
    fn decision_of(&self, tx: SagaId) -> Option<Decision> {
        self.durable
            .get(&tx)
            .copied()
            .or_else(|| self.presumed.contains(&tx).then_some(Decision::Abort))
    }

    /// The lock figures up to `end`: the locks still held and a crash still on, cut
    /// there.
    fn finish_stats(&mut self, end: SimTime) {
        let mut holds = self.stats.lock_holds.clone();
        for ((i, tx), from) in &self.lock_since {
            holds.push(LockHold {
                participant: StepId::ALL[*i],
                tx: *tx,
                from: *from,
                until: end,
            });
        }
        self.stats.longest_lock_hold = holds
            .iter()
            .map(LockHold::duration)
            .max()
            .unwrap_or_default();
        // A crash still on at `end` counts up to `end`.
        let on = self.crashed_at.map(|from| (from, end));
        let mut overlap = SimDuration::ZERO;
        for h in &holds {
            for (from, until) in self.stats.crashes.iter().chain(&on) {
                let a = h.from.max(*from);
                let b = h.until.min(*until);
                overlap = overlap + (b - a);
            }
        }
        self.stats.locked_during_crash = overlap;
        self.stats.delayed_by_locks = self.locked_out.len() as u64;
    }
}

impl<C: TwoPcCoordinator> World for TwoPcWorld<C> {
    type Event = TwoPcEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<TwoPcEvent>) -> Result<(), Violation> {
        if let Some(&(at, _, _)) = self.checkouts.first() {
            ctx.schedule_at(at, TwoPcEvent::Checkout(0));
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<TwoPcEvent>, event: TwoPcEvent) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        match event {
            TwoPcEvent::Checkout(i) => {
                let Some(&(_, tx, order)) = self.checkouts.get(i) else {
                    return Ok(());
                };
                if let Some(&(at, _, _)) = self.checkouts.get(i + 1) {
                    ctx.schedule_at(at, TwoPcEvent::Checkout(i + 1));
                }
                self.arrived.insert(tx, ctx.now());
                self.start_tx(ctx, tx, order)?;
            }
            TwoPcEvent::AppendDone { life } => {
                if life != self.life || self.coordinator.is_none() {
                    return Ok(());
                }
                self.writing = false;
                if let Some(CoordinatorOutput::Append(record)) = self.pipeline.pop_front() {
                    match record {
                        TxRecord::Decision { tx, decision, .. } => {
                            self.durable.insert(tx, decision);
                            self.client_knows(ctx, tx, &format!("decided {decision:?}"));
                        }
                        TxRecord::Ended { tx } => {
                            self.lanes.push((tx, ctx.now(), "ended".into()));
                        }
                    }
                    self.log.push(record);
                    self.stats.records += 1;
                }
                self.run_pipeline(ctx)?;
            }
            TwoPcEvent::Deliver(msg) => {
                let svc = service_node(msg.step);
                let mut faults = ctx.faults();
                if faults.is_down(svc) || faults.is_crashed(svc) {
                    return Ok(());
                }
                let extra = faults.extra_latency(svc);
                let lose_reply = faults.injects_error(svc);
                let i = step_index(msg.step);
                let answer = self.participants[i].handle(&msg, now);
                self.sync_locks(ctx, i, &[msg.tx]);
                match answer.reply {
                    Response::Vote(Vote::No) => ctx.cover("twopc.vote_no"),
                    Response::Vote(Vote::Locked) => {
                        ctx.cover("twopc.lock_conflict");
                        self.locked_out.insert(msg.tx);
                    }
                    _ => {}
                }
                ctx.record(svc, format_args!("{msg} -> {:?}", answer.reply));
                self.arm_participant(ctx, i);
                if lose_reply {
                    ctx.cover("twopc.reply_lost");
                    return Ok(());
                }
                self.answer(ctx, answer, extra);
            }
            TwoPcEvent::Answer(msg) => {
                if let Some(c) = self.coordinator.as_mut() {
                    let before = Self::totals_key(c);
                    c.on_answer(&msg, now);
                    Self::note_totals(ctx, c, before);
                    self.pump(ctx)?;
                }
            }
            TwoPcEvent::Tick => {
                self.tick_at = None;
                if let Some(c) = self.coordinator.as_mut() {
                    let before = Self::totals_key(c);
                    c.handle_timeout(now);
                    Self::note_totals(ctx, c, before);
                    self.pump(ctx)?;
                }
            }
            TwoPcEvent::ParticipantTick(i) => {
                if i >= self.participants.len() {
                    return Ok(());
                }
                self.participant_tick_at[i] = None;
                let in_doubt: Vec<SagaId> = self
                    .lock_since
                    .keys()
                    .filter(|(p, _)| *p == i)
                    .map(|(_, tx)| *tx)
                    .collect();
                self.participants[i].handle_timeout(now);
                self.sync_locks(ctx, i, &in_doubt);
                let svc = service_node(StepId::ALL[i]);
                let mut faults = ctx.faults();
                let silent = faults.is_down(svc) || faults.is_crashed(svc);
                let extra = faults.extra_latency(svc);
                while let Some(msg) = self.participants[i].poll_output() {
                    if !silent {
                        ctx.record(svc, format_args!("asks again: {msg}"));
                        self.answer(ctx, msg, extra);
                    }
                }
                self.arm_participant(ctx, i);
            }
        }
        Ok(())
    }

    fn on_fault(&mut self, ctx: &mut Ctx<TwoPcEvent>, edge: FaultEdge) -> Result<(), Violation> {
        if !edge.fault.kind.is_crash() || edge.fault.target != COORDINATOR {
            return Ok(());
        }
        if edge.started && self.coordinator.is_some() {
            // Memory is lost: what was not durable is gone.
            self.coordinator = None;
            self.started_this_life.clear();
            self.pipeline.clear();
            self.writing = false;
            self.life += 1;
            self.crashed_at = Some(ctx.now());
            if !self.lock_since.is_empty() {
                ctx.cover("twopc.in_doubt_blocked_by_crash");
            }
            ctx.record(COORDINATOR, "crashed");
        } else if !edge.started && self.coordinator.is_none() {
            if let Some(from) = self.crashed_at.take() {
                self.stats.crashes.push((from, ctx.now()));
            }
            let c = self
                .blueprint
                .recovered(&self.log, Instant::from(ctx.now()));
            self.coordinator = Some(c);
            self.stats.recoveries += 1;
            ctx.cover("twopc.recovered_from_log");
            ctx.record(
                COORDINATOR,
                format_args!("recovered from {} log records", self.log.len()),
            );
            // Presumed abort: every started transaction without a logged decision is
            // aborted, and its client learns so now.
            let lost: Vec<SagaId> = self
                .orders
                .keys()
                .filter(|tx| !self.durable.contains_key(tx) && !self.known.contains(tx))
                .copied()
                .collect();
            for tx in lost {
                self.presumed.insert(tx);
                self.client_knows(ctx, tx, "presumed Abort");
            }
            for (tx, order) in std::mem::take(&mut self.waiting_starts) {
                self.start_tx(ctx, tx, order)?;
            }
            self.pump(ctx)?;
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<TwoPcEvent>) -> Result<(), Violation> {
        for i in 0..self.participants.len() {
            self.arm_participant(ctx, i);
        }
        self.pump(ctx)
    }

    fn is_quiescent(&self, ctx: &Ctx<TwoPcEvent>) -> bool {
        ctx.is_healed()
            && self.waiting_starts.is_empty()
            && self.pipeline.is_empty()
            && self.coordinator.as_ref().is_some_and(|c| c.is_at_rest())
            && self.participants.iter().all(|p| p.poll_timeout().is_none())
    }

    fn finish(&mut self, ctx: &mut Ctx<TwoPcEvent>) -> Result<(), Violation> {
        self.finish_stats(ctx.now());
        let Some(c) = &self.coordinator else {
            return Err(Violation::new(AT_REST, "the coordinator is down at rest"));
        };
        // 1. Every transaction decided, and every participant agrees with the decision.
        let mut first_disagreement = None;
        let (mut committed, mut aborted, mut inconsistent, mut refused) = (0, 0, 0, 0);
        for tx in self.orders.keys() {
            // Observed: every transaction the world started has a durable decision, or
            // a coordinator crash since it started presumed it aborted.
            let logged = self.durable.get(tx).copied();
            if logged.is_none() && !self.presumed.contains(tx) {
                return Err(Violation::new(
                    AT_REST,
                    format!(
                        "{tx} was started but never decided: no decision of it is durable, \
                         and no coordinator crash since its start presumed it aborted \
                         (the coordinator reports it {:?})",
                        c.state(*tx)
                    ),
                ));
            }
            // Compared: what the coordinator says of it, with its log.
            if let Some(st) = c.state(*tx) {
                if !matches!(st, TxState::Ended(_)) {
                    return Err(Violation::new(AT_REST, format!("{tx} is left {st:?}")));
                }
                if st.decision() != logged {
                    return Err(Violation::new(
                        AT_REST,
                        format!(
                            "the coordinator reports {tx} {st:?}, but its log holds {logged:?} \
                             for it"
                        ),
                    ));
                }
            }
            let decision = self.decision_of(*tx).unwrap_or(Decision::Abort);
            let locals: Vec<Option<Local>> =
                self.participants.iter().map(|p| p.local(*tx)).collect();
            let agrees = match decision {
                Decision::Commit => locals.iter().all(|l| *l == Some(Local::Committed)),
                Decision::Abort => locals
                    .iter()
                    .all(|l| matches!(l, None | Some(Local::Aborted))),
            };
            if !agrees {
                inconsistent += 1;
                first_disagreement.get_or_insert((*tx, decision, locals));
            }
            match decision {
                Decision::Commit => {
                    ctx.cover("twopc.commit");
                    committed += 1;
                }
                Decision::Abort => {
                    ctx.cover("twopc.abort");
                    aborted += 1;
                    if self.locked_out.contains(tx) {
                        refused += 1;
                    }
                }
            }
        }
        self.stats.committed = committed;
        self.stats.aborted = aborted;
        self.stats.inconsistent = Some(inconsistent);
        self.stats.refused_by_locks = refused;
        self.stats.presumed_aborted = self.presumed.len() as u64;
        if let Some((tx, decision, locals)) = first_disagreement {
            return Err(Violation::new(
                AT_REST,
                format!(
                    "{tx} was decided {decision:?} but its participants (order, inventory, \
                     payment) are {locals:?}; {inconsistent} transactions disagree"
                ),
            ));
        }
        // 2. No lock outlives its transaction.
        invariants::check_locks_released(&self.participants)?;
        // 3. Duplicates had no extra effect.
        invariants::check_idempotent(&self.participants)?;
        // 4. Conservation: stock and money.
        invariants::check_conservation(&self.participants)
    }

    /// The run stopped before it came to rest: its lock figures up to the stop (a
    /// crash still on cut at the stop), and the decisions the world saw up to then.
    /// Atomicity is judged only at rest, so [`TwoPcStats::inconsistent`] stays what
    /// [`finish`](World::finish) made it (`None` if it never judged).
    fn stopped(&mut self, ctx: &Ctx<TwoPcEvent>) {
        self.finish_stats(ctx.now());
        let (mut committed, mut aborted, mut refused) = (0, 0, 0);
        for tx in self.orders.keys() {
            match self.decision_of(*tx) {
                Some(Decision::Commit) => committed += 1,
                Some(Decision::Abort) => {
                    aborted += 1;
                    refused += u64::from(self.locked_out.contains(tx));
                }
                None => {}
            }
        }
        self.stats.committed = committed;
        self.stats.aborted = aborted;
        self.stats.refused_by_locks = refused;
        self.stats.presumed_aborted = self.presumed.len() as u64;
    }
}

/// Runs `world` under `plan`, the one way the 2PC checkout world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<C: TwoPcCoordinator>(
    mut world: TwoPcWorld<C>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, TwoPcWorld<C>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay twopc --seed {seed}")
        .run(&mut world);
    (report, world)
}
