//! The worker pool and the verified worker core agree: [`WorkerPool`] on tokio's paused
//! clock and the sans-IO [`WorkerCore`] driven directly by a plain event loop (no tokio,
//! the decisions the queue world makes too), through the same script of enqueues and
//! delivery behaviours (how long each takes, whether it fails, whether the process
//! stalls past the visibility timeout at its start), must make the same decisions: the
//! same leases at the same instants (so the same idle sleeps and the same
//! acks and nacks before them), the same deliveries finished or dropped at the same
//! instants (so the same heartbeats), the same counts.
//!
//! The two things of tokio's the direct loop models: its timer resolution (a sleep ends
//! at its deadline rounded up to the millisecond), and that a stalled process stalls
//! its producer too (an enqueue due during the stall happens when it ends). Nothing in
//! the script happens at the same instant as something else.

#![allow(clippy::unwrap_used)]

use super::core::{Job as Task, Lease, Nacked, Queue, QueueConfig};
use super::profile::{self, ProfileId, TargetId};
use super::tokio::{PoolConfig, PoolReport, SharedQueue, WorkerPool};
use super::worker::{Beat, Next, Outcome, Settled, WorkerConfig, WorkerCore, heartbeat_every};
use crate::clock::Instant;
use crate::rt::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const POLL: Duration = Duration::from_millis(70);

fn config() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(ms(300))
        .attempts_max(3)
        .backoff(ms(40), ms(400))
        .build()
        .unwrap()
}

fn task(p: u64, t: u32, v: u64) -> Task {
    profile::job(ProfileId(p), TargetId(t), v)
}

/// How delivery number `n` behaves: the process stalls this long when it starts, then
/// the delivery takes `took` and succeeds or fails.
#[derive(Clone, Copy, Debug)]
struct Behaviour {
    stall: Duration,
    took: Duration,
    ok: bool,
}

fn behaviour(n: usize) -> Behaviour {
    let b = |stall, took, ok| Behaviour {
        stall: ms(stall),
        took: ms(took),
        ok,
    };
    match n {
        0 => b(0, 13, true),
        1 => b(0, 7, false),
        2 => b(0, 650, true), // heartbeats keep it leased
        3 => b(0, 9, false),
        4 => b(900, 5, true), // stalls past the timeout: its heartbeat is refused
        5 => b(0, 11, false),
        6 => b(0, 21, false),
        7 => b(0, 420, false),
        _ => b(0, 3, true),
    }
}

/// The script's enqueues: (ms since the start, task). None lands on another event.
fn script() -> Vec<(u64, Task)> {
    vec![
        (3, task(1, 0, 1)),
        (5, task(2, 0, 1)),
        (211, task(1, 1, 1)),
        (1_007, task(3, 0, 1)),
        (1_009, task(3, 0, 2)),
        (2_513, task(4, 1, 1)),
        (2_517, task(4, 1, 2)),
        (4_001, task(5, 0, 1)),
    ]
}

/// What one side did.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// A delivery started (ns since the start).
    Started(u64, Box<Lease>),
    /// The delivery finished with this result.
    Finished(u64, bool),
    /// The delivery was dropped unfinished.
    Dropped(u64),
}

fn nanos(now: Instant) -> u64 {
    now.as_nanos()
}

/// The adapter on tokio's paused clock.
async fn adapter() -> (Vec<Seen>, PoolReport, super::core::QueueCounts) {
    let origin = ::tokio::time::Instant::now();
    let q = SharedQueue::new(config());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0_usize));
    let t = move || {
        let d = ::tokio::time::Instant::now().saturating_duration_since(origin);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    };
    struct Guard<F: Fn() -> u64> {
        seen: Arc<Mutex<Vec<Seen>>>,
        done: bool,
        t: F,
    }
    impl<F: Fn() -> u64> Drop for Guard<F> {
        fn drop(&mut self) {
            if !self.done {
                lock(&self.seen).push(Seen::Dropped((self.t)()));
            }
        }
    }
    let pool = WorkerPool::spawn(
        &q,
        PoolConfig::builder()
            .workers(1)
            .poll_interval(POLL)
            .build()
            .unwrap(),
        {
            let seen = Arc::clone(&seen);
            move |lease: Lease| {
                let seen = Arc::clone(&seen);
                let n = {
                    let mut c = lock(&calls);
                    *c += 1;
                    *c - 1
                };
                let b = behaviour(n);
                async move {
                    lock(&seen).push(Seen::Started(t(), Box::new(lease)));
                    let mut guard = Guard {
                        seen: Arc::clone(&seen),
                        done: false,
                        t,
                    };
                    if !b.stall.is_zero() {
                        ::tokio::time::advance(b.stall).await;
                    }
                    ::tokio::time::sleep(b.took).await;
                    guard.done = true;
                    lock(&seen).push(Seen::Finished(t(), b.ok));
                    if b.ok { Ok(()) } else { Err("failed") }
                }
            }
        },
    )
    .unwrap();
    for (at, task) in script() {
        ::tokio::time::sleep_until(origin + ms(at)).await;
        q.enqueue(task);
    }
    q.settled().await;
    let report = pool.shutdown().await;
    let seen = lock(&seen).clone();
    (seen, report, q.counts())
}

