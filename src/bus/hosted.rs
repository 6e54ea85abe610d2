//! The bus in the tokio harness (`bus-tokio`): a real async bus (faultline's
//! [`SharedBus`] with its subscriber tasks, or yours through [`AsyncBus`]) run on a
//! paused tokio runtime ([`TokioHost`]) under the seed's publishers, subscribers and
//! fault plan, the same knobs ([`BusKnobs::from_seed`]) and fault profile as the sans-IO
//! `bus` world, so a plan file means the same in both.
//!
//! - **The code under test** is built once per run, inside the runtime, by the factory
//!   handed to [`BusTokioWorld::new`] (fresh for each run of the determinism check).
//! - **The far side**: each subscriber's handler is an async endpoint that asks the
//!   [`FaultState`] when it is called: a `crash` of the subscriber fails the call (the
//!   process is down, or dies with the event in hand), `slow` adds to its processing
//!   time, `errors` fail it; on its own it fails `error_percent` of its calls. It logs
//!   every event it receives and how its call ended, with the time.
//! - **Publishers** are tasks started at the world's engine events (the sans-IO world's
//!   rates, bursts and stray topics): one at a time per topic, `publish_wait` when the
//!   knobs say publishers wait, else `publish` (a refusal is logged and counted). They
//!   log what was acknowledged, with the seq the bus gave. Subscribes, unsubscribes and
//!   the redrive are tasks too, logged when done, so the log is in the bus's own order.
//! - **Safety then liveness**: at the horizon the world redrives each subscriber's dead
//!   letters (the ones it saw go, from its own ledger), then shuts the bus down (every
//!   subscriber drains what it is owed); at rest once the shutdown has returned.
//!
//! # Invariants checked
//!
//! Black-box, from the log alone, by the sans-IO world's [`BusChecker`] and judged by
//! the policy the bus declares ([`AsyncBus::policy`]): [`bus.exactly_once`](invariants::EXACTLY_ONCE)
//! (each owed event handled once or dead-lettered, at the declared attempt: an event
//! counts as dead-lettered in the ledger at its `attempts_max`-th failure, so a bus that
//! retries it again, or skips it sooner, is caught), [`bus.fifo`](invariants::FIFO) (in
//! publish order, no gaps, the payload published, and the acknowledged seqs in order),
//! [`bus.nothing_after_unsubscribe`](invariants::NOTHING_AFTER_UNSUBSCRIBE),
//! [`bus.bounded_retention`](invariants::BOUNDED_RETENTION) (what the ledger says must be
//! retained never exceeds the capacity), [`bus.dead_events_counted`](invariants::DEAD_EVENTS_COUNTED)
//! (an event on a subscribed topic is never called a dead event) and
//! [`bus.drained`](invariants::DRAINED) (at rest, everything owed settled);
//! [`bus.conformance`](invariants::CONFORMANCE) for the reference and its mutants.
//!
//! White-box, where the bus exposes its state (faultline's does) and unless turned off
//! ([`BusTokioWorld::black_box_only`]): the retention it reports at each publish, its
//! dead letters and dead-event count at rest against the ledger, and nothing left owed
//! after its shutdown. `bus.isolation` (a judgement of the core's idleness) is not
//! checked here: the sans-IO world checks it on the same core.

use crate::bus::contract::BusPolicy;
use crate::bus::invariants::{self, BusChecker, INVARIANTS};
use crate::bus::tokio::{Event, Flaw, PublishError, SharedBus, SubscriptionHandle};
use crate::bus::world::{BusKnobs, BusStats};
use crate::bus::{BusConfig, Published};
use crate::config::ConfigError;
use crate::harness::hosted::{Rerun, TokioHost, VirtualClock, simulate_twice};
use crate::harness::{Description, Metric, Mutant, Scenario, notes};
use crate::rt::lock;
use faultline_sim::prelude::*;
use faultline_sim::{FaultState, SeedRange, TraceMode};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Coverage marks of the hosted bus world.
pub const MARKS: &[&str] = &[
    "bus.backpressure",
    "bus.full_returned",
    "bus.retry",
    "bus.dead_letter",
    "bus.redrive",
    "bus.dead_event",
    "bus.late_subscribe",
    "bus.unsubscribe",
    "bus.burst",
    "bus.crashed_handler",
];

/// How often the world looks at the log while anything is pending.
const TICK: SimDuration = SimDuration::from_millis(10);

// ----- the code under test -----

/// One event as the world's handler receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedEvent {
    /// The topic.
    pub topic: String,
    /// Its position in the topic.
    pub seq: u64,
    /// The payload (the world publishes distinct numbers).
    pub payload: u64,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt: u32,
    /// A dead letter handed back by a redrive.
    pub redriven: bool,
}

/// The future a [`Handler`] returns: `Err` when the handler failed the event.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A subscriber's handler, as the world hands it to [`AsyncBus::subscribe`].
pub type Handler = Box<dyn FnMut(HostedEvent) -> HandlerFuture + Send>;

