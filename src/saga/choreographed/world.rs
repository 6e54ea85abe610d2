//! The choreographed checkout in its simulated world: the same customers, stock,
//! declines, latencies and fault plans as the orchestrated one (the same
//! [`SagaKnobs`]), but no orchestrator: the three services react to each other's
//! events over an [`EventBus`] (the reference [`Bus`], or yours).
//!
//! The bus hands a service one event at a time per topic; the delivery travels over
//! the link `to-<service>`, the service reacts (one durable local step), and its
//! outbox (the events to publish, with the acknowledgement) travels back over
//! `from-<service>`. A delivery not acknowledged within the step timeout is failed
//! (`nack`) and redelivered after the bus's backoff, as a broker's ack deadline does.
//! A service that is down does not answer; one that crashes loses what it had in
//! hand, which the bus redelivers when it is back; an `errors` fault makes the service
//! react and then lose the outbox message. Faults on the `orchestrator` node do not
//! apply: there is none. Dead letters are redriven once the faults heal.
//!
//! Checked at rest, with the orchestrated saga's names: `saga.at_rest`,
//! `saga.conservation`, `saga.compensation_order` (also checked as each compensation
//! is issued: only for a step whose action took effect), `saga.idempotent`, and
//! `saga.settling`.

use crate::bus::contract::EventBus;
use crate::bus::core::{Bus, BusConfig, SubscriberId};
use crate::clock::Instant;
use crate::config::ConfigError;
use crate::saga::checkout::{Arrivals, SagaKnobs, Settling};
use crate::saga::choreographed::core::{CheckoutEvent, ChoreoFlaw, Reactor, Service};
use crate::saga::invariants::{self, COMPENSATION_ORDER, CompensationEffects};
use crate::saga::services::{Kind, Reply, SagaId, SagaState, StepId};
use faultline_sim::TraceMode;
use faultline_sim::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Coverage marks of the choreographed world.
pub const MARKS: &[&str] = &[
    "choreo.completed",
    "choreo.compensated_after_refusal",
    "choreo.compensated_after_decline",
    "choreo.redelivered_after_deadline",
    "choreo.redelivered_after_crash",
    "choreo.outbox_lost",
    "choreo.duplicate_delivered",
    "choreo.duplicate_reaction",
    "choreo.redrive",
];

/// The world's events; `T` is the bus's delivery token.
#[derive(Clone, Debug)]
pub enum ChoreoEvent<T> {
    /// A customer checks out.
    Checkout,
    /// A delivery reaches its service.
    Handle {
        /// The service.
        who: Service,
        /// Which hand-out this is.
        hand: u64,
        /// The bus's token.
        token: T,
        /// The event.
        event: CheckoutEvent,
        /// The service's life when it was handed out (a crash ends it).
        life: u64,
    },
    /// A service's outbox message (its events and the acknowledgement) reaches the bus.
    Outbox {
        /// The service.
        who: Service,
        /// Which hand-out it answers.
        hand: u64,
        /// The bus's token.
        token: T,
        /// The events to publish.
        publish: Vec<CheckoutEvent>,
    },
    /// The ack deadline of a hand-out.
    Deadline {
        /// The service.
        who: Service,
        /// Which hand-out.
        hand: u64,
        /// The bus's token.
        token: T,
    },
    /// The bus may have a retry due.
    Wake,
}

/// Figures of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChoreoStats {
    /// Checkouts.
    pub started: u64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
    /// Events published.
    pub published: u64,
    /// Deliveries handed out.
    pub deliveries: u64,
    /// Deliveries failed at their ack deadline.
    pub deadlines: u64,
    /// Reactions run (including repeated ones).
    pub reactions: u64,
}

