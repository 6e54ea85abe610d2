//! The simulated bus world: publishers at varying rates on a few topics, with bursts of
//! events under a millisecond apart (where a bus that reorders concurrent publishes
//! shows it), subscribers with random processing times (one of them slow), handler
//! error bursts, crashes and restarts, subscribes and unsubscribes during the run. The
//! [`BusChecker`] checks every promise against the world's own ledger, judging the bus
//! by the [`BusPolicy`] it declares ([`EventBus::policy`]), not by the knobs.

use crate::bus::contract::{BusPolicy, EventBus, Handed};
use crate::bus::core::{Bus, BusConfig, Published, SubscriberId};
use crate::bus::invariants;
use crate::bus::invariants::BusChecker;
use crate::bus::subscriber::{Loop, Outcome, Parts, Status, Step};
use crate::clock::Instant;
use crate::config::ConfigError;
use faultline_sim::prelude::*;
use faultline_sim::{FaultKindTag, TraceMode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Coverage marks of the bus world.
pub const MARKS: &[&str] = &[
    "bus.backpressure",
    "bus.full_returned",
    "bus.retry",
    "bus.dead_letter",
    "bus.redrive",
    "bus.resume_after_crash",
    "bus.redelivery",
    "bus.dead_event",
    "bus.late_subscribe",
    "bus.unsubscribe",
    "bus.burst",
];

/// One subscriber's knobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriberKnobs {
    /// Its name (also its fault target and node).
    pub name: String,
    /// Indexes of the topics it subscribes to.
    pub topics: Vec<usize>,
    /// When it subscribes, ms.
    pub join_ms: u64,
    /// When it unsubscribes, ms, if it does.
    pub leave_ms: Option<u64>,
    /// Processing time per event, ms (min, max).
    pub work_ms: (u64, u64),
    /// Share of events its handler fails on its own, percent.
    pub error_percent: u32,
}

/// Every knob of one bus scenario, all from one seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BusKnobs {
    /// The seed.
    pub seed: u64,
    /// End of the safety phase, ms.
    pub horizon_ms: u64,
    /// Topic names.
    pub topics: Vec<String>,
    /// Publish rate per topic, events per second.
    pub publish_per_sec: Vec<u32>,
    /// Share of publishes that go to a topic nobody subscribes to, percent.
    pub stray_percent: u32,
    /// The subscribers.
    pub subscribers: Vec<SubscriberKnobs>,
    /// Retained events per topic.
    pub capacity: usize,
    /// Attempts before dead-lettering.
    pub attempts_max: u32,
    /// Retry backoff (base, cap), ms.
    pub backoff_ms: (u64, u64),
    /// Publishers wait when a topic is full (else they give up on `BusFull`).
    pub wait_on_full: bool,
    /// How often a waiting publisher tries again, ms.
    pub publish_retry_ms: u64,
    /// Share of publishes that start a burst, percent.
    pub burst_percent: u32,
    /// Most events in a burst (after the one that starts it).
    pub burst_len_max: u32,
    /// Longest spacing between two events of a burst, µs (under a millisecond).
    pub burst_gap_us_max: u64,
}

impl BusKnobs {
    /// When each subscriber joins and (if it does) leaves, in the order to schedule
    /// them: `(when, subscriber, joins)`. The one membership of both bus worlds.
    pub(crate) fn membership(&self) -> Vec<(SimTime, u32, bool)> {
        let mut changes = Vec::new();
        for (i, s) in self.subscribers.iter().enumerate() {
            changes.push((SimTime::from_millis(s.join_ms), i as u32, true));
            if let Some(leave) = s.leave_ms {
                changes.push((SimTime::from_millis(leave), i as u32, false));
            }
        }
        changes
    }

    /// The gap before the next publish on `topic`, from `rng`: the publish process of
    /// both bus worlds, the sans-IO one and the hosted one.
    pub(crate) fn publish_gap(&self, topic: u32, rng: &mut SimRng) -> SimDuration {
        let rate = u64::from(self.publish_per_sec[topic as usize].max(1));
        let mean = 1_000_000_000 / rate;
        SimDuration::from_nanos(rng.between(mean / 2, mean + mean / 2))
    }

