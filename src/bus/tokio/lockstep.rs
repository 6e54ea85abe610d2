//! The adapter and the verified subscriber core agree: [`SharedBus`]'s subscriber tasks
//! on a paused tokio clock, and the sans-IO [`Loop`] driven directly over a reference
//! [`Bus`] by a small discrete-event loop (no tokio), go through the same script of
//! publishes, handler outcomes (success, error, panic) and handler durations, then a
//! shutdown; they must make the same decisions: the same handler calls (topic, seq,
//! attempt, redriven) at the same instants (so the same retries after the same
//! backoffs), the same dead letters, the same exits and the same totals.
//!
//! The direct loop carries the core's steps out as its contract says (`Deliver` runs
//! the scripted handler, `Wait(Some(at))` is a timer at `at`, `Wait(None)` waits for a
//! publish or the shutdown, `Exit` ends), rounding timers up to the millisecond as
//! tokio's timer wheel does; every scripted time is a whole millisecond.

use super::{Event, SharedBus};
use crate::bus::core::{Bus, BusConfig, BusTotals};
use crate::bus::subscriber::{BusParts, Loop, Outcome, Status, Step};
use crate::bus::{DeliveryToken, SubscriberId};
use crate::clock::Instant;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MS: u64 = 1_000_000;
/// The subscribers and their topics.
const SUBS: [&[&str]; 2] = [&["x", "y"], &["y"]];
/// When the shutdown begins, ms.
const SHUTDOWN_MS: u64 = 80;

