//! The sans-IO event bus core: [`Bus`].
//!
//! Events of a topic form an ordered sequence (seq 0, 1, 2, ...). Each subscriber has
//! its own cursor per topic and gets every event published on its topics after it
//! subscribed, one at a time per topic, in order. Retained events are bounded per
//! topic by the capacity and kept only while some subscriber still needs them; when a
//! topic is full, [`publish`](Bus::publish) says [`BusFull`] and the publisher's policy
//! decides (the tokio adapter waits for space; the caller may also give up). Nothing a
//! subscriber is owed is ever dropped without a trace.
//!
//! Call order, per subscriber: [`next_delivery`](Bus::next_delivery) hands out the next
//! event (or a due retry); the handler runs; then [`ack`](Bus::ack) (done) or
//! [`nack`](Bus::nack) (failed: retried after a backoff, dead-lettered after
//! `attempts_max`). A subscriber that crashes ([`crash`](Bus::crash)) loses what it had
//! in hand and, after [`resume`](Bus::resume), gets it again from its last
//! acknowledged position, marked as a redelivery. Time is passed in; the core never
//! reads a clock.
//!
//! ```
//! use faultline::bus::{Bus, BusConfig};
//! use faultline::clock::Instant;
//!
//! let mut bus: Bus<&str> = Bus::new(BusConfig::builder().capacity(8).build()?);
//! let t = Instant::ZERO;
//! let email = bus.subscribe(&["order.created"], t);
//! bus.publish("order.created", "order 1", t)?;
//! bus.publish("order.created", "order 2", t)?;
//! let d = bus.next_delivery(email, t).expect("owed an event");
//! assert_eq!((d.seq, d.payload), (0, "order 1"));
//! bus.ack(&d.token, t);
//! assert_eq!(bus.next_delivery(email, t).map(|d| d.payload), Some("order 2"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::retry::{Backoff, RetryPolicy};
use crate::splitmix::SplitMix64;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A subscriber's handle.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SubscriberId(pub u32);

/// A topic's handle within one bus; [`Bus::topic_name`] gives its name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TopicId(pub u32);

/// A topic that is full: the publisher must wait for space or give up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("bus full: topic `{topic}` retains {capacity} events that a subscriber still needs")]
pub struct BusFull {
    /// The topic.
    pub topic: String,
    /// Its capacity.
    pub capacity: usize,
}

/// A validated bus configuration; build it with [`BusConfig::builder`].
///
/// Serde: an object keyed by the builder's methods, read through the builder (a bad
/// value is refused with its [`ConfigError`], an unknown key too, a key left out keeps
/// the default), e.g. `{"capacity": 64, "backoff": {"base": {"secs": 0, "nanos":
/// 50000000}, "cap": {"secs": 5, "nanos": 0}}}`; see
/// [`config`](crate::config#reading-a-configuration-from-a-file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusConfig {
    capacity: usize,
    attempts_max: u32,
    backoff: Backoff,
    dead_letters_max: usize,
}

impl BusConfig {
    /// Defaults: 1,024 retained events per topic, 5 attempts per event, backoff from
    /// 100 ms up to 10 s, 10,000 dead letters per subscriber.
    pub fn builder() -> BusConfigBuilder {
        BusConfigBuilder {
            capacity: 1_024,
            attempts_max: 5,
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            dead_letters_max: 10_000,
        }
    }
    /// Most events a topic retains.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Attempts per event and subscriber before it is dead-lettered.
    pub fn attempts_max(&self) -> u32 {
        self.attempts_max
    }
    /// The retry backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
    /// Most dead letters kept per subscriber; past it, the subscriber's delivery stops
    /// (and the topic fills up, so publishers are told) rather than drop anything.
    pub fn dead_letters_max(&self) -> usize {
        self.dead_letters_max
    }
}

/// Builder for [`BusConfig`].
#[derive(Clone, Debug)]
pub struct BusConfigBuilder {
    capacity: usize,
    attempts_max: u32,
    backoff: (Duration, Duration),
    dead_letters_max: usize,
}

impl BusConfigBuilder {
    /// Most events a topic retains (1 to 1,000,000). Default: 1,024.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }
    /// Attempts per event before it is dead-lettered (1 to 100). Default: 5.
    pub fn attempts_max(mut self, n: u32) -> Self {
        self.attempts_max = n;
        self
    }
    /// Retry backoff: full jitter up to `min(cap, base * 2^(n-1))`. Default: 100 ms up
    /// to 10 s.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
        self
    }
    /// Most dead letters kept per subscriber (at least 1); past it, the subscriber's
    /// delivery stops rather than drop anything. Default: 10,000.
    pub fn dead_letters_max(mut self, n: usize) -> Self {
        self.dead_letters_max = n;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<BusConfig, ConfigError> {
        if self.capacity == 0 || self.capacity > 1_000_000 {
            return Err(ConfigError::new(
                "capacity",
                format!("must be 1 to 1000000 events, got {}", self.capacity),
            ));
        }
        if self.dead_letters_max == 0 {
            return Err(ConfigError::new(
                "dead_letters_max",
                "must be at least 1, got 0",
            ));
        }
        let retry = RetryPolicy::new(
            self.attempts_max,
            Backoff::new(self.backoff.0, self.backoff.1)?,
        )?;
        Ok(BusConfig {
            capacity: self.capacity,
            attempts_max: retry.attempts_max(),
            backoff: retry.backoff(),
            dead_letters_max: self.dead_letters_max,
        })
    }
}

/// Identifies a delivery, to [`ack`](Bus::ack) or [`nack`](Bus::nack) it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryToken {
    subscriber: SubscriberId,
    topic: u32,
    seq: u64,
    redrive: bool,
    epoch: u64,
}