    /// The gap before the next event of a burst (under a millisecond), from `rng`.
    pub(crate) fn burst_gap(&self, rng: &mut SimRng) -> SimDuration {
        SimDuration::from_nanos(rng.between(20_000, self.burst_gap_us_max * 1_000))
    }

    /// Expands `seed` into every knob.
    pub fn from_seed(seed: u64) -> BusKnobs {
        let mut r = SimRng::new(seed).fork("bus.knobs");
        let all = ["orders", "payments", "profiles"];
        let topic_count = r.between(1, 3) as usize;
        let topics: Vec<String> = all[..topic_count].iter().map(|s| s.to_string()).collect();
        let horizon_ms = 20_000;
        let subscriber_count = r.between(2, 5) as usize;
        let slow = r.below(subscriber_count as u64) as usize;
        let subscribers = (0..subscriber_count)
            .map(|i| {
                let mut ts: Vec<usize> = (0..topic_count).filter(|_| r.below(2) == 1).collect();
                if ts.is_empty() {
                    ts.push(r.below(topic_count as u64) as usize);
                }
                let join_ms = if r.below(4) == 0 {
                    r.between(1, horizon_ms / 2)
                } else {
                    0
                };
                let leave_ms = (r.below(6) == 0).then(|| r.between(join_ms + 1, horizon_ms - 1));
                let work_ms = if i == slow {
                    let lo = r.between(20, 100);
                    (lo, lo + r.between(0, 200))
                } else {
                    let lo = r.between(0, 5);
                    (lo, lo + r.between(0, 10))
                };
                SubscriberKnobs {
                    name: format!("sub-{i}"),
                    topics: ts,
                    join_ms,
                    leave_ms,
                    work_ms,
                    error_percent: r.between(0, 10) as u32,
                }
            })
            .collect();
        let base = r.between(10, 300);
        // Drawn from their own stream, so every knob above keeps its value.
        let mut b = SimRng::new(seed).fork("bus.bursts");
        BusKnobs {
            seed,
            horizon_ms,
            publish_per_sec: (0..topic_count).map(|_| r.between(5, 100) as u32).collect(),
            stray_percent: r.between(0, 5) as u32,
            topics,
            subscribers,
            capacity: r.between(4, 256) as usize,
            attempts_max: r.between(1, 5) as u32,
            backoff_ms: (base, base * r.between(1, 10)),
            wait_on_full: r.below(2) == 1,
            publish_retry_ms: r.between(1, 20),
            burst_percent: b.between(2, 20) as u32,
            burst_len_max: b.between(1, 8) as u32,
            burst_gap_us_max: b.between(50, 900),
        }
    }

    /// The fault plans this world understands: handler error bursts and slowness of a
    /// subscriber, and subscriber crashes.
    pub fn fault_profile(&self) -> FaultProfile {
        let mut p = FaultProfile::new(self.horizon_ms)
            .kinds([
                FaultKindTag::Errors,
                FaultKindTag::Slow,
                FaultKindTag::Crash,
            ])
            .faults(1, 8)
            .duration_ms(100, 5_000)
            .latency_ms_max(500);
        for s in &self.subscribers {
            p = p.target(s.name.clone()).node(s.name.clone());
        }
        p
    }

    /// The fault plan this seed generates.
    pub fn fault_plan(&self) -> FaultPlan {
        FaultPlan::generate(
            &mut SimRng::new(self.seed).fork("bus.plan"),
            &self.fault_profile(),
        )
    }

    /// The bus configuration.
    pub fn bus_config(&self) -> Result<BusConfig, ConfigError> {
        BusConfig::builder()
            .capacity(self.capacity)
            .attempts_max(self.attempts_max)
            .backoff(
                Duration::from_millis(self.backoff_ms.0),
                Duration::from_millis(self.backoff_ms.1),
            )
            .dead_letters_max(1_000_000)
            .build()
    }

