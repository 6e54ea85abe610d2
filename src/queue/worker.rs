//! The decision core of one queue worker: one sans-IO state machine that both the
//! simulated workers of the queue world, which the simulator verifies, and the tokio
//! adapter's [`WorkerPool`](crate::queue::tokio::WorkerPool) drive, so what a service
//! runs is what the simulator proves (quinn over quinn-proto).
//!
//! The core decides every step of a worker and performs none: its driver feeds it `now`
//! and what happened (a lease or none, the delivery's outcome, a timer, the queue's
//! answer to a heartbeat, an ack or a nack) and carries out what it asks ([`Next`]):
//! ask the queue for a lease, sleep until an instant (or until woken by new work), start
//! a delivery, heartbeat, ack, nack, drop the delivery, or exit. The queue itself and
//! the delivery are the driver's: the world's are a [`TaskQueue`](super::contract::TaskQueue)
//! and simulated links and targets, the adapter's a shared [`Queue`](super::Queue) and
//! an async function.
//!
//! The policy, in one place:
//!
//! - **Idle.** A worker without a task asks for a lease; when none is due it sleeps until
//!   the queue's next due time (when its driver knows it), at most the poll interval and
//!   at least 1 ms, or until woken by new work.
//! - **Delivering.** A leased task is delivered at once. Meanwhile the worker heartbeats
//!   every [`heartbeat_every`] (a third of the visibility timeout, in whole
//!   milliseconds); the next beat is due that long after the previous one was answered.
//!   A refused heartbeat (the lease expired; another worker may hold the task) drops the
//!   delivery at once: the worker must not act on it. A heartbeat the queue could not
//!   take (the queue process is down) is simply tried again a beat later. With a
//!   delivery timeout, a delivery without an outcome by then counts as failed.
//! - **Settling.** A delivered task is acked, a failed one nacked, one the target fenced
//!   (it saw a newer lease's token) dropped. Whatever the queue answers, the worker then
//!   asks for its next lease at once.
//! - **Stopping.** A stopped worker takes nothing new: an idle one exits, a delivering
//!   one finishes and settles the delivery in hand, then exits.
//!
//! Who drives what: the world never stops a worker nor wakes one on new work, and it
//! does not pass the queue's next due time (a plug-in's is only a hint, and its workers
//! poll at the interval); the adapter never sees a fenced target, an unavailable queue
//! or a delivery timeout (its delivery function owns its own timeouts).
#![cfg_attr(not(all(feature = "sim", feature = "tokio")), allow(dead_code))]

use std::time::Duration;

use crate::clock::Instant;
use crate::queue::core::{Lease, LeaseToken, Nacked};

/// How often a worker heartbeats a lease whose visibility timeout is `visibility_timeout`:
/// a third of it, in whole milliseconds, at least 1 ms.
pub(crate) fn heartbeat_every(visibility_timeout: Duration) -> Duration {
    let ms = u64::try_from(visibility_timeout.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis((ms / 3).max(1))
}

/// The fixed settings of one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WorkerConfig {
    /// Heartbeat this often while delivering, or never.
    pub heartbeat: Option<Duration>,
    /// The longest sleep of an idle worker.
    pub poll: Duration,
    /// A delivery without an outcome after this long counts as failed; none: wait for it.
    pub delivery_timeout: Option<Duration>,
}

/// How a delivery ended, as the driver classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The target has the task (applied, or already held): ack.
    Delivered,
    /// The delivery failed: nack.
    Failed,
    /// The target refused the delivery's fencing token (a newer lease exists): drop.
    Fenced,
}

/// The queue's answer to a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// The lease was extended.
    Extended,
    /// The lease is no longer valid.
    Refused,
    /// The queue could not be asked (its process is down).
    Unavailable,
}