/// Why a publish was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The topic is full (the error policy).
    Full,
    /// The bus is shut down.
    Closed,
}

/// What a publish was acknowledged with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The event's seq in its topic; `None` for a dead event (nobody subscribes).
    pub seq: Option<u64>,
    /// White-box: the most events any topic retains just after the publish, if the bus
    /// tells.
    pub retained_max: Option<usize>,
}

/// A boxed local future.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// An async event bus, as the hosted world drives it. Implement it for your own bus
/// (a thin wrapper) and hand a factory of it to [`BusTokioWorld::new`]. Every method is
/// called inside the hosted runtime.
pub trait AsyncBus: 'static {
    /// A live subscription.
    type Subscription: 'static;

    /// The policy the bus keeps (its capacity, attempts before a dead letter); the world
    /// judges it by this.
    fn policy(&self) -> BusPolicy;

    /// Subscribes `handler` to `topics` from now on; the bus calls it for each event,
    /// one at a time per subscriber.
    ///
    /// # Errors
    ///
    /// The bus's refusal, as text.
    fn subscribe(&self, topics: &[&str], handler: Handler) -> Result<Self::Subscription, String>;

    /// Ends `sub`: it gets nothing more.
    fn unsubscribe(&self, sub: &Self::Subscription);

    /// Hands `sub`'s dead letters back for delivery.
    fn redrive(&self, sub: &Self::Subscription);

    /// Publishes `payload` on `topic`; waits for space when `wait`, else refuses a full
    /// topic at once.
    fn publish(&self, topic: &str, payload: u64, wait: bool) -> LocalFuture<Result<Ack, Refused>>;

    /// Closes the bus and resolves once every subscriber has drained what it is owed.
    fn shutdown(&self) -> LocalFuture<()>;

    /// White-box: `sub`'s dead letters as (topic, seq), if the bus tells.
    fn dead_letters(&self, _sub: &Self::Subscription) -> Option<Vec<(String, u64)>> {
        None
    }

    /// White-box: events published to topics nobody subscribed to, if the bus tells.
    fn dead_events(&self) -> Option<u64> {
        None
    }

    /// White-box: events `sub` is still owed, if the bus tells.
    fn owed(&self, _sub: &Self::Subscription) -> Option<u64> {
        None
    }
}

/// faultline's [`SharedBus`] as the code under test: the reference.
pub struct TokioBus {
    bus: SharedBus<u64>,
    topics: Vec<String>,
    policy: BusPolicy,
}

impl TokioBus {
    /// The reference for `knobs`: a [`SharedBus`] with the knobs' configuration. Call it
    /// inside the runtime (the bus's clock starts there).
    ///
    /// # Errors
    ///
    /// The knobs' configuration, when invalid.
    pub fn reference(knobs: &BusKnobs) -> Result<TokioBus, ConfigError> {
        Self::build(knobs, SharedBus::new)
    }

    fn build(
        knobs: &BusKnobs,
        make: impl FnOnce(BusConfig) -> SharedBus<u64>,
    ) -> Result<TokioBus, ConfigError> {
        let config = knobs.bus_config()?;
        Ok(TokioBus {
            bus: make(config),
            topics: knobs.topics.clone(),
            policy: BusPolicy::of_config(&config),
        })
    }

    fn retained_max(&self) -> usize {
        self.topics
            .iter()
            .map(|t| self.bus.retained(t))
            .max()
            .unwrap_or(0)
    }
}

impl AsyncBus for TokioBus {
    type Subscription = SubscriptionHandle<u64>;

    fn policy(&self) -> BusPolicy {
        self.policy
    }

    fn subscribe(
        &self,
        topics: &[&str],
        mut handler: Handler,
    ) -> Result<SubscriptionHandle<u64>, String> {
        self.bus
            .subscribe(topics, move |e: Event<u64>| {
                handler(HostedEvent {
                    topic: e.topic.to_string(),
                    seq: e.seq,
                    payload: e.payload,
                    attempt: e.attempt,
                    redriven: e.redriven,
                })
            })
            .map_err(|e| e.to_string())
    }

    fn unsubscribe(&self, sub: &SubscriptionHandle<u64>) {
        sub.unsubscribe();
    }

    fn redrive(&self, sub: &SubscriptionHandle<u64>) {
        sub.redrive();
    }

    fn publish(&self, topic: &str, payload: u64, wait: bool) -> LocalFuture<Result<Ack, Refused>> {
        let me = TokioBus {
            bus: self.bus.clone(),
            topics: self.topics.clone(),
            policy: self.policy,
        };
        let topic = topic.to_string();
        Box::pin(async move {
            let result = if wait {
                me.bus.publish_wait(&topic, payload).await
            } else {
                me.bus.publish(&topic, payload)
            };
            match result {
                Ok(published) => Ok(Ack {
                    seq: match published {
                        Published::Retained { seq, .. } => Some(seq),
                        Published::DeadEvent => None,
                    },
                    retained_max: Some(me.retained_max()),
                }),
                Err(PublishError::Full(_)) => Err(Refused::Full),
                Err(PublishError::Closed) => Err(Refused::Closed),
            }
        })
    }