    /// The reference bus for these knobs.
    pub fn reference_bus(&self) -> Result<Bus<u64>, ConfigError> {
        Ok(Bus::new(self.bus_config()?))
    }

    /// The policy the reference bus declares for these knobs: what
    /// [`bus.conformance`](invariants::CONFORMANCE) compares a declaration with.
    pub fn reference_policy(&self) -> Result<BusPolicy, ConfigError> {
        Ok(BusPolicy::of_config(&self.bus_config()?))
    }
}

/// The bus world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// The publisher of topic `topic` publishes its next event.
    Publish {
        /// Topic index.
        topic: u32,
    },
    /// A waiting publisher tries again.
    PublishRetry {
        /// Topic index.
        topic: u32,
    },
    /// Subscriber `sub`'s handler finished.
    HandlerDone {
        /// Subscriber index.
        sub: u32,
        /// The subscriber's life (crashes end a life).
        life: u64,
        /// Whether the handler succeeded.
        ok: bool,
    },
    /// The publisher of topic `topic` publishes the next event of a burst.
    Burst {
        /// Topic index.
        topic: u32,
        /// Events of the burst still to come, this one included.
        left: u32,
    },
    /// A retry may be due.
    Wake,
    /// Subscriber `sub` subscribes.
    Join {
        /// Subscriber index.
        sub: u32,
    },
    /// Subscriber `sub` unsubscribes.
    Leave {
        /// Subscriber index.
        sub: u32,
    },
}

struct Sub<T> {
    id: Option<SubscriberId>,
    left: Option<SubscriberId>,
    up: bool,
    life: u64,
    /// The subscriber's decisions: the same core the tokio adapter's task drives.
    core: Loop<T>,
    /// The ledger's view of the delivery in hand: (topic, seq, redriven).
    held: Option<(String, u64, bool)>,
}

/// The bus under test as one world subscriber's [`Parts`].
struct WorldParts<'a, B: EventBus> {
    bus: &'a mut B,
    id: SubscriberId,
    /// The delivery in hand, as the ledger knows it.
    held: Option<&'a (String, u64, bool)>,
}

impl<B: EventBus> Parts for WorldParts<'_, B> {
    type Token = B::Token;
    type Delivery = Handed<B::Token>;

    fn token(delivery: &Handed<B::Token>) -> (B::Token, u32) {
        (delivery.token.clone(), delivery.attempt)
    }
    fn next_delivery(&mut self, now: Instant) -> Option<Handed<B::Token>> {
        self.bus.next_delivery(self.id, now)
    }
    fn ack(&mut self, token: &B::Token, now: Instant) {
        self.bus.ack(token, now);
    }
    fn nack(&mut self, token: &B::Token, now: Instant) -> bool {
        self.bus.nack(token, now);
        // A retry unless the bus dead-lettered it (compared with the ledger later).
        !self.held.is_some_and(|(topic, seq, _)| {
            self.bus
                .dead_letters(self.id)
                .iter()
                .any(|(t, s)| t == topic && s == seq)
        })
    }
    fn stuck(&self) -> bool {
        // The world's dead-letter store is unbounded (`dead_letters_max` 1,000,000).
        false
    }
    fn next_retry_after(&self, now: Instant) -> Option<Instant> {
        self.bus.poll_timeout(now)
    }
}

/// Figures of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BusStats {
    /// Events published (retained).
    pub published: u64,
    /// Events handled.
    pub handled: u64,
    /// Handler failures.
    pub failures: u64,
    /// Publishes refused (given up) with `BusFull`.
    pub refused: u64,
    /// Publishes that had to wait for space.
    pub waited: u64,
    /// Dead events.
    pub dead_events: u64,
    /// Highest retention seen.
    pub retained_max: usize,
    /// Longest delivery lag, ms.
    pub lag_ms_max: f64,
}