/// The choreographed checkout world over the bus `B`.
pub struct ChoreoWorld<B: EventBus = Bus<u64>> {
    knobs: SagaKnobs,
    /// How long a hand-out may go unacknowledged before it is failed.
    ack_deadline: SimDuration,
    /// The longest retry wait the bus declares (its policy, read once).
    retry_wait_max: SimDuration,
    bus: B,
    subs: [SubscriberId; 3],
    up: [bool; 3],
    life: [u64; 3],
    reactor: Reactor,
    /// Events by payload number, with when each was published.
    events: Vec<(CheckoutEvent, SimTime)>,
    /// (payload, service) pairs handed out at least once.
    handed: BTreeSet<(u64, Service)>,
    /// Events waiting for room on the bus, per topic (a full topic holds up only its
    /// own), with when each entered the outbox.
    outbox: BTreeMap<&'static str, VecDeque<(CheckoutEvent, SimTime)>>,
    /// The hand-outs not yet settled, by number: (service, topic, seq).
    in_hand: BTreeMap<u64, (Service, String, u64)>,
    next_hand: u64,
    /// Deliveries and outbox messages on the wire.
    on_the_wire: u64,
    /// Actions that took effect (their reply was Ok), per saga and step.
    took_effect: BTreeSet<(SagaId, StepId)>,
    /// Compensations that took effect, per saga, in order.
    compensation_effects: CompensationEffects,
    /// Checkouts, rests, fault windows and queueing, for `saga.settling`.
    settling: Settling,
    /// The run's checkouts (made at start, up to the plan's horizon), and the next.
    arrivals: Arrivals,
    wake_at: Option<SimTime>,
    rng: SimRng,
    /// Figures of the run.
    pub stats: ChoreoStats,
    /// Saga swimlanes: (saga, time, what).
    pub lanes: Vec<(SagaId, SimTime, String)>,
}

impl ChoreoWorld<Bus<u64>> {
    /// The reference world: the reference bus and reactions.
    pub fn new(knobs: SagaKnobs) -> Result<Self, ConfigError> {
        Self::with(knobs, ChoreoFlaw::None, true, |config| Ok(Bus::new(config)))
    }
}

impl<B: EventBus> ChoreoWorld<B> {
    /// The bus configuration the world uses: 256 events retained per topic (a full
    /// topic makes publishers wait in their outbox), 10 attempts per delivery with the
    /// knobs' backoff, then the dead-letter queue (redriven whenever no fault is
    /// active).
    pub fn bus_config(knobs: &SagaKnobs) -> Result<BusConfig, ConfigError> {
        BusConfig::builder()
            .capacity(256)
            .attempts_max(10)
            .backoff(
                Duration::from_millis(knobs.backoff_ms.0),
                Duration::from_millis(knobs.backoff_ms.1),
            )
            .build()
    }

    /// The world over the bus `make_bus` builds (from [`bus_config`](Self::bus_config)):
    /// plug your own [`EventBus`] in here.
    pub fn with_bus(
        knobs: SagaKnobs,
        make_bus: impl FnOnce(BusConfig) -> Result<B, ConfigError>,
    ) -> Result<Self, ConfigError> {
        Self::with(knobs, ChoreoFlaw::None, true, make_bus)
    }

    pub(crate) fn with(
        knobs: SagaKnobs,
        flaw: ChoreoFlaw,
        idempotent_payment: bool,
        make_bus: impl FnOnce(BusConfig) -> Result<B, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let mut bus = make_bus(Self::bus_config(&knobs)?)?;
        let reactor = Reactor::new(knobs.services(idempotent_payment)).with_flaw(flaw);
        let subscribe = |bus: &mut B, p: Service| {
            let mut topics: Vec<&str> = p.topics().to_vec();
            if flaw == ChoreoFlaw::SkipRelease && p == Service::Orders {
                topics.push("payment.declined");
            }
            if flaw == ChoreoFlaw::ReleaseOnRefusal && p == Service::Inventory {
                topics.push("stock.refused");
            }
            bus.subscribe(&topics, Instant::ZERO)
        };
        let subs = [
            subscribe(&mut bus, Service::Orders),
            subscribe(&mut bus, Service::Inventory),
            subscribe(&mut bus, Service::Payment),
        ];
        let ack_deadline = if flaw == ChoreoFlaw::DefaultAckDeadline {
            SimDuration::from_secs(30)
        } else {
            SimDuration::from_millis(knobs.step_timeout_ms)
        };
        let retry_wait_max = SimDuration::from_nanos(
            u64::try_from(bus.policy().retry_wait_max.as_nanos()).unwrap_or(u64::MAX),
        );
        Ok(ChoreoWorld {
            ack_deadline,
            retry_wait_max,
            bus,
            subs,
            up: [true; 3],
            life: [0; 3],
            reactor,
            events: Vec::new(),
            handed: BTreeSet::new(),
            outbox: BTreeMap::new(),
            in_hand: BTreeMap::new(),
            next_hand: 0,
            on_the_wire: 0,
            took_effect: BTreeSet::new(),
            compensation_effects: CompensationEffects::default(),
            settling: Settling::default(),
            arrivals: Arrivals::default(),
            wake_at: None,
            rng: SimRng::new(knobs.seed).fork("choreo.world"),
            stats: ChoreoStats::default(),
            lanes: Vec::new(),
            knobs,
        })
    }

