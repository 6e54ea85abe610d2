//! The simulated inventory: clients sending restocks and withdrawals to a few items at
//! once (so commands on the same item race and conflict), some of them an old client
//! that writes restocks in schema 1; a writer that commits and then dispatches the
//! events to two projections over links that drop, duplicate and delay; crashes of the
//! writer (between append and dispatch) and of the projections (between apply and
//! checkpoint); rebuilds of a read model during the run. The [`CqrsChecker`] checks
//! every promise against the world's own record of what was acknowledged.

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::cqrs::contract::{EventSourced, Inventory};
use crate::cqrs::core::{Aggregate, AppendError, ExpectedVersion, Recorded, Step, StreamId};
use crate::cqrs::driver::{self, CommandPolicy, Follow, Follower, Next, Outcome};
use crate::cqrs::invariants;
use crate::cqrs::invariants::CqrsChecker;
use crate::cqrs::item::{ItemCommand, ItemEvent, StockView, StoredEvent};
use faultline_sim::prelude::*;
use faultline_sim::{FaultKindTag, TraceMode};
use serde::Serialize;

/// Coverage marks of the CQRS world.
pub const MARKS: &[&str] = &[
    "cqrs.conflict",
    "cqrs.rejected",
    "cqrs.snapshot_use",
    "cqrs.upcast",
    "cqrs.dispatch_lost",
    "cqrs.redelivery",
    "cqrs.replay_after_crash",
    "cqrs.rebuild",
];

/// The node whose crash falls between append and dispatch.
pub const WRITER: &str = "writer";

/// The projection count of the world.
pub const PROJECTIONS: usize = 2;

/// The name (node) of projection `p`.
pub fn projection_name(p: usize) -> String {
    format!("proj-{p}")
}

/// The link from the dispatcher to projection `p`.
pub fn dispatch_link(p: usize) -> String {
    format!("dispatch->proj-{p}")
}

/// Every knob of one CQRS scenario, all from one seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CqrsKnobs {
    /// The seed.
    pub seed: u64,
    /// End of the safety phase, ms.
    pub horizon_ms: u64,
    /// Items (streams) the clients share.
    pub items: u32,
    /// Clients sending commands.
    pub clients: u32,
    /// Commands per second per client.
    pub commands_per_sec: u32,
    /// Time between loading an item and appending the decision, ms (min, max): the
    /// window in which another command can win the race.
    pub think_ms: (u64, u64),
    /// Share of commands that withdraw (the others restock), percent.
    pub withdraw_percent: u32,
    /// Most units one command moves.
    pub units_max: u64,
    /// Share of restocks sent by the old client, written in schema 1, percent.
    pub legacy_percent: u32,
    /// Attempts of a command that keeps conflicting.
    pub attempts_max: u32,
    /// Events between snapshots of an item.
    pub snapshot_every: u64,
    /// Events between checkpoints, per projection.
    pub checkpoint_every: Vec<u64>,
    /// Delay from commit to dispatch, ms.
    pub dispatch_ms: u64,
    /// How often an idle projection polls the log, ms.
    pub poll_ms: u64,
    /// Time one projection step takes, µs.
    pub step_us: u64,
    /// When each projection is rebuilt, ms, if it is.
    pub rebuild_at_ms: Vec<Option<u64>>,
}

impl CqrsKnobs {
    /// A client's next command, from `rng`: the item, the command, and whether it comes
    /// from the old client (which restocks in dozens). The one command mix of both CQRS
    /// worlds, the sans-IO one and the hosted one.
    pub(crate) fn draw_command(&self, r: &mut SimRng) -> (StreamId, ItemCommand, bool) {
        let item = StreamId(r.below(u64::from(self.items)) as u32);
        let withdraw = r.below(100) < u64::from(self.withdraw_percent);
        let legacy = !withdraw && r.below(100) < u64::from(self.legacy_percent);
        let units = r.between(1, self.units_max);
        let command = if withdraw {
            ItemCommand::Withdraw { units }
        } else if legacy {
            ItemCommand::Restock { units: units * 12 }
        } else {
            ItemCommand::Restock { units }
        };
        (item, command, legacy)
    }