/// The bus world, generic over the bus under test.
///
/// The world judges the bus by the [`BusPolicy`] it declares ([`EventBus::policy`]);
/// [`conforming_to_reference`](BusWorld::conforming_to_reference) adds the check that
/// the declaration is the reference's exact settings for the knobs.
pub struct BusWorld<B: EventBus> {
    knobs: BusKnobs,
    bus: B,
    /// The policy the bus declared when the world was made.
    policy: BusPolicy,
    /// The policy the bus must declare, when conformance is checked.
    conform_to: Option<BusPolicy>,
    subs: Vec<Sub<B::Token>>,
    /// The invariant checker.
    pub checker: BusChecker,
    /// Per topic: a publish waiting for space (its payload).
    waiting: Vec<Option<u64>>,
    next_payload: u64,
    wake_at: Option<SimTime>,
    rng_publish: SimRng,
    rng_work: SimRng,
    rng_burst: SimRng,
    /// Figures of the run.
    pub stats: BusStats,
    /// Retention over time: (time, most events retained by a topic).
    pub retention: Vec<(SimTime, usize)>,
    /// Subscriber state changes: (time, subscriber, state).
    pub states: Vec<(SimTime, u32, &'static str)>,
}

impl<B: EventBus> BusWorld<B> {
    /// A world for `knobs` around `bus`, judged by the policy `bus` declares. The knobs
    /// shape the publishers, the subscribers and the faults; the bus's settings
    /// (capacity, attempts, backoff) are its own.
    pub fn new(knobs: BusKnobs, bus: B) -> Self {
        let root = SimRng::new(knobs.seed);
        let policy = bus.policy();
        BusWorld {
            checker: BusChecker::for_policy(&policy),
            policy,
            conform_to: None,
            subs: (0..knobs.subscribers.len())
                .map(|_| Sub {
                    id: None,
                    left: None,
                    up: true,
                    life: 0,
                    core: Loop::new(),
                    held: None,
                })
                .collect(),
            waiting: vec![None; knobs.topics.len()],
            next_payload: 0,
            wake_at: None,
            rng_publish: root.fork("bus.publish"),
            rng_work: root.fork("bus.work"),
            rng_burst: root.fork("bus.burst"),
            stats: BusStats::default(),
            retention: Vec::new(),
            states: Vec::new(),
            bus,
            knobs,
        }
    }

    /// Also checks [`bus.conformance`](invariants::CONFORMANCE): the bus's declared
    /// policy must be the reference's for these knobs
    /// ([`BusKnobs::reference_policy`]). On for the reference and its mutants.
    pub fn conforming_to_reference(mut self) -> Result<Self, ConfigError> {
        self.conform_to = Some(self.knobs.reference_policy()?);
        Ok(self)
    }

    /// The knobs.
    pub fn knobs(&self) -> &BusKnobs {
        &self.knobs
    }

    /// The policy the bus declared, which the world judges it by.
    pub fn policy(&self) -> &BusPolicy {
        &self.policy
    }

    /// The bus under test.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    fn schedule_publish(&mut self, ctx: &mut Ctx<BusEvent>, topic: u32) {
        let next = ctx.now() + self.knobs.publish_gap(topic, &mut self.rng_publish);
        if next < ctx.horizon() {
            ctx.schedule_at(next, BusEvent::Publish { topic });
        }
    }

    /// Schedules the next event of a burst on `topic`, under a millisecond from now.
    fn schedule_burst(&mut self, ctx: &mut Ctx<BusEvent>, topic: u32, left: u32) {
        let at = ctx.now() + self.knobs.burst_gap(&mut self.rng_burst);
        if left > 0 && at < ctx.horizon() {
            ctx.schedule_at(at, BusEvent::Burst { topic, left });
        }
    }