    fn shutdown(&self) -> LocalFuture<()> {
        let bus = self.bus.clone();
        Box::pin(async move {
            bus.shutdown().await;
        })
    }

    fn dead_letters(&self, sub: &SubscriptionHandle<u64>) -> Option<Vec<(String, u64)>> {
        Some(
            sub.dead_letters()
                .into_iter()
                .map(|d| (d.topic.to_string(), d.seq))
                .collect(),
        )
    }

    fn dead_events(&self) -> Option<u64> {
        Some(self.bus.totals().dead_events)
    }

    fn owed(&self, sub: &SubscriptionHandle<u64>) -> Option<u64> {
        Some(sub.owed())
    }
}

// ----- the far side -----

/// What the endpoints saw, in the order they saw it.
#[derive(Clone, Debug)]
enum Obs {
    Joined {
        at: SimTime,
        sub: u32,
        error: Option<String>,
    },
    Left {
        at: SimTime,
        sub: u32,
    },
    Published {
        at: SimTime,
        topic: u32,
        name: String,
        stray: bool,
        payload: u64,
        result: Result<Ack, Refused>,
    },
    Received {
        at: SimTime,
        sub: u32,
        event: HostedEvent,
    },
    Done {
        at: SimTime,
        sub: u32,
        event: HostedEvent,
        /// `None` when handled, else why it failed.
        failed: Option<&'static str>,
    },
    Redriven {
        at: SimTime,
        sub: u32,
    },
    ShutDown {
        at: SimTime,
    },
}

/// The far side's shared state: the fault plan, the log, the handlers' own randomness.
struct Far {
    faults: FaultState,
    log: Vec<Obs>,
    rng_work: SimRng,
}

type FarRef = Arc<Mutex<Far>>;

/// Subscriber `sub`'s handler: consults the faults when called and when done.
fn handler(far: FarRef, clock: VirtualClock, sub: u32, knobs: &BusKnobs) -> Handler {
    let sk = &knobs.subscribers[sub as usize];
    let name: Arc<str> = Arc::from(sk.name.as_str());
    let (lo, hi) = sk.work_ms;
    let error_percent = u64::from(sk.error_percent);
    Box::new(move |event: HostedEvent| {
        let far = Arc::clone(&far);
        let name = Arc::clone(&name);
        Box::pin(async move {
            let at = clock.now();
            let (work, alone) = {
                let mut f = lock(&far);
                f.log.push(Obs::Received {
                    at,
                    sub,
                    event: event.clone(),
                });
                let crashed = f.faults.view(at).is_crashed(&name);
                if crashed {
                    f.log.push(Obs::Done {
                        at,
                        sub,
                        event,
                        failed: Some("crashed"),
                    });
                    return Err(format!("{name} is down"));
                }
                let work = SimDuration::from_micros(f.rng_work.between(lo * 1_000, hi * 1_000));
                let alone = f.rng_work.below(100) < error_percent;
                let extra = f.faults.view(at).extra_latency(&name);
                (work + extra, alone)
            };
            tokio::time::sleep(Duration::from_nanos(work.as_nanos())).await;
            let at = clock.now();
            let mut f = lock(&far);
            let failed = if f.faults.view(at).is_crashed(&name) {
                Some("crashed")
            } else if f.faults.view(at).injects_error(&name) {
                Some("injected error")
            } else if alone {
                Some("own error")
            } else {
                None
            };
            f.log.push(Obs::Done {
                at,
                sub,
                event,
                failed,
            });
            match failed {
                None => Ok(()),
                Some(why) => Err(why.to_string()),
            }
        })
    })
}

// ----- the world -----

/// A factory of the code under test, called once per run inside the runtime.
pub type Factory<B> = Rc<dyn Fn(&BusKnobs) -> Result<B, ConfigError>>;

/// What one run holds.
struct Running<B: AsyncBus> {
    host: TokioHost,
    bus: Rc<B>,
    far: FarRef,
    subs: Rc<RefCell<Vec<Option<B::Subscription>>>>,
}

/// Where the shutdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    NotYet,
    Begun,
    Done,
}

/// The world's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusTokioEvent {
    /// The publisher of topic `topic` publishes its next event.
    Publish {
        /// Topic index.
        topic: u32,
    },
    /// The next event of a burst.
    Burst {
        /// Topic index.
        topic: u32,
        /// Events of the burst still to come, this one included.
        left: u32,
    },
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
    /// Look at the log.
    Tick,
}

