//! Event bus throughput: publish -> delivered, in deliveries per second, with 1, 8 and
//! 64 subscribers, next to `tokio::sync::broadcast` doing the same work.
//!
//! One criterion group, `bus/deliveries`. Every iteration publishes [`EVENTS`] `u64`
//! events (0, 1, 2, ...) on one topic whose capacity is [`CAPACITY`], and every
//! subscriber receives every one of them, in order (each implementation checks the
//! order as it goes and the count at the end, so nothing can silently measure less).
//! `Throughput::Elements` is `EVENTS x subscribers`: deliveries.
//!
//! Implementations (`<name>/<subscribers>`):
//!
//! - `core`: the sans-IO [`Bus`], single-threaded, no runtime: publish up to capacity,
//!   then drain every subscriber with `next_delivery` + `ack`, and repeat (so nothing is
//!   ever refused or lost). Time is a constant [`Instant`].
//! - `broadcast`: `tokio::sync::broadcast` (capacity 1,024), the same loop: send up to
//!   capacity, then drain every receiver with `try_recv` (so no receiver ever lags).
//! - `tokio_adapter`: the adapter's [`SharedBus`] on a current-thread runtime: one task
//!   per subscriber running a counting handler, the publisher using `publish_wait`
//!   (backpressure), then `shutdown` to wait until everything is delivered. It includes
//!   making the bus and spawning the subscribers (a few microseconds per iteration).
//! - `broadcast_tasks`: broadcast the same way: one task per receiver awaiting `recv`,
//!   the publisher yielding whenever `len()` reaches capacity (broadcast has no
//!   backpressure: without that it would lag and drop).
//!
//! `core` and `broadcast` are the like-for-like pair for the sans-IO core;
//! `tokio_adapter` and `broadcast_tasks` for the adapter. `broadcast_tasks` does less
//! work than the adapter: its receivers acknowledge nothing (a slot is freed when every
//! receiver has read it, not when a handler succeeded), there is no handler call to
//! catch a panic of, no per-subscriber counters, no retry or dead letter bookkeeping,
//! no shutdown that drains and reports what is owed, and its "backpressure" is the
//! publisher polling `len()` and yielding. The adapter does all of that per event; a
//! handler that finishes at once gets its events in runs (one lock per run, see
//! `faultline::bus::tokio`'s subscriber task).
//!
//! Run with `cargo bench --bench bus`; `cargo bench --bench bus -- --test` runs each
//! function once as a smoke test.

// Bench code, not user input: a failed setup or a wrong count should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use faultline::bus::tokio::{Event, SharedBus};
use faultline::bus::{Bus, BusConfig};
use faultline::clock::Instant;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// Events published per iteration.
const EVENTS: u64 = 10_000;
/// Retained events per topic (broadcast's capacity too).
const CAPACITY: usize = 1_024;
/// Subscriber counts.
const SUBSCRIBERS: [usize; 3] = [1, 8, 64];
/// The topic.
const TOPIC: &str = "orders";

fn config() -> BusConfig {
    BusConfig::builder().capacity(CAPACITY).build().unwrap()
}

/// The sans-IO core: returns the deliveries made.
fn core_run(subscribers: usize) -> u64 {
    let t = Instant::ZERO;
    let mut bus: Bus<u64> = Bus::new(config());
    let ids: Vec<_> = (0..subscribers)
        .map(|_| bus.subscribe(&[TOPIC], t))
        .collect();
    let mut expected = vec![0u64; subscribers];
    let mut published = 0;
    while published < EVENTS {
        let batch = (EVENTS - published).min(CAPACITY as u64);
        for _ in 0..batch {
            bus.publish(TOPIC, black_box(published), t).unwrap();
            published += 1;
        }
        for (id, next) in ids.iter().zip(&mut expected) {
            while let Some(d) = bus.next_delivery(*id, t) {
                assert_eq!(d.payload, *next, "in order, nothing skipped");
                *next += 1;
                bus.ack(&d.token, t);
            }
        }
    }
    assert!(
        expected.iter().all(|n| *n == EVENTS),
        "everything delivered"
    );
    EVENTS * subscribers as u64
}

