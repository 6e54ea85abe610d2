//! Deliberately broken buses ("mutants") the invariants must catch: the reference with
//! one defect, a task-per-publish bus, the reference with each publish handed to its
//! own task, one whose declaration promises more attempts than it makes, and one built
//! with other settings than the knobs'. Each runs in a world that also checks
//! conformance to the reference's settings, except the one judged by its declaration
//! alone.

use crate::bus::contract::{BusPolicy, EventBus, Handed};
use crate::bus::core::{Bus, BusFull, BusTotals, DeliveryToken, Flaw, Published, SubscriberId};
use crate::bus::invariants;
use crate::bus::pattern::BusPattern;
use crate::bus::world::{BusKnobs, BusWorld};
use crate::clock::Instant;
use crate::config::ConfigError;
use crate::harness::Mutant;
use std::collections::BTreeMap;
use std::sync::Arc;

fn flawed(knobs: &BusKnobs, flaw: Flaw) -> Result<BusWorld<MutantBus>, ConfigError> {
    let mut bus = knobs.reference_bus()?;
    bus.flaw = flaw;
    BusWorld::new(knobs.clone(), MutantBus::Flawed(bus)).conforming_to_reference()
}

/// The catalog.
pub const CATALOG: &[Mutant<BusPattern>] = &[
    Mutant::new(
        "lossy_ring",
        "a full topic overwrites its oldest event, so a lagging subscriber skips it (tokio broadcast)",
        invariants::FIFO,
        |k| flawed(k, Flaw::LossyRing),
    ),
    Mutant::new(
        "task_per_publish",
        "each publish spawns a task per subscriber: events arrive in any order, nothing is bounded",
        invariants::FIFO,
        |k: &BusKnobs| {
            // It claims the knobs' settings (it keeps none of them).
            let bus = TaskPerPublish {
                declared: Some(k.reference_policy()?),
                ..TaskPerPublish::default()
            };
            BusWorld::new(k.clone(), MutantBus::TaskPerPublish(bus)).conforming_to_reference()
        },
    ),
    Mutant::new(
        "publish_in_own_task",
        "each publish is handed to its own task, which appends it after a small random delay: \
         publishes close together land out of order (the goroutine-per-publish bug)",
        invariants::FIFO,
        |k: &BusKnobs| {
            BusWorld::new(
                k.clone(),
                MutantBus::PublishInOwnTask(PublishInOwnTask::new(k.reference_bus()?)),
            )
            .conforming_to_reference()
        },
    ),
    Mutant::new(
        "swallowed_errors",
        "a handler error is swallowed: no retry, no dead letter",
        invariants::EXACTLY_ONCE,
        |k| flawed(k, Flaw::SwallowErrors),
    ),
    Mutant::new(
        "slowest_blocks_all",
        "one shared cursor: no subscriber gets an event before the slowest has it",
        invariants::ISOLATION,
        |k| flawed(k, Flaw::SlowestBlocksAll),
    ),
    Mutant::new(
        "resume_from_latest",
        "after a crash, a subscriber resumes from the newest event, not its last acknowledged one",
        invariants::ISOLATION,
        |k| flawed(k, Flaw::ResumeFromLatest),
    ),
    Mutant::new(
        "ignore_unsubscribe",
        "unsubscribe does nothing: delivery goes on",
        invariants::NOTHING_AFTER_UNSUBSCRIBE,
        |k| flawed(k, Flaw::IgnoreUnsubscribe),
    ),
    Mutant::new(
        "unbounded_retention",
        "the capacity is not enforced: a slow subscriber makes memory grow without bound",
        invariants::BOUNDED_RETENTION,
        |k| flawed(k, Flaw::Unbounded),
    ),
    Mutant::new(
        "uncounted_dead_events",
        "events to a topic nobody subscribes to vanish without being counted",
        invariants::DEAD_EVENTS_COUNTED,
        |k| flawed(k, Flaw::UncountedDeadEvents),
    ),
    Mutant::new(
        "retain_unsubscribed",
        "events to a topic nobody subscribes to are kept and reported as retained, not as dead events",
        invariants::BOUNDED_RETENTION,
        |k| flawed(k, Flaw::RetainUnsubscribed),
    ),
    Mutant::new(
        "forget_retries",
        "a failed event is never retried nor dead-lettered: its topic stalls for that subscriber",
        invariants::DRAINED,
        |k| flawed(k, Flaw::ForgetRetries),
    ),
    Mutant::new(
        "lag_skips_in_hand",
        "the lag counts only events not yet handed out: a delivery in hand, or waiting for its retry, \
         shows as settled, so a stuck subscriber's lag under-reports",
        invariants::REPORTS,
        |k| flawed(k, Flaw::LagSkipsInHand),
    ),
    Mutant::new(
        "declares_more_attempts",
        "declares one attempt more than it makes: an event is dead-lettered before the declared attempts are spent",
        invariants::EXACTLY_ONCE,
        // Judged by its declaration alone: conformance would catch the declaration first.
        |k: &BusKnobs| {
            let mut bus = k.reference_bus()?;
            bus.flaw = Flaw::DeclaresMoreAttempts;
            Ok(BusWorld::new(k.clone(), MutantBus::Flawed(bus)))
        },
    ),
    Mutant::new(
        "misconfigured",
        "the reference built with other settings than the knobs' (twice the capacity, one more attempt), declared honestly",
        invariants::CONFORMANCE,
        |k: &BusKnobs| {
            let mut other = k.clone();
            other.capacity *= 2;
            other.attempts_max += 1;
            BusWorld::new(k.clone(), MutantBus::Flawed(other.reference_bus()?))
                .conforming_to_reference()
        },
    ),
];