/// The hosted bus world, generic over the async bus under test. See the
/// [module docs](self).
pub struct BusTokioWorld<B: AsyncBus> {
    knobs: BusKnobs,
    factory: Factory<B>,
    white_box: bool,
    conform: bool,
    run: Option<Running<B>>,
    policy: Option<BusPolicy>,
    /// The invariant checker (the sans-IO world's).
    pub checker: BusChecker,
    /// Figures of the run.
    pub stats: BusStats,
    /// Subscriber state changes: (time, subscriber, state).
    pub states: Vec<(SimTime, u32, &'static str)>,
    rng_publish: SimRng,
    rng_burst: SimRng,
    next_payload: u64,
    /// Per topic: its publisher waits for an acknowledgement.
    pending: Vec<bool>,
    /// Per subscriber, as the log says: subscribed, and left.
    joined: Vec<bool>,
    left: Vec<bool>,
    shutdown: Shutdown,
}

impl<B: AsyncBus> BusTokioWorld<B> {
    /// A world for `knobs` around the bus `factory` builds (once per run, inside the
    /// runtime), judged by the policy that bus declares.
    pub fn new(knobs: BusKnobs, factory: Factory<B>) -> Self {
        let root = SimRng::new(knobs.seed);
        let topics = knobs.topics.len();
        let subs = knobs.subscribers.len();
        BusTokioWorld {
            factory,
            white_box: true,
            conform: false,
            run: None,
            policy: None,
            checker: BusChecker::default(),
            stats: BusStats::default(),
            states: Vec::new(),
            rng_publish: root.fork("bus.publish"),
            rng_burst: root.fork("bus.burst"),
            next_payload: 0,
            pending: vec![false; topics],
            joined: vec![false; subs],
            left: vec![false; subs],
            shutdown: Shutdown::NotYet,
            knobs,
        }
    }

    /// Turns the white-box checks off: the black-box oracles alone judge the run.
    pub fn black_box_only(mut self) -> Self {
        self.white_box = false;
        self
    }

    /// Also checks [`bus.conformance`](invariants::CONFORMANCE): the declared policy is
    /// the reference's for the knobs.
    pub fn conforming_to_reference(mut self) -> Self {
        self.conform = true;
        self
    }

    /// The knobs.
    pub fn knobs(&self) -> &BusKnobs {
        &self.knobs
    }

    /// The policy the bus declared (once the run has started).
    pub fn policy(&self) -> Option<&BusPolicy> {
        self.policy.as_ref()
    }

    fn schedule_publish(&mut self, ctx: &mut Ctx<BusTokioEvent>, topic: u32) {
        let next = ctx.now() + self.knobs.publish_gap(topic, &mut self.rng_publish);
        if next < ctx.horizon() {
            ctx.schedule_at(next, BusTokioEvent::Publish { topic });
        }
    }

    fn schedule_burst(&mut self, ctx: &mut Ctx<BusTokioEvent>, topic: u32, left: u32) {
        let at = ctx.now() + self.knobs.burst_gap(&mut self.rng_burst);
        if left > 0 && at < ctx.horizon() {
            ctx.schedule_at(at, BusTokioEvent::Burst { topic, left });
        }
    }

    /// Starts a publisher task for topic `topic`, unless one waits already.
    fn publish(&mut self, ctx: &mut Ctx<BusTokioEvent>, topic: u32, stray: bool) {
        if self.pending[topic as usize] {
            ctx.cover("bus.backpressure");
            return;
        }
        let Some(run) = self.run.as_ref() else {
            return;
        };
        let name = if stray {
            format!("{}.stray", self.knobs.topics[topic as usize])
        } else {
            self.knobs.topics[topic as usize].clone()
        };
        let payload = self.next_payload;
        self.next_payload += 1;
        self.pending[topic as usize] = true;
        let fut = run.bus.publish(&name, payload, self.knobs.wait_on_full);
        let far = Arc::clone(&run.far);
        let clock = run.host.clock();
        run.host.spawn(async move {
            let result = fut.await;
            lock(&far).log.push(Obs::Published {
                at: clock.now(),
                topic,
                name,
                stray,
                payload,
                result,
            });
        });
    }

    /// Runs the runtime to now, then judges what the endpoints saw meanwhile.
    fn step(&mut self, ctx: &mut Ctx<BusTokioEvent>) -> Result<(), Violation> {
        let Some(run) = self.run.as_mut() else {
            return Ok(());
        };
        run.host.advance_to(ctx.now());
        let (log, hits) = {
            let mut far = lock(&run.far);
            (std::mem::take(&mut far.log), far.faults.take_hits())
        };
        ctx.add_fault_hits(&hits);
        for obs in log {
            self.observe(ctx, obs)?;
        }
        Ok(())
    }

    fn topic_names(&self, sub: u32) -> Vec<String> {
        self.knobs.subscribers[sub as usize]
            .topics
            .iter()
            .map(|t| self.knobs.topics[*t].clone())
            .collect()
    }

