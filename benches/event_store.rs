//! Appends per second through the durable event stores, each next to a minimal
//! hand-written SQL append doing the same work on the same database.
//!
//! Each iteration makes [`APPENDS`] single-event appends, round-robin over [`STREAMS`]
//! streams, each at the exact version the writer last saw; every append is its own
//! committed transaction (so on SQLite, one fsync of the WAL each, `synchronous =
//! FULL`). Throughput is in appends.
//!
//! - `event_store/sqlite`:
//!   - `store`: [`SqliteEvents::append`] (`BEGIN IMMEDIATE`, read the stream's version,
//!     check it, read the head, insert, commit).
//!   - `repository`: the command path a service runs, [`StoredRepository::execute`]
//!     of a restock over the same store type (load the latest snapshot and the events
//!     after it, decide, append at the version loaded, snapshot every 10 events): one
//!     command, one event, so its throughput is in appends too.
//!   - `hand_sql`: one `INSERT` at version expected + 1 with the position
//!     `max(position) + 1`, the unique `(stream, version)` doing the version check.
//! - `event_store/postgres` (a throwaway local server, or `FAULTLINE_PG_URL`; skipped
//!   with one line when there is none):
//!   - `store`: [`PostgresEvents::append`] (one call of the `faultline_es_append`
//!     function: lock the head row, read the version, check it, insert, move the
//!     head; committed as its own transaction).
//!   - `repository`: [`StoredRepository::execute`], as on SQLite.
//!   - `hand_sql`: one `INSERT` at version expected + 1 with a `BIGSERIAL` position,
//!     the primary key `(stream, version)` doing the version check. Cheaper, and
//!     weaker: a sequence has gaps (a rolled-back insert burns its number) and
//!     positions commit out of order under concurrency, so a projection resuming
//!     after its checkpoint can skip an event; the store's head lock is what buys
//!     gap-free positions committed in order.
//!
//! The figures of one run are in the notes of issue 16: they follow the disk's fsync
//! (the same code gave 195 vs 269 appends/s on SQLite while the disk was nearly full
//! and busy, and 4.6 k vs 5.3 k on an idle one).
//!
//! Run with `cargo bench --bench event_store`; `-- --test` runs each once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faultline::cqrs::store::postgres::PostgresEvents;
use faultline::cqrs::store::sqlite::SqliteEvents;
use faultline::cqrs::store::{EventStorage, StoredRepository};
use faultline::cqrs::{ExpectedVersion, Item, ItemCommand, StoredEvent, StreamId};
use faultline::store::postgres::TestServer;

const APPENDS: u64 = 50;
const STREAMS: u32 = 8;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Deposited {
    account: u32,
    cents: u64,
}

fn event(i: u64) -> Deposited {
    Deposited {
        account: (i % 97) as u32,
        cents: i * 3,
    }
}

/// Appends through a store, tracking each stream's version.
fn through_store<St: EventStorage<Deposited>>(s: &mut St, versions: &mut [u64], next: &mut u64) {
    for _ in 0..APPENDS {
        let stream = (*next % u64::from(STREAMS)) as usize;
        let v = versions[stream];
        s.append(
            StreamId(stream as u32),
            ExpectedVersion::Exact(v),
            &[event(*next)],
        )
        .unwrap()
        .unwrap();
        versions[stream] = v + 1;
        *next += 1;
    }
}

/// `APPENDS` restocks through a repository over `store`, round-robin over the streams.
fn through_repository<St: EventStorage<StoredEvent>>(
    repo: &mut StoredRepository<Item, StoredEvent, St>,
    next: &mut u64,
) {
    for _ in 0..APPENDS {
        let stream = StreamId((*next % u64::from(STREAMS)) as u32);
        repo.execute(stream, &ItemCommand::Restock { units: 1 })
            .unwrap()
            .unwrap();
        *next += 1;
    }
}