    /// The knobs.
    pub fn knobs(&self) -> &SagaKnobs {
        &self.knobs
    }

    /// The reactions and the services' state.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// Sagas left inconsistent: not at rest, completed without holding all three
    /// effects, or compensated while still holding one (0 when the invariants hold).
    pub fn inconsistent(&self) -> u64 {
        let services = self.reactor.services();
        self.arrivals
            .arrived()
            .filter(|saga| match self.reactor.state(*saga) {
                Some(SagaState::Completed) => !services.holds_all(*saga),
                Some(SagaState::Compensated) => services.holds(*saga),
                _ => true,
            })
            .count() as u64
    }

    /// Each saga's time from checkout to rest, in saga order.
    pub fn latencies(&self) -> Vec<SimDuration> {
        self.settling.latencies()
    }

    /// Every saga the order service knows, with its state, in id order.
    pub fn saga_states(&self) -> Vec<(SagaId, SagaState)> {
        self.reactor.states().collect()
    }

    /// For each saga at rest: how long it took to come to rest after the later of its
    /// checkout and the end of the last fault that began before it came to rest, not
    /// counting the time its events waited on the bus for their first hand-out behind
    /// other sagas' events (the bus hands a service one event per topic at a time: that
    /// is throughput, not the reactions' retry logic).
    pub fn settle_times(&self) -> Vec<(SagaId, SimDuration)> {
        self.settling.settle_times()
    }

    /// How long a saga may take to come to rest once no fault is active: one delivery
    /// that waits out its ack deadline and the bus's longest retry wait (it was lost, or
    /// backing off, when the last fault ended), doubled for safety, plus a round trip
    /// for each of the five reactions on the longest path (checkout, order, stock,
    /// payment, release, cancel), each of which may queue behind the one event its
    /// topic has in hand. The retry wait is the one the bus declares
    /// ([`BusPolicy::retry_wait_max`](crate::bus::contract::BusPolicy::retry_wait_max)),
    /// not the knobs' backoff: a bus is judged by its own settings.
    pub fn settle_bound(&self) -> SimDuration {
        let k = &self.knobs;
        let reactions = 6;
        let per_reaction = 2 * (2 * k.latency_ms.1);
        SimDuration::from_millis(2 * k.step_timeout_ms + reactions * per_reaction)
            + self.retry_wait_max
            + self.retry_wait_max
    }

    /// The longest retry wait the bus declares, which [`settle_bound`](Self::settle_bound)
    /// allows for.
    pub fn retry_wait_max(&self) -> SimDuration {
        self.retry_wait_max
    }

    /// The sagas not at rest, in words: each one's state at the order service (or that
    /// it has none), the last event of it published on the bus and when, and how many
    /// of its events wait in an outbox. `None` when every checkout is at rest. The
    /// failure of a run that stalls or does not settle ends with this.
    pub fn pending(&self) -> Option<String> {
        let stuck: Vec<String> = self
            .arrivals
            .arrived()
            .filter_map(|saga| {
                let state = match self.reactor.state(saga) {
                    Some(st) if st.is_at_rest() => return None,
                    Some(st) => format!("{st:?}"),
                    None => "unknown to the order service".to_string(),
                };
                let last = match self.events.iter().rev().find(|(e, _)| e.saga() == saga) {
                    Some((e, at)) => format!(", last event published: {e} at {at}"),
                    None => ", no event published".to_string(),
                };
                let waiting = self
                    .outbox
                    .values()
                    .flatten()
                    .filter(|(e, _)| e.saga() == saga)
                    .count();
                let outbox = if waiting > 0 {
                    format!(", {waiting} event(s) waiting in an outbox")
                } else {
                    String::new()
                };
                Some(format!("{saga} {state}{last}{outbox}"))
            })
            .collect();
        if stuck.is_empty() {
            return None;
        }
        let more = stuck.len().saturating_sub(5);
        Some(format!(
            "{} saga(s) not at rest: {}{}",
            stuck.len(),
            stuck[..stuck.len() - more].join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ))
    }

