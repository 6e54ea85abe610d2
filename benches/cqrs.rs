//! Event sourcing throughput: appends per second, rehydration with and without
//! snapshots, and projection catch-up in events per second, each next to what a Rust
//! user would write by hand.
//!
//! - `cqrs/append`: [`APPENDS`] single-event appends, round-robin over [`STREAMS`]
//!   items, each at the exact version the writer last saw (optimistic concurrency is
//!   checked on every one). Throughput is in appends.
//!   - `event_store`: the sans-IO [`EventStore`] (streams as position lists over one
//!     global log).
//!   - `naive_vec`: the hand-rolled peer: a `HashMap<StreamId, Vec<event>>` for the
//!     streams (the version is the length) plus a `Vec` global log, with the same
//!     version check.
//!   - `repository_execute`: the whole command path of the [`Repository`]: rehydrate
//!     (from a snapshot every [`SNAPSHOT_EVERY`] events), decide, append, snapshot if
//!     due.
//! - `cqrs/rehydrate`: load one item with [`HISTORY`] events. Throughput is in loads.
//!   - `no_snapshot`: the repository folds every event.
//!   - `snapshot_every_100`: it starts from the latest snapshot and folds the 50
//!     events after it.
//!   - `naive_fold`: the peer: fold a `Vec` of the stream's events.
//! - `cqrs/catch_up`: a read model built from scratch over a log of [`LOG`] events
//!   across [`STREAMS`] items. Throughput is in events.
//!   - `projection_runner`: the [`ProjectionRunner`] stepping until idle (checkpoint
//!     every 100 events, each event read from the store, upcast, applied by position).
//!   - `naive_fold`: the peer and lower bound: [`StockView::fold`] over the log, no
//!     checkpoint, no idempotence.
//!
//! The peer is hand-rolled rather than the `cqrs-es` crate: its in-memory `MemStore`
//! (0.5.0) prints two lines to stdout on every command and copies a stream's whole
//! event list on every commit, so a benchmark of it would measure the terminal.
//!
//! Setup is outside the timed part; every figure is checked once before it is measured.
//! Run with `cargo bench --bench cqrs`; `cargo bench --bench cqrs -- --test` runs each
//! function once as a smoke test.

// Bench code, not user input: a failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faultline::cqrs::Aggregate;
use faultline::cqrs::{
    AppendError, EventStore, ExpectedVersion, Item, ItemCommand, ItemEvent, ProjectionRunner,
    Recorded, Repository, Step, StockView, StoredEvent, StreamId, Upcast,
};
use std::collections::HashMap;
use std::hint::black_box;

/// Appends per iteration of `cqrs/append`.
const APPENDS: u64 = 10_000;
/// Items the appends and the log are spread over.
const STREAMS: u32 = 16;
/// Events of the item `cqrs/rehydrate` loads: its latest snapshot (every 100) is 50
/// events behind, the mean distance.
const HISTORY: u64 = 10_050;
/// Snapshot interval of the snapshotting repository.
const SNAPSHOT_EVERY: u64 = 100;
/// Events of the log `cqrs/catch_up` projects.
const LOG: u64 = 100_000;

fn event(i: u64) -> ItemEvent {
    if i % 3 == 2 {
        ItemEvent::Withdrawn { units: 1 }
    } else {
        ItemEvent::Restocked { units: 2 }
    }
}

/// What a Rust user would write: streams in a map, a global log beside them.
#[derive(Default)]
struct NaiveStore {
    streams: HashMap<StreamId, Vec<ItemEvent>>,
    log: Vec<(StreamId, ItemEvent)>,
}

impl NaiveStore {
    fn append(
        &mut self,
        stream: StreamId,
        expected: u64,
        events: &[ItemEvent],
    ) -> Result<u64, AppendError> {
        let s = self.streams.entry(stream).or_default();
        if s.len() as u64 != expected {
            return Err(AppendError::WrongExpectedVersion {
                stream,
                expected: ExpectedVersion::Exact(expected),
                actual: s.len() as u64,
            });
        }
        s.extend_from_slice(events);
        self.log.extend(events.iter().map(|e| (stream, *e)));
        Ok(s.len() as u64)
    }
}

fn append_core() -> u64 {
    let mut store: EventStore<StoredEvent> = EventStore::new();
    let mut versions = [0u64; STREAMS as usize];
    for i in 0..APPENDS {
        let s = (i % u64::from(STREAMS)) as usize;
        let a = store
            .append(
                StreamId(s as u32),
                ExpectedVersion::Exact(versions[s]),
                [StoredEvent::Current(event(i))],
            )
            .unwrap();
        versions[s] = a.to_version;
    }
    store.head()
}