fn config() -> BusConfig {
    BusConfig::builder()
        .capacity(64)
        .attempts_max(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .unwrap()
}

/// The publishes: (ms, topic, payload), in time order, no two at one instant.
fn publishes() -> Vec<(u64, &'static str, u64)> {
    let mut p: Vec<(u64, &str, u64)> = (0..12).map(|i| (7 * i, "x", i)).collect();
    p.extend((0..6).map(|i| (8 * i + 1, "y", 100 + i)));
    // One after the shutdown began: refused by the adapter, not published by the loop.
    p.push((SHUTDOWN_MS + 3, "x", 999));
    p.sort();
    p
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Does {
    Ok,
    Err,
    Panic,
}

/// Subscriber `sub`'s handler on `topic#seq`, attempt `attempt`: its duration (ms) and
/// what it does.
fn behave(sub: usize, topic: &str, seq: u64, attempt: u32, redriven: bool) -> (u64, Does) {
    let does = match (sub, topic) {
        _ if redriven => Does::Ok,
        (0, "x") if seq == 9 => Does::Err,
        (0, "x") if seq % 5 == 4 && attempt == 1 => Does::Panic,
        (0, "x") if seq.is_multiple_of(3) && attempt <= 2 => Does::Err,
        (1, _) if seq == 0 && attempt == 1 => Does::Err,
        (1, _) if seq % 4 == 2 => Does::Err,
        _ => Does::Ok,
    };
    let ms = match sub {
        0 if topic == "x" => 2 + (seq * 7 + u64::from(attempt) * 3) % 11,
        0 => 1,
        _ => 3 + seq % 4,
    };
    (ms, does)
}

/// One handler call: (ns since the origin, subscriber, topic, seq, attempt, redriven).
type Call = (u64, usize, String, u64, u32, bool);

/// What one side did.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    calls: Vec<Call>,
    /// Per subscriber: its dead letters (topic, seq, attempts, at ns).
    dead: Vec<Vec<(String, u64, u32, u64)>>,
    /// Per subscriber: when it exited, ns.
    exits: Vec<u64>,
    totals: BusTotals,
}

/// The adapter, on the paused clock.
async fn adapter() -> Record {
    let origin = ::tokio::time::Instant::now();
    let bus: SharedBus<u64> = SharedBus::new(config());
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let exits: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut handles = Vec::new();
    for (sub, topics) in SUBS.iter().enumerate() {
        let calls = Arc::clone(&calls);
        let handle = bus
            .subscribe(topics, move |e: Event<u64>| {
                let at = origin.elapsed().as_nanos() as u64;
                calls.lock().unwrap().push((
                    at,
                    sub,
                    e.topic.to_string(),
                    e.seq,
                    e.attempt,
                    e.redriven,
                ));
                let (ms, does) = behave(sub, &e.topic, e.seq, e.attempt, e.redriven);
                async move {
                    ::tokio::time::sleep(Duration::from_millis(ms)).await;
                    match does {
                        Does::Ok => Ok(()),
                        Does::Err => Err("scripted"),
                        Does::Panic => panic!("scripted panic (lockstep test)"),
                    }
                }
            })
            .unwrap();
        handles.push(handle);
    }
    for (sub, handle) in handles.iter().enumerate() {
        let exits = Arc::clone(&exits);
        let me = handle.me.clone();
        ::tokio::spawn(async move {
            me.finished().await;
            exits
                .lock()
                .unwrap()
                .push((sub, origin.elapsed().as_nanos() as u64));
        });
    }
    let publisher = {
        let bus = bus.clone();
        ::tokio::spawn(async move {
            for (ms, topic, payload) in publishes() {
                ::tokio::time::sleep_until(origin + Duration::from_millis(ms)).await;
                let _ = bus.publish(topic, payload);
            }
        })
    };
    ::tokio::time::sleep_until(origin + Duration::from_millis(SHUTDOWN_MS)).await;
    let report = bus.shutdown().await;
    publisher.await.unwrap();
    // Let the exit watchers record.
    for _ in 0..10 {
        ::tokio::task::yield_now().await;
    }
    let mut exits = exits.lock().unwrap().clone();
    exits.sort();
    let ns = |at: Instant| at.as_nanos();
    Record {
        calls: calls.lock().unwrap().clone(),
        dead: handles
            .iter()
            .map(|h| {
                h.dead_letters()
                    .iter()
                    .map(|l| (l.topic.to_string(), l.seq, l.attempts, ns(l.at)))
                    .collect()
            })
            .collect(),
        exits: exits.into_iter().map(|(_, at)| at).collect(),
        totals: report.totals,
    }
}

/// One subscriber of the direct loop.
struct Sub {
    id: SubscriberId,
    core: Loop<DeliveryToken>,
    /// The handler runs until then, with this outcome.
    busy: Option<(u64, Outcome)>,
    /// Waiting: for a wake-up, and until then if `Some`.
    waiting: Option<Option<u64>>,
    /// A wake-up came while it was not waiting (tokio's `Notify` keeps one).
    permit: bool,
    exited: Option<u64>,
}

/// The sans-IO core, driven directly: a discrete-event loop in nanoseconds.
fn direct() -> Record {
    let mut bus: Bus<u64> = Bus::new(config());
    let mut subs: Vec<Sub> = SUBS
        .iter()
        .map(|topics| Sub {
            id: bus.subscribe(topics, Instant::ZERO),
            core: Loop::new(),
            busy: None,
            waiting: None,
            permit: false,
            exited: None,
        })
        .collect();
    let mut calls = Vec::new();
    let mut closed = false;
    let mut publishes = publishes().into_iter().peekable();
    let ceil_ms = |ns: u64| ns.div_ceil(MS) * MS;
    // Runs subscriber `i`'s steps at `now` until it delivers, waits or exits.
    let step = |bus: &mut Bus<u64>,
                s: &mut Sub,
                i: usize,
                closed: bool,
                now: u64,
                calls: &mut Vec<Call>| {
        let status = if closed {
            Status::Closing
        } else {
            Status::Open
        };
        let t = Instant::from_nanos(now);
        let mut parts = BusParts { bus, id: s.id };
        let _ = s.core.settle(&mut parts, t);
        loop {
            match s.core.next(&mut parts, status, t) {
                Step::Deliver(d) => {
                    let topic = parts.bus.topic_arc(d.topic).to_string();
                    calls.push((now, i, topic.clone(), d.seq, d.attempt, d.redriven));
                    let (ms, does) = behave(i, &topic, d.seq, d.attempt, d.redriven);
                    let outcome = if does == Does::Ok {
                        Outcome::Handled
                    } else {
                        Outcome::Failed
                    };
                    s.busy = Some((now + ms * MS, outcome));
                    s.waiting = None;
                    return;
                }
                Step::Wait(at) => {
                    if std::mem::take(&mut s.permit) {
                        continue;
                    }
                    s.waiting = Some(at.map(|at| ceil_ms(at.as_nanos())));
                    return;
                }
                Step::Exit => {
                    s.exited = Some(now);
                    s.waiting = None;
                    return;
                }
            }
        }
    };
    for (i, s) in subs.iter_mut().enumerate() {
        step(&mut bus, s, i, closed, 0, &mut calls);
    }
    loop {
        // The next instant anything happens.
        let mut next: Option<u64> = publishes.peek().map(|p| p.0 * MS);
        if !closed {
            next = Some(next.map_or(SHUTDOWN_MS * MS, |n| n.min(SHUTDOWN_MS * MS)));
        }
        for s in subs.iter().filter(|s| s.exited.is_none()) {
            let at = s.busy.map(|b| b.0).or(s.waiting.flatten());
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let Some(now) = next else { break };
        if subs.iter().all(|s| s.exited.is_some()) && publishes.peek().is_none() {
            break;
        }
        // Handlers that finish now, then timers due now, then a publish, then the shutdown.
        for (i, s) in subs.iter_mut().enumerate() {
            if let Some((until, outcome)) = s.busy
                && until == now
            {
                s.busy = None;
                s.core.done(outcome);
                step(&mut bus, s, i, closed, now, &mut calls);
            }
        }
        for (i, s) in subs.iter_mut().enumerate() {
            if s.exited.is_none() && s.waiting == Some(Some(now)) {
                step(&mut bus, s, i, closed, now, &mut calls);
            }
        }
        if publishes.peek().is_some_and(|p| p.0 * MS == now)
            && let Some((_, topic, payload)) = publishes.next()
            && !closed
        {
            bus.publish(topic, payload, Instant::from_nanos(now))
                .unwrap();
            for (i, s) in subs.iter_mut().enumerate() {
                if s.exited.is_none() && s.waiting.is_some() && SUBS[i].contains(&topic) {
                    step(&mut bus, s, i, closed, now, &mut calls);
                }
            }
        }
        if !closed && now == SHUTDOWN_MS * MS {
            closed = true;
            for (i, s) in subs.iter_mut().enumerate() {
                if s.exited.is_some() {
                    continue;
                }
                if s.waiting.is_some() {
                    step(&mut bus, s, i, closed, now, &mut calls);
                } else {
                    s.permit = true;
                }
            }
        }
    }
    let exits: Vec<u64> = subs.iter().map(|s| s.exited.unwrap_or(u64::MAX)).collect();
    Record {
        calls,
        dead: subs
            .iter()
            .map(|s| {
                bus.dead_letters(s.id)
                    .iter()
                    .map(|l| (l.topic.to_string(), l.seq, l.attempts, l.at.as_nanos()))
                    .collect()
            })
            .collect(),
        exits,
        totals: bus.totals(),
    }
}

#[tokio::test(start_paused = true)]
async fn the_subscriber_tasks_make_the_cores_decisions() {
    let direct = direct();
    let adapter = adapter().await;
    // The script reaches every decision worth comparing.
    assert_eq!(
        (
            direct.calls.len(),
            direct.totals.retries,
            direct.totals.dead_lettered
        ),
        (36, 12, 2),
        "{:?}",
        direct.totals
    );
    assert!(
        direct.calls.iter().any(|c| c.0 > SHUTDOWN_MS * MS),
        "drains after shutdown"
    );
    assert_eq!(adapter.calls, direct.calls, "handler calls");
    assert_eq!(adapter.dead, direct.dead, "dead letters");
    assert_eq!(adapter.exits, direct.exits, "exits");
    assert_eq!(adapter.totals, direct.totals, "totals");
}