    fn observe(&mut self, ctx: &mut Ctx<BusTokioEvent>, obs: Obs) -> Result<(), Violation> {
        match obs {
            Obs::Joined { at, sub, error } => {
                let name = self.knobs.subscribers[sub as usize].name.clone();
                if let Some(e) = error {
                    ctx.record(name, format_args!("{at}: subscribe refused: {e}"));
                    return Ok(());
                }
                ctx.record(name, format_args!("{at}: subscribed"));
                if at > SimTime::ZERO {
                    ctx.cover("bus.late_subscribe");
                }
                let topics = self.topic_names(sub);
                self.checker.on_join(sub, &topics);
                self.joined[sub as usize] = true;
                self.states.push((at, sub, "up"));
            }
            Obs::Left { at, sub } => {
                let name = self.knobs.subscribers[sub as usize].name.clone();
                ctx.record(name, format_args!("{at}: unsubscribed"));
                ctx.cover("bus.unsubscribe");
                self.checker.on_leave(sub);
                self.left[sub as usize] = true;
                self.states.push((at, sub, "left"));
            }
            Obs::Published {
                at,
                topic,
                name,
                stray,
                payload,
                result,
            } => {
                self.pending[topic as usize] = false;
                let t = topic as usize;
                let subscribed = !stray
                    && self
                        .knobs
                        .subscribers
                        .iter()
                        .enumerate()
                        .any(|(i, s)| self.joined[i] && !self.left[i] && s.topics.contains(&t));
                match result {
                    Ok(ack) => {
                        ctx.record(
                            "publisher",
                            format_args!("{at}: {name} <- event {payload} acked as {:?}", ack.seq),
                        );
                        match ack.seq {
                            Some(_) => self.stats.published += 1,
                            None => {
                                ctx.cover("bus.dead_event");
                                self.stats.dead_events += 1;
                            }
                        }
                        let reported = ack.retained_max.filter(|_| self.white_box);
                        if let Some(r) = reported {
                            self.stats.retained_max = self.stats.retained_max.max(r);
                        }
                        self.checker
                            .on_published_seen(&name, ack.seq, payload, at, subscribed, reported)?;
                    }
                    Err(refused) => {
                        ctx.record(
                            "publisher",
                            format_args!("{at}: {name} <- event {payload} refused: {refused:?}"),
                        );
                        if refused == Refused::Full {
                            ctx.cover("bus.full_returned");
                            self.stats.refused += 1;
                            self.checker.full += 1;
                        }
                    }
                }
            }
            Obs::Received { at, sub, event } => {
                let name = self.knobs.subscribers[sub as usize].name.clone();
                ctx.record(
                    name,
                    format_args!(
                        "{at}: receives {}#{} (payload {}) attempt {}{}",
                        event.topic,
                        event.seq,
                        event.payload,
                        event.attempt,
                        if event.redriven { " redriven" } else { "" }
                    ),
                );
                if event.redriven {
                    ctx.cover("bus.redrive");
                } else if event.attempt > 1 {
                    ctx.cover("bus.retry");
                }
                self.checker.on_delivery(
                    sub,
                    self.left[sub as usize],
                    &event.topic,
                    event.seq,
                    event.payload,
                    event.redriven,
                )?;
            }
            Obs::Done {
                at,
                sub,
                event,
                failed,
            } => {
                let name = self.knobs.subscribers[sub as usize].name.clone();
                ctx.record(
                    name,
                    format_args!(
                        "{at}: {}#{} -> {}",
                        event.topic,
                        event.seq,
                        failed.unwrap_or("ok")
                    ),
                );
                if self.left[sub as usize] {
                    // The bus ignores what a handler running at unsubscribe does.
                    return Ok(());
                }
                match failed {
                    None => {
                        self.stats.handled += 1;
                        self.checker
                            .on_handled(sub, &event.topic, event.seq, event.redriven, at);
                    }
                    Some(why) => {
                        if why == "crashed" {
                            ctx.cover("bus.crashed_handler");
                        }
                        self.stats.failures += 1;
                        // The ledger's own call, by the declared policy: dead at the
                        // attempts_max-th failure; a redriven letter is not retried.
                        let failures = self
                            .checker
                            .tracks
                            .get(&(sub, event.topic.clone()))
                            .map_or(0, |t| t.failures);
                        let dead = event.redriven
                            || failures.saturating_add(1) >= self.checker.attempts_max;
                        if dead && !event.redriven {
                            ctx.cover("bus.dead_letter");
                        }
                        self.checker.on_failed(
                            sub,
                            &event.topic,
                            event.seq,
                            event.redriven,
                            dead,
                        )?;
                    }
                }
            }
            Obs::Redriven { at, sub } => {
                let letters: Vec<(String, u64)> = self
                    .checker
                    .tracks
                    .iter()
                    .filter(|((s, _), _)| *s == sub)
                    .flat_map(|((_, t), track)| track.dead.iter().map(|seq| (t.clone(), *seq)))
                    .collect();
                let name = self.knobs.subscribers[sub as usize].name.clone();
                ctx.record(
                    name,
                    format_args!("{at}: {} dead letters redriven", letters.len()),
                );
                self.checker.on_redrive(sub, &letters);
            }
            Obs::ShutDown { at } => {
                ctx.record("bus", format_args!("{at}: shut down"));
                self.shutdown = Shutdown::Done;
            }
        }
        Ok(())
    }