fn append_naive() -> u64 {
    let mut store = NaiveStore::default();
    let mut versions = [0u64; STREAMS as usize];
    for i in 0..APPENDS {
        let s = (i % u64::from(STREAMS)) as usize;
        versions[s] = store
            .append(StreamId(s as u32), versions[s], &[event(i)])
            .unwrap();
    }
    store.log.len() as u64
}

fn execute_repository() -> u64 {
    let mut repo = Repository::<Item, StoredEvent>::new(SNAPSHOT_EVERY).unwrap();
    for i in 0..APPENDS {
        let s = StreamId((i % u64::from(STREAMS)) as u32);
        // Each item's third command withdraws one of the four units restocked before it.
        let cmd = if (i / u64::from(STREAMS)) % 3 == 2 {
            ItemCommand::Withdraw { units: 1 }
        } else {
            ItemCommand::Restock { units: 2 }
        };
        repo.execute(s, &cmd).unwrap();
    }
    repo.store().head()
}

fn append_benches(c: &mut Criterion) {
    assert_eq!(append_core(), APPENDS);
    assert_eq!(append_naive(), APPENDS);
    assert!(execute_repository() >= APPENDS);
    let mut group = c.benchmark_group("cqrs/append");
    group.throughput(Throughput::Elements(APPENDS));
    group.bench_function("event_store", |b| b.iter(|| black_box(append_core())));
    group.bench_function("naive_vec", |b| b.iter(|| black_box(append_naive())));
    group.bench_function("repository_execute", |b| {
        b.iter(|| black_box(execute_repository()))
    });
    group.finish();
}

fn history(snapshot_every: u64) -> Repository<Item, StoredEvent> {
    let mut repo = Repository::<Item, StoredEvent>::new(snapshot_every).unwrap();
    for i in 0..HISTORY {
        repo.commit(
            StreamId(1),
            ExpectedVersion::Exact(i),
            vec![ItemEvent::Restocked { units: i % 7 + 1 }],
        )
        .unwrap();
    }
    repo
}

fn rehydrate_benches(c: &mut Criterion) {
    let full = history(u64::MAX);
    let snap = history(SNAPSHOT_EVERY);
    let naive: Vec<ItemEvent> = full
        .store()
        .read_stream(StreamId(1), 1)
        .map(|r| r.event.upcast())
        .collect();
    let a = full.rehydrate(StreamId(1));
    let b = snap.rehydrate(StreamId(1));
    assert_eq!(
        (a.state, a.version, a.snapshot_version),
        (b.state, b.version, None)
    );
    assert_eq!((b.snapshot_version, b.folded), (Some(10_000), 50));
    assert_eq!(Item::default().fold(naive.iter()), a.state);
    let mut group = c.benchmark_group("cqrs/rehydrate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("no_snapshot", |bn| {
        bn.iter(|| black_box(full.rehydrate(StreamId(1))))
    });
    group.bench_function("snapshot_every_100", |bn| {
        bn.iter(|| black_box(snap.rehydrate(StreamId(1))))
    });
    group.bench_function("naive_fold", |bn| {
        bn.iter(|| black_box(Item::default().fold(naive.iter())))
    });
    group.finish();
}

fn catch_up(store: &EventStore<StoredEvent>) -> StockView {
    let mut runner = ProjectionRunner::<StockView>::new(100).unwrap();
    while runner.step(store) != Step::Idle {}
    runner.read_model().clone()
}

fn catch_up_benches(c: &mut Criterion) {
    let mut store: EventStore<StoredEvent> = EventStore::new();
    for i in 0..LOG {
        let e = if i % 50 == 0 {
            StoredEvent::RestockedV1 { dozens: 1 }
        } else {
            StoredEvent::Current(event(i))
        };
        store
            .append(
                StreamId((i % u64::from(STREAMS)) as u32),
                ExpectedVersion::Any,
                [e],
            )
            .unwrap();
    }
    let log: Vec<Recorded<ItemEvent>> = store
        .read_all(0, usize::MAX)
        .iter()
        .map(|r| r.map(Upcast::upcast))
        .collect();
    assert_eq!(catch_up(&store), StockView::fold(&log));
    let mut group = c.benchmark_group("cqrs/catch_up");
    group.throughput(Throughput::Elements(LOG));
    group.bench_function("projection_runner", |b| {
        b.iter(|| black_box(catch_up(&store)))
    });
    group.bench_function("naive_fold", |b| {
        b.iter(|| black_box(StockView::fold(&log)))
    });
    group.finish();
}

criterion_group!(benches, append_benches, rehydrate_benches, catch_up_benches);
criterion_main!(benches);