    /// Expands `seed` into every knob.
    pub fn from_seed(seed: u64) -> CqrsKnobs {
        let mut r = SimRng::new(seed).fork("cqrs.knobs");
        let horizon_ms = 8_000;
        let think_lo = r.between(0, 20);
        CqrsKnobs {
            seed,
            horizon_ms,
            items: r.between(1, 4) as u32,
            clients: r.between(2, 6) as u32,
            commands_per_sec: r.between(5, 40) as u32,
            think_ms: (think_lo, think_lo + r.between(0, 40)),
            withdraw_percent: r.between(30, 70) as u32,
            units_max: r.between(1, 12),
            legacy_percent: r.between(0, 30) as u32,
            attempts_max: r.between(1, 5) as u32,
            snapshot_every: r.between(2, 32),
            checkpoint_every: (0..PROJECTIONS).map(|_| r.between(1, 16)).collect(),
            dispatch_ms: r.between(0, 20),
            poll_ms: r.between(20, 400),
            step_us: r.between(50, 2_000),
            rebuild_at_ms: (0..PROJECTIONS)
                .map(|_| (r.below(2) == 0).then(|| r.between(500, horizon_ms - 500)))
                .collect(),
        }
    }

    /// The fault plans this world understands: crashes of the writer and of the
    /// projections; drops, duplicates and delays on the dispatch links.
    pub fn fault_profile(&self) -> FaultProfile {
        let mut p = FaultProfile::new(self.horizon_ms)
            .kinds([
                FaultKindTag::Crash,
                FaultKindTag::Drop,
                FaultKindTag::Duplicate,
                FaultKindTag::Delay,
            ])
            .faults(1, 8)
            .duration_ms(50, 3_000)
            .latency_ms_max(1_000)
            .node(WRITER);
        for i in 0..PROJECTIONS {
            p = p.node(projection_name(i)).link(dispatch_link(i));
        }
        p
    }

    /// The fault plan this seed generates.
    pub fn fault_plan(&self) -> FaultPlan {
        FaultPlan::generate(
            &mut SimRng::new(self.seed).fork("cqrs.plan"),
            &self.fault_profile(),
        )
    }

    /// The reference inventory for these knobs.
    pub fn reference(&self) -> Result<Inventory, ConfigError> {
        Inventory::new(self.snapshot_every, &self.checkpoint_every)
    }
}

/// The CQRS world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CqrsEvent {
    /// Client `client` sends its next command.
    Command {
        /// Client index.
        client: u32,
    },
    /// Client `client` appends what it decided.
    Commit {
        /// Client index.
        client: u32,
        /// The writer's life when the command was loaded.
        life: u64,
    },
    /// The writer pushes positions `first..=last` to the projections.
    Dispatch {
        /// First position.
        first: u64,
        /// Last position.
        last: u64,
        /// The writer's life at commit.
        life: u64,
    },
    /// Positions `first..=last` arrive at projection `p`.
    Deliver {
        /// Projection index.
        p: u32,
        /// First position.
        first: u64,
        /// Last position.
        last: u64,
    },
    /// Projection `p` does its next step.
    Step {
        /// Projection index.
        p: u32,
        /// The projection's life when scheduled.
        life: u64,
    },
    /// Client `client` loads again after backing off from a conflict.
    Reload {
        /// Client index.
        client: u32,
    },
    /// Projection `p` polls the log.
    Poll {
        /// Projection index.
        p: u32,
    },
    /// Projection `p` is rebuilt.
    Rebuild {
        /// Projection index.
        p: u32,
    },
}

#[derive(Clone, Debug)]
struct Pending {
    item: StreamId,
    command: ItemCommand,
    legacy: bool,
    /// Its place in the command policy (the attempt under way).
    run: driver::Command,
    expected: ExpectedVersion,
    events: Vec<ItemEvent>,
}