/// The queue's answer to an ack or a nack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The ack was accepted.
    Acked,
    /// The nack was accepted, with this result.
    Nacked(Nacked),
    /// The lease was no longer valid.
    Refused,
    /// The queue could not be asked (its process is down).
    Unavailable,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Ask the queue for a lease now and report it with [`WorkerCore::on_lease`].
    Lease,
    /// Sleep until `until` or until woken by new work, then call [`WorkerCore::on_wake`].
    Sleep {
        /// The end of the sleep.
        until: Instant,
    },
    /// Start delivering `lease` now, then wait as [`WorkerCore::wake_at`] says (boxed:
    /// a lease is large, the other steps are small).
    Deliver(Box<Lease>),
    /// Keep waiting for the delivery's outcome ([`WorkerCore::on_outcome`]) until
    /// [`WorkerCore::wake_at`], then call [`WorkerCore::on_timer`].
    Wait,
    /// Heartbeat this lease and report with [`WorkerCore::on_heartbeat`].
    Heartbeat(LeaseToken),
    /// Ack this lease and report with [`WorkerCore::on_settled`].
    Ack(LeaseToken),
    /// Nack this lease and report with [`WorkerCore::on_settled`].
    Nack(LeaseToken),
    /// Drop the delivery in hand without settling it (its lease is lost), then call
    /// [`WorkerCore::abandon`].
    Abandon,
    /// The worker is done (it was stopped).
    Exit,
}

/// What one worker did, as a pool reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Deliveries acked.
    pub delivered: u64,
    /// Deliveries nacked.
    pub failed: u64,
    /// Deliveries dropped because their lease was lost, or never settled.
    pub abandoned: u64,
    /// Heartbeats the queue answered.
    pub heartbeats: u64,
}

/// The delivery in hand.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Delivery {
    lease: Lease,
    since: Instant,
    deadline: Option<Instant>,
    next_beat: Option<Instant>,
}

/// One worker's state and decisions.
#[derive(Clone, Debug)]
pub(crate) struct WorkerCore {
    config: WorkerConfig,
    delivery: Option<Delivery>,
    stopping: bool,
    wake_idle: bool,
    tally: Tally,
}

impl WorkerCore {
    /// A fresh worker (also after a crash: nothing survives it).
    pub fn new(config: WorkerConfig) -> Self {
        WorkerCore {
            config,
            delivery: None,
            stopping: false,
            wake_idle: false,
            tally: Tally::default(),
        }
    }

    /// The first step: ask for a lease.
    pub fn start(&self) -> Next {
        self.idle_next()
    }

    fn idle_next(&self) -> Next {
        if self.stopping {
            Next::Exit
        } else {
            Next::Lease
        }
    }

    /// The lease in hand and since when, if delivering.
    pub fn in_hand(&self) -> Option<(Lease, Instant)> {
        self.delivery.as_ref().map(|d| (d.lease.clone(), d.since))
    }