    fn latency(&mut self) -> SimDuration {
        let (lo, hi) = self.knobs.latency_ms;
        SimDuration::from_micros(self.rng.between(lo * 1_000, hi * 1_000))
    }

    fn publish(&mut self, ctx: &mut Ctx<ChoreoEvent<B::Token>>, event: CheckoutEvent) {
        self.outbox
            .entry(event.topic())
            .or_default()
            .push_back((event, ctx.now()));
        self.flush_outbox(ctx);
    }

    fn flush_outbox(&mut self, ctx: &mut Ctx<ChoreoEvent<B::Token>>) {
        let now = Instant::from(ctx.now());
        for queue in self.outbox.values_mut() {
            while let Some((event, entered)) = queue.front().copied() {
                let payload = self.events.len() as u64;
                if self.bus.publish(event.topic(), payload, now).is_err() {
                    // The topic is full: the outbox keeps it until there is room.
                    break;
                }
                queue.pop_front();
                // Its wait counts from the outbox: time spent waiting for room on a
                // full topic is queueing behind other sagas too.
                self.events.push((event, entered));
                self.stats.published += 1;
            }
        }
    }

    /// An operator redrives dead letters whenever no fault is active. Letters appear
    /// only on a nack, so this runs after each nack and when a fault ends.
    fn redrive_if_calm(&mut self, ctx: &mut Ctx<ChoreoEvent<B::Token>>) {
        if !self.settling.is_calm() {
            return;
        }
        let now = Instant::from(ctx.now());
        for sub in self.subs {
            if !self.bus.dead_letters(sub).is_empty() {
                self.bus.redrive(sub, now);
                ctx.cover("choreo.redrive");
            }
        }
    }

    /// Hands out what each live service can take now.
    fn pump(&mut self, ctx: &mut Ctx<ChoreoEvent<B::Token>>) {
        let now = Instant::from(ctx.now());
        self.flush_outbox(ctx);
        for p in Service::ALL {
            let i = p as usize;
            if !self.up[i] {
                continue;
            }
            while let Some(d) = self.bus.next_delivery(self.subs[i], now) {
                let Some((event, published)) = self.events.get(d.payload as usize).copied() else {
                    continue;
                };
                if self.handed.insert((d.payload, p)) {
                    self.settling.queued(event.saga(), published, ctx.now());
                }
                let hand = self.next_hand;
                self.next_hand += 1;
                self.stats.deliveries += 1;
                if d.redelivery {
                    ctx.cover("choreo.redelivered_after_crash");
                }
                self.in_hand.insert(hand, (p, d.topic.to_string(), d.seq));
                ctx.schedule_in(
                    self.ack_deadline,
                    ChoreoEvent::Deadline {
                        who: p,
                        hand,
                        token: d.token.clone(),
                    },
                );
                let fate = ctx.faults().link(&format!("to-{}", p.name()));
                if fate.copies > 1 {
                    ctx.cover("choreo.duplicate_delivered");
                }
                for _ in 0..fate.copies {
                    let delay = self.latency() + fate.extra_delay;
                    self.on_the_wire += 1;
                    ctx.schedule_in(
                        delay,
                        ChoreoEvent::Handle {
                            who: p,
                            hand,
                            token: d.token.clone(),
                            event,
                            life: self.life[i],
                        },
                    );
                }
            }
        }
        self.schedule_wake(ctx);
    }

    fn schedule_wake(&mut self, ctx: &mut Ctx<ChoreoEvent<B::Token>>) {
        if let Some(at) = self.bus.poll_timeout(Instant::from(ctx.now())) {
            let at = SimTime::from_nanos(at.as_nanos()).max(ctx.now());
            if self.wake_at.is_none_or(|w| at < w || w < ctx.now()) {
                self.wake_at = Some(at);
                ctx.schedule_at(at, ChoreoEvent::Wake);
            }
        }
    }

