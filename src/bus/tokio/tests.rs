//! Unit tests of the bus adapter, on tokio's paused clock.

use super::*;
use ::tokio::sync::Semaphore;
use ::tokio::time::{advance, sleep};
use std::sync::atomic::AtomicU32;
use tokio_test::{assert_pending, assert_ready, task};

fn config(capacity: usize) -> BusConfig {
    BusConfig::builder()
        .capacity(capacity)
        .attempts_max(3)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .unwrap()
}

type Log = Arc<Mutex<Vec<(Arc<str>, u64, u64)>>>;

/// A handler that records (topic, seq, payload).
fn recorder(
    log: &Log,
) -> impl FnMut(Event<u64>) -> std::future::Ready<Result<(), String>> + Send + 'static {
    let log = Arc::clone(log);
    move |e| {
        log.lock().unwrap().push((e.topic, e.seq, e.payload));
        std::future::ready(Ok(()))
    }
}

fn payloads(log: &Log, topic: &str) -> Vec<u64> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| &**t == topic)
        .map(|(_, _, p)| *p)
        .collect()
}

type BoxedResult = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A handler that waits for a permit of `gate` per event, and records.
fn gated(
    gate: &Arc<Semaphore>,
    log: &Log,
) -> impl FnMut(Event<u64>) -> BoxedResult + Send + 'static {
    let (gate, log) = (Arc::clone(gate), Arc::clone(log));
    move |e| {
        let (gate, log) = (Arc::clone(&gate), Arc::clone(&log));
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            log.lock().unwrap().push((e.topic, e.seq, e.payload));
            Ok(())
        })
    }
}