#[derive(Clone, Debug)]
struct Proj {
    up: bool,
    life: u64,
    /// When it steps, polls and sleeps: the follower the tokio projection task drives.
    follower: Follower,
    /// The head when it last reported idle.
    idle_at: Option<u64>,
    crashes: u64,
}

/// Figures of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CqrsStats {
    /// Commands sent.
    pub commands: u64,
    /// Commands whose events were appended.
    pub accepted: u64,
    /// Commands the item refused.
    pub rejected: u64,
    /// Appends refused as conflicts.
    pub conflicts: u64,
    /// Commands given up after `attempts_max` conflicts.
    pub gave_up: u64,
    /// Commands lost to a writer crash.
    pub writer_lost: u64,
    /// Events appended.
    pub events: u64,
    /// Loads that started from a snapshot.
    pub snapshot_loads: u64,
    /// Events folded by loads.
    pub folded: u64,
    /// Events read in schema 1 and upcast.
    pub upcast: u64,
    /// Dispatches lost to a writer crash between append and dispatch.
    pub dispatch_lost: u64,
    /// Deliveries to projections (copies included).
    pub deliveries: u64,
    /// Events handed to a read model again (replays and duplicates).
    pub reapplied: u64,
    /// Rebuilds finished.
    pub rebuilds: u64,
    /// Largest projection lag seen, events.
    pub lag_max: u64,
    /// Queries of the read models (one after everything a projection handles).
    pub queries: u64,
}

/// The CQRS world, generic over the system under test.
pub struct CqrsWorld<E: EventSourced> {
    knobs: CqrsKnobs,
    system: E,
    /// The invariant checker.
    pub checker: CqrsChecker,
    clients: Vec<Option<Pending>>,
    writer_up: bool,
    writer_life: u64,
    projs: Vec<Proj>,
    in_flight: u64,
    /// What the clients do after each attempt: the tokio service's command policy.
    policy: CommandPolicy,
    rng_commands: SimRng,
    rng_backoff: SimRng,
    /// Figures of the run.
    pub stats: CqrsStats,
    /// Projection lag over time: (time, projection, head - read model position).
    pub lags: Vec<(SimTime, usize, u64)>,
    /// When each conflict happened.
    pub conflict_times: Vec<SimTime>,
    /// Node state changes: (time, node, state).
    pub states: Vec<(SimTime, String, &'static str)>,
}

impl<E: EventSourced> CqrsWorld<E> {
    /// A world for `knobs` around `system`.
    pub fn new(knobs: CqrsKnobs, system: E) -> Self {
        let root = SimRng::new(knobs.seed);
        // `attempts_max` is drawn in 1..=5, inside the policy's range; a hand-made knob
        // outside it is clamped to one there.
        let policy = CommandPolicy::new(
            knobs
                .attempts_max
                .clamp(1, crate::retry::RetryPolicy::ATTEMPTS_MAX_LIMIT),
            CommandPolicy::default_backoff(),
        )
        .unwrap_or_else(|_| unreachable!("attempts_max clamped into range"));
        CqrsWorld {
            checker: CqrsChecker::default(),
            clients: vec![None; knobs.clients as usize],
            writer_up: true,
            writer_life: 0,
            projs: (0..system.projections())
                .map(|_| Proj {
                    up: true,
                    life: 0,
                    follower: Follower::new(
                        Instant::ZERO,
                        std::time::Duration::from_millis(knobs.poll_ms),
                    ),
                    idle_at: None,
                    crashes: 0,
                })
                .collect(),
            in_flight: 0,
            policy,
            rng_commands: root.fork("cqrs.commands"),
            rng_backoff: root.fork("cqrs.backoff"),
            stats: CqrsStats::default(),
            lags: Vec::new(),
            conflict_times: Vec::new(),
            states: Vec::new(),
            system,
            knobs,
        }
    }