    /// Publishes a new event on topic `topic` (a stray topic when `stray`), unless its
    /// publisher is blocked on a full topic; a refused event waits for space.
    fn publish_next(
        &mut self,
        ctx: &mut Ctx<BusEvent>,
        topic: u32,
        stray: bool,
    ) -> Result<(), Violation> {
        let payload = self.next_payload;
        self.next_payload += 1;
        if !self.try_publish(ctx, topic, payload, stray)? {
            self.waiting[topic as usize] = Some(payload);
            self.stats.waited += 1;
            ctx.schedule_in(
                SimDuration::from_millis(self.knobs.publish_retry_ms),
                BusEvent::PublishRetry { topic },
            );
        }
        Ok(())
    }

    /// Tries to publish `payload` on topic `t` (or a stray topic): true when done.
    fn try_publish(
        &mut self,
        ctx: &mut Ctx<BusEvent>,
        t: u32,
        payload: u64,
        stray: bool,
    ) -> Result<bool, Violation> {
        let name = if stray {
            format!("{}.stray", self.knobs.topics[t as usize])
        } else {
            self.knobs.topics[t as usize].clone()
        };
        let now = Instant::from(ctx.now());
        // The world's own fact, not the bus's: a subscription it made and has not
        // ended covers this topic (a crashed subscriber is still subscribed).
        let subscribed = self.subs.iter().enumerate().any(|(i, s)| {
            s.id.is_some() && !stray && self.knobs.subscribers[i].topics.contains(&(t as usize))
        });
        match self.bus.publish(&name, payload, now) {
            Ok(published) => {
                let seq = match published {
                    Published::Retained { seq, .. } => Some(seq),
                    Published::DeadEvent => {
                        ctx.cover("bus.dead_event");
                        self.stats.dead_events += 1;
                        None
                    }
                };
                let retained = self.bus.retained_max();
                self.stats.retained_max = self.stats.retained_max.max(retained);
                self.retention.push((ctx.now(), retained));
                if seq.is_some() {
                    self.stats.published += 1;
                }
                ctx.record(
                    "publisher",
                    format_args!("{name} <- event {payload} as {seq:?}"),
                );
                self.checker
                    .on_published(&name, seq, payload, ctx.now(), subscribed, retained)?;
                if seq.is_some() {
                    self.pump_all(ctx)?;
                }
                Ok(true)
            }
            Err(full) => {
                ctx.record("publisher", format_args!("{full}"));
                self.checker.counts.refusals += 1;
                if self.knobs.wait_on_full {
                    ctx.cover("bus.backpressure");
                    Ok(false)
                } else {
                    ctx.cover("bus.full_returned");
                    self.stats.refused += 1;
                    self.checker.full += 1;
                    Ok(true)
                }
            }
        }
    }

    fn pump_all(&mut self, ctx: &mut Ctx<BusEvent>) -> Result<(), Violation> {
        for i in 0..self.subs.len() {
            self.pump(ctx, i as u32)?;
        }
        Ok(())
    }

