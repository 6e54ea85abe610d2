//! Deliberately broken buses ("mutants") the invariants must catch: the reference with
//! one defect, and a task-per-publish bus.

use crate::bus::contract::{EventBus, Handed};
use crate::bus::core::{Bus, BusFull, DeliveryToken, Flaw, Published, SubscriberId};
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
    Ok(BusWorld::new(knobs.clone(), MutantBus::Flawed(bus)))
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
            Ok(BusWorld::new(
                k.clone(),
                MutantBus::TaskPerPublish(TaskPerPublish::default()),
            ))
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
        "forget_retries",
        "a failed event is never retried nor dead-lettered: its topic stalls for that subscriber",
        invariants::DRAINED,
        |k| flawed(k, Flaw::ForgetRetries),
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
}

impl EventBus for MutantBus {
    type Token = MutantToken;

    fn subscribe(&mut self, topics: &[&str], now: Instant) -> SubscriberId {
        match self {
            MutantBus::Flawed(b) => b.subscribe(topics, now),
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
            MutantBus::TaskPerPublish(t) => {
                t.subs.remove(&id.0);
                t.tasks.retain(|task| task.1 != id.0);
            }
        }
    }
    fn publish(&mut self, topic: &str, payload: u64, now: Instant) -> Result<Published, BusFull> {
        match self {
            MutantBus::Flawed(b) => b.publish(topic, payload, now),
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
            MutantBus::TaskPerPublish(t) => {
                for task in t.tasks.iter_mut().filter(|task| task.1 == id.0) {
                    task.6 = false;
                }
            }
        }
    }
    fn resume(&mut self, id: SubscriberId, now: Instant) {
        if let MutantBus::Flawed(b) = self {
            b.resume(id, now);
        }
    }
    fn redrive(&mut self, id: SubscriberId, _now: Instant) -> usize {
        match self {
            MutantBus::Flawed(b) => b.redrive(id),
            MutantBus::TaskPerPublish(_) => 0,
        }
    }
    fn dead_letters(&self, id: SubscriberId) -> Vec<(String, u64)> {
        match self {
            MutantBus::Flawed(b) => EventBus::dead_letters(b, id),
            MutantBus::TaskPerPublish(_) => Vec::new(),
        }
    }
    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        match self {
            MutantBus::Flawed(b) => b.poll_timeout_after(now),
            MutantBus::TaskPerPublish(_) => None,
        }
    }
    fn retained_max(&self) -> usize {
        match self {
            MutantBus::Flawed(b) => b.retained_max(),
            MutantBus::TaskPerPublish(_) => 0,
        }
    }
    fn dead_events(&self) -> u64 {
        match self {
            MutantBus::Flawed(b) => b.totals().dead_events,
            MutantBus::TaskPerPublish(t) => t.dead_events,
        }
    }
}