    fn at_rest(&self) -> bool {
        self.shutdown == Shutdown::Done && self.pending.iter().all(|p| !p)
    }
}

impl<B: AsyncBus> Rerun for BusTokioWorld<B> {
    fn fresh(&self) -> Self {
        let mut w = BusTokioWorld::new(self.knobs.clone(), Rc::clone(&self.factory));
        w.white_box = self.white_box;
        w.conform = self.conform;
        w
    }
}

impl<B: AsyncBus> World for BusTokioWorld<B> {
    type Event = BusTokioEvent;

    fn marks(&self) -> Vec<&'static str> {
        MARKS.to_vec()
    }

    fn start(&mut self, ctx: &mut Ctx<BusTokioEvent>) -> Result<(), Violation> {
        let setup = |e: &dyn std::fmt::Display| Violation::new("sim.setup", e.to_string());
        let mut host = TokioHost::new().map_err(|e| setup(&e))?;
        let factory = Rc::clone(&self.factory);
        let knobs = self.knobs.clone();
        let bus = host
            .block_on(async move { factory(&knobs) })
            .map_err(|e| setup(&e))?;
        let policy = bus.policy();
        if self.conform {
            let reference = self.knobs.reference_policy().map_err(|e| setup(&e))?;
            if policy != reference {
                return Err(Violation::new(
                    invariants::CONFORMANCE,
                    format!(
                        "the bus declares {policy:?}, but the reference's settings for these knobs are {reference:?}"
                    ),
                ));
            }
        }
        self.checker = BusChecker::for_policy(&policy);
        self.policy = Some(policy);
        let far = Far {
            faults: FaultState::new(ctx.plan().clone(), ctx.rng().fork("hosted.faults")),
            log: Vec::new(),
            rng_work: SimRng::new(self.knobs.seed).fork("bus.work"),
        };
        self.run = Some(Running {
            host,
            bus: Rc::new(bus),
            far: Arc::new(Mutex::new(far)),
            subs: Rc::new(RefCell::new(
                (0..self.knobs.subscribers.len()).map(|_| None).collect(),
            )),
        });
        for (at, sub, joins) in self.knobs.membership() {
            let event = if joins {
                BusTokioEvent::Join { sub }
            } else {
                BusTokioEvent::Leave { sub }
            };
            ctx.schedule_at(at, event);
        }
        for t in 0..self.knobs.topics.len() {
            self.schedule_publish(ctx, t as u32);
        }
        ctx.schedule_in(TICK, BusTokioEvent::Tick);
        Ok(())
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<BusTokioEvent>,
        event: BusTokioEvent,
    ) -> Result<(), Violation> {
        self.step(ctx)?;
        match event {
            BusTokioEvent::Publish { topic } => {
                self.schedule_publish(ctx, topic);
                if self.rng_burst.below(100) < u64::from(self.knobs.burst_percent) {
                    let len = self
                        .rng_burst
                        .between(1, u64::from(self.knobs.burst_len_max));
                    self.schedule_burst(ctx, topic, len as u32);
                }
                let stray = self.rng_publish.below(100) < u64::from(self.knobs.stray_percent);
                self.publish(ctx, topic, stray);
            }
            BusTokioEvent::Burst { topic, left } => {
                if !self.pending[topic as usize] {
                    ctx.cover("bus.burst");
                    self.publish(ctx, topic, false);
                    self.schedule_burst(ctx, topic, left - 1);
                }
            }
            BusTokioEvent::Join { sub } => {
                let Some(run) = self.run.as_ref() else {
                    return Ok(());
                };
                let topics = self.topic_names(sub);
                let handler = handler(Arc::clone(&run.far), run.host.clock(), sub, &self.knobs);
                let (bus, far, subs, clock) = (
                    Rc::clone(&run.bus),
                    Arc::clone(&run.far),
                    Rc::clone(&run.subs),
                    run.host.clock(),
                );
                run.host.spawn(async move {
                    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
                    let error = match bus.subscribe(&refs, handler) {
                        Ok(handle) => {
                            subs.borrow_mut()[sub as usize] = Some(handle);
                            None
                        }
                        Err(e) => Some(e),
                    };
                    lock(&far).log.push(Obs::Joined {
                        at: clock.now(),
                        sub,
                        error,
                    });
                });
            }
            BusTokioEvent::Leave { sub } => {
                let Some(run) = self.run.as_ref() else {
                    return Ok(());
                };
                let (bus, far, subs, clock) = (
                    Rc::clone(&run.bus),
                    Arc::clone(&run.far),
                    Rc::clone(&run.subs),
                    run.host.clock(),
                );
                run.host.spawn(async move {
                    let handle = subs.borrow_mut()[sub as usize].take();
                    if let Some(handle) = handle {
                        bus.unsubscribe(&handle);
                        lock(&far).log.push(Obs::Left {
                            at: clock.now(),
                            sub,
                        });
                    }
                });
            }
            BusTokioEvent::Tick => {
                if !(ctx.is_healed() && self.at_rest()) {
                    ctx.schedule_in(TICK, BusTokioEvent::Tick);
                }
            }
        }
        Ok(())
    }