/// A bus of the catalog: the reference with a defect, or a task-per-publish bus. The
/// harness runs the reference as `Flawed` with no flaw, which makes the same calls on
/// the same [`Bus`] as the plain reference, so every run of the pattern, reference or
/// mutant, happens in one world type.
#[derive(Debug)]
pub enum MutantBus {
    /// The reference with one defect.
    Flawed(Bus<u64>),
    /// A task per publish and subscriber.
    TaskPerPublish(TaskPerPublish),
    /// The reference, with each publish handed to its own task.
    PublishInOwnTask(PublishInOwnTask),
}

/// Longest delay before a publish's task runs, ns (2 ms).
const TASK_DELAY_NS_MAX: u64 = 2_000_000;

/// The goroutine-per-publish bug: `publish` hands the event to a task of its own and
/// returns at once (with the seq the event would get if the tasks ran in order); each
/// task appends its event to the reference bus after its own small random delay. Tasks
/// run when their delay has passed (at the next call), in the order their delays end,
/// and a subscriber asking for its next event waits for the tasks of its topics that
/// are still running (they finish in the same order). Two publishes closer together
/// than the delays land out of order; nothing else is wrong with it: the capacity is
/// checked at hand-over, counting the events the tasks still hold, and so is its
/// retention report.
#[derive(Debug)]
pub struct PublishInOwnTask {
    bus: Bus<u64>,
    /// Tasks not yet run: (due, task number, topic, payload).
    tasks: Vec<(u64, u64, String, u64)>,
    next_task: u64,
    rng: crate::splitmix::SplitMix64,
}

impl PublishInOwnTask {
    /// Around `bus`, no task running.
    pub fn new(bus: Bus<u64>) -> Self {
        PublishInOwnTask {
            bus,
            tasks: Vec::new(),
            next_task: 0,
            rng: crate::splitmix::SplitMix64(0x7461_736b_5f70_7562),
        }
    }

    /// Runs the tasks whose delay ended by `now`, or (with `topics`) also every task of
    /// those topics, in the order their delays end.
    fn run_tasks(&mut self, now: Instant, topics: Option<&[String]>) {
        let mut ready: Vec<(u64, u64, String, u64)> = Vec::new();
        let mut rest = Vec::new();
        for task in self.tasks.drain(..) {
            if task.0 <= now.as_nanos() || topics.is_some_and(|ts| ts.contains(&task.2)) {
                ready.push(task);
            } else {
                rest.push(task);
            }
        }
        self.tasks = rest;
        ready.sort_by_key(|t| (t.0, t.1));
        for (_, _, topic, payload) in ready {
            // The capacity was checked at hand-over: the topic has room for every task.
            let _ = self.bus.publish(&topic, payload, now);
        }
    }