    /// Gives an idle subscriber its next event, if the bus has one.
    fn pump(&mut self, ctx: &mut Ctx<BusEvent>, i: u32) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        // A subscriber that left must get nothing more.
        if let Some(old) = self.subs[i as usize].left
            && let Some(d) = self.bus.next_delivery(old, now)
        {
            return self
                .checker
                .on_delivery(i, true, &d.topic, d.seq, d.payload, d.redriven);
        }
        let s = &mut self.subs[i as usize];
        let Some(id) = s.id else {
            return Ok(());
        };
        if s.core.is_busy() {
            // Its handler runs: it pumps again when done.
            return Ok(());
        }
        let status = if s.up { Status::Open } else { Status::Gone };
        let mut parts = WorldParts {
            bus: &mut self.bus,
            id,
            held: None,
        };
        let at = match s.core.next(&mut parts, status, now) {
            Step::Exit => return Ok(()),
            Step::Deliver(d) => Ok(d),
            Step::Wait(at) => Err(at),
        };
        let d = match at {
            Ok(d) => d,
            Err(at) => {
                // Isolation: an idle subscriber owed an available event must get it.
                let topics = &self.knobs.subscribers[i as usize].topics;
                for t in topics {
                    let name = &self.knobs.topics[*t];
                    if self.checker.owed_now(i, name) {
                        return Err(Violation::new(
                            invariants::ISOLATION,
                            format!(
                                "subscriber {i} is up, idle and owed event {} on `{name}`, yet the bus gave it nothing \
                             (held back by another subscriber, or lost)",
                                self.checker
                                    .tracks
                                    .get(&(i, name.clone()))
                                    .map_or(0, |t| t.next)
                            ),
                        ));
                    }
                }
                if let Some(at) = at {
                    self.schedule_wake_at(ctx, at);
                }
                return Ok(());
            }
        };
        if d.redelivery {
            ctx.cover("bus.redelivery");
        }
        self.checker
            .on_delivery(i, false, &d.topic, d.seq, d.payload, d.redriven)?;
        let sk = &self.knobs.subscribers[i as usize];
        let name = sk.name.clone();
        let mut work = SimDuration::from_micros(
            self.rng_work
                .between(sk.work_ms.0 * 1_000, sk.work_ms.1 * 1_000),
        );
        let fails_alone = self.rng_work.below(100) < u64::from(sk.error_percent);
        let mut faults = ctx.faults();
        work = work + faults.extra_latency(&name);
        let ok = !(faults.injects_error(&name) || fails_alone);
        ctx.record(
            name.clone(),
            format_args!(
                "handles {}#{} attempt {} -> {}",
                d.topic,
                d.seq,
                d.attempt,
                if ok { "ok" } else { "error" }
            ),
        );
        let life = self.subs[i as usize].life;
        self.subs[i as usize].held = Some((d.topic.to_string(), d.seq, d.redriven));
        ctx.schedule_in(work, BusEvent::HandlerDone { sub: i, life, ok });
        Ok(())
    }

    fn schedule_wake(&mut self, ctx: &mut Ctx<BusEvent>) {
        // A retry already due waits for its busy subscriber's handler (which pumps when
        // done): only a future retry needs a wake-up.
        if let Some(at) = self.bus.poll_timeout(Instant::from(ctx.now())) {
            self.schedule_wake_at(ctx, at);
        }
    }

    /// A wake-up at `at`, unless one is scheduled already at or before it.
    fn schedule_wake_at(&mut self, ctx: &mut Ctx<BusEvent>, at: Instant) {
        let at = SimTime::from_nanos(at.as_nanos());
        if at > ctx.now() && self.wake_at.is_none_or(|w| at < w || w <= ctx.now()) {
            self.wake_at = Some(at);
            ctx.schedule_at(at, BusEvent::Wake);
        }
    }

    /// What the bus reports of itself, where it does, against the ledger
    /// (`bus.reports`): checked after every step, when the world and the bus have both
    /// taken it in full.
    fn check_reports(&self) -> Result<(), Violation> {
        if let Some(totals) = self.bus.totals() {
            self.checker.compare_totals(&totals)?;
        }
        for name in &self.knobs.topics {
            if let Some(next) = self.bus.next_seq(name) {
                self.checker.compare_next_seq(name, next)?;
            }
        }
        let (bus, subs) = (&self.bus, &self.subs);
        self.checker.compare_lags(|sub, topic| {
            let id = subs.get(sub as usize)?.id?;
            bus.lag(id, topic)
        })
    }

    /// Nothing more can happen: no publisher waits, no handler runs, no retry is due
    /// later, and (the world pumps after every event) no idle subscriber has anything
    /// to take. Whether everything owed was settled is then checked by `finish`.
    fn quiet(&self, now: Instant) -> bool {
        self.waiting.iter().all(Option::is_none)
            && self.subs.iter().all(|s| !s.core.is_busy())
            && self.bus.poll_timeout(now).is_none()
    }
}