/// Rounds `at` up to the millisecond (tokio's timer resolution).
fn ceil_ms(at: Instant) -> Instant {
    let n = at.as_nanos().div_ceil(1_000_000) * 1_000_000;
    Instant::ZERO.saturating_add(Duration::from_nanos(n))
}

/// The core driven directly by a plain event loop over the same script.
fn direct() -> (Vec<Seen>, PoolReport, super::core::QueueCounts) {
    let at = |n: u64| Instant::ZERO.saturating_add(ms(n));
    let mut q = Queue::new(config());
    let mut core = WorkerCore::new(WorkerConfig {
        heartbeat: Some(heartbeat_every(config().visibility_timeout())),
        poll: POLL,
        delivery_timeout: None,
    });
    let mut enqueues = script().into_iter().peekable();
    let mut seen = Vec::new();
    let mut calls = 0;
    let mut now = Instant::ZERO;
    // Applies every enqueue due by `now`, at its time, or at `now` when the producer
    // was stalled with the whole process.
    let catch_up = |q: &mut Queue, enqueues: &mut std::iter::Peekable<_>, now: Instant, late| {
        while let Some((t, task)) = enqueues.next_if(|(t, _): &(u64, Task)| at(*t) <= now) {
            q.enqueue(task, if late { now } else { at(t) });
        }
    };
    let mut next = core.start();
    loop {
        next = match next {
            Next::Exit => break,
            Next::Lease => {
                catch_up(&mut q, &mut enqueues, now, false);
                if enqueues.peek().is_none() && q.counts().in_flight() == 0 {
                    core.stop()
                } else {
                    let lease = q.lease(now);
                    core.on_lease(now, lease, q.poll_timeout())
                }
            }
            Next::Sleep { until } => {
                let wake = ceil_ms(until);
                match enqueues.peek() {
                    // New work wakes the worker.
                    Some((t, _)) if at(*t) < wake => now = at(*t),
                    _ => now = wake,
                }
                core.on_wake()
            }
            Next::Deliver(lease) => {
                seen.push(Seen::Started(nanos(now), lease));
                let b = behaviour(calls);
                calls += 1;
                if !b.stall.is_zero() {
                    catch_up(&mut q, &mut enqueues, now, false);
                    now = now.saturating_add(b.stall);
                    catch_up(&mut q, &mut enqueues, now, true);
                }
                let done = now.saturating_add(b.took);
                let mut step = Next::Wait;
                loop {
                    step = match step {
                        Next::Wait => match core.wake_at().map(ceil_ms) {
                            Some(w) if w < done => {
                                now = now.max(w);
                                core.on_timer(now)
                            }
                            _ => {
                                now = done;
                                seen.push(Seen::Finished(nanos(now), b.ok));
                                core.on_outcome(if b.ok {
                                    Outcome::Delivered
                                } else {
                                    Outcome::Failed
                                })
                            }
                        },
                        Next::Heartbeat(token) => {
                            catch_up(&mut q, &mut enqueues, now, false);
                            let beat = match q.heartbeat(&token, now) {
                                Ok(_) => Beat::Extended,
                                Err(_) => Beat::Refused,
                            };
                            core.on_heartbeat(now, beat)
                        }
                        Next::Ack(token) => {
                            catch_up(&mut q, &mut enqueues, now, false);
                            let r = q.ack(&token, now);
                            break core.on_settled(r.map_or(Settled::Refused, |()| Settled::Acked));
                        }
                        Next::Nack(token) => {
                            catch_up(&mut q, &mut enqueues, now, false);
                            let r: Result<Nacked, _> = q.nack(&token, "failed", now);
                            break core.on_settled(r.map_or(Settled::Refused, Settled::Nacked));
                        }
                        Next::Abandon => {
                            seen.push(Seen::Dropped(nanos(now)));
                            break core.abandon();
                        }
                        other => break other,
                    };
                }
            }
            _ => core.abandon(),
        };
    }
    let t = core.tally();
    let report = PoolReport {
        delivered: t.delivered,
        failed: t.failed,
        abandoned: t.abandoned,
        heartbeats: t.heartbeats,
        panicked: 0,
    };
    (seen, report, q.counts())
}

#[tokio::test(start_paused = true)]
async fn the_pool_makes_the_decisions_of_the_worker_core() {
    let (a, a_report, a_counts) = adapter().await;
    let (b, b_report, b_counts) = direct();
    assert_eq!(a, b, "the same deliveries at the same instants");
    assert_eq!(a_report, b_report);
    assert_eq!(a_counts, b_counts);
    // The script reaches what it is for.
    assert!(b_report.heartbeats >= 6, "{b_report:?}");
    assert_eq!(b_report.abandoned, 1, "{b_report:?}");
    assert!(b_counts.retries >= 3 && b_counts.dead >= 1, "{b_counts:?}");
    assert!(b_counts.superseded >= 1, "{b_counts:?}");
}