    /// One reaction of `who` to `event`, checked as it happens.
    fn react(
        &mut self,
        ctx: &mut Ctx<ChoreoEvent<B::Token>>,
        who: Service,
        event: &CheckoutEvent,
    ) -> Result<Vec<CheckoutEvent>, Violation> {
        let before = self.reactor.state(event.saga());
        let command = self.reactor.command_for(who, event);
        let effects_before = command.map_or(0, |c| self.reactor.services().effects(c.key()));
        // A compensation only for a step whose action took effect.
        if let Some(cmd) = command
            && cmd.kind == Kind::Compensation
            && !self.took_effect.contains(&(cmd.saga, cmd.step))
        {
            return Err(Violation::new(
                COMPENSATION_ORDER,
                format!("{cmd} compensates a step whose action never took effect"),
            ));
        }
        let (out, ran) = self.reactor.react_with_reply(who, event);
        self.stats.reactions += 1;
        if let Some((cmd, reply)) = ran {
            let key = cmd.key();
            let effects = self.reactor.services().effects(key);
            if effects_before > 0 || (reply.is_ok() && effects == 0) {
                ctx.cover("choreo.duplicate_reaction");
            }
            if cmd.kind == Kind::Action && reply == Reply::Ok {
                self.took_effect.insert((cmd.saga, cmd.step));
            }
            self.compensation_effects
                .observe(&cmd, effects_before, effects);
            let verb = if cmd.kind == Kind::Action {
                "do"
            } else {
                "undo"
            };
            self.lanes.push((
                cmd.saga,
                ctx.now(),
                format!("{verb} {:?} -> {reply:?}", cmd.step),
            ));
            ctx.record(who.name(), format_args!("{event}: {cmd} -> {reply:?}"));
        }
        let saga = event.saga();
        let after = self.reactor.state(saga);
        if after != before
            && let Some(st) = after.filter(|s| s.is_at_rest())
        {
            self.settling.ended(saga, ctx.now(), st);
            self.lanes.push((saga, ctx.now(), format!("ended {st:?}")));
            ctx.cover(match (st, event) {
                (SagaState::Completed, _) => "choreo.completed",
                (_, CheckoutEvent::StockRefused { .. }) => "choreo.compensated_after_refusal",
                _ => "choreo.compensated_after_decline",
            });
        }
        Ok(out)
    }
}

impl<B: EventBus> World for ChoreoWorld<B> {
    type Event = ChoreoEvent<B::Token>;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation> {
        self.arrivals = Arrivals::new(&self.knobs, ctx.horizon());
        if let Some(at) = self.arrivals.first_at() {
            ctx.schedule_at(at, ChoreoEvent::Checkout);
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<Self::Event>, event: Self::Event) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        match event {
            ChoreoEvent::Checkout => {
                let Some((saga, order, then)) = self.arrivals.arrive() else {
                    return Ok(());
                };
                if let Some(next) = then {
                    ctx.schedule_at(next, ChoreoEvent::Checkout);
                }
                self.settling.checkout(saga, ctx.now());
                self.stats.started += 1;
                self.lanes.push((saga, ctx.now(), "started".into()));
                self.publish(ctx, CheckoutEvent::CheckoutRequested { saga, order });
                self.pump(ctx);
            }
            ChoreoEvent::Handle {
                who,
                hand,
                token,
                event,
                life,
            } => {
                self.on_the_wire = self.on_the_wire.saturating_sub(1);
                let i = who as usize;
                let mut faults = ctx.faults();
                if !self.up[i] || life != self.life[i] || faults.is_down(who.name()) {
                    return Ok(());
                }
                let extra = faults.extra_latency(who.name());
                let lose_outbox = faults.injects_error(who.name());
                let publish = self.react(ctx, who, &event)?;
                if lose_outbox {
                    ctx.cover("choreo.outbox_lost");
                    return Ok(());
                }
                let fate = ctx.faults().link(&format!("from-{}", who.name()));
                for _ in 0..fate.copies {
                    let delay = self.latency() + extra + fate.extra_delay;
                    self.on_the_wire += 1;
                    ctx.schedule_in(
                        delay,
                        ChoreoEvent::Outbox {
                            who,
                            hand,
                            token: token.clone(),
                            publish: publish.clone(),
                        },
                    );
                }
            }
            ChoreoEvent::Outbox {
                who: _,
                hand,
                token,
                publish,
            } => {
                self.on_the_wire = self.on_the_wire.saturating_sub(1);
                // Publish and acknowledge together (the outbox relay). A late or
                // repeated message publishes again: consumers absorb it by key.
                for e in publish {
                    self.publish(ctx, e);
                }
                if self.in_hand.remove(&hand).is_some() {
                    self.bus.ack(&token, now);
                }
                self.pump(ctx);
            }
            ChoreoEvent::Deadline {
                who: _,
                hand,
                token,
            } => {
                if self.in_hand.remove(&hand).is_some() {
                    self.stats.deadlines += 1;
                    ctx.cover("choreo.redelivered_after_deadline");
                    self.bus.nack(&token, now);
                    // The nack may have dead-lettered it.
                    self.redrive_if_calm(ctx);
                    self.pump(ctx);
                }
            }
            ChoreoEvent::Wake => {
                self.wake_at = None;
                self.flush_outbox(ctx);
                self.pump(ctx);
            }
        }
        Ok(())
    }