    fn heal(&mut self, ctx: &mut Ctx<BusTokioEvent>) -> Result<(), Violation> {
        self.step(ctx)?;
        let Some(run) = self.run.as_ref() else {
            return Ok(());
        };
        // Dead letters get another chance once the faults are over; then the bus shuts
        // down, draining what every subscriber is owed.
        let (bus, far, subs, clock) = (
            Rc::clone(&run.bus),
            Arc::clone(&run.far),
            Rc::clone(&run.subs),
            run.host.clock(),
        );
        run.host.spawn(async move {
            let n = subs.borrow().len();
            for sub in 0..n {
                let subs = subs.borrow();
                if let Some(handle) = subs[sub].as_ref() {
                    bus.redrive(handle);
                    lock(&far).log.push(Obs::Redriven {
                        at: clock.now(),
                        sub: sub as u32,
                    });
                }
            }
            bus.shutdown().await;
            lock(&far).log.push(Obs::ShutDown { at: clock.now() });
        });
        self.shutdown = Shutdown::Begun;
        ctx.schedule_in(TICK, BusTokioEvent::Tick);
        Ok(())
    }

    fn is_quiescent(&self, ctx: &Ctx<BusTokioEvent>) -> bool {
        ctx.is_healed() && self.at_rest()
    }

    fn finish(&mut self, _ctx: &mut Ctx<BusTokioEvent>) -> Result<(), Violation> {
        let mut letters = std::collections::BTreeMap::new();
        let mut bus_dead_events = self.checker.dead_events;
        if let Some(run) = self.run.as_ref() {
            let subs = run.subs.borrow();
            for (i, slot) in subs.iter().enumerate() {
                let Some(handle) = slot.as_ref() else {
                    continue;
                };
                let sub = i as u32;
                let own: Vec<(String, u64)> = self
                    .checker
                    .tracks
                    .iter()
                    .filter(|((s, _), _)| *s == sub)
                    .flat_map(|((_, t), track)| track.dead.iter().map(|q| (t.clone(), *q)))
                    .collect();
                let told = run.bus.dead_letters(handle).filter(|_| self.white_box);
                letters.insert(sub, told.unwrap_or(own));
                if self.white_box
                    && let Some(owed) = run.bus.owed(handle)
                    && owed > 0
                {
                    return Err(Violation::new(
                        invariants::DRAINED,
                        format!(
                            "after its shutdown the bus says subscriber {sub} is still owed {owed} events"
                        ),
                    ));
                }
            }
            if self.white_box
                && let Some(n) = run.bus.dead_events()
            {
                bus_dead_events = n;
            }
        }
        self.stats.lag_ms_max = self.checker.lag_ms_max();
        self.checker.finish(&letters, bus_dead_events)
    }

    /// The run stopped before it came to rest: its longest delivery lag up to the
    /// stop, from the deliveries the checker saw.
    fn stopped(&mut self, _ctx: &Ctx<BusTokioEvent>) {
        self.stats.lag_ms_max = self.checker.lag_ms_max();
    }
}

/// Runs `world` under `plan` twice (the determinism check), the one way the hosted bus
/// world is run.
pub fn run<B: AsyncBus>(
    world: BusTokioWorld<B>,
    plan: FaultPlan,
    trace: TraceMode,
) -> (RunReport, BusTokioWorld<B>) {
    let sim = Simulation::new(world.knobs().seed)
        .plan(plan)
        .trace(trace)
        .events_max(5_000_000)
        .liveness_max(SimDuration::from_secs(3_600))
        .replay_hint("cargo run --release -- replay bus-tokio --seed {seed}");
    simulate_twice(&sim, world)
}

// ----- the scenario -----

/// The world the scenario runs: faultline's adapter (or a mutant of it).
pub type ReferenceWorld = BusTokioWorld<TokioBus>;

fn flawed(knobs: &BusKnobs, flaw: Flaw) -> Result<ReferenceWorld, ConfigError> {
    knobs.bus_config()?;
    let factory: Factory<TokioBus> = Rc::new(move |k: &BusKnobs| {
        TokioBus::build(k, |config| SharedBus::with_flaw(config, flaw))
    });
    Ok(BusTokioWorld::new(knobs.clone(), factory).conforming_to_reference())
}

