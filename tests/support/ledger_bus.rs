//! A bus written from scratch against the contract (no code of the reference `Bus`):
//! per topic a log trimmed to its laggiest cursor, per subscriber a cursor per topic,
//! retries with capped exponential backoff, dead letters and redrive, crash and resume.
//! Shared by the bus tests and the choreographed saga's: it must pass both worlds.

use faultline::bus::contract::{BusPolicy, EventBus, Handed};
use faultline::bus::{BusFull, Published, SubscriberId};
use faultline::clock::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// One delivery: whose, which event, in which life of the subscriber.
#[derive(Clone, Debug)]
pub struct Ticket {
    sub: u32,
    topic: Arc<str>,
    seq: u64,
    life: u64,
    redriven: bool,
}

struct Log {
    /// Seq of `events[0]`.
    first: u64,
    events: VecDeque<u64>,
}

impl Log {
    fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

struct Cursor {
    topic: Arc<str>,
    next: u64,
    out: bool,
    failures: u32,
    retry_at: Option<u64>,
    lost: bool,
}

type Letter = (Arc<str>, u64, u64);

struct Member {
    cursors: Vec<Cursor>,
    up: bool,
    life: u64,
    turn: usize,
    dead: Vec<Letter>,
    redrive: VecDeque<Letter>,
    redrive_out: bool,
    redrive_lost: bool,
}

/// The bus.
pub struct LedgerBus {
    capacity: usize,
    attempts_max: u32,
    backoff_ns: (u64, u64),
    logs: BTreeMap<Arc<str>, Log>,
    members: BTreeMap<u32, Member>,
    next_id: u32,
    dead_events: u64,
    /// A declaration other than its own settings (for the tests that show a false one
    /// is caught).
    declared: Option<BusPolicy>,
}

impl LedgerBus {
    /// A bus with these settings (the policy it declares).
    pub fn new(capacity: usize, attempts_max: u32, backoff_ms: (u64, u64)) -> Self {
        LedgerBus {
            capacity,
            attempts_max,
            backoff_ns: (backoff_ms.0 * 1_000_000, backoff_ms.1 * 1_000_000),
            logs: BTreeMap::new(),
            members: BTreeMap::new(),
            next_id: 0,
            dead_events: 0,
            declared: None,
        }
    }

    /// The same bus, declaring `policy` instead of its own settings.
    pub fn declaring(mut self, policy: BusPolicy) -> Self {
        self.declared = Some(policy);
        self
    }

    fn subscribed(&self, topic: &str) -> bool {
        self.members
            .values()
            .any(|m| m.cursors.iter().any(|c| &*c.topic == topic))
    }

    fn trim(&mut self, topic: &str) {
        let Some(log) = self.logs.get_mut(topic) else {
            return;
        };
        let min = self
            .members
            .values()
            .flat_map(|m| m.cursors.iter())
            .filter(|c| &*c.topic == topic)
            .map(|c| c.next)
            .min()
            .unwrap_or(log.end());
        while log.first < min && log.events.pop_front().is_some() {
            log.first += 1;
        }
    }

    fn payload(&self, topic: &str, seq: u64) -> Option<u64> {
        let log = self.logs.get(topic)?;
        log.events
            .get(seq.checked_sub(log.first)? as usize)
            .copied()
    }
}

impl EventBus for LedgerBus {
    type Token = Ticket;

    fn subscribe(&mut self, topics: &[&str], _now: Instant) -> SubscriberId {
        let id = self.next_id;
        self.next_id += 1;
        let mut cursors: Vec<Cursor> = Vec::new();
        for t in topics {
            if cursors.iter().any(|c| &*c.topic == *t) {
                continue;
            }
            let name: Arc<str> = Arc::from(*t);
            let log = self.logs.entry(name.clone()).or_insert(Log {
                first: 0,
                events: VecDeque::new(),
            });
            cursors.push(Cursor {
                topic: name,
                next: log.end(),
                out: false,
                failures: 0,
                retry_at: None,
                lost: false,
            });
        }
        self.members.insert(
            id,
            Member {
                cursors,
                up: true,
                life: 0,
                turn: 0,
                dead: Vec::new(),
                redrive: VecDeque::new(),
                redrive_out: false,
                redrive_lost: false,
            },
        );
        SubscriberId(id)
    }

    fn unsubscribe(&mut self, id: SubscriberId, _now: Instant) {
        if let Some(m) = self.members.remove(&id.0) {
            for c in m.cursors {
                self.trim(&c.topic);
            }
        }
    }

    fn publish(&mut self, topic: &str, payload: u64, _now: Instant) -> Result<Published, BusFull> {
        if !self.subscribed(topic) {
            self.dead_events += 1;
            return Ok(Published::DeadEvent);
        }
        let subscribers = self
            .members
            .values()
            .filter(|m| m.cursors.iter().any(|c| &*c.topic == topic))
            .count();
        let capacity = self.capacity;
        let log = self
            .logs
            .get_mut(topic)
            .expect("a subscribed topic has a log");
        if log.events.len() >= capacity {
            return Err(BusFull {
                topic: topic.to_string(),
                capacity,
            });
        }
        let seq = log.end();
        log.events.push_back(payload);
        Ok(Published::Retained { seq, subscribers })
    }