/// One event handed to a subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<P> {
    /// Hand this back with `ack` or `nack`.
    pub token: DeliveryToken,
    /// The topic ([`Bus::topic_name`] gives its name; a copy, so handing it out costs
    /// nothing).
    pub topic: TopicId,
    /// The event's position in its topic.
    pub seq: u64,
    /// The event.
    pub payload: P,
    /// 1 for the first attempt, then 2, 3, ...
    pub attempt: u32,
    /// True when the subscriber had this event in hand before it crashed (it may have
    /// acted on it already: handle by `seq`).
    pub redelivery: bool,
    /// True for a dead letter handed back by [`redrive`](Bus::redrive).
    pub redriven: bool,
}

/// An event a subscriber could not handle within `attempts_max`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter<P> {
    /// The topic's name.
    pub topic: Arc<str>,
    /// The event's position in its topic.
    pub seq: u64,
    /// The event.
    pub payload: P,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up on.
    pub at: Instant,
}

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Published {
    /// Retained for `subscribers` subscribers at position `seq`.
    Retained {
        /// The event's position in its topic.
        seq: u64,
        /// How many subscribers are owed it.
        subscribers: usize,
    },
    /// Nobody subscribes to the topic: counted as a dead event, not retained.
    DeadEvent,
}

/// Counters since the bus was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusTotals {
    /// Events published and retained.
    pub published: u64,
    /// Events published to a topic nobody subscribes to.
    pub dead_events: u64,
    /// Publishes refused because the topic was full.
    pub full: u64,
    /// Deliveries handed out (attempts, redeliveries and redrives included).
    pub handed_out: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters redriven.
    pub redriven: u64,
    /// Deliveries lost in a crash and handed out again.
    pub redelivered: u64,
}

#[derive(Clone, Debug)]
struct Topic<P> {
    name: Arc<str>,
    /// Retained events; `log[0]` has seq `first_seq`.
    log: VecDeque<P>,
    first_seq: u64,
    /// Subscribers of this topic.
    subscribers: Vec<SubscriberId>,
    /// How many subscribers settled (acked or dead-lettered) the event at `first_seq`:
    /// once all have, the log is trimmed (amortised; a full topic trims first too).
    settled_first: usize,
}

impl<P> Topic<P> {
    fn next_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hand {
    /// Nothing in hand: the next event is at the cursor.
    Idle,
    /// The event at the cursor is with the handler.
    Out { attempt: u32 },
    /// The event at the cursor failed `attempt` times; retry at `at`.
    Waiting { attempt: u32, at: Instant },
}

#[derive(Clone, Debug)]
struct Cursor {
    topic: u32,
    /// Next seq to acknowledge: everything before it is acked or dead-lettered.
    next: u64,
    hand: Hand,
    /// The event at the cursor was in hand when the subscriber crashed.
    lost_in_crash: bool,
}

#[derive(Clone, Debug)]
struct Subscriber<P> {
    cursors: Vec<Cursor>,
    /// Round-robin position over cursors.
    turn: usize,
    up: bool,
    dead_letters: Vec<DeadLetter<P>>,
    redrive: VecDeque<DeadLetter<P>>,
    redrive_out: bool,
    /// Incremented on crash: deliveries from before a crash are stale.
    epoch: u64,
}

/// A deliberate defect, set only by [`crate::bus::mutants`]. The reference has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    None,
    /// When a topic is full, overwrite the oldest event (tokio broadcast's lagging).
    LossyRing,
    /// A failed event is acknowledged as if handled.
    SwallowErrors,
    /// One global cursor: nobody gets an event until the slowest has it.
    SlowestBlocksAll,
    /// After a crash, resume from the newest event, not the last acknowledged.
    ResumeFromLatest,
    /// Unsubscribe does nothing.
    IgnoreUnsubscribe,
    /// The capacity is not enforced.
    Unbounded,
    /// Events to a topic nobody subscribes to vanish uncounted.
    UncountedDeadEvents,
    /// A failed event is never retried (nor dead-lettered): its topic stalls.
    ForgetRetries,
    /// The lag counts only the events not yet handed out: the one in hand, or waiting
    /// for its retry, counts as settled.
    LagSkipsInHand,
    /// Events to a topic nobody subscribes to are kept in its log and reported as
    /// retained (and not counted as dead events).
    RetainUnsubscribed,
    /// The bus behaves as the reference, but its declared policy (read by the mutant's
    /// [`EventBus::policy`](crate::bus::contract::EventBus::policy)) claims one attempt
    /// more than it makes.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    DeclaresMoreAttempts,
}

/// The event bus. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Bus<P> {
    config: BusConfig,
    topics: Vec<Topic<P>>,
    topic_index: BTreeMap<String, u32>,
    subscribers: Vec<Option<Subscriber<P>>>,
    totals: BusTotals,
    rng: SplitMix64,
    pub(crate) flaw: Flaw,
}