    /// The knobs.
    pub fn knobs(&self) -> &CqrsKnobs {
        &self.knobs
    }

    /// The system under test.
    pub fn system(&self) -> &E {
        &self.system
    }

    fn schedule_command(&mut self, ctx: &mut Ctx<CqrsEvent>, client: u32) {
        let mean = 1_000_000_000 / u64::from(self.knobs.commands_per_sec.max(1));
        let next = ctx.now()
            + SimDuration::from_nanos(self.rng_commands.between(mean / 2, mean + mean / 2));
        if next < ctx.horizon() {
            ctx.schedule_at(next, CqrsEvent::Command { client });
        }
    }

    /// Loads the client's item, checks the load, decides: schedules the commit, or
    /// ends the command (refused, or the writer is down).
    fn load(&mut self, ctx: &mut Ctx<CqrsEvent>, client: u32) -> Result<(), Violation> {
        let Some(pending) = self.clients[client as usize].as_mut() else {
            return Ok(());
        };
        let actor = format!("client-{client}");
        if !self.writer_up {
            ctx.record(actor, "writer down: command lost");
            self.stats.writer_lost += 1;
            self.clients[client as usize] = None;
            return Ok(());
        }
        let item = pending.item;
        let loaded = self.system.rehydrate(item);
        self.stats.folded += loaded.folded;
        if loaded.snapshot_version.is_some() {
            self.stats.snapshot_loads += 1;
            ctx.cover("cqrs.snapshot_use");
        }
        if loaded.upcast > 0 {
            self.stats.upcast += loaded.upcast;
            ctx.cover("cqrs.upcast");
        }
        self.checker
            .on_load(item, &loaded.state, loaded.version, loaded.snapshot_version)?;
        match loaded.state.decide(&pending.command) {
            Err(why) => {
                ctx.cover("cqrs.rejected");
                ctx.record(
                    actor,
                    format_args!("{:?} on {item} refused: {why}", pending.command),
                );
                self.stats.rejected += 1;
                self.settle(ctx, client, Outcome::Rejected);
            }
            Ok(events) => {
                ctx.record(
                    actor,
                    format_args!(
                        "{:?} on {item} at version {} -> {} event(s)",
                        pending.command,
                        loaded.version,
                        events.len()
                    ),
                );
                pending.expected = driver::expected_at(loaded.version);
                pending.events = events;
                let (lo, hi) = self.knobs.think_ms;
                let think =
                    SimDuration::from_micros(self.rng_commands.between(lo * 1_000, hi * 1_000));
                ctx.schedule_in(
                    think,
                    CqrsEvent::Commit {
                        client,
                        life: self.writer_life,
                    },
                );
            }
        }
        Ok(())
    }