    fn next_delivery(&mut self, id: SubscriberId, now: Instant) -> Option<Handed<Ticket>> {
        let m = self.members.get(&id.0)?;
        if !m.up {
            return None;
        }
        if !m.redrive_out
            && let Some((topic, seq, payload)) = m.redrive.front().cloned()
        {
            let m = self.members.get_mut(&id.0)?;
            m.redrive_out = true;
            let redelivery = std::mem::take(&mut m.redrive_lost);
            return Some(Handed {
                token: Ticket {
                    sub: id.0,
                    topic: topic.clone(),
                    seq,
                    life: m.life,
                    redriven: true,
                },
                topic,
                seq,
                payload,
                attempt: 1,
                redelivery,
                redriven: true,
            });
        }
        let n = m.cursors.len();
        for k in 0..n {
            let i = (m.turn + k) % n;
            let c = &m.cursors[i];
            if c.out || c.retry_at.is_some_and(|at| at > now.as_nanos()) {
                continue;
            }
            let Some(payload) = self.payload(&c.topic, c.next) else {
                continue;
            };
            let m = self.members.get_mut(&id.0)?;
            m.turn = i + 1;
            let life = m.life;
            let c = &mut m.cursors[i];
            c.out = true;
            c.retry_at = None;
            let redelivery = std::mem::take(&mut c.lost);
            return Some(Handed {
                token: Ticket {
                    sub: id.0,
                    topic: c.topic.clone(),
                    seq: c.next,
                    life,
                    redriven: false,
                },
                topic: c.topic.clone(),
                seq: c.next,
                payload,
                attempt: c.failures + 1,
                redelivery,
                redriven: false,
            });
        }
        None
    }

    fn ack(&mut self, t: &Ticket, _now: Instant) {
        let Some(m) = self.members.get_mut(&t.sub).filter(|m| m.life == t.life) else {
            return;
        };
        if t.redriven {
            if m.redrive_out && m.redrive.front().is_some_and(|l| l.1 == t.seq) {
                m.redrive.pop_front();
                m.redrive_out = false;
            }
            return;
        }
        if let Some(c) = m
            .cursors
            .iter_mut()
            .find(|c| c.topic == t.topic && c.next == t.seq && c.out)
        {
            c.next += 1;
            c.out = false;
            c.failures = 0;
            self.trim(&t.topic);
        }
    }

    fn nack(&mut self, t: &Ticket, now: Instant) {
        let (attempts_max, (base, cap)) = (self.attempts_max, self.backoff_ns);
        let Some(m) = self.members.get_mut(&t.sub).filter(|m| m.life == t.life) else {
            return;
        };
        if t.redriven {
            if m.redrive_out && m.redrive.front().is_some_and(|l| l.1 == t.seq) {
                let letter = m.redrive.pop_front().expect("checked");
                m.dead.push(letter);
                m.redrive_out = false;
            }
            return;
        }
        let Some(i) = m
            .cursors
            .iter()
            .position(|c| c.topic == t.topic && c.next == t.seq && c.out)
        else {
            return;
        };
        let c = &mut m.cursors[i];
        c.out = false;
        c.failures += 1;
        if c.failures >= attempts_max {
            let payload = self.payload(&t.topic, t.seq).unwrap_or_default();
            let m = self.members.get_mut(&t.sub).expect("found above");
            let c = &mut m.cursors[i];
            c.next += 1;
            c.failures = 0;
            m.dead.push((t.topic.clone(), t.seq, payload));
            self.trim(&t.topic);
        } else {
            let shift = (c.failures - 1).min(20);
            let delay = base.saturating_mul(1 << shift).min(cap).max(1);
            c.retry_at = Some(now.as_nanos() + delay);
        }
    }

    fn crash(&mut self, id: SubscriberId, _now: Instant) {
        if let Some(m) = self.members.get_mut(&id.0) {
            m.up = false;
            m.life += 1;
            for c in m.cursors.iter_mut().filter(|c| c.out) {
                c.out = false;
                c.lost = true;
            }
            if m.redrive_out {
                m.redrive_out = false;
                m.redrive_lost = true;
            }
        }
    }

    fn resume(&mut self, id: SubscriberId, _now: Instant) {
        if let Some(m) = self.members.get_mut(&id.0) {
            m.up = true;
        }
    }

    fn redrive(&mut self, id: SubscriberId, _now: Instant) -> usize {
        let Some(m) = self.members.get_mut(&id.0) else {
            return 0;
        };
        let n = m.dead.len();
        m.redrive.extend(m.dead.drain(..));
        n
    }

    fn next_seq(&self, topic: &str) -> Option<u64> {
        Some(self.logs.get(topic).map_or(0, Log::end))
    }

    fn lag(&self, id: SubscriberId, topic: &str) -> Option<u64> {
        let c = self
            .members
            .get(&id.0)?
            .cursors
            .iter()
            .find(|c| &*c.topic == topic)?;
        Some(
            self.logs
                .get(topic)
                .map_or(0, Log::end)
                .saturating_sub(c.next),
        )
    }

    fn dead_letters(&self, id: SubscriberId) -> Vec<(String, u64)> {
        self.members.get(&id.0).map_or_else(Vec::new, |m| {
            m.dead.iter().map(|(t, s, _)| (t.to_string(), *s)).collect()
        })
    }

    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|m| m.cursors.iter())
            .filter_map(|c| c.retry_at)
            .filter(|at| *at > now.as_nanos())
            .min()
            .map(Instant::from_nanos)
    }

    fn retained_max(&self) -> usize {
        self.logs
            .values()
            .map(|l| l.events.len())
            .max()
            .unwrap_or(0)
    }

    fn dead_events(&self) -> u64 {
        self.dead_events
    }

    fn policy(&self) -> BusPolicy {
        self.declared.unwrap_or(BusPolicy {
            capacity: self.capacity,
            attempts_max: self.attempts_max,
            // Capped exponential backoff: the longest wait is the cap.
            retry_wait_max: Duration::from_nanos(self.backoff_ns.1.max(1)),
        })
    }
}