impl<P: Clone> Bus<P> {
    /// An empty bus.
    pub fn new(config: BusConfig) -> Self {
        Bus {
            config,
            topics: Vec::new(),
            topic_index: BTreeMap::new(),
            subscribers: Vec::new(),
            totals: BusTotals::default(),
            rng: SplitMix64(0x6275_735f_6a69_7474),
            flaw: Flaw::None,
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Counters since the start.
    pub fn totals(&self) -> BusTotals {
        self.totals
    }

    /// Events `topic` retains now.
    pub fn retained(&self, topic: &str) -> usize {
        self.topic_index
            .get(topic)
            .and_then(|i| self.topics.get(*i as usize))
            .map_or(0, |t| t.log.len())
    }

    /// The largest number of events any topic retains now.
    pub fn retained_max(&self) -> usize {
        self.topics.iter().map(|t| t.log.len()).max().unwrap_or(0)
    }

    /// The name of topic `id`.
    pub fn topic_name(&self, id: TopicId) -> &str {
        self.topics.get(id.0 as usize).map_or("", |t| &t.name)
    }

    /// The name of topic `id`, shared.
    pub fn topic_arc(&self, id: TopicId) -> Arc<str> {
        self.topics
            .get(id.0 as usize)
            .map_or_else(|| Arc::from(""), |t| t.name.clone())
    }

    /// The seq the next event of `topic` will get.
    pub fn next_seq(&self, topic: &str) -> u64 {
        self.topic_index
            .get(topic)
            .and_then(|i| self.topics.get(*i as usize))
            .map_or(0, |t| t.next_seq())
    }

    /// True while `id` is subscribed.
    pub fn is_subscribed(&self, id: SubscriberId) -> bool {
        self.sub(id).is_some()
    }

    /// True when a publish on `topic` now would be a dead event (nobody subscribes).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn publish_would_be_dead(&self, topic: &str) -> bool {
        self.topic_index
            .get(topic)
            .and_then(|i| self.topics.get(*i as usize))
            .is_none_or(|t| t.subscribers.is_empty())
    }

    /// The names of the topics `id` subscribes to.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn topics_of(&self, id: SubscriberId) -> Vec<String> {
        self.sub(id).map_or_else(Vec::new, |s| {
            s.cursors
                .iter()
                .map(|c| self.topic_name(TopicId(c.topic)).to_string())
                .collect()
        })
    }

    /// `id`'s dead letters.
    pub fn dead_letters(&self, id: SubscriberId) -> &[DeadLetter<P>] {
        self.sub(id).map_or(&[], |s| s.dead_letters.as_slice())
    }

    /// Events `id` is owed on `topic` and has not acknowledged (its lag).
    pub fn lag(&self, id: SubscriberId, topic: &str) -> u64 {
        let Some(&t) = self.topic_index.get(topic) else {
            return 0;
        };
        let Some(s) = self.sub(id) else { return 0 };
        let next = self.topics[t as usize].next_seq();
        s.cursors.iter().find(|c| c.topic == t).map_or(0, |c| {
            let in_hand = self.flaw == Flaw::LagSkipsInHand && c.hand != Hand::Idle;
            next.saturating_sub(c.next + u64::from(in_hand))
        })
    }