impl<B: EventBus> World for BusWorld<B> {
    type Event = BusEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<BusEvent>) -> Result<(), Violation> {
        if let Some(reference) = self.conform_to
            && self.policy != reference
        {
            return Err(Violation::new(
                invariants::CONFORMANCE,
                format!(
                    "the bus declares {:?}, but the reference's settings for these knobs are {reference:?}",
                    self.policy
                ),
            ));
        }
        for (at, sub, joins) in self.knobs.membership() {
            let event = if joins {
                BusEvent::Join { sub }
            } else {
                BusEvent::Leave { sub }
            };
            ctx.schedule_at(at, event);
        }
        for t in 0..self.knobs.topics.len() {
            self.schedule_publish(ctx, t as u32);
        }
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Ctx<BusEvent>, event: BusEvent) -> Result<(), Violation> {
        let now = Instant::from(ctx.now());
        match event {
            BusEvent::Publish { topic } => {
                self.schedule_publish(ctx, topic);
                if self.rng_burst.below(100) < u64::from(self.knobs.burst_percent) {
                    let len = self
                        .rng_burst
                        .between(1, u64::from(self.knobs.burst_len_max));
                    self.schedule_burst(ctx, topic, len as u32);
                }
                if self.waiting[topic as usize].is_some() {
                    // This publisher is blocked on a full topic: it publishes nothing new.
                    return Ok(());
                }
                let stray = self.rng_publish.below(100) < u64::from(self.knobs.stray_percent);
                self.publish_next(ctx, topic, stray)?;
            }
            BusEvent::Burst { topic, left } => {
                if self.waiting[topic as usize].is_some() {
                    // Blocked on a full topic: the rest of the burst is not published.
                    return Ok(());
                }
                ctx.cover("bus.burst");
                self.publish_next(ctx, topic, false)?;
                self.schedule_burst(ctx, topic, left - 1);
            }
            BusEvent::PublishRetry { topic } => {
                if let Some(payload) = self.waiting[topic as usize] {
                    if self.try_publish(ctx, topic, payload, false)? {
                        self.waiting[topic as usize] = None;
                    } else {
                        ctx.schedule_in(
                            SimDuration::from_millis(self.knobs.publish_retry_ms),
                            BusEvent::PublishRetry { topic },
                        );
                    }
                }
            }
            BusEvent::HandlerDone { sub, life, ok } => {
                let s = &mut self.subs[sub as usize];
                if s.life != life || !s.up || !s.core.is_busy() {
                    return Ok(());
                }
                // A subscriber that left dropped what it held (`Leave`), so it is here.
                let Some(id) = s.id else {
                    return Ok(());
                };
                s.core.done(if ok {
                    Outcome::Handled
                } else {
                    Outcome::Failed
                });
                let mut parts = WorldParts {
                    bus: &mut self.bus,
                    id,
                    held: s.held.as_ref(),
                };
                let settled = s.core.settle(&mut parts, now);
                let held = s.held.take();
                if let (Some(settled), Some((topic, seq, redriven))) = (settled, held) {
                    match settled.outcome {
                        Outcome::Handled => {
                            self.stats.handled += 1;
                            self.checker
                                .on_handled(sub, &topic, seq, redriven, ctx.now());
                        }
                        Outcome::Failed => {
                            self.stats.failures += 1;
                            let dead = !settled.retry;
                            ctx.cover(if dead { "bus.dead_letter" } else { "bus.retry" });
                            self.checker.on_failed(sub, &topic, seq, redriven, dead)?;
                        }
                    }
                }
                self.pump(ctx, sub)?;
                self.schedule_wake(ctx);
            }
            BusEvent::Wake => {
                self.wake_at = None;
                self.pump_all(ctx)?;
                self.schedule_wake(ctx);
            }
            BusEvent::Join { sub } => {
                let topics: Vec<String> = self.knobs.subscribers[sub as usize]
                    .topics
                    .iter()
                    .map(|t| self.knobs.topics[*t].clone())
                    .collect();
                let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
                let id = self.bus.subscribe(&refs, now);
                if ctx.now() > SimTime::ZERO {
                    ctx.cover("bus.late_subscribe");
                }
                self.checker.on_join(sub, &topics);
                let s = &mut self.subs[sub as usize];
                s.id = Some(id);
                self.states
                    .push((ctx.now(), sub, if s.up { "up" } else { "crashed" }));
                if !s.up {
                    self.bus.crash(id, now);
                    self.checker.on_crash(sub);
                }
                self.pump(ctx, sub)?;
            }
            BusEvent::Leave { sub } => {
                if let Some(id) = self.subs[sub as usize].id.take() {
                    self.bus.unsubscribe(id, now);
                    ctx.cover("bus.unsubscribe");
                    self.checker.on_leave(sub);
                    self.subs[sub as usize].left = Some(id);
                    self.subs[sub as usize].core.crash();
                    self.subs[sub as usize].held = None;
                    self.states.push((ctx.now(), sub, "left"));
                    self.pump(ctx, sub)?;
                }
            }
        }
        self.check_reports()
    }

    fn on_fault(&mut self, ctx: &mut Ctx<BusEvent>, edge: FaultEdge) -> Result<(), Violation> {
        if !edge.fault.kind.is_crash() {
            return Ok(());
        }
        let Some(i) = self
            .knobs
            .subscribers
            .iter()
            .position(|s| s.name == edge.fault.target)
        else {
            return Ok(());
        };
        let now = Instant::from(ctx.now());
        let s = &mut self.subs[i];
        if edge.started && s.up {
            s.up = false;
            s.life += 1;
            s.core.crash();
            s.held = None;
            if let Some(id) = s.id {
                self.bus.crash(id, now);
                self.checker.on_crash(i as u32);
                self.states.push((ctx.now(), i as u32, "crashed"));
            }
        } else if !edge.started && !s.up {
            s.up = true;
            if let Some(id) = s.id {
                self.bus.resume(id, now);
                ctx.cover("bus.resume_after_crash");
                self.states.push((ctx.now(), i as u32, "up"));
            }
            self.pump(ctx, i as u32)?;
        }
        self.check_reports()
    }

    fn heal(&mut self, ctx: &mut Ctx<BusEvent>) -> Result<(), Violation> {
        // Dead letters get another chance once the faults are over.
        let now = Instant::from(ctx.now());
        for i in 0..self.subs.len() {
            if let Some(id) = self.subs[i].id {
                let letters = self.bus.dead_letters(id);
                if !letters.is_empty() {
                    self.checker.on_redrive(i as u32, &letters);
                    let returned = self.bus.redrive(id, now);
                    self.checker
                        .compare_redriven(i as u32, letters.len(), returned)?;
                    ctx.cover("bus.redrive");
                }
            }
        }
        self.pump_all(ctx)?;
        self.schedule_wake(ctx);
        self.check_reports()
    }

    fn is_quiescent(&self, ctx: &Ctx<BusEvent>) -> bool {
        ctx.is_healed() && self.quiet(Instant::from(ctx.now()))
    }

    fn finish(&mut self, _ctx: &mut Ctx<BusEvent>) -> Result<(), Violation> {
        let mut letters = BTreeMap::new();
        for (i, s) in self.subs.iter().enumerate() {
            if let Some(id) = s.id {
                letters.insert(i as u32, self.bus.dead_letters(id));
            }
        }
        self.stats.lag_ms_max = self.checker.lag_ms_max();
        self.checker.finish(&letters, self.bus.dead_events())
    }

    /// The run stopped before it came to rest: its longest delivery lag up to the
    /// stop, from the deliveries the checker saw.
    fn stopped(&mut self, _ctx: &Ctx<BusEvent>) {
        self.stats.lag_ms_max = self.checker.lag_ms_max();
    }
}

/// Runs `world` under `plan`, the one way the bus world is run (the harness, the tests and
/// the benches all come through here). `trace` as for [`Simulation::trace`].
pub fn run<B: EventBus>(
    mut world: BusWorld<B>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, BusWorld<B>) {
    let report = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay bus --seed {seed}")
        .run(&mut world);
    (report, world)
}