/// The async mutants: [`SharedBus`] with one defect in its tokio code.
pub const MUTANTS: &[Mutant<BusTokioPattern>] = &[
    Mutant::new(
        "drop-in-hand-on-shutdown",
        "a subscriber task woken by shutdown while its handler runs drops the event in hand and ends",
        invariants::DRAINED,
        |k| flawed(k, Flaw::DropInHandOnShutdown),
    ),
    Mutant::new(
        "ack-before-enqueue",
        "publish acknowledges an event with the topic's next seq before enqueueing it; a full topic then drops it",
        invariants::FIFO,
        |k| flawed(k, Flaw::AckBeforeEnqueue),
    ),
    Mutant::new(
        "skip-retry-after-error",
        "the subscriber task acknowledges an event its handler failed instead of retrying it",
        invariants::EXACTLY_ONCE,
        |k| flawed(k, Flaw::SkipRetryAfterError),
    ),
];

/// `bus-tokio`: faultline's [`SharedBus`] and its subscriber tasks, real tokio code, in
/// the bus world.
#[derive(Clone, Copy, Debug, Default)]
pub struct BusTokioPattern;

fn lag_max<B: AsyncBus>(w: &BusTokioWorld<B>, sub: u32) -> Option<f64> {
    w.checker
        .lags
        .get(&sub)
        .and_then(|l| l.iter().map(|(_, v)| *v).reduce(f64::max))
}

impl Scenario for BusTokioPattern {
    type Knobs = BusKnobs;
    type World = ReferenceWorld;

    const NAME: &'static str = "bus-tokio";
    const ABOUT: &'static str =
        "the tokio event bus (SharedBus and its subscriber tasks) run in the bus world";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::bus::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &[
        INVARIANTS[0],
        INVARIANTS[1],
        INVARIANTS[2],
        INVARIANTS[3],
        INVARIANTS[5],
        INVARIANTS[6],
        INVARIANTS[7],
    ];
    const METRICS: &'static [Metric<ReferenceWorld>] = &[
        Metric {
            name: "handler failures",
            unit: "count",
            value: |w| Some(w.stats.failures as f64),
        },
        Metric {
            name: "events handled",
            unit: "count",
            value: |w| Some(w.stats.handled as f64),
        },
        Metric {
            name: "longest delivery lag of sub-0",
            unit: "ms",
            value: |w| lag_max(w, 0),
        },
        Metric {
            name: "longest delivery lag of sub-1",
            unit: "ms",
            value: |w| lag_max(w, 1),
        },
    ];
    const MUTANTS: &'static [Mutant<Self>] = MUTANTS;
    /// Each run is run twice (the determinism check) on a tokio runtime.
    const DEFAULT_SEEDS: SeedRange = SeedRange { start: 0, end: 300 };
    const KNOB_FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("backoff_ms", &["base_ms", "cap_ms"])];

    fn seed_knobs(&self, seed: u64) -> BusKnobs {
        BusKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &BusKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &BusKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &BusKnobs) -> Result<ReferenceWorld, ConfigError> {
        flawed(knobs, Flaw::None)
    }

    fn simulate(
        &self,
        world: ReferenceWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, ReferenceWorld) {
        run(world, plan, trace)
    }

    fn describe(&self, _knobs: &BusKnobs, _report: &RunReport, w: &ReferenceWorld) -> Description {
        let s = &w.stats;
        let capacity = w.policy().map_or(0, |p| p.capacity);
        Description {
            notes: notes(Self::INVARIANTS, |name| match name {
                invariants::BOUNDED_RETENTION => {
                    format!(
                        "at most {} events retained; capacity {capacity}",
                        s.retained_max
                    )
                }
                invariants::DRAINED => format!(
                    "{} events handled, {} handler failures",
                    s.handled, s.failures
                ),
                _ => String::new(),
            }),
            figures: vec![
                ("events published".into(), s.published.to_string()),
                ("events handled".into(), s.handled.to_string()),
                ("handler failures".into(), s.failures.to_string()),
                ("publishes refused (BusFull)".into(), s.refused.to_string()),
                ("dead events".into(), s.dead_events.to_string()),
                (
                    "longest delivery lag".into(),
                    format!("{:.1} ms", s.lag_ms_max),
                ),
            ],
            timeline: Default::default(),
        }
    }
}

/// Any [`AsyncBus`] in the hosted bus world, for a [`Plugin`](crate::harness::Plugin)
/// of it (the metrics and the view are the reference world's, so a plug-in's sweep shows
/// the engine's figures only).
impl<B: AsyncBus> crate::harness::Host<BusTokioWorld<B>> for BusTokioPattern {
    fn simulate_in(
        &self,
        world: BusTokioWorld<B>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, BusTokioWorld<B>) {
        run(world, plan, trace)
    }
}