    /// When the next retry is due, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.subscribers
            .iter()
            .flatten()
            .filter(|s| s.up)
            .flat_map(|s| s.cursors.iter())
            .filter_map(|c| match c.hand {
                Hand::Waiting { at, .. } => Some(at),
                _ => None,
            })
            .min()
    }

    /// When the next retry after `now` is due, if any (retries already due are handed
    /// out by [`next_delivery`](Bus::next_delivery) as soon as their subscriber asks).
    #[must_use]
    pub fn poll_timeout_after(&self, now: Instant) -> Option<Instant> {
        self.subscribers
            .iter()
            .flatten()
            .filter(|s| s.up)
            .flat_map(|s| s.cursors.iter())
            .filter_map(|c| match c.hand {
                Hand::Waiting { at, .. } if at > now => Some(at),
                _ => None,
            })
            .min()
    }

    // ----- commands -----

    /// Subscribes to `topics` from now on: the subscriber is owed every event published
    /// on them after this call.
    pub fn subscribe(&mut self, topics: &[&str], now: Instant) -> SubscriberId {
        let _ = now;
        let id = SubscriberId(self.subscribers.len() as u32);
        let mut cursors = Vec::new();
        for name in topics {
            let t = self.topic(name);
            if cursors.iter().any(|c: &Cursor| c.topic == t) {
                continue;
            }
            let topic = &mut self.topics[t as usize];
            topic.subscribers.push(id);
            if topic.next_seq() > topic.first_seq {
                // Already past the oldest retained event.
                topic.settled_first += 1;
            }
            cursors.push(Cursor {
                topic: t,
                next: topic.next_seq(),
                hand: Hand::Idle,
                lost_in_crash: false,
            });
        }
        self.subscribers.push(Some(Subscriber {
            cursors,
            turn: 0,
            up: true,
            dead_letters: Vec::new(),
            redrive: VecDeque::new(),
            redrive_out: false,
            epoch: 0,
        }));
        id
    }

    /// Stops delivery to `id` at once; its retained events are released.
    pub fn unsubscribe(&mut self, id: SubscriberId) -> bool {
        if self.flaw == Flaw::IgnoreUnsubscribe {
            return true;
        }
        let Some(slot) = self.subscribers.get_mut(id.0 as usize) else {
            return false;
        };
        let Some(sub) = slot.take() else {
            return false;
        };
        for c in &sub.cursors {
            let topic = &mut self.topics[c.topic as usize];
            topic.subscribers.retain(|s| *s != id);
            self.trim(c.topic);
        }
        true
    }

    /// Publishes `payload` on `topic`.
    pub fn publish(&mut self, topic: &str, payload: P, now: Instant) -> Result<Published, BusFull> {
        match self.publish_or_return(topic, payload, now) {
            Ok((_, published)) => Ok(published),
            Err((full, _payload)) => Err(full),
        }
    }

    /// [`publish`](Bus::publish), with the topic's id when it is accepted and the
    /// payload back when it is refused (so a publisher that waits for space need not
    /// clone it to try again). Crate-private: the tokio adapter's publish path.
    pub(crate) fn publish_or_return(
        &mut self,
        topic: &str,
        payload: P,
        now: Instant,
    ) -> Result<(TopicId, Published), (BusFull, P)> {
        let _ = now;
        let t = self.topic(topic);
        if self.topics[t as usize].subscribers.is_empty() && self.flaw != Flaw::RetainUnsubscribed {
            if self.flaw != Flaw::UncountedDeadEvents {
                self.totals.dead_events += 1;
            }
            return Ok((TopicId(t), Published::DeadEvent));
        }
        if self.topics[t as usize].log.len() >= self.config.capacity {
            self.trim(t);
        }
        let capacity = self.config.capacity;
        let topic_ref = &mut self.topics[t as usize];
        if topic_ref.log.len() >= capacity && self.flaw != Flaw::Unbounded {
            if self.flaw == Flaw::LossyRing {
                // The defect: the oldest event is overwritten, lagging subscribers skip it.
                topic_ref.log.pop_front();
                topic_ref.first_seq += 1;
                let first = topic_ref.first_seq;
                let subs = topic_ref.subscribers.clone();
                for s in subs {
                    if let Some(Some(sub)) = self.subscribers.get_mut(s.0 as usize) {
                        for c in sub.cursors.iter_mut().filter(|c| c.topic == t) {
                            if c.next < first {
                                c.next = first;
                                c.hand = Hand::Idle;
                            }
                        }
                    }
                }
            } else {
                self.totals.full += 1;
                return Err((
                    BusFull {
                        topic: topic.to_string(),
                        capacity,
                    },
                    payload,
                ));
            }
        }
        let topic_ref = &mut self.topics[t as usize];
        let seq = topic_ref.next_seq();
        topic_ref.log.push_back(payload);
        self.totals.published += 1;
        Ok((
            TopicId(t),
            Published::Retained {
                seq,
                subscribers: topic_ref.subscribers.len(),
            },
        ))
    }

    /// The next event for `id` now, if any: a redriven dead letter first, then, taking
    /// topics in turn, a due retry or the next event of a topic with nothing in hand.
    pub fn next_delivery(&mut self, id: SubscriberId, now: Instant) -> Option<Delivery<P>> {
        let flaw = self.flaw;
        let slowest = if flaw == Flaw::SlowestBlocksAll {
            self.slowest_positions()
        } else {
            Vec::new()
        };
        let topics = &self.topics;
        let sub = self.subscribers.get_mut(id.0 as usize)?.as_mut()?;
        if !sub.up {
            return None;
        }
        if !sub.redrive_out
            && let Some(letter) = sub.redrive.front()
        {
            sub.redrive_out = true;
            self.totals.handed_out += 1;
            let t = self.topic_index.get(&*letter.topic).copied().unwrap_or(0);
            return Some(Delivery {
                token: DeliveryToken {
                    subscriber: id,
                    topic: t,
                    seq: letter.seq,
                    redrive: true,
                    epoch: sub.epoch,
                },
                topic: TopicId(t),
                seq: letter.seq,
                payload: letter.payload.clone(),
                attempt: 1,
                redelivery: false,
                redriven: true,
            });
        }
        if sub.dead_letters.len() >= self.config.dead_letters_max {
            // Full of dead letters: stop rather than lose anything.
            return None;
        }
        let n = sub.cursors.len();
        for k in 0..n {
            let i = (sub.turn + k) % n;
            let c = &mut sub.cursors[i];
            let topic = &topics[c.topic as usize];
            let attempt = match c.hand {
                Hand::Out { .. } => continue,
                Hand::Waiting { attempt, at } if at <= now => attempt + 1,
                Hand::Waiting { .. } => continue,
                Hand::Idle => 1,
            };
            if c.next >= topic.next_seq() {
                continue;
            }
            if flaw == Flaw::SlowestBlocksAll
                && slowest.get(c.topic as usize).is_some_and(|m| c.next > *m)
                && attempt == 1
            {
                continue;
            }
            let Some(payload) = topic.log.get((c.next - topic.first_seq) as usize) else {
                continue;
            };
            let redelivery = c.lost_in_crash;
            c.lost_in_crash = false;
            c.hand = Hand::Out { attempt };
            sub.turn = (i + 1) % n;
            self.totals.handed_out += 1;
            if redelivery {
                self.totals.redelivered += 1;
            }
            return Some(Delivery {
                token: DeliveryToken {
                    subscriber: id,
                    topic: c.topic,
                    seq: c.next,
                    redrive: false,
                    epoch: sub.epoch,
                },
                topic: TopicId(c.topic),
                seq: c.next,
                payload: payload.clone(),
                attempt,
                redelivery,
                redriven: false,
            });
        }
        None
    }

    /// Runs `handler` on the events `id` can be handed now, up to `max`, in order per
    /// topic, without handing anything out: true acknowledges the event, false fails it
    /// (retried after a backoff, dead-lettered after `attempts_max`; that topic then
    /// waits). The synchronous fast path of [`next_delivery`](Bus::next_delivery) +
    /// [`ack`](Bus::ack), for handlers that finish at once. Returns how many events the
    /// handler saw. Redriven dead letters and redeliveries after a crash go through
    /// `next_delivery`.
    pub fn handle_available(
        &mut self,
        id: SubscriberId,
        now: Instant,
        max: usize,
        mut handler: impl FnMut(TopicId, u64, &P) -> bool,
    ) -> usize {
        let attempts_max = self.config.attempts_max;
        let backoff = self.config.backoff;
        let dead_letters_max = self.config.dead_letters_max;
        let flaw = self.flaw;
        let mut seen = 0;
        let Some(sub) = self
            .subscribers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return 0;
        };
        if !sub.up || !sub.redrive.is_empty() || flaw != Flaw::None {
            return 0;
        }
        let mut trims: Vec<(u32, u64)> = Vec::new();
        for c in sub.cursors.iter_mut() {
            if c.lost_in_crash {
                continue;
            }
            let mut attempt = match c.hand {
                Hand::Out { .. } => continue,
                Hand::Waiting { attempt, at } if at <= now => attempt + 1,
                Hand::Waiting { .. } => continue,
                Hand::Idle => 1,
            };
            let topic = &self.topics[c.topic as usize];
            let end = topic.next_seq();
            let first = topic.first_seq;
            while c.next < end && seen < max && sub.dead_letters.len() < dead_letters_max {
                let Some(payload) = topic.log.get((c.next - first) as usize) else {
                    break;
                };
                seen += 1;
                self.totals.handed_out += 1;
                if handler(TopicId(c.topic), c.next, payload) {
                    self.totals.acked += 1;
                } else if attempt >= attempts_max {
                    sub.dead_letters.push(DeadLetter {
                        topic: topic.name.clone(),
                        seq: c.next,
                        payload: payload.clone(),
                        attempts: attempt,
                        at: now,
                    });
                    self.totals.dead_lettered += 1;
                } else {
                    c.hand = Hand::Waiting {
                        attempt,
                        at: now + jitter_within(self.rng.next(), backoff, attempt),
                    };
                    self.totals.retries += 1;
                    break;
                }
                if c.next == first {
                    trims.push((c.topic, first));
                }
                c.next += 1;
                c.hand = Hand::Idle;
                attempt = 1;
            }
        }
        for (t, seq) in trims {
            self.trim_if_oldest(t, seq);
        }
        seen
    }

    /// The handler finished the delivery: move on. A token from before a crash, or
    /// for an event no longer in hand, is ignored (returns false).
    pub fn ack(&mut self, token: &DeliveryToken, now: Instant) -> bool {
        let _ = now;
        let Some(sub) = self.live_sub(token) else {
            return false;
        };
        if token.redrive {
            if sub.redrive_out && sub.redrive.front().is_some_and(|l| l.seq == token.seq) {
                sub.redrive.pop_front();
                sub.redrive_out = false;
                self.totals.acked += 1;
                return true;
            }
            return false;
        }
        let Some(c) = sub
            .cursors
            .iter_mut()
            .find(|c| c.topic == token.topic && c.next == token.seq)
        else {
            return false;
        };
        if !matches!(c.hand, Hand::Out { .. }) {
            return false;
        }
        c.next += 1;
        c.hand = Hand::Idle;
        self.totals.acked += 1;
        let t = token.topic;
        self.trim_if_oldest(t, token.seq);
        true
    }

    /// The handler failed the delivery: retry after a backoff, or dead-letter it after
    /// `attempts_max` attempts and move on.
    pub fn nack(&mut self, token: &DeliveryToken, now: Instant) -> bool {
        if self.flaw == Flaw::SwallowErrors {
            // The defect: the failure is treated as success.
            return self.ack(token, now);
        }
        let attempts_max = self.config.attempts_max;
        let backoff = self.config.backoff;
        let jitter = self.rng.next();
        let topics = &self.topics;
        let Some(sub) = self
            .subscribers
            .get_mut(token.subscriber.0 as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.epoch == token.epoch)
        else {
            return false;
        };
        if token.redrive {
            // A redriven letter that fails again goes back to the dead letters.
            if sub.redrive_out && sub.redrive.front().is_some_and(|l| l.seq == token.seq) {
                sub.redrive_out = false;
                if let Some(mut letter) = sub.redrive.pop_front() {
                    letter.attempts += 1;
                    letter.at = now;
                    sub.dead_letters.push(letter);
                }
                return true;
            }
            return false;
        }
        let Some(c) = sub
            .cursors
            .iter_mut()
            .find(|c| c.topic == token.topic && c.next == token.seq)
        else {
            return false;
        };
        let Hand::Out { attempt } = c.hand else {
            return false;
        };
        if attempt >= attempts_max {
            let topic = &topics[c.topic as usize];
            let payload = topic.log.get((c.next - topic.first_seq) as usize).cloned();
            if let Some(payload) = payload {
                sub.dead_letters.push(DeadLetter {
                    topic: topic.name.clone(),
                    seq: c.next,
                    payload,
                    attempts: attempt,
                    at: now,
                });
            }
            c.next += 1;
            c.hand = Hand::Idle;
            self.totals.dead_lettered += 1;
            self.trim_if_oldest(token.topic, token.seq);
        } else if self.flaw == Flaw::ForgetRetries {
            // The defect: the retry is counted as scheduled, but the event stays "in
            // hand" forever; nothing retries it.
            self.totals.retries += 1;
        } else {
            c.hand = Hand::Waiting {
                attempt,
                at: now + jitter_within(jitter, backoff, attempt),
            };
            self.totals.retries += 1;
        }
        true
    }

    /// The subscriber crashed: what it had in hand is lost (not acknowledged) and it
    /// gets nothing until [`resume`](Bus::resume).
    pub fn crash(&mut self, id: SubscriberId, now: Instant) -> bool {
        let _ = now;
        let Some(sub) = self
            .subscribers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return false;
        };
        sub.up = false;
        sub.epoch += 1;
        sub.redrive_out = false;
        for c in &mut sub.cursors {
            if matches!(c.hand, Hand::Out { .. } | Hand::Waiting { .. }) {
                c.lost_in_crash = true;
            }
            c.hand = Hand::Idle;
        }
        true
    }

    /// The subscriber is back: delivery resumes from its last acknowledged position.
    pub fn resume(&mut self, id: SubscriberId, now: Instant) -> bool {
        let _ = now;
        let flaw = self.flaw;
        let heads: Vec<u64> = self.topics.iter().map(|t| t.next_seq()).collect();
        let Some(sub) = self
            .subscribers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return false;
        };
        sub.up = true;
        if flaw == Flaw::ResumeFromLatest {
            // The defect: skip to the newest event, losing what was not yet handled.
            for c in &mut sub.cursors {
                c.next = heads[c.topic as usize];
                c.lost_in_crash = false;
            }
        }
        true
    }

    /// Hands `id`'s dead letters back for delivery (before its new events). Returns how
    /// many.
    pub fn redrive(&mut self, id: SubscriberId) -> usize {
        let Some(sub) = self
            .subscribers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return 0;
        };
        let n = sub.dead_letters.len();
        sub.redrive.extend(sub.dead_letters.drain(..));
        self.totals.redriven += n as u64;
        n
    }

    // ----- the tokio adapter's run of deliveries (crate-private) -----

    /// The id of topic `name`, once the bus knows it (a subscribe or a publish named it).
    #[cfg(feature = "tokio")]
    pub(crate) fn topic_id(&self, name: &str) -> Option<TopicId> {
        self.topic_index.get(name).copied().map(TopicId)
    }

    /// Everything `id` is owed and has not acknowledged, over its topics: the sum of
    /// [`lag`](Bus::lag) over them, without looking the topics up by name.
    #[cfg(feature = "tokio")]
    pub(crate) fn lag_total(&self, id: SubscriberId) -> u64 {
        self.sub(id).map_or(0, |s| {
            s.cursors
                .iter()
                .map(|c| {
                    self.topics[c.topic as usize]
                        .next_seq()
                        .saturating_sub(c.next)
                })
                .sum()
        })
    }

    /// The events `id` would be handed next, one per call of
    /// [`next_delivery`](Bus::next_delivery), if it acknowledged the delivery in hand
    /// (`token`) and then each of them as it came: the events of that topic after it,
    /// oldest first, with nothing else in between. Appends clones of at most `max` of
    /// their payloads to `out` (the first has seq `token`'s + 1) and returns how many.
    ///
    /// Only where that sequence is certain from the bus's state: the subscriber is up
    /// and has exactly one topic, the delivery is that topic's, not a redriven letter,
    /// and no redrive is queued (a redrive queued later comes first: the caller checks
    /// for one before each event). Otherwise none.
    #[cfg(feature = "tokio")]
    pub(crate) fn peek_after(&self, token: &DeliveryToken, max: usize, out: &mut Vec<P>) -> usize {
        if self.flaw != Flaw::None || token.redrive {
            return 0;
        }
        let Some(sub) = self.sub(token.subscriber) else {
            return 0;
        };
        if !sub.up
            || sub.epoch != token.epoch
            || !sub.redrive.is_empty()
            || sub.redrive_out
            || sub.dead_letters.len() >= self.config.dead_letters_max
        {
            return 0;
        }
        let [c] = sub.cursors.as_slice() else {
            return 0;
        };
        if c.topic != token.topic || c.next != token.seq || !matches!(c.hand, Hand::Out { .. }) {
            return 0;
        }
        let topic = &self.topics[c.topic as usize];
        // Everything from the cursor on is retained (trimming stops at the slowest cursor).
        let from = (token.seq + 1 - topic.first_seq) as usize;
        let before = out.len();
        out.extend(
            topic
                .log
                .range(from.min(topic.log.len())..)
                .take(max)
                .cloned(),
        );
        out.len() - before
    }

    /// Hands out event `seq` of `topic` to `id`: the event at its cursor on that topic,
    /// with nothing in hand there, as [`next_delivery`](Bus::next_delivery) hands it out
    /// (first attempt), whatever else `id` is owed, and without cloning the payload. For
    /// an event [`peek_after`](Bus::peek_after) showed, whose handler has run already.
    /// `None` when `id` is gone or its cursor is elsewhere.
    #[cfg(feature = "tokio")]
    pub(crate) fn hand_out(
        &mut self,
        id: SubscriberId,
        topic: TopicId,
        seq: u64,
    ) -> Option<DeliveryToken> {
        let topics = &self.topics;
        let sub = self.subscribers.get_mut(id.0 as usize)?.as_mut()?;
        if !sub.up {
            return None;
        }
        let n = sub.cursors.len();
        let i = sub.cursors.iter().position(|c| c.topic == topic.0)?;
        let c = &mut sub.cursors[i];
        let t = &topics[c.topic as usize];
        if c.next != seq || c.hand != Hand::Idle || c.lost_in_crash || seq >= t.next_seq() {
            return None;
        }
        c.hand = Hand::Out { attempt: 1 };
        sub.turn = (i + 1) % n;
        self.totals.handed_out += 1;
        Some(DeliveryToken {
            subscriber: id,
            topic: topic.0,
            seq,
            redrive: false,
            epoch: sub.epoch,
        })
    }

    /// Hands out and acknowledges, in turn, events `first`, `first + 1`, ... (at most
    /// `n`) of `topic` for `id`, exactly as `n` rounds of [`hand_out`](Bus::hand_out)
    /// and [`ack`](Bus::ack) would, stopping at the first it cannot hand out. For the
    /// events of a run whose handler calls succeeded. Returns how many.
    #[cfg(feature = "tokio")]
    pub(crate) fn ack_run(
        &mut self,
        id: SubscriberId,
        topic: TopicId,
        first: u64,
        n: u64,
        now: Instant,
    ) -> u64 {
        let mut done = 0;
        while done < n {
            let Some(token) = self.hand_out(id, topic, first + done) else {
                break;
            };
            self.ack(&token, now);
            done += 1;
        }
        done
    }

    // ----- internals -----

    fn sub(&self, id: SubscriberId) -> Option<&Subscriber<P>> {
        self.subscribers.get(id.0 as usize).and_then(Option::as_ref)
    }

    fn live_sub(&mut self, token: &DeliveryToken) -> Option<&mut Subscriber<P>> {
        self.subscribers
            .get_mut(token.subscriber.0 as usize)
            .and_then(Option::as_mut)
            .filter(|s| s.epoch == token.epoch && s.up)
    }

    fn topic(&mut self, name: &str) -> u32 {
        if let Some(t) = self.topic_index.get(name) {
            return *t;
        }
        let t = self.topics.len() as u32;
        self.topics.push(Topic {
            name: Arc::from(name),
            log: VecDeque::new(),
            first_seq: 0,
            subscribers: Vec::new(),
            settled_first: 0,
        });
        self.topic_index.insert(name.to_string(), t);
        t
    }

    /// The lowest cursor of each topic's subscribers (for the SlowestBlocksAll defect).
    fn slowest_positions(&self) -> Vec<u64> {
        self.topics
            .iter()
            .enumerate()
            .map(|(t, topic)| {
                topic
                    .subscribers
                    .iter()
                    .filter_map(|s| self.sub(*s))
                    .flat_map(|s| s.cursors.iter().filter(|c| c.topic == t as u32))
                    .map(|c| c.next)
                    .min()
                    .unwrap_or(topic.next_seq())
            })
            .collect()
    }

    /// Drops events every subscriber of topic `t` is past.
    fn trim(&mut self, t: u32) {
        let topic = &self.topics[t as usize];
        let min = topic
            .subscribers
            .iter()
            .filter_map(|s| self.subscribers.get(s.0 as usize).and_then(Option::as_ref))
            .flat_map(|s| s.cursors.iter().filter(|c| c.topic == t))
            .map(|c| c.next)
            .min()
            .unwrap_or(topic.next_seq());
        let past = {
            let topic = &self.topics[t as usize];
            let first = topic.first_seq.max(min);
            topic
                .subscribers
                .iter()
                .filter_map(|s| self.subscribers.get(s.0 as usize).and_then(Option::as_ref))
                .flat_map(|s| s.cursors.iter().filter(|c| c.topic == t))
                .filter(|c| c.next > first)
                .count()
        };
        let topic = &mut self.topics[t as usize];
        while topic.first_seq < min && !topic.log.is_empty() {
            topic.log.pop_front();
            topic.first_seq += 1;
        }
        topic.settled_first = past;
    }

    /// After `seq` of topic `t` was settled by one subscriber: once every subscriber
    /// has settled the oldest event, trim.
    #[inline]
    fn trim_if_oldest(&mut self, t: u32, seq: u64) {
        let topic = &mut self.topics[t as usize];
        if topic.first_seq == seq {
            topic.settled_first += 1;
            if topic.settled_first >= topic.subscribers.len() {
                self.trim(t);
            }
        }
    }
}