/// Lets every ready task run (the paused clock does not move).
async fn settle() {
    for _ in 0..50 {
        ::tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_subscriber_gets_every_event_in_order() {
    let bus = SharedBus::new(config(16));
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let mut subs = Vec::new();
    for log in &logs[..2] {
        subs.push(bus.subscribe(&["a"], recorder(log)).unwrap());
    }
    subs.push(bus.subscribe(&["a", "b", "a"], recorder(&logs[2])).unwrap());
    assert_eq!(subs[2].topics(), ["a", "b"]);
    for i in 0..200 {
        bus.publish_wait("a", i).await.unwrap();
        if i % 3 == 0 {
            bus.publish_wait("b", 1_000 + i).await.unwrap();
        }
    }
    let report = bus.shutdown().await;
    assert_eq!(
        (report.subscribers, report.owed, report.dead_letters),
        (3, 0, 0)
    );
    let a: Vec<u64> = (0..200).collect();
    let b: Vec<u64> = (0..200).filter(|i| i % 3 == 0).map(|i| 1_000 + i).collect();
    for log in &logs {
        assert_eq!(payloads(log, "a"), a);
        // Seqs match positions too.
        let seqs: Vec<u64> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| &**t == "a")
            .map(|(_, s, _)| *s)
            .collect();
        assert_eq!(seqs, a);
    }
    assert!(payloads(&logs[0], "b").is_empty());
    assert_eq!(payloads(&logs[2], "b"), b);
    for sub in &subs {
        assert!(sub.is_finished());
        assert_eq!(sub.stats().failed, 0);
    }
    let t = bus.totals();
    assert_eq!(t.published, 200 + b.len() as u64);
    assert_eq!(t.acked, 3 * 200 + b.len() as u64);
    // (The core trims settled events lazily: at most `capacity` linger.)
    assert!(bus.retained("a") <= 16);
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_does_not_block_a_fast_one_until_capacity() {
    let bus = SharedBus::new(config(8));
    let (fast_log, slow_log) = (Log::default(), Log::default());
    let fast = bus.subscribe(&["t"], recorder(&fast_log)).unwrap();
    let slow_inner = Arc::clone(&slow_log);
    let slow = bus
        .subscribe(&["t"], move |e: Event<u64>| {
            let log = Arc::clone(&slow_inner);
            async move {
                sleep(Duration::from_secs(1)).await;
                log.lock().unwrap().push((e.topic, e.seq, e.payload));
                Ok::<(), String>(())
            }
        })
        .unwrap();
    for i in 0..8 {
        bus.publish("t", i).unwrap();
    }
    settle().await;
    assert_eq!(payloads(&fast_log, "t"), (0..8).collect::<Vec<_>>());
    assert!(slow_log.lock().unwrap().is_empty());
    assert_eq!((fast.owed(), slow.owed()), (0, 8));
    // At capacity, the slow one holds the publisher back.
    assert!(matches!(bus.publish("t", 8), Err(PublishError::Full(_))));
    let start = ::tokio::time::Instant::now();
    bus.publish_wait("t", 8).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "waited for one ack"
    );
    bus.shutdown().await;
    assert_eq!(payloads(&slow_log, "t"), (0..9).collect::<Vec<_>>());
    assert_eq!(payloads(&fast_log, "t"), (0..9).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn publish_wait_blocks_while_full_and_resumes_when_the_slow_subscriber_acks() {
    let bus = SharedBus::new(config(4));
    let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
    let _slow = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
    for i in 0..4 {
        assert!(matches!(
            bus.publish_wait("t", i).await,
            Ok(Published::Retained { seq, subscribers: 1 }) if seq == i
        ));
    }
    settle().await;
    let mut blocked = task::spawn(bus.publish_wait("t", 4));
    assert_pending!(blocked.poll());
    settle().await;
    assert!(!blocked.is_woken());
    assert_pending!(blocked.poll());
    assert_eq!(bus.retained("t"), 4);
    // The slow subscriber handles event 0: its ack frees a slot and wakes the publisher.
    gate.add_permits(1);
    settle().await;
    assert!(blocked.is_woken());
    let published = assert_ready!(blocked.poll()).unwrap();
    assert_eq!(
        published,
        Published::Retained {
            seq: 4,
            subscribers: 1
        }
    );
    gate.add_permits(100);
    bus.shutdown().await;
    assert_eq!(payloads(&log, "t"), (0..5).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn the_error_policy_returns_bus_full() {
    let bus = SharedBus::new(config(2));
    let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
    let _blocked = bus.subscribe(&["orders"], gated(&gate, &log)).unwrap();
    bus.publish("orders", 1).unwrap();
    bus.publish("orders", 2).unwrap();
    let err = bus.publish("orders", 3).unwrap_err();
    assert_eq!(
        err,
        PublishError::Full(BusFull {
            topic: "orders".to_string(),
            capacity: 2
        })
    );
    assert_eq!(
        err.to_string(),
        "bus full: topic `orders` retains 2 events that a subscriber still needs"
    );
    assert_eq!(bus.totals().full, 1);
    assert_eq!(bus.totals().published, 2);
    gate.add_permits(2);
    bus.shutdown().await;
    assert_eq!(payloads(&log, "orders"), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_backoff_then_dead_lettered_and_redrive_redelivers() {
    let bus = SharedBus::new(config(8));
    let fail = Arc::new(AtomicBool::new(true));
    // (seq, attempt, redriven, when)
    type Attempts = Arc<Mutex<Vec<(u64, u32, bool, Duration)>>>;
    let attempts: Attempts = Arc::default();
    let start = ::tokio::time::Instant::now();
    let sub = {
        let (fail, attempts) = (Arc::clone(&fail), Arc::clone(&attempts));
        bus.subscribe(&["t"], move |e: Event<u64>| {
            attempts
                .lock()
                .unwrap()
                .push((e.seq, e.attempt, e.redriven, start.elapsed()));
            let failing = fail.load(Ordering::Relaxed);
            async move {
                if failing {
                    Err(format!("smtp down for {}", e.payload))
                } else {
                    Ok(())
                }
            }
        })
        .unwrap()
    };
    bus.publish("t", 7).unwrap();
    // Three attempts (backoff at most 100 ms, then 200 ms), then a dead letter.
    sleep(Duration::from_secs(2)).await;
    let seen = attempts.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|a| (a.0, a.1)).collect::<Vec<_>>(),
        [(0, 1), (0, 2), (0, 3)]
    );
    assert_eq!(seen[0].3, Duration::ZERO);
    assert!(seen[1].3 <= Duration::from_millis(100), "{seen:?}");
    assert!(
        seen[2].3 - seen[1].3 <= Duration::from_millis(200),
        "{seen:?}"
    );
    let letters = sub.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].seq, letters[0].payload, letters[0].attempts),
        (0, 7, 3)
    );
    assert_eq!(sub.last_error().as_deref(), Some("smtp down for 7"));
    assert_eq!(
        sub.stats(),
        SubscriptionStats {
            handled: 0,
            failed: 3,
            panicked: 0
        }
    );
    assert_eq!(bus.retained("t"), 0, "settled by dead-lettering");
    let t = bus.totals();
    assert_eq!((t.retries, t.dead_lettered), (2, 1));

    // Fixed: the redrive delivers it once more, first.
    fail.store(false, Ordering::Relaxed);
    assert_eq!(sub.redrive(), 1);
    settle().await;
    assert!(sub.dead_letters().is_empty());
    let last = *attempts.lock().unwrap().last().unwrap();
    assert_eq!((last.0, last.1, last.2), (0, 1, true));
    assert_eq!(sub.stats().handled, 1);
    let report = bus.shutdown().await;
    assert_eq!((report.owed, report.dead_letters), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn retries_of_one_subscriber_wait_for_their_own_time() {
    // Subscriber A fails once, then sits in a long handler; B's retry must not wait
    // for A to collect its due retry.
    let bus = SharedBus::new(
        BusConfig::builder()
            .capacity(8)
            .attempts_max(5)
            .backoff(Duration::from_millis(50), Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    let a_calls = Arc::new(AtomicU32::new(0));
    let b_done: Arc<Mutex<Option<Duration>>> = Arc::default();
    let start = ::tokio::time::Instant::now();
    let _a = {
        let calls = Arc::clone(&a_calls);
        bus.subscribe(&["x", "y"], move |e: Event<u64>| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                match (&*e.topic, n) {
                    ("x", 0) => Err("first try"),
                    ("y", _) => {
                        sleep(Duration::from_secs(60)).await;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        })
        .unwrap()
    };
    let _b = {
        let (done, tried) = (Arc::clone(&b_done), Arc::new(AtomicBool::new(false)));
        bus.subscribe(&["z"], move |_e: Event<u64>| {
            let first = !tried.swap(true, Ordering::Relaxed);
            let done = Arc::clone(&done);
            async move {
                if first {
                    return Err("first try");
                }
                *done.lock().unwrap() = Some(start.elapsed());
                Ok(())
            }
        })
        .unwrap()
    };
    bus.publish("x", 0).unwrap();
    bus.publish("y", 0).unwrap();
    settle().await;
    bus.publish("z", 0).unwrap();
    sleep(Duration::from_secs(1)).await;
    let b_at = b_done.lock().unwrap().expect("B's retry delivered");
    assert!(b_at <= Duration::from_millis(50), "{b_at:?}");
    bus.shutdown().await;
    assert_eq!(a_calls.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_counts_as_a_failure() {
    let bus = SharedBus::new(config(8));
    let sub = bus
        .subscribe(&["t"], |e: Event<u64>| {
            assert!(e.payload != 13, "unlucky");
            async move {
                if e.payload == 14 {
                    panic!("also unlucky");
                }
                Ok::<(), String>(())
            }
        })
        .unwrap();
    for i in 12..16 {
        bus.publish("t", i).unwrap();
    }
    let report = bus.shutdown().await;
    assert_eq!((report.owed, report.dead_letters), (0, 2));
    assert_eq!(
        sub.stats(),
        SubscriptionStats {
            handled: 2,
            failed: 6,
            panicked: 6
        }
    );
    let dead: Vec<u64> = sub.dead_letters().iter().map(|l| l.payload).collect();
    assert_eq!(dead, [13, 14]);
}

#[tokio::test(start_paused = true)]
async fn unsubscribe_stops_delivery_at_once() {
    let bus = SharedBus::new(config(8));
    let (gate, log) = (Arc::new(Semaphore::new(1)), Log::default());
    let sub = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
    for i in 0..5 {
        bus.publish("t", i).unwrap();
    }
    settle().await;
    // Event 0 handled; event 1 is in the handler, waiting at the gate.
    assert_eq!(payloads(&log, "t"), [0]);
    assert_eq!(bus.retained("t"), 4);
    assert!(sub.unsubscribe());
    assert!(!sub.unsubscribe());
    assert_eq!(bus.retained("t"), 0, "released at once");
    assert_eq!(bus.subscribers(), 0);
    // The handler in progress finishes; nothing after it is delivered.
    gate.add_permits(10);
    sub.finished().await;
    assert_eq!(payloads(&log, "t"), [0, 1]);
    assert_eq!(bus.totals().acked, 1, "the late ack is ignored");
    assert_eq!(bus.publish("t", 5).unwrap(), Published::DeadEvent);
    settle().await;
    assert_eq!(payloads(&log, "t"), [0, 1]);
    assert_eq!(sub.owed(), 0);
    assert_eq!(sub.redrive(), 0);
}

#[tokio::test(start_paused = true)]
async fn unsubscribing_the_slow_subscriber_frees_a_waiting_publisher() {
    let bus = SharedBus::new(config(2));
    let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
    let slow = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
    bus.publish("t", 0).unwrap();
    bus.publish("t", 1).unwrap();
    let mut blocked = task::spawn(bus.publish_wait("t", 2));
    assert_pending!(blocked.poll());
    slow.unsubscribe();
    assert!(blocked.is_woken());
    assert_eq!(assert_ready!(blocked.poll()), Ok(Published::DeadEvent));
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_everything_owed() {
    let bus = SharedBus::new(config(1_024));
    let log = Log::default();
    let flaky_log = Log::default();
    let slow = {
        let log = Arc::clone(&log);
        bus.subscribe(&["t"], move |e: Event<u64>| {
            let log = Arc::clone(&log);
            async move {
                sleep(Duration::from_millis(10)).await;
                log.lock().unwrap().push((e.topic, e.seq, e.payload));
                Ok::<(), String>(())
            }
        })
        .unwrap()
    };
    let flaky = {
        let log = Arc::clone(&flaky_log);
        bus.subscribe(&["t"], move |e: Event<u64>| {
            let log = Arc::clone(&log);
            async move {
                if e.attempt == 1 {
                    return Err("transient".to_string());
                }
                log.lock().unwrap().push((e.topic, e.seq, e.payload));
                Ok(())
            }
        })
        .unwrap()
    };
    for i in 0..50 {
        bus.publish("t", i).unwrap();
    }
    let report = bus.shutdown().await;
    assert_eq!(report.subscribers, 2);
    assert_eq!((report.owed, report.dead_letters), (0, 0));
    let all: Vec<u64> = (0..50).collect();
    assert_eq!(payloads(&log, "t"), all);
    assert_eq!(payloads(&flaky_log, "t"), all);
    assert_eq!(
        flaky.stats(),
        SubscriptionStats {
            handled: 50,
            failed: 50,
            panicked: 0
        }
    );
    assert!(slow.is_finished() && flaky.is_finished());
    assert_eq!(bus.publish("t", 99), Err(PublishError::Closed));
    assert_eq!(bus.publish_wait("t", 99).await, Err(PublishError::Closed));
    assert!(bus.is_closed());
    assert_eq!(
        bus.subscribe(&["t"], recorder(&log)).unwrap_err(),
        SubscribeError::Closed
    );
    assert_eq!(bus.subscribers(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_tells_waiting_publishers_the_bus_closed_and_still_drains() {
    let bus = SharedBus::new(config(2));
    let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
    let _sub = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
    bus.publish("t", 0).unwrap();
    bus.publish("t", 1).unwrap();
    let mut waiting = task::spawn(bus.publish_wait("t", 2));
    assert_pending!(waiting.poll());
    let shutdown = ::tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    settle().await;
    assert!(waiting.is_woken());
    assert_eq!(assert_ready!(waiting.poll()), Err(PublishError::Closed));
    assert!(!shutdown.is_finished(), "still draining");
    gate.add_permits(2);
    let report = shutdown.await.unwrap();
    assert_eq!((report.subscribers, report.owed), (1, 0));
    assert_eq!(payloads(&log, "t"), [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_aborts_a_stuck_subscriber_and_reports_what_is_owed() {
    let bus = SharedBus::new(config(8));
    let (gate, log) = (Arc::new(Semaphore::new(1)), Log::default());
    let stuck = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
    let fine_log = Log::default();
    let _fine = bus.subscribe(&["t"], recorder(&fine_log)).unwrap();
    for i in 0..4 {
        bus.publish("t", i).unwrap();
    }
    let start = ::tokio::time::Instant::now();
    let report = bus.shutdown_timeout(Duration::from_secs(5)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(report.subscribers, 2);
    assert_eq!(report.owed, 3, "events 1 to 3 never acknowledged");
    assert!(stuck.is_finished());
    assert_eq!(payloads(&log, "t"), [0]);
    assert_eq!(payloads(&fine_log, "t"), [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_publish_wait_leaves_nothing_behind() {
    let bus = SharedBus::new(config(1));
    let (gate, log) = (Arc::new(Semaphore::new(0)), Log::default());
    let _sub = bus.subscribe(&["t"], gated(&gate, &log)).unwrap();
    bus.publish("t", 0).unwrap();
    settle().await;
    let mut cancelled = task::spawn(bus.publish_wait("t", 666));
    assert_pending!(cancelled.poll());
    drop(cancelled);
    let t = bus.totals();
    assert_eq!(t.published, 1);
    assert!(t.full >= 1, "refused attempts are counted");
    assert_eq!(bus.retained("t"), 1);
    // Space frees; nothing of the cancelled call shows up.
    gate.add_permits(10);
    settle().await;
    assert_eq!(bus.retained("t"), 0);
    bus.publish_wait("t", 1).await.unwrap();
    bus.shutdown().await;
    assert_eq!(payloads(&log, "t"), [0, 1]);
    assert_eq!(bus.totals().published, 2);
    // Also when dropped mid-flight by a timeout.
    let bus = SharedBus::new(config(1));
    let _blocked = bus.subscribe(&["t"], gated(&gate, &Log::default()));
    let gate_off = Arc::new(Semaphore::new(0));
    let _never = bus
        .subscribe(&["t"], gated(&gate_off, &Log::default()))
        .unwrap();
    bus.publish("t", 0).unwrap();
    let timed_out = ::tokio::time::timeout(Duration::from_secs(1), bus.publish_wait("t", 1)).await;
    assert!(timed_out.is_err());
    assert_eq!((bus.totals().published, bus.retained("t")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn events_nobody_subscribes_to_are_counted_as_dead_events() {
    let bus: SharedBus<u64> = SharedBus::new(config(4));
    assert_eq!(bus.publish("nobody", 1), Ok(Published::DeadEvent));
    assert_eq!(
        bus.publish_wait("nobody", 2).await,
        Ok(Published::DeadEvent)
    );
    let log = Log::default();
    let _sub = bus.subscribe(&["somebody"], recorder(&log)).unwrap();
    assert_eq!(bus.publish("nobody", 3), Ok(Published::DeadEvent));
    let t = bus.totals();
    assert_eq!((t.dead_events, t.published), (3, 0));
    assert_eq!(bus.retained("nobody"), 0);
    bus.shutdown().await;
    assert!(log.lock().unwrap().is_empty());
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OrderCreated {
    id: u32,
    total_cents: u64,
}

#[tokio::test(start_paused = true)]
async fn json_events_round_trip_and_undecodable_ones_are_dead_lettered() {
    let bus: SharedBus<Arc<[u8]>> = SharedBus::new(config(8));
    let got: Arc<Mutex<Vec<(u64, OrderCreated)>>> = Arc::default();
    let sub = {
        let got = Arc::clone(&got);
        bus.subscribe_json(&["orders"], move |e: Event<OrderCreated>| {
            got.lock().unwrap().push((e.seq, e.payload));
            async { Ok::<(), String>(()) }
        })
        .unwrap()
    };
    let order = OrderCreated {
        id: 1,
        total_cents: 4_200,
    };
    bus.publish_json("orders", &order).unwrap();
    bus.publish("orders", Arc::from(&b"not json"[..])).unwrap();
    bus.publish_json_wait(
        "orders",
        &OrderCreated {
            id: 2,
            ..order.clone()
        },
    )
    .await
    .unwrap();
    bus.shutdown().await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (0, order));
    assert_eq!(got[1].0, 2);
    let letters = sub.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].seq, &*letters[0].payload),
        (1, &b"not json"[..])
    );
    assert!(
        sub.last_error()
            .unwrap()
            .starts_with("cannot decode the event")
    );
    // Vec<u8> works too.
    let bytes: SharedBus<Vec<u8>> = SharedBus::new(config(8));
    assert_eq!(bytes.publish_json("x", &1u8).unwrap(), Published::DeadEvent);
}

#[tokio::test(start_paused = true)]
async fn time_is_driven_by_the_paused_clock() {
    let bus: SharedBus<u64> = SharedBus::new(config(4));
    assert_eq!(bus.now(), Instant::ZERO);
    advance(Duration::from_millis(1_500)).await;
    assert_eq!(bus.now(), Instant::from_millis(1_500));
}

#[test]
fn subscribing_outside_a_runtime_is_an_error_not_a_panic() {
    let bus: SharedBus<u64> = SharedBus::new(config(4));
    let err = bus
        .subscribe(&["t"], |_e| async { Ok::<(), String>(()) })
        .unwrap_err();
    assert_eq!(err, SubscribeError::NoRuntime);
    assert_eq!(bus.publish("t", 1), Ok(Published::DeadEvent));
}

#[tokio::test(start_paused = true)]
async fn a_poisoned_lock_does_not_panic() {
    let bus = SharedBus::new(config(4));
    let log = Log::default();
    let _sub = bus.subscribe(&["t"], recorder(&log)).unwrap();
    let poisoner = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _guard = bus.inner.state.lock().unwrap();
        panic!("poisoning the bus's lock");
    }));
    assert!(poisoner.is_err());
    assert!(bus.inner.state.is_poisoned());
    bus.publish("t", 1).unwrap();
    bus.publish_wait("t", 2).await.unwrap();
    let report = bus.shutdown().await;
    assert_eq!(report.owed, 0);
    assert_eq!(payloads(&log, "t"), [1, 2]);
    assert!(format!("{bus:?}").starts_with("SharedBus"));
}

#[test]
fn a_subscriber_whose_runtime_is_gone_counts_as_finished() {
    let bus: SharedBus<u64> = SharedBus::new(config(4));
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sub = runtime
        .block_on(async { bus.subscribe(&["t"], |_e| async { Ok::<(), String>(()) }) })
        .unwrap();
    drop(runtime);
    assert!(sub.is_finished());
}

#[test]
fn send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedBus<u64>>();
    assert_send_sync::<SubscriptionHandle<Arc<[u8]>>>();
    fn assert_send<T: Send>(_: &T) {}
    let bus: SharedBus<String> = SharedBus::new(config(4));
    assert_send(&bus.publish_wait("t", String::new()));
    assert_send(&bus.shutdown());
}

#[test]
fn many_publishers_and_subscribers_across_threads_lose_nothing() {
    const PUBLISHERS: u64 = 3;
    const EVENTS: u64 = 2_000;
    let runtime = ::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Real time here: short retry backoffs.
        let bus = SharedBus::new(
            BusConfig::builder()
                .capacity(8)
                .backoff(Duration::from_micros(100), Duration::from_millis(1))
                .build()
                .unwrap(),
        );
        let logs: Vec<Log> = (0..4).map(|_| Log::default()).collect();
        let subs: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(k, log)| {
                let log = Arc::clone(log);
                bus.subscribe(&["t"], move |e: Event<u64>| {
                    log.lock().unwrap().push((e.topic, e.seq, e.payload));
                    async move {
                        if k == 0 {
                            ::tokio::task::yield_now().await;
                        }
                        if k == 1 && e.payload.is_multiple_of(97) && e.attempt == 1 {
                            return Err("retry me");
                        }
                        Ok(())
                    }
                })
                .unwrap()
            })
            .collect();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let bus = bus.clone();
                ::tokio::spawn(async move {
                    for i in 0..EVENTS {
                        bus.publish_wait("t", p * 1_000_000 + i).await.unwrap();
                    }
                })
            })
            .collect();
        for p in publishers {
            p.await.unwrap();
        }
        let report = bus.shutdown().await;
        assert_eq!((report.owed, report.dead_letters), (0, 0));
        for (k, log) in logs.iter().enumerate() {
            let log = log.lock().unwrap();
            // Every event; seqs in order (retries repeat a seq); each publisher's
            // events in its order.
            let mut seqs: Vec<u64> = log.iter().map(|(_, s, _)| *s).collect();
            assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "subscriber {k}");
            seqs.dedup();
            assert_eq!(seqs, (0..PUBLISHERS * EVENTS).collect::<Vec<_>>());
            for p in 0..PUBLISHERS {
                let mut mine: Vec<u64> = log
                    .iter()
                    .map(|(_, _, v)| *v)
                    .filter(|v| v / 1_000_000 == p)
                    .collect();
                mine.dedup();
                assert_eq!(mine.len() as u64, EVENTS);
                assert!(mine.windows(2).all(|w| w[0] < w[1]));
            }
        }
        let multiples = (0..PUBLISHERS)
            .flat_map(|p| (0..EVENTS).map(move |i| p * 1_000_000 + i))
            .filter(|v| v.is_multiple_of(97))
            .count() as u64;
        assert_eq!(subs[1].stats().failed, multiples);
        assert_eq!(bus.totals().acked, 4 * PUBLISHERS * EVENTS);
    });
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_converts_to_the_wall_clock_time_it_died() {
    let before = std::time::SystemTime::now();
    let built = ::tokio::time::Instant::now();
    let bus = SharedBus::new(config(8));
    let origin = bus.origin();
    assert!(before <= origin.system_time() && origin.system_time() <= std::time::SystemTime::now());
    assert_eq!(origin.instant(), crate::clock::Instant::ZERO);
    // When each attempt ran, on tokio's clock.
    let attempts: Arc<Mutex<Vec<::tokio::time::Instant>>> = Arc::default();
    let sub = {
        let attempts = Arc::clone(&attempts);
        bus.subscribe(&["t"], move |_: Event<u64>| {
            attempts.lock().unwrap().push(::tokio::time::Instant::now());
            async { Err::<(), _>("down".to_string()) }
        })
        .unwrap()
    };
    sleep(Duration::from_secs(60)).await;
    bus.publish("t", 7).unwrap();
    sleep(Duration::from_secs(2)).await;
    let letters = sub.dead_letters();
    assert_eq!(letters.len(), 1);
    let last = *attempts.lock().unwrap().last().unwrap();
    // The handler fails at once, so the event died when its last attempt ran.
    let died = origin.system_time() + (last - built);
    assert!(last - built >= Duration::from_secs(60));
    assert_eq!(origin.to_system_time(letters[0].at), died);
    assert_eq!(origin.to_instant(died), Some(letters[0].at));
}

/// A subscriber's deliveries are counted by how they were settled, with the bus's name
/// and the subscriber's id as labels; its lag and dead letters are gauges, checked
/// against what the handle says.
#[cfg(feature = "metrics")]
#[test]
fn deliveries_lag_and_dead_letters_are_recorded_per_subscriber() {
    let seen = Arc::new(Mutex::new((0, 0, 0)));
    let out = Arc::clone(&seen);
    let recorded = crate::observe::testing::recorded(move || async move {
        let bus = SharedBus::<u64>::new(config(16)).named(Name::from_static("orders"));
        // Fails every attempt of payload 2, takes the others.
        let sub = bus
            .subscribe(&["t"], |e: Event<u64>| {
                std::future::ready(if e.payload == 2 {
                    Err("refused".to_string())
                } else {
                    Ok(())
                })
            })
            .unwrap();
        for payload in 1..=3 {
            bus.publish("t", payload).unwrap();
        }
        sleep(Duration::from_secs(5)).await;
        *out.lock().unwrap() = (sub.id().0, sub.owed(), sub.dead_letters().len());
    });
    let (id, owed, dead) = *seen.lock().unwrap();
    let id = id.to_string();
    let labels = [("bus", "orders"), ("subscriber", id.as_str())];
    let deliveries = |outcome| {
        let mut l = labels.to_vec();
        l.push(("outcome", outcome));
        recorded.counter("faultline_bus_deliveries_total", &l)
    };
    // Three attempts of payload 2 (two retried, one dead-lettered), one each of 1 and 3.
    assert_eq!(
        ["handled", "retried", "dead_lettered"].map(deliveries),
        [2, 2, 1]
    );
    assert_eq!((owed, dead), (0, 1));
    assert_eq!(recorded.gauge("faultline_bus_lag", &labels), owed as f64);
    assert_eq!(
        recorded.gauge("faultline_bus_dead_letters", &labels),
        dead as f64
    );
}