    fn on_fault(&mut self, ctx: &mut Ctx<Self::Event>, edge: FaultEdge) -> Result<(), Violation> {
        self.settling.fault_edge(edge.started, ctx.now());
        if !edge.started {
            self.redrive_if_calm(ctx);
        }
        if !edge.fault.kind.is_crash() {
            if !edge.started {
                self.pump(ctx);
            }
            return Ok(());
        }
        let Some(p) = Service::ALL
            .into_iter()
            .find(|p| p.name() == edge.fault.target)
        else {
            // The orchestrator: there is none here.
            if !edge.started {
                self.pump(ctx);
            }
            return Ok(());
        };
        let i = p as usize;
        let now = Instant::from(ctx.now());
        if edge.started && self.up[i] {
            self.up[i] = false;
            self.life[i] += 1;
            self.in_hand.retain(|_, (who, _, _)| *who != p);
            self.bus.crash(self.subs[i], now);
            ctx.record(p.name(), "crashed");
        } else if !edge.started && !self.up[i] {
            self.up[i] = true;
            self.bus.resume(self.subs[i], now);
            ctx.record(p.name(), "restarted");
            self.pump(ctx);
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation> {
        self.redrive_if_calm(ctx);
        self.pump(ctx);
        Ok(())
    }

    fn is_quiescent(&self, ctx: &Ctx<Self::Event>) -> bool {
        ctx.is_healed()
            && self.outbox.values().all(VecDeque::is_empty)
            && self.in_hand.is_empty()
            && self.bus.poll_timeout(Instant::from(ctx.now())).is_none()
            && self.on_the_wire == 0
            && self.bus.retained_max() == 0
    }

    fn finish(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation> {
        let services = self.reactor.services();
        // 1. Every saga at rest.
        for saga in self.arrivals.arrived() {
            match self.reactor.state(saga) {
                Some(st) if st.is_at_rest() => {}
                Some(st) => return Err(invariants::left_in(saga, st)),
                None => {
                    return Err(Violation::new(
                        invariants::AT_REST,
                        format!("{saga} checked out but the order service never heard of it"),
                    ));
                }
            }
        }
        // 4. Duplicates had no extra effect.
        invariants::check_idempotent(services)?;
        // 2. Conservation.
        invariants::check_conserved(services)?;
        for (saga, st) in self.reactor.states() {
            invariants::check_holdings(services, saga, st, |_, _, _| None)?;
            match st {
                SagaState::Completed => self.stats.completed += 1,
                _ => self.stats.compensated += 1,
            }
        }
        // 3. Compensations in reverse order.
        self.compensation_effects
            .check_reverse_order(&crate::saga::checkout::STEPS)?;
        // 6. Settling.
        self.settling.check(self.settle_bound())?;
        let _ = ctx;
        Ok(())
    }

    /// The run stopped before it came to rest: its sagas' endings as the world saw
    /// them come to rest up to the stop (the sagas still running are neither).
    fn stopped(&mut self, _ctx: &Ctx<Self::Event>) {
        let e = self.settling.endings();
        self.stats.completed = e.completed;
        self.stats.compensated = e.compensated + e.failed;
    }
}

/// Runs `world` under `plan`, the one way the choreographed checkout world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<B: EventBus>(
    mut world: ChoreoWorld<B>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, ChoreoWorld<B>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay saga-choreo --seed {seed}")
        .run_explained(&mut world, ChoreoWorld::pending);
    (report, world)
}