/// The retry delay after failed attempt `attempt`: `draw` reduced into
/// `[0, min(cap, base·2^(attempt−1))]` (full jitter).
fn jitter_within(draw: u64, backoff: Backoff, attempt: u32) -> Duration {
    let ceiling = crate::clock::saturating_nanos(backoff.ceiling(attempt));
    match ceiling.checked_add(1) {
        Some(span) => Duration::from_nanos(draw % span),
        None => Duration::from_nanos(draw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(capacity: usize, attempts: u32) -> Bus<u32> {
        Bus::new(
            BusConfig::builder()
                .capacity(capacity)
                .attempts_max(attempts)
                .backoff(Duration::from_millis(10), Duration::from_millis(10))
                .build()
                .unwrap(),
        )
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn drain(b: &mut Bus<u32>, id: SubscriberId, now: Instant) -> Vec<u32> {
        let mut got = Vec::new();
        while let Some(d) = b.next_delivery(id, now) {
            got.push(d.payload);
            assert!(b.ack(&d.token, now));
        }
        got
    }

    #[test]
    fn config_names_the_bad_field() {
        for (b, field) in [
            (BusConfig::builder().capacity(0), "capacity"),
            (BusConfig::builder().attempts_max(0), "attempts_max"),
            (BusConfig::builder().dead_letters_max(0), "dead_letters_max"),
            (
                BusConfig::builder().backoff(Duration::ZERO, Duration::from_secs(1)),
                "base",
            ),
        ] {
            assert_eq!(b.build().unwrap_err().field, field);
        }
    }

    #[test]
    fn every_subscriber_gets_every_later_event_in_order() {
        let mut b = bus(16, 3);
        let early = b.subscribe(&["a"], t(0));
        b.publish("a", 1, t(0)).unwrap();
        let late = b.subscribe(&["a"], t(1));
        b.publish("a", 2, t(1)).unwrap();
        b.publish("a", 3, t(1)).unwrap();
        assert_eq!(drain(&mut b, early, t(2)), vec![1, 2, 3]);
        assert_eq!(
            drain(&mut b, late, t(2)),
            vec![2, 3],
            "only what came after it subscribed"
        );
        assert_eq!(b.retained("a"), 0, "everyone is past everything");
    }

    #[test]
    fn a_full_topic_says_so_and_a_slow_subscriber_holds_only_its_topic() {
        let mut b = bus(2, 3);
        let slow = b.subscribe(&["a"], t(0));
        let fast = b.subscribe(&["a"], t(0));
        b.publish("a", 1, t(0)).unwrap();
        b.publish("a", 2, t(0)).unwrap();
        assert_eq!(drain(&mut b, fast, t(0)), vec![1, 2]);
        let full = b.publish("a", 3, t(0)).unwrap_err();
        assert_eq!(full.capacity, 2);
        assert_eq!(b.totals().full, 1);
        assert_eq!(drain(&mut b, slow, t(0)), vec![1, 2]);
        assert!(
            b.publish("a", 3, t(0)).is_ok(),
            "space again once the slow one caught up"
        );
    }

    #[test]
    fn failures_are_retried_after_a_backoff_then_dead_lettered_and_redriven() {
        let mut b = bus(8, 2);
        let s = b.subscribe(&["a"], t(0));
        b.publish("a", 1, t(0)).unwrap();
        b.publish("a", 2, t(0)).unwrap();
        let d = b.next_delivery(s, t(0)).unwrap();
        assert!(b.nack(&d.token, t(0)));
        // Waiting for the retry: event 2 is held back to keep the order.
        assert!(b.next_delivery(s, t(0)).is_none());
        let due = b.poll_timeout().unwrap();
        assert!(due <= t(10));
        let d = b.next_delivery(s, due).unwrap();
        assert_eq!((d.payload, d.attempt), (1, 2));
        assert!(b.nack(&d.token, due));
        assert_eq!(b.dead_letters(s).len(), 1);
        assert_eq!(drain(&mut b, s, due), vec![2]);
        assert_eq!(b.redrive(s), 1);
        let d = b.next_delivery(s, due).unwrap();
        assert!(d.redriven);
        assert_eq!(d.payload, 1);
        assert!(b.ack(&d.token, due));
        assert!(b.dead_letters(s).is_empty());
    }

    #[test]
    fn a_crash_loses_what_was_in_hand_and_resume_starts_from_the_last_ack() {
        let mut b = bus(8, 3);
        let s = b.subscribe(&["a"], t(0));
        for p in 1..=3 {
            b.publish("a", p, t(0)).unwrap();
        }
        let d1 = b.next_delivery(s, t(0)).unwrap();
        b.ack(&d1.token, t(0));
        let d2 = b.next_delivery(s, t(0)).unwrap();
        b.crash(s, t(1));
        assert!(b.next_delivery(s, t(1)).is_none(), "down");
        assert!(
            !b.ack(&d2.token, t(1)),
            "a token from before the crash is stale"
        );
        b.resume(s, t(2));
        let again = b.next_delivery(s, t(2)).unwrap();
        assert_eq!(again.payload, 2);
        assert!(again.redelivery);
        b.ack(&again.token, t(2));
        let d3 = b.next_delivery(s, t(2)).unwrap();
        assert_eq!((d3.payload, d3.redelivery), (3, false));
    }

    #[test]
    fn unsubscribe_stops_at_once_and_dead_events_are_counted() {
        let mut b = bus(8, 3);
        let s = b.subscribe(&["a"], t(0));
        b.publish("a", 1, t(0)).unwrap();
        assert!(b.unsubscribe(s));
        assert!(b.next_delivery(s, t(0)).is_none());
        assert_eq!(b.retained("a"), 0, "released");
        assert_eq!(b.publish("a", 2, t(0)), Ok(Published::DeadEvent));
        assert_eq!(b.publish("nobody", 3, t(0)), Ok(Published::DeadEvent));
        assert_eq!(b.totals().dead_events, 2);
    }

    #[test]
    fn topics_interleave_but_each_keeps_its_order() {
        let mut b = bus(8, 3);
        let s = b.subscribe(&["a", "b"], t(0));
        for p in 0..4 {
            b.publish(if p % 2 == 0 { "a" } else { "b" }, p, t(0))
                .unwrap();
        }
        let got = drain(&mut b, s, t(0));
        let a: Vec<u32> = got.iter().copied().filter(|p| p % 2 == 0).collect();
        let bb: Vec<u32> = got.iter().copied().filter(|p| p % 2 == 1).collect();
        assert_eq!((a, bb), (vec![0, 2], vec![1, 3]));
    }

    #[test]
    fn the_batch_path_keeps_order_retries_and_dead_letters() {
        let mut b = bus(16, 2);
        let s = b.subscribe(&["a"], t(0));
        let other = b.subscribe(&["a"], t(0));
        for p in 0..5 {
            b.publish("a", p, t(0)).unwrap();
        }
        // Event 2 fails: the batch stops there for this topic, to keep the order.
        let mut seen = Vec::new();
        let n = b.handle_available(s, t(0), usize::MAX, |_, seq, p| {
            seen.push((seq, *p));
            *p != 2
        });
        assert_eq!(n, 3);
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(
            b.handle_available(s, t(0), usize::MAX, |_, _, _| true),
            0,
            "waiting"
        );
        let due = b.poll_timeout().unwrap();
        // The retry fails again: dead letter (2 attempts), then the rest goes through.
        let n = b.handle_available(s, due, usize::MAX, |_, _, p| *p != 2);
        assert_eq!(n, 3);
        assert_eq!(b.dead_letters(s).len(), 1);
        assert_eq!(b.lag(s, "a"), 0);
        // The other subscriber was never held back, and once it is done, nothing is kept.
        assert_eq!(
            b.handle_available(other, t(0), 2, |_, _, _| true),
            2,
            "at most max"
        );
        assert_eq!(drain(&mut b, other, t(0)), vec![2, 3, 4]);
        assert_eq!(b.retained("a"), 0);
    }

    #[test]
    fn retention_is_released_however_acks_interleave() {
        let mut b = bus(256, 1);
        let subs: Vec<SubscriberId> = (0..3).map(|_| b.subscribe(&["a"], t(0))).collect();
        for p in 0..200 {
            b.publish("a", p, t(0)).unwrap();
        }
        for s in &subs {
            drain(&mut b, *s, t(0));
        }
        assert_eq!(b.retained("a"), 0);
    }
}