    /// When the delivery in hand counts as failed without an outcome, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.delivery.as_ref().and_then(|d| d.deadline)
    }

    /// When the next heartbeat is due, if any.
    pub fn next_beat(&self) -> Option<Instant> {
        self.delivery.as_ref().and_then(|d| d.next_beat)
    }

    /// When a delivering worker must next call [`on_timer`](Self::on_timer) without an
    /// outcome: the earlier of the deadline and the next heartbeat; `None`: never.
    pub fn wake_at(&self) -> Option<Instant> {
        match (self.deadline(), self.next_beat()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the worker did so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Whether the last settlement put a task back that an idle worker could take now
    /// (a nack superseded by a waiting newer version); reading it clears it.
    pub fn take_wake_idle(&mut self) -> bool {
        std::mem::take(&mut self.wake_idle)
    }

    /// The queue answered [`Next::Lease`] with `lease` (none when nothing is due or the
    /// queue could not be asked); `next_due` is the queue's next due time, when the
    /// driver knows it.
    pub fn on_lease(
        &mut self,
        now: Instant,
        lease: Option<Lease>,
        next_due: Option<Instant>,
    ) -> Next {
        let Some(lease) = lease else {
            if self.stopping {
                return Next::Exit;
            }
            let wait = next_due
                .map_or(self.config.poll, |t| {
                    t.saturating_since(now).min(self.config.poll)
                })
                .max(Duration::from_millis(1));
            return Next::Sleep {
                until: now.saturating_add(wait),
            };
        };
        self.delivery = Some(Delivery {
            lease: lease.clone(),
            since: now,
            deadline: self.config.delivery_timeout.map(|d| now.saturating_add(d)),
            next_beat: self.config.heartbeat.map(|d| now.saturating_add(d)),
        });
        Next::Deliver(Box::new(lease))
    }

    /// An idle worker's sleep ended (its time came, or new work woke it).
    pub fn on_wake(&mut self) -> Next {
        self.idle_next()
    }

    /// A delivering worker's timer fired at `now`: a delivery past its deadline failed;
    /// a due heartbeat is sent; otherwise it keeps waiting.
    pub fn on_timer(&mut self, now: Instant) -> Next {
        let Some(d) = self.delivery.as_ref() else {
            return self.idle_next();
        };
        if d.deadline.is_some_and(|t| now >= t) {
            return self.on_outcome(Outcome::Failed);
        }
        if d.next_beat.is_some_and(|t| now >= t) {
            return Next::Heartbeat(d.lease.token);
        }
        Next::Wait
    }

    /// The queue answered a heartbeat at `now`.
    pub fn on_heartbeat(&mut self, now: Instant, beat: Beat) -> Next {
        let Some(d) = self.delivery.as_mut() else {
            return self.idle_next();
        };
        match beat {
            Beat::Refused => {
                self.tally.heartbeats += 1;
                Next::Abandon
            }
            Beat::Extended | Beat::Unavailable => {
                if beat == Beat::Extended {
                    self.tally.heartbeats += 1;
                }
                d.next_beat = self.config.heartbeat.map(|e| now.saturating_add(e));
                Next::Wait
            }
        }
    }

    /// The delivery in hand ended with `outcome`.
    pub fn on_outcome(&mut self, outcome: Outcome) -> Next {
        let Some(d) = self.delivery.as_ref() else {
            return self.idle_next();
        };
        match outcome {
            Outcome::Delivered => Next::Ack(d.lease.token),
            Outcome::Failed => Next::Nack(d.lease.token),
            Outcome::Fenced => Next::Abandon,
        }
    }

    /// The queue answered the ack or nack of the delivery in hand.
    pub fn on_settled(&mut self, settled: Settled) -> Next {
        if self.delivery.take().is_some() {
            match settled {
                Settled::Acked => self.tally.delivered += 1,
                Settled::Nacked(r) => {
                    self.tally.failed += 1;
                    self.wake_idle = r == Nacked::Superseded;
                }
                Settled::Refused | Settled::Unavailable => self.tally.abandoned += 1,
            }
        }
        self.idle_next()
    }

    /// Drops the delivery in hand unsettled (its lease is lost, or the driver already
    /// settled it some other way).
    pub fn abandon(&mut self) -> Next {
        if self.delivery.take().is_some() {
            self.tally.abandoned += 1;
        }
        self.idle_next()
    }

    /// Takes no new task from now on: an idle worker exits at once, a delivering one
    /// after settling the delivery in hand.
    pub fn stop(&mut self) -> Next {
        self.stopping = true;
        if self.delivery.is_some() {
            Next::Wait
        } else {
            Next::Exit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::profile::{self, ProfileId, TargetId};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: u64) -> Instant {
        Instant::ZERO.saturating_add(ms(n))
    }

    fn lease(fence: u64) -> Lease {
        let job = profile::job(ProfileId(1), TargetId(0), 1);
        let key = job.key;
        Lease {
            job,
            token: LeaseToken::new(key, fence),
            attempt: 1,
            deadline: at(300),
            redriven: false,
        }
    }

    fn core(timeout: Option<u64>) -> WorkerCore {
        WorkerCore::new(WorkerConfig {
            heartbeat: Some(heartbeat_every(ms(100))),
            poll: ms(50),
            delivery_timeout: timeout.map(ms),
        })
    }

    #[test]
    fn the_heartbeat_is_a_third_of_the_timeout_in_whole_milliseconds() {
        assert_eq!(heartbeat_every(ms(100)), ms(33));
        assert_eq!(heartbeat_every(ms(3_000)), ms(1_000));
        assert_eq!(heartbeat_every(Duration::from_micros(900)), ms(1));
        assert_eq!(heartbeat_every(Duration::MAX), ms(u64::MAX / 3));
    }

    #[test]
    fn an_idle_worker_sleeps_until_the_next_due_task_at_most_the_poll_interval() {
        let mut c = core(None);
        assert_eq!(c.start(), Next::Lease);
        assert_eq!(
            c.on_lease(at(10), None, None),
            Next::Sleep { until: at(60) }
        );
        assert_eq!(
            c.on_lease(at(10), None, Some(at(30))),
            Next::Sleep { until: at(30) }
        );
        assert_eq!(
            c.on_lease(at(10), None, Some(at(9))),
            Next::Sleep { until: at(11) }
        );
        assert_eq!(c.on_wake(), Next::Lease);
    }

    #[test]
    fn heartbeats_follow_each_answer_and_a_refusal_drops_the_delivery() {
        let mut c = core(None);
        let l = lease(1);
        assert_eq!(
            c.on_lease(at(0), Some(l.clone()), None),
            Next::Deliver(Box::new(l.clone()))
        );
        assert_eq!(c.wake_at(), Some(at(33)));
        assert_eq!(c.on_timer(at(20)), Next::Wait);
        assert_eq!(c.on_timer(at(33)), Next::Heartbeat(l.token));
        assert_eq!(c.on_heartbeat(at(34), Beat::Extended), Next::Wait);
        assert_eq!(c.wake_at(), Some(at(67)));
        assert_eq!(c.on_heartbeat(at(70), Beat::Unavailable), Next::Wait);
        assert_eq!(c.wake_at(), Some(at(103)));
        assert_eq!(c.on_heartbeat(at(103), Beat::Refused), Next::Abandon);
        assert_eq!(c.abandon(), Next::Lease);
        assert_eq!(
            c.tally(),
            Tally {
                abandoned: 1,
                heartbeats: 2,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn outcomes_settle_and_the_deadline_fails_a_silent_delivery() {
        let mut c = core(Some(50));
        let l = lease(2);
        c.on_lease(at(0), Some(l.clone()), None);
        assert_eq!(c.wake_at(), Some(at(33)));
        assert_eq!(c.on_outcome(Outcome::Delivered), Next::Ack(l.token));
        assert_eq!(c.on_settled(Settled::Acked), Next::Lease);
        c.on_lease(at(100), Some(l.clone()), None);
        assert_eq!(c.on_heartbeat(at(133), Beat::Extended), Next::Wait);
        assert_eq!(c.wake_at(), Some(at(150)));
        assert_eq!(c.on_timer(at(150)), Next::Nack(l.token));
        assert_eq!(
            c.on_settled(Settled::Nacked(Nacked::Superseded)),
            Next::Lease
        );
        assert!(c.take_wake_idle());
        assert!(!c.take_wake_idle());
        c.on_lease(at(200), Some(l.clone()), None);
        assert_eq!(c.on_outcome(Outcome::Fenced), Next::Abandon);
        assert_eq!(c.abandon(), Next::Lease);
        assert_eq!(
            c.tally(),
            Tally {
                delivered: 1,
                failed: 1,
                abandoned: 1,
                heartbeats: 1,
            }
        );
    }

    #[test]
    fn a_stopped_worker_finishes_the_delivery_in_hand_then_exits() {
        let mut c = core(None);
        assert_eq!(c.clone().stop(), Next::Exit);
        let l = lease(3);
        c.on_lease(at(0), Some(l.clone()), None);
        assert_eq!(c.stop(), Next::Wait);
        assert_eq!(c.on_outcome(Outcome::Failed), Next::Nack(l.token));
        assert_eq!(c.on_settled(Settled::Refused), Next::Exit);
        assert_eq!(c.on_lease(at(5), None, None), Next::Exit);
        assert_eq!(c.tally().abandoned, 1);
    }
}