/// The `repository` function of a group, over `store` (checked once first).
fn repository<St: EventStorage<StoredEvent>>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    store: St,
) {
    let mut repo = StoredRepository::<Item, StoredEvent, St>::new(store, 10, 5).unwrap();
    let mut next = 0;
    through_repository(&mut repo, &mut next);
    assert_eq!(repo.store().head().unwrap(), APPENDS);
    g.bench_function("repository", |b| {
        b.iter(|| through_repository(&mut repo, &mut next))
    });
}

fn temp_db(what: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("faultline-bench-es-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("db.sqlite")
}

fn sqlite(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_store/sqlite");
    g.throughput(Throughput::Elements(APPENDS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));

    let path = temp_db("store");
    let mut store = SqliteEvents::<Deposited>::open(&path).unwrap();
    let (mut versions, mut next) = (vec![0; STREAMS as usize], 0);
    through_store(&mut store, &mut versions, &mut next);
    assert_eq!(store.head().unwrap(), APPENDS);
    g.bench_function("store", |b| {
        b.iter(|| through_store(&mut store, &mut versions, &mut next));
    });
    repository(&mut g, SqliteEvents::open(temp_db("repository")).unwrap());

    let path = temp_db("hand");
    let conn = faultline::store::sqlite::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE ev (position INTEGER PRIMARY KEY, stream INTEGER NOT NULL,
             version INTEGER NOT NULL, event TEXT NOT NULL, UNIQUE (stream, version))",
    )
    .unwrap();
    let (mut versions, mut next) = (vec![0u64; STREAMS as usize], 0u64);
    let mut hand = move || {
        for _ in 0..APPENDS {
            let stream = (next % u64::from(STREAMS)) as usize;
            let json = serde_json::to_string(&event(next)).unwrap();
            conn.prepare_cached(
                "INSERT INTO ev (position, stream, version, event)
                 VALUES ((SELECT coalesce(max(position), 0) + 1 FROM ev), ?1, ?2, ?3)",
            )
            .unwrap()
            .execute(rusqlite::params![
                stream as i64,
                versions[stream] as i64 + 1,
                json
            ])
            .unwrap();
            versions[stream] += 1;
            next += 1;
        }
    };
    hand();
    g.bench_function("hand_sql", |b| b.iter(&mut hand));
    g.finish();
}

fn postgres(c: &mut Criterion) {
    let server = match TestServer::shared() {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "{}",
                TestServer::skip_line("benches/event_store postgres group")
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut g = c.benchmark_group("event_store/postgres");
    g.throughput(Throughput::Elements(APPENDS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));

    let url = server.fresh_database().unwrap();
    let mut store = PostgresEvents::<Deposited>::connect(&url).unwrap();
    let (mut versions, mut next) = (vec![0; STREAMS as usize], 0);
    through_store(&mut store, &mut versions, &mut next);
    assert_eq!(store.head().unwrap(), APPENDS);
    g.bench_function("store", |b| {
        b.iter(|| through_store(&mut store, &mut versions, &mut next));
    });
    let url = server.fresh_database().unwrap();
    repository(&mut g, PostgresEvents::connect(&url).unwrap());

    let url = server.fresh_database().unwrap();
    let mut client = faultline::store::postgres::connect(&url).unwrap();
    client
        .batch_execute(
            "CREATE TABLE ev (position BIGSERIAL UNIQUE, stream BIGINT NOT NULL,
                 version BIGINT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (stream, version))",
        )
        .unwrap();
    let insert = client
        .prepare("INSERT INTO ev (stream, version, event) VALUES ($1, $2, $3)")
        .unwrap();
    let (mut versions, mut next) = (vec![0u64; STREAMS as usize], 0u64);
    let mut hand = move || {
        for _ in 0..APPENDS {
            let stream = (next % u64::from(STREAMS)) as usize;
            let json = serde_json::to_string(&event(next)).unwrap();
            client
                .execute(
                    &insert,
                    &[&(stream as i64), &(versions[stream] as i64 + 1), &json],
                )
                .unwrap();
            versions[stream] += 1;
            next += 1;
        }
    };
    hand();
    g.bench_function("hand_sql", |b| b.iter(&mut hand));
    g.finish();
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