    fn commit(
        &mut self,
        ctx: &mut Ctx<CqrsEvent>,
        client: u32,
        life: u64,
    ) -> Result<(), Violation> {
        let Some(pending) = self.clients[client as usize].clone() else {
            return Ok(());
        };
        let actor = format!("client-{client}");
        if !self.writer_up || life != self.writer_life {
            ctx.record(actor, "the writer crashed before the append: command lost");
            self.stats.writer_lost += 1;
            self.clients[client as usize] = None;
            return Ok(());
        }
        let stored: Vec<StoredEvent> = pending
            .events
            .iter()
            .map(|e| match (*e, pending.legacy) {
                (ItemEvent::Restocked { units }, true) => {
                    StoredEvent::RestockedV1 { dozens: units / 12 }
                }
                (e, _) => StoredEvent::Current(e),
            })
            .collect();
        match self.system.append(pending.item, pending.expected, stored) {
            Ok(appended) => {
                self.checker
                    .on_ack(pending.item, pending.expected, &appended, &pending.events)?;
                self.stats.accepted += 1;
                self.stats.events += pending.events.len() as u64;
                ctx.record(
                    actor,
                    format_args!(
                        "appended {} at versions {}..={} (positions {}..={})",
                        pending.item,
                        appended.from_version + 1,
                        appended.to_version,
                        appended.first_position,
                        appended.last_position
                    ),
                );
                self.system.snapshot_if_due(pending.item);
                self.settle(ctx, client, Outcome::Appended);
                self.in_flight += 1;
                ctx.schedule_in(
                    SimDuration::from_millis(self.knobs.dispatch_ms),
                    CqrsEvent::Dispatch {
                        first: appended.first_position,
                        last: appended.last_position,
                        life: self.writer_life,
                    },
                );
            }
            Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                self.checker
                    .on_conflict(pending.item, pending.expected, actual)?;
                ctx.cover("cqrs.conflict");
                self.stats.conflicts += 1;
                self.conflict_times.push(ctx.now());
                ctx.record(
                    actor.clone(),
                    format_args!(
                        "conflict on {}: expected {}, at {actual}",
                        pending.item, pending.expected
                    ),
                );
                self.settle(ctx, client, Outcome::Conflict);
            }
            Err(other) => {
                return Err(Violation::new(
                    invariants::NO_LOST_WRITE,
                    format!(
                        "an append of {} event(s) was refused: {other}",
                        pending.events.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The attempt of `client`'s command ended with `outcome`: carries out what the
    /// command policy says (the command ends, or the client loads again after the
    /// backoff).
    fn settle(&mut self, ctx: &mut Ctx<CqrsEvent>, client: u32, outcome: Outcome) {
        let Some(pending) = self.clients[client as usize].as_mut() else {
            return;
        };
        match self
            .policy
            .on_outcome(&mut pending.run, outcome, &mut self.rng_backoff)
        {
            Next::Done => self.clients[client as usize] = None,
            Next::GiveUp => {
                self.stats.gave_up += 1;
                self.clients[client as usize] = None;
            }
            Next::RetryAfter(delay) => {
                ctx.schedule_in(
                    SimDuration::from_nanos(crate::clock::saturating_nanos(delay)),
                    CqrsEvent::Reload { client },
                );
            }
        }
    }

    fn record_of(&self, position: u64) -> Option<Recorded<ItemEvent>> {
        position
            .checked_sub(1)
            .and_then(|i| self.checker.log.get(i as usize))
            .cloned()
    }

    fn after(
        &mut self,
        ctx: &mut Ctx<CqrsEvent>,
        p: usize,
        before: &StockView,
        reapplied: Option<u64>,
    ) -> Result<(), Violation> {
        let after = self.system.query(p);
        self.stats.queries += 1;
        let checkpoint = self.system.checkpoint(p);
        let lag = self.checker.head().saturating_sub(after.position);
        self.stats.lag_max = self.stats.lag_max.max(lag);
        self.lags.push((ctx.now(), p, lag));
        self.checker
            .after_projection(p, before, &after, checkpoint, reapplied)
    }

    /// Wakes projection `p`'s follower; schedules its step if it starts stepping.
    fn start_stepping(&mut self, ctx: &mut Ctx<CqrsEvent>, p: usize) {
        let pr = &mut self.projs[p];
        if pr.up && pr.follower.wake() {
            self.schedule_step(ctx, p);
        }
    }

    fn schedule_step(&mut self, ctx: &mut Ctx<CqrsEvent>, p: usize) {
        let pr = &mut self.projs[p];
        pr.idle_at = None;
        ctx.schedule_in(
            SimDuration::from_micros(self.knobs.step_us),
            CqrsEvent::Step {
                p: p as u32,
                life: pr.life,
            },
        );
    }

    fn step(&mut self, ctx: &mut Ctx<CqrsEvent>, p: usize, life: u64) -> Result<(), Violation> {
        if !self.projs[p].up || self.projs[p].life != life {
            return Ok(());
        }
        let before = self.system.query(p);
        let step = self.system.step(p);
        let name = projection_name(p);
        let mut reapplied = None;
        match step {
            Step::Applied { position, .. } => {
                if position <= before.position {
                    reapplied = Some(position);
                    self.stats.reapplied += 1;
                    if self.projs[p].crashes > 0 {
                        ctx.cover("cqrs.replay_after_crash");
                    }
                }
                ctx.record(name, format_args!("applied {position}"));
            }
            Step::Checkpointed { position } => {
                ctx.record(name, format_args!("checkpoint {position}"));
            }
            Step::Swapped { position } => {
                ctx.cover("cqrs.rebuild");
                self.stats.rebuilds += 1;
                ctx.record(
                    name,
                    format_args!("rebuilt read model swapped in at {position}"),
                );
            }
            Step::Idle => {}
        }
        self.after(ctx, p, &before, reapplied)?;
        let pr = &mut self.projs[p];
        match pr.follower.stepped(step) {
            // The world's polls run on the follower's cadence already (`Poll`).
            Follow::Sleep { .. } => pr.idle_at = Some(self.checker.head()),
            // A step takes `step_us`: the world's yield is that time.
            Follow::Step | Follow::Yield => {
                ctx.schedule_in(
                    SimDuration::from_micros(self.knobs.step_us),
                    CqrsEvent::Step { p: p as u32, life },
                );
            }
        }
        Ok(())
    }

    /// Nothing more can happen: no command or dispatch in flight, and every projection
    /// is up and reported idle at the current head.
    fn quiet(&self) -> bool {
        let head = self.checker.head();
        self.clients.iter().all(Option::is_none)
            && self.in_flight == 0
            && self
                .projs
                .iter()
                .all(|p| p.up && !p.follower.stepping() && p.idle_at == Some(head))
    }
}

impl<E: EventSourced> World for CqrsWorld<E> {
    type Event = CqrsEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<CqrsEvent>) -> Result<(), Violation> {
        for c in 0..self.knobs.clients {
            self.schedule_command(ctx, c);
        }
        for p in 0..self.projs.len() {
            ctx.schedule_at(
                SimTime::from_nanos(self.projs[p].follower.next_poll().as_nanos()),
                CqrsEvent::Poll { p: p as u32 },
            );
            if let Some(at) = self.knobs.rebuild_at_ms.get(p).copied().flatten() {
                ctx.schedule_at(SimTime::from_millis(at), CqrsEvent::Rebuild { p: p as u32 });
            }
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<CqrsEvent>, event: CqrsEvent) -> Result<(), Violation> {
        match event {
            CqrsEvent::Command { client } => {
                self.schedule_command(ctx, client);
                if self.clients[client as usize].is_some() {
                    return Ok(()); // still busy with its last command
                }
                let (item, command, legacy) = self.knobs.draw_command(&mut self.rng_commands);
                self.stats.commands += 1;
                self.clients[client as usize] = Some(Pending {
                    item,
                    command,
                    legacy,
                    run: self.policy.start(),
                    expected: ExpectedVersion::Any,
                    events: Vec::new(),
                });
                self.load(ctx, client)?;
            }
            CqrsEvent::Commit { client, life } => self.commit(ctx, client, life)?,
            CqrsEvent::Dispatch { first, last, life } => {
                self.in_flight -= 1;
                if !self.writer_up || life != self.writer_life {
                    ctx.cover("cqrs.dispatch_lost");
                    self.stats.dispatch_lost += 1;
                    ctx.record(
                        WRITER,
                        format_args!("crashed after appending {first}..={last}: not dispatched"),
                    );
                    return Ok(());
                }
                for p in 0..self.projs.len() {
                    let fate = ctx.faults().link(&dispatch_link(p));
                    for _ in 0..fate.copies {
                        self.in_flight += 1;
                        ctx.schedule_in(
                            SimDuration::from_millis(1) + fate.extra_delay,
                            CqrsEvent::Deliver {
                                p: p as u32,
                                first,
                                last,
                            },
                        );
                    }
                }
            }
            CqrsEvent::Deliver { p, first, last } => {
                self.in_flight -= 1;
                let p = p as usize;
                if !self.projs[p].up {
                    return Ok(());
                }
                for position in first..=last {
                    let Some(record) = self.record_of(position) else {
                        continue;
                    };
                    self.stats.deliveries += 1;
                    let before = self.system.query(p);
                    self.system.deliver(p, &record);
                    let reapplied = (position <= before.position).then_some(position);
                    if reapplied.is_some() {
                        ctx.cover("cqrs.redelivery");
                        self.stats.reapplied += 1;
                    }
                    self.after(ctx, p, &before, reapplied)?;
                }
                self.start_stepping(ctx, p);
            }
            CqrsEvent::Step { p, life } => self.step(ctx, p as usize, life)?,
            CqrsEvent::Reload { client } => self.load(ctx, client)?,
            CqrsEvent::Poll { p } => {
                let pr = &mut self.projs[p as usize];
                let woke = pr.follower.poll_fired(Instant::from(ctx.now()));
                ctx.schedule_at(
                    SimTime::from_nanos(pr.follower.next_poll().as_nanos()),
                    CqrsEvent::Poll { p },
                );
                if woke {
                    self.schedule_step(ctx, p as usize);
                }
            }
            CqrsEvent::Rebuild { p } => {
                let p = p as usize;
                if self.projs[p].up {
                    let before = self.system.query(p);
                    self.system.rebuild(p);
                    ctx.record(projection_name(p), "rebuild from scratch starts");
                    self.after(ctx, p, &before, None)?;
                    self.start_stepping(ctx, p);
                }
            }
        }
        Ok(())
    }

    fn on_fault(&mut self, ctx: &mut Ctx<CqrsEvent>, edge: FaultEdge) -> Result<(), Violation> {
        if !edge.fault.kind.is_crash() {
            return Ok(());
        }
        let target = edge.fault.target.as_str();
        if target == WRITER {
            if edge.started && self.writer_up {
                self.writer_up = false;
                self.writer_life += 1;
                self.states.push((ctx.now(), WRITER.into(), "crashed"));
            } else if !edge.started && !self.writer_up {
                self.writer_up = true;
                self.states.push((ctx.now(), WRITER.into(), "up"));
            }
            return Ok(());
        }
        let Some(p) = (0..self.projs.len()).find(|p| projection_name(*p) == target) else {
            return Ok(());
        };
        if edge.started && self.projs[p].up {
            let pr = &mut self.projs[p];
            pr.up = false;
            pr.life += 1;
            pr.follower.stopped();
            pr.idle_at = None;
            pr.crashes += 1;
            self.system.crash(p);
            self.states.push((ctx.now(), projection_name(p), "crashed"));
        } else if !edge.started && !self.projs[p].up {
            self.projs[p].up = true;
            self.states.push((ctx.now(), projection_name(p), "up"));
            if self.projs[p].follower.restarted() {
                self.schedule_step(ctx, p);
            }
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<CqrsEvent>) -> Result<(), Violation> {
        for p in 0..self.projs.len() {
            self.start_stepping(ctx, p);
        }
        Ok(())
    }

    fn is_quiescent(&self, ctx: &Ctx<CqrsEvent>) -> bool {
        ctx.is_healed() && self.quiet()
    }

    fn finish(&mut self, _ctx: &mut Ctx<CqrsEvent>) -> Result<(), Violation> {
        let views: Vec<(StockView, u64)> = (0..self.projs.len())
            .map(|p| (self.system.query(p), self.system.checkpoint(p)))
            .collect();
        let log = self.system.read_all();
        let system = &self.system;
        self.checker
            .finish(|item| system.read_stream(item), &log, &views)
    }
}

/// Runs `world` under `plan`, the one way the CQRS world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<E: EventSourced>(
    mut world: CqrsWorld<E>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, CqrsWorld<E>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay cqrs --seed {seed}")
        .run(&mut world);
    (report, world)
}