    fn run_all(&mut self, now: Instant) {
        let topics: Vec<String> = self.tasks.iter().map(|t| t.2.clone()).collect();
        self.run_tasks(now, Some(&topics));
    }
}

/// The token of a mutant's delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutantToken {
    /// From the flawed reference.
    Bus(DeliveryToken),
    /// A task's id.
    Task(u64),
}

/// One spawned delivery: (task id, subscriber, topic, seq, payload, attempt, running).
type Task = (u64, u32, Arc<str>, u64, u64, u32, bool);

/// Each publish spawns one task per subscriber; a subscriber runs whichever of its
/// tasks the scheduler picks (here: a fixed pseudo-random choice), failures are retried
/// at once, forever.
#[derive(Debug, Default)]
pub struct TaskPerPublish {
    subs: BTreeMap<u32, Vec<Arc<str>>>,
    tasks: Vec<Task>,
    next_task: u64,
    next_seq: BTreeMap<Arc<str>, u64>,
    next_sub: u32,
    dead_events: u64,
    pick: u64,
    /// What it declares (`None`: the truth, no bound at all).
    declared: Option<BusPolicy>,
}

impl EventBus for MutantBus {
    type Token = MutantToken;

    fn subscribe(&mut self, topics: &[&str], now: Instant) -> SubscriberId {
        match self {
            MutantBus::Flawed(b) => b.subscribe(topics, now),
            MutantBus::PublishInOwnTask(p) => {
                p.run_all(now);
                p.bus.subscribe(topics, now)
            }
            MutantBus::TaskPerPublish(t) => {
                let id = t.next_sub;
                t.next_sub += 1;
                t.subs
                    .insert(id, topics.iter().map(|s| Arc::from(*s)).collect());
                SubscriberId(id)
            }
        }
    }
    fn unsubscribe(&mut self, id: SubscriberId, _now: Instant) {
        match self {
            MutantBus::Flawed(b) => {
                b.unsubscribe(id);
            }
            MutantBus::PublishInOwnTask(p) => {
                p.run_all(_now);
                p.bus.unsubscribe(id);
            }
            MutantBus::TaskPerPublish(t) => {
                t.subs.remove(&id.0);
                t.tasks.retain(|task| task.1 != id.0);
            }
        }
    }
    fn publish(&mut self, topic: &str, payload: u64, now: Instant) -> Result<Published, BusFull> {
        match self {
            MutantBus::Flawed(b) => b.publish(topic, payload, now),
            MutantBus::PublishInOwnTask(p) => {
                p.run_tasks(now, None);
                let pending = p.tasks.iter().filter(|t| t.2 == topic).count() as u64;
                let next = p.bus.next_seq(topic) + pending;
                if p.bus.publish_would_be_dead(topic) {
                    return p.bus.publish(topic, payload, now);
                }
                // The capacity is checked when the publish is handed over (counting the
                // events the tasks still hold), so no task ever finds its topic full.
                let capacity = p.bus.config().capacity();
                if p.bus.retained(topic) + pending as usize >= capacity {
                    if pending == 0 {
                        // Nothing in flight: the reference decides (and trims) itself.
                        return p.bus.publish(topic, payload, now);
                    }
                    return Err(BusFull {
                        topic: topic.to_string(),
                        capacity,
                    });
                }
                let delay = p.rng.next() % TASK_DELAY_NS_MAX;
                p.tasks.push((
                    now.as_nanos() + delay,
                    p.next_task,
                    topic.to_string(),
                    payload,
                ));
                p.next_task += 1;
                Ok(Published::Retained {
                    seq: next,
                    subscribers: 1,
                })
            }
            MutantBus::TaskPerPublish(t) => {
                let subscribers: Vec<u32> = t
                    .subs
                    .iter()
                    .filter(|(_, ts)| ts.iter().any(|x| &**x == topic))
                    .map(|(id, _)| *id)
                    .collect();
                if subscribers.is_empty() {
                    t.dead_events += 1;
                    return Ok(Published::DeadEvent);
                }
                let name: Arc<str> = Arc::from(topic);
                let seq = t.next_seq.entry(name.clone()).or_insert(0);
                let s = *seq;
                *seq += 1;
                for sub in &subscribers {
                    t.tasks
                        .push((t.next_task, *sub, name.clone(), s, payload, 0, false));
                    t.next_task += 1;
                }
                Ok(Published::Retained {
                    seq: s,
                    subscribers: subscribers.len(),
                })
            }
        }
    }
    fn next_delivery(&mut self, id: SubscriberId, now: Instant) -> Option<Handed<MutantToken>> {
        match self {
            MutantBus::Flawed(b) => b.next_delivery(id, now).map(|d| Handed {
                token: MutantToken::Bus(d.token),
                topic: b.topic_arc(d.topic),
                seq: d.seq,
                payload: d.payload,
                attempt: d.attempt,
                redelivery: d.redelivery,
                redriven: d.redriven,
            }),
            MutantBus::PublishInOwnTask(p) => {
                let topics = p.bus.topics_of(id);
                p.run_tasks(now, Some(&topics));
                p.bus.next_delivery(id, now).map(|d| Handed {
                    token: MutantToken::Bus(d.token),
                    topic: p.bus.topic_arc(d.topic),
                    seq: d.seq,
                    payload: d.payload,
                    attempt: d.attempt,
                    redelivery: d.redelivery,
                    redriven: d.redriven,
                })
            }
            MutantBus::TaskPerPublish(t) => {
                let ready: Vec<usize> = t
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, task)| task.1 == id.0 && !task.6)
                    .map(|(i, _)| i)
                    .collect();
                if ready.is_empty() {
                    return None;
                }
                t.pick = t
                    .pick
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let i = ready[((t.pick >> 33) % ready.len() as u64) as usize];
                let task = &mut t.tasks[i];
                task.5 += 1;
                task.6 = true;
                Some(Handed {
                    token: MutantToken::Task(task.0),
                    topic: task.2.clone(),
                    seq: task.3,
                    payload: task.4,
                    attempt: task.5,
                    redelivery: false,
                    redriven: false,
                })
            }
        }
    }
    fn ack(&mut self, token: &MutantToken, now: Instant) {
        match (self, token) {
            (MutantBus::Flawed(b), MutantToken::Bus(t)) => {
                b.ack(t, now);
            }
            (MutantBus::PublishInOwnTask(p), MutantToken::Bus(t)) => {
                p.run_tasks(now, None);
                p.bus.ack(t, now);
            }
            (MutantBus::TaskPerPublish(t), MutantToken::Task(id)) => {
                t.tasks.retain(|task| task.0 != *id)
            }
            _ => {}
        }
    }
    fn nack(&mut self, token: &MutantToken, now: Instant) {
        match (self, token) {
            (MutantBus::Flawed(b), MutantToken::Bus(t)) => {
                b.nack(t, now);
            }
            (MutantBus::PublishInOwnTask(p), MutantToken::Bus(t)) => {
                p.run_tasks(now, None);
                p.bus.nack(t, now);
            }
            (MutantBus::TaskPerPublish(t), MutantToken::Task(id)) => {
                for task in t.tasks.iter_mut().filter(|task| task.0 == *id) {
                    task.6 = false;
                }
            }
            _ => {}
        }
    }
    fn crash(&mut self, id: SubscriberId, now: Instant) {
        match self {
            MutantBus::Flawed(b) => {
                b.crash(id, now);
            }
            MutantBus::PublishInOwnTask(p) => {
                p.run_tasks(now, None);
                p.bus.crash(id, now);
            }
            MutantBus::TaskPerPublish(t) => {
                for task in t.tasks.iter_mut().filter(|task| task.1 == id.0) {
                    task.6 = false;
                }
            }
        }
    }
    fn resume(&mut self, id: SubscriberId, now: Instant) {
        match self {
            MutantBus::Flawed(b) => {
                b.resume(id, now);
            }
            MutantBus::PublishInOwnTask(p) => {
                p.run_tasks(now, None);
                p.bus.resume(id, now);
            }
            MutantBus::TaskPerPublish(_) => {}
        }
    }
    fn redrive(&mut self, id: SubscriberId, _now: Instant) -> usize {
        match self {
            MutantBus::Flawed(b) => b.redrive(id),
            MutantBus::PublishInOwnTask(p) => {
                p.run_all(_now);
                p.bus.redrive(id)
            }
            MutantBus::TaskPerPublish(_) => 0,
        }
    }
    fn dead_letters(&self, id: SubscriberId) -> Vec<(String, u64)> {
        match self {
            MutantBus::Flawed(b) => EventBus::dead_letters(b, id),
            MutantBus::PublishInOwnTask(p) => EventBus::dead_letters(&p.bus, id),
            MutantBus::TaskPerPublish(_) => Vec::new(),
        }
    }
    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        match self {
            MutantBus::Flawed(b) => b.poll_timeout_after(now),
            MutantBus::PublishInOwnTask(p) => {
                let task = p
                    .tasks
                    .iter()
                    .map(|t| t.0)
                    .filter(|d| *d > now.as_nanos())
                    .min();
                let retry = p.bus.poll_timeout_after(now).map(|i| i.as_nanos());
                task.into_iter().chain(retry).min().map(Instant::from_nanos)
            }
            MutantBus::TaskPerPublish(_) => None,
        }
    }
    fn retained_max(&self) -> usize {
        match self {
            MutantBus::Flawed(b) => b.retained_max(),
            MutantBus::PublishInOwnTask(p) => {
                let mut held: BTreeMap<&str, usize> = BTreeMap::new();
                for t in &p.tasks {
                    *held.entry(t.2.as_str()).or_default() += 1;
                }
                let topics: Vec<&str> = held.keys().copied().collect();
                topics
                    .into_iter()
                    .map(|t| p.bus.retained(t) + held[t])
                    .chain(std::iter::once(p.bus.retained_max()))
                    .max()
                    .unwrap_or(0)
            }
            MutantBus::TaskPerPublish(_) => 0,
        }
    }
    fn dead_events(&self) -> u64 {
        match self {
            MutantBus::Flawed(b) => b.totals().dead_events,
            MutantBus::PublishInOwnTask(p) => p.bus.totals().dead_events,
            MutantBus::TaskPerPublish(t) => t.dead_events,
        }
    }
    // The reference (and its flawed copies) reports; the two other buses say nothing
    // of themselves here, as a plug-in may.
    fn next_seq(&self, topic: &str) -> Option<u64> {
        match self {
            MutantBus::Flawed(b) => EventBus::next_seq(b, topic),
            _ => None,
        }
    }
    fn lag(&self, id: SubscriberId, topic: &str) -> Option<u64> {
        match self {
            MutantBus::Flawed(b) => EventBus::lag(b, id, topic),
            _ => None,
        }
    }
    fn totals(&self) -> Option<BusTotals> {
        match self {
            MutantBus::Flawed(b) => EventBus::totals(b),
            _ => None,
        }
    }
    fn policy(&self) -> BusPolicy {
        match self {
            MutantBus::Flawed(b) => {
                let mut p = EventBus::policy(b);
                if b.flaw == Flaw::DeclaresMoreAttempts {
                    p.attempts_max += 1;
                }
                p
            }
            MutantBus::PublishInOwnTask(p) => EventBus::policy(&p.bus),
            MutantBus::TaskPerPublish(t) => t.declared.unwrap_or(BusPolicy {
                capacity: usize::MAX,
                attempts_max: u32::MAX,
                retry_wait_max: std::time::Duration::ZERO,
            }),
        }
    }
}