/// The sans-IO core's batch path (`handle_available`: the handler runs inline and its
/// answer acks the event): returns the deliveries made.
fn core_batch_run(subscribers: usize) -> u64 {
    let t = Instant::ZERO;
    let mut bus: Bus<u64> = Bus::new(config());
    let ids: Vec<_> = (0..subscribers)
        .map(|_| bus.subscribe(&[TOPIC], t))
        .collect();
    let mut expected = vec![0u64; subscribers];
    let mut published = 0;
    while published < EVENTS {
        let batch = (EVENTS - published).min(CAPACITY as u64);
        for _ in 0..batch {
            bus.publish(TOPIC, black_box(published), t).unwrap();
            published += 1;
        }
        for (id, next) in ids.iter().zip(&mut expected) {
            bus.handle_available(*id, t, usize::MAX, |_, _, payload| {
                let in_order = *payload == *next;
                *next += 1;
                in_order
            });
        }
    }
    assert!(
        expected.iter().all(|n| *n == EVENTS),
        "everything delivered"
    );
    assert_eq!(
        bus.totals().acked,
        EVENTS * subscribers as u64,
        "in order, nothing skipped"
    );
    EVENTS * subscribers as u64
}

/// `tokio::sync::broadcast`, synchronously: returns the deliveries made.
fn broadcast_run(subscribers: usize) -> u64 {
    let (tx, _) = broadcast::channel::<u64>(CAPACITY);
    let mut rxs: Vec<_> = (0..subscribers).map(|_| tx.subscribe()).collect();
    let mut expected = vec![0u64; subscribers];
    let mut published = 0;
    while published < EVENTS {
        let batch = (EVENTS - published).min(CAPACITY as u64);
        for _ in 0..batch {
            tx.send(black_box(published)).unwrap();
            published += 1;
        }
        for (rx, next) in rxs.iter_mut().zip(&mut expected) {
            loop {
                match rx.try_recv() {
                    Ok(v) => {
                        assert_eq!(v, *next, "in order, nothing skipped");
                        *next += 1;
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(e) => panic!("broadcast lost events: {e}"),
                }
            }
        }
    }
    assert!(
        expected.iter().all(|n| *n == EVENTS),
        "everything delivered"
    );
    EVENTS * subscribers as u64
}

/// The tokio adapter on a current-thread runtime: returns the deliveries made.
async fn adapter_run(subscribers: usize) -> u64 {
    let bus: SharedBus<u64> = SharedBus::new(config());
    let out_of_order = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..subscribers)
        .map(|_| {
            let out_of_order = Arc::clone(&out_of_order);
            let mut next = 0;
            bus.subscribe(&[TOPIC], move |e: Event<u64>| {
                if e.payload != next {
                    out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                next = e.payload + 1;
                std::future::ready(Ok::<(), Infallible>(()))
            })
            .unwrap()
        })
        .collect();
    for i in 0..EVENTS {
        bus.publish_wait(TOPIC, black_box(i)).await.unwrap();
    }
    let report = bus.shutdown().await;
    assert_eq!(report.owed, 0);
    assert_eq!(out_of_order.load(Ordering::Relaxed), 0, "in order");
    for h in &handles {
        let s = h.stats();
        assert_eq!((s.handled, s.failed), (EVENTS, 0), "everything delivered");
    }
    EVENTS * subscribers as u64
}

/// broadcast with one task per receiver on a current-thread runtime.
async fn broadcast_tasks_run(subscribers: usize) -> u64 {
    let (tx, _) = broadcast::channel::<u64>(CAPACITY);
    let tasks: Vec<_> = (0..subscribers)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let mut next = 0;
                loop {
                    match rx.recv().await {
                        Ok(v) => {
                            assert_eq!(v, next, "in order, nothing skipped");
                            next += 1;
                        }
                        Err(broadcast::error::RecvError::Closed) => return next,
                        Err(e) => panic!("broadcast lost events: {e}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..EVENTS {
        while tx.len() >= CAPACITY {
            tokio::task::yield_now().await;
        }
        tx.send(black_box(i)).unwrap();
    }
    drop(tx);
    for task in tasks {
        assert_eq!(task.await.unwrap(), EVENTS, "everything delivered");
    }
    EVENTS * subscribers as u64
}

fn deliveries(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("bus/deliveries");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in SUBSCRIBERS {
        group.throughput(Throughput::Elements(EVENTS * n as u64));
        group.bench_function(format!("core/{n}"), |b| {
            b.iter(|| black_box(core_run(black_box(n))));
        });
        group.bench_function(format!("core_batch/{n}"), |b| {
            b.iter(|| black_box(core_batch_run(n)));
        });
        group.bench_function(format!("broadcast/{n}"), |b| {
            b.iter(|| black_box(broadcast_run(black_box(n))));
        });
        group.bench_function(format!("tokio_adapter/{n}"), |b| {
            b.iter(|| black_box(runtime.block_on(adapter_run(black_box(n)))));
        });
        group.bench_function(format!("broadcast_tasks/{n}"), |b| {
            b.iter(|| black_box(runtime.block_on(broadcast_tasks_run(black_box(n)))));
        });
    }
    group.finish();
}

criterion_group!(benches, deliveries);
criterion_main!(benches);
