//! The event store on memory, SQLite and Postgres: the conformance suite on each, a
//! broken store it catches, the database's own version check, exactly-once
//! projections, the durable command path, and concurrent writers on Postgres.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use faultline::cqrs::store::conformance::{self, Probe};
use faultline::cqrs::store::postgres::{PostgresEvents, PostgresProjector};
use faultline::cqrs::store::sqlite::{SqliteEvents, SqliteProjector};
use faultline::cqrs::store::{CheckpointStore, EventStorage, MemoryEvents, StoredRepository};
use faultline::cqrs::{
    AppendError, Appended, ExpectedVersion, Item, ItemCommand, Recorded, StoredEvent, StreamId,
};
use faultline::store::StoreError;

use crate::support;

#[test]
fn conformance_memory() {
    conformance::run(|| Ok(MemoryEvents::new())).unwrap();
}

#[test]
fn conformance_sqlite() {
    conformance::run(|| SqliteEvents::open(support::sqlite_path("es-conf"))).unwrap();
}

#[test]
fn conformance_postgres() {
    let Some(_) = support::pg_url("event store conformance") else {
        return;
    };
    conformance::run(|| {
        let url = support::pg_url("event store conformance").expect("server");
        PostgresEvents::connect(&url)
    })
    .unwrap();
}

/// A broken store: every append goes through as if at [`ExpectedVersion::Any`].
struct IgnoresExpectedVersion<St>(St);

/// A broken store: `read_all` skips the first event after `after`.
struct SkipsOne<St>(St);

macro_rules! delegate_rest {
    () => {
        fn read_stream(&mut self, s: StreamId, v: u64) -> Result<Vec<Recorded<Probe>>, StoreError> {
            self.0.read_stream(s, v)
        }
        fn head(&mut self) -> Result<u64, StoreError> {
            self.0.head()
        }
        fn version(&mut self, s: StreamId) -> Result<u64, StoreError> {
            self.0.version(s)
        }
        fn save_snapshot(
            &mut self,
            s: StreamId,
            v: u64,
            j: &serde_json::Value,
        ) -> Result<(), StoreError> {
            self.0.save_snapshot(s, v, j)
        }
        fn load_snapshot(
            &mut self,
            s: StreamId,
        ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
            self.0.load_snapshot(s)
        }
    };
}

impl<St: EventStorage<Probe>> EventStorage<Probe> for IgnoresExpectedVersion<St> {
    fn append(
        &mut self,
        s: StreamId,
        _expected: ExpectedVersion,
        e: &[Probe],
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        self.0.append(s, ExpectedVersion::Any, e)
    }
    fn read_all(&mut self, a: u64, m: usize) -> Result<Vec<Recorded<Probe>>, StoreError> {
        self.0.read_all(a, m)
    }
    delegate_rest!();
}

impl<St: EventStorage<Probe>> EventStorage<Probe> for SkipsOne<St> {
    fn append(
        &mut self,
        s: StreamId,
        x: ExpectedVersion,
        e: &[Probe],
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        self.0.append(s, x, e)
    }
    fn read_all(&mut self, a: u64, m: usize) -> Result<Vec<Recorded<Probe>>, StoreError> {
        self.0.read_all(a + 1, m)
    }
    delegate_rest!();
}

impl<St: CheckpointStore> CheckpointStore for IgnoresExpectedVersion<St> {
    fn load_checkpoint(&mut self, p: &str) -> Result<u64, StoreError> {
        self.0.load_checkpoint(p)
    }
    fn save_checkpoint(&mut self, p: &str, at: u64) -> Result<(), StoreError> {
        self.0.save_checkpoint(p, at)
    }
}

impl<St: CheckpointStore> CheckpointStore for SkipsOne<St> {
    fn load_checkpoint(&mut self, p: &str) -> Result<u64, StoreError> {
        self.0.load_checkpoint(p)
    }
    fn save_checkpoint(&mut self, p: &str, at: u64) -> Result<(), StoreError> {
        self.0.save_checkpoint(p, at)
    }
}

/// The suite has teeth: a store that ignores the expected version, and one whose
/// global read skips an event, each fail it, in the case that checks that promise.
#[test]
fn conformance_catches_broken_stores() {
    let f = conformance::run(|| {
        Ok(IgnoresExpectedVersion(SqliteEvents::open(
            support::sqlite_path("es-mutant"),
        )?))
    })
    .unwrap_err();
    assert_eq!(f.case, "append_no_stream", "{f}");
    assert!(f.detail.contains("WrongExpectedVersion"), "{f}");
    let f = conformance::run(|| Ok(SkipsOne(MemoryEvents::new()))).unwrap_err();
    assert_eq!(f.case, "append_no_stream", "{f}");
    assert!(f.detail.contains("log after a refused append"), "{f}");
}

/// The version check is the database's: a row at a (stream, version) already held is
/// refused by the schema itself, whoever writes it.
#[test]
fn the_database_refuses_a_second_event_at_one_version() {
    let path = support::sqlite_path("es-unique");
    let mut s = SqliteEvents::<u64>::open(&path).unwrap();
    s.append(StreamId(1), ExpectedVersion::NoStream, &[1])
        .unwrap()
        .unwrap();
    let raw = s.connection().execute(
        "INSERT INTO faultline_es_events (position, stream, version, event) VALUES (2, 1, 1, '2')",
        [],
    );
    assert!(raw.is_err(), "sqlite accepted a second version 1");
    if let Some(url) = support::pg_url("event store unique version") {
        let mut s = PostgresEvents::<u64>::connect(&url).unwrap();
        s.append(StreamId(1), ExpectedVersion::NoStream, &[1])
            .unwrap()
            .unwrap();
        let raw = s.client().execute(
            "INSERT INTO faultline_es_events (stream, version, position, event) VALUES (1, 1, 2, '2')",
            &[],
        );
        assert!(raw.is_err(), "postgres accepted a second version 1");
    }
}

/// Two writers, two connections, the same expected version, released together: one
/// wins, the other is told it conflicted; repeated so the race is real.
fn two_writers_one_winner<St, F>(mut open: F)
where
    St: EventStorage<u64> + Send + 'static,
    F: FnMut() -> St,
{
    for round in 0..20u32 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2u64)
            .map(|w| {
                let mut s = open();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    s.append(StreamId(round), ExpectedVersion::NoStream, &[w])
                        .unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(AppendError::WrongExpectedVersion { actual: 1, .. })))
        );
        let mut s = open();
        assert_eq!(s.version(StreamId(round)).unwrap(), 1);
    }
}

#[test]
fn two_writers_at_one_version_sqlite() {
    let path = support::sqlite_path("es-race");
    two_writers_one_winner(|| SqliteEvents::<u64>::open(&path).unwrap());
}

#[test]
fn two_writers_at_one_version_postgres() {
    let Some(url) = support::pg_url("event store race") else {
        return;
    };
    two_writers_one_winner(|| PostgresEvents::<u64>::connect(&url).unwrap());
}

/// Four threads, each with its own connection, append to three streams at the exact
/// version they read, retrying conflicts, while a projection follows the global log.
/// Per stream the versions are 1..n without gaps and each version has one winner (the
/// event stored is the one its winner was told it wrote); the global log is gap-free;
/// the projection saw every position once, in order.
#[test]
fn concurrent_writers_and_a_follower_on_postgres() {
    let Some(url) = support::pg_url("event store concurrency") else {
        return;
    };
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 60;
    // Migrate once before the threads race to.
    drop(PostgresEvents::<(u64, u64)>::connect(&url).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let url = url.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut s = PostgresEvents::<(u64, u64)>::connect(&url).unwrap();
            let mut seen: Vec<Recorded<(u64, u64)>> = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let after = seen.last().map_or(0, |r| r.position);
                let batch = s.read_all(after, 7).unwrap();
                for (k, r) in batch.iter().enumerate() {
                    assert_eq!(
                        r.position,
                        (seen.len() + k) as u64 + 1,
                        "the follower skipped or repeated a position"
                    );
                }
                let empty = batch.is_empty();
                seen.extend(batch);
                if finished && empty {
                    return seen;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut s = PostgresEvents::<(u64, u64)>::connect(&url).unwrap();
                let mut won = Vec::new();
                let mut conflicts = 0;
                for i in 0..PER_WRITER {
                    let stream = StreamId(((w + i) % 3) as u32);
                    loop {
                        let v = s.version(stream).unwrap();
                        match s
                            .append(stream, ExpectedVersion::Exact(v), &[(w, i)])
                            .unwrap()
                        {
                            Ok(a) => {
                                assert_eq!(a.to_version, v + 1);
                                won.push((stream, a.to_version, a.last_position, (w, i)));
                                break;
                            }
                            Err(AppendError::WrongExpectedVersion { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                (won, conflicts)
            })
        })
        .collect();
    let mut winners = BTreeMap::new();
    let mut conflicts = 0;
    for h in writers {
        let (won, c) = h.join().unwrap();
        conflicts += c;
        for (stream, version, position, event) in won {
            assert!(
                winners
                    .insert((stream, version), (position, event))
                    .is_none(),
                "two winners at {stream} version {version}"
            );
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = follower.join().unwrap();
    let mut s = PostgresEvents::<(u64, u64)>::connect(&url).unwrap();
    let log = s.read_all(0, usize::MAX).unwrap();
    assert_eq!(log.len() as u64, WRITERS * PER_WRITER);
    assert_eq!(seen, log, "the follower saw the whole log, once, in order");
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r.position, i as u64 + 1, "global log gap-free");
        assert_eq!(
            winners.get(&(r.stream, r.version)),
            Some(&(r.position, r.event)),
            "the stored event is its winner's"
        );
    }
    for stream in 0..3 {
        let versions: Vec<u64> = s
            .read_stream(StreamId(stream), 1)
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    }
    eprintln!(
        "postgres concurrency: {} appends by {WRITERS} writers, {conflicts} conflicts retried",
        log.len()
    );
}

/// The read model of the exactly-once tests: per stream, events counted and their
/// numbers summed.
pub(crate) fn fold_totals(log: &[Recorded<u64>]) -> BTreeMap<u32, (i64, i64)> {
    let mut m = BTreeMap::new();
    for r in log {
        let e: &mut (i64, i64) = m.entry(r.stream.0).or_default();
        e.0 += 1;
        e.1 += r.event as i64;
    }
    m
}

pub(crate) const TOTALS: &str = "CREATE TABLE IF NOT EXISTS totals (
    stream BIGINT PRIMARY KEY, events BIGINT NOT NULL, total BIGINT NOT NULL)";
pub(crate) const BUMP_SQLITE: &str = "INSERT INTO totals (stream, events, total) VALUES (?1, 1, ?2)
    ON CONFLICT (stream) DO UPDATE SET events = events + 1, total = total + excluded.total";
pub(crate) const BUMP_PG: &str = "INSERT INTO totals (stream, events, total) VALUES ($1, 1, $2)
    ON CONFLICT (stream) DO UPDATE SET events = totals.events + 1, total = totals.total + excluded.total";

/// A read model updated by a projection, then a failure in the middle of a batch (an
/// error after some rows changed; a panic, which drops the transaction uncommitted):
/// nothing of the batch stays, the checkpoint does not move, and the next run counts
/// each event once.
#[test]
fn exactly_once_projection_sqlite() {
    let path = support::sqlite_path("es-project");
    let mut events = SqliteEvents::<u64>::open(&path).unwrap();
    for i in 1..=10u64 {
        events
            .append(StreamId((i % 3) as u32), ExpectedVersion::Any, &[i])
            .unwrap()
            .unwrap();
    }
    let mut p = SqliteProjector::<u64>::open(&path, "totals", 4).unwrap();
    p.connection().execute_batch(TOTALS).unwrap();
    let read = |p: &SqliteProjector<u64>| -> BTreeMap<u32, (i64, i64)> {
        let mut st = p
            .connection()
            .prepare("SELECT stream, events, total FROM totals")
            .unwrap();
        st.query_map([], |r| Ok((r.get::<_, u32>(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let bump = |tx: &rusqlite::Transaction<'_>, rs: &[Recorded<u64>]| {
        for r in rs {
            tx.execute(BUMP_SQLITE, [i64::from(r.stream.0), r.event as i64])?;
        }
        Ok::<_, rusqlite::Error>(())
    };
    let b = p.run_batch(bump).unwrap().unwrap();
    assert_eq!((b.applied, b.checkpoint), (4, 4));
    // An error after the rows of the batch changed: rolled back.
    let failed = p
        .run_batch(|tx, rs| {
            bump(tx, rs).unwrap();
            Err("the read model refused")
        })
        .unwrap();
    assert_eq!(failed, Err("the read model refused"));
    assert_eq!(p.checkpoint().unwrap(), 4);
    // A crash in the middle: the transaction is dropped without a commit.
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = p.run_batch(|tx, rs| -> Result<(), ()> {
            bump(tx, rs).unwrap();
            panic!("crash in the middle of a batch")
        });
    }));
    assert!(crashed.is_err());
    assert_eq!(p.checkpoint().unwrap(), 4);
    let log = events.read_all(0, usize::MAX).unwrap();
    assert_eq!(read(&p), fold_totals(&log[..4]));
    while p.run_batch(bump).unwrap().unwrap().applied > 0 {}
    assert_eq!(p.checkpoint().unwrap(), 10);
    assert_eq!(read(&p), fold_totals(&log), "each event counted once");
}

#[test]
fn exactly_once_projection_postgres() {
    let Some(url) = support::pg_url("event store projection") else {
        return;
    };
    let mut events = PostgresEvents::<u64>::connect(&url).unwrap();
    for i in 1..=10u64 {
        events
            .append(StreamId((i % 3) as u32), ExpectedVersion::Any, &[i])
            .unwrap()
            .unwrap();
    }
    let mut p = PostgresProjector::<u64>::connect(&url, "totals", 4).unwrap();
    p.client().batch_execute(TOTALS).unwrap();
    let read = |p: &mut PostgresProjector<u64>| -> BTreeMap<u32, (i64, i64)> {
        p.client()
            .query("SELECT stream, events, total FROM totals", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u32, (r.get(1), r.get(2))))
            .collect()
    };
    let bump = |tx: &mut postgres::Transaction<'_>, rs: &[Recorded<u64>]| {
        for r in rs {
            tx.execute(BUMP_PG, &[&i64::from(r.stream.0), &(r.event as i64)])?;
        }
        Ok::<_, postgres::Error>(())
    };
    assert_eq!(p.run_batch(bump).unwrap().unwrap().checkpoint, 4);
    let failed = p
        .run_batch(|tx, rs| {
            bump(tx, rs).unwrap();
            Err("the read model refused")
        })
        .unwrap();
    assert_eq!(failed, Err("the read model refused"));
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = p.run_batch(|tx, rs| -> Result<(), ()> {
            bump(tx, rs).unwrap();
            panic!("crash in the middle of a batch")
        });
    }));
    assert!(crashed.is_err());
    assert_eq!(p.checkpoint().unwrap(), 4);
    let log = events.read_all(0, usize::MAX).unwrap();
    assert_eq!(read(&mut p), fold_totals(&log[..4]));
    // A second instance of the projection (another machine) runs too: they take turns
    // on the checkpoint row, so neither applies a batch the other did.
    let mut q = PostgresProjector::<u64>::connect(&url, "totals", 3).unwrap();
    loop {
        let a = p.run_batch(bump).unwrap().unwrap().applied;
        let b = q.run_batch(bump).unwrap().unwrap().applied;
        if a + b == 0 {
            break;
        }
    }
    assert_eq!(q.checkpoint().unwrap(), 10);
    assert_eq!(read(&mut p), fold_totals(&log), "each event counted once");
}

/// The durable command path, from two connections at once: every command lands
/// exactly once (conflicts retried), and a repository reopened later rehydrates the
/// same state from a snapshot and the events after it.
fn commands_from_two_connections<St, F>(mut open: F)
where
    St: EventStorage<StoredEvent> + Send + 'static,
    F: FnMut() -> St,
{
    let item = StreamId(5);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let store = open();
            std::thread::spawn(move || {
                let mut repo =
                    StoredRepository::<Item, StoredEvent, _>::new(store, 7, 1_000).unwrap();
                for _ in 0..40 {
                    repo.execute(item, &ItemCommand::Restock { units: 1 })
                        .unwrap()
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut repo = StoredRepository::<Item, StoredEvent, _>::new(open(), 7, 1).unwrap();
    let loaded = repo.rehydrate(item).unwrap();
    assert_eq!(
        loaded.state.stock, 80,
        "no command lost, none applied twice"
    );
    assert_eq!(loaded.version, 80);
    assert!(loaded.snapshot_version.is_some_and(|v| v > 0 && v <= 80));
    assert_eq!(loaded.folded, 80 - loaded.snapshot_version.unwrap());
    let refused = repo
        .execute(item, &ItemCommand::Withdraw { units: 81 })
        .unwrap();
    assert!(refused.is_err());
}

#[test]
fn stored_repository_sqlite() {
    let path = support::sqlite_path("es-repo");
    commands_from_two_connections(|| SqliteEvents::<StoredEvent>::open(&path).unwrap());
}

#[test]
fn stored_repository_postgres() {
    let Some(url) = support::pg_url("event store repository") else {
        return;
    };
    drop(PostgresEvents::<StoredEvent>::connect(&url).unwrap());
    commands_from_two_connections(|| PostgresEvents::<StoredEvent>::connect(&url).unwrap());
}

/// Positions are committed in order even when appends overlap: whatever a reader sees
/// is a prefix of the log (checked from many snapshots taken during writes).
#[test]
fn a_reader_only_ever_sees_a_prefix_sqlite() {
    let path = support::sqlite_path("es-prefix");
    drop(SqliteEvents::<u64>::open(&path).unwrap());
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut s = SqliteEvents::<u64>::open(&path).unwrap();
            for i in 0..300u64 {
                s.append(StreamId((i % 4) as u32), ExpectedVersion::Any, &[i, i])
                    .unwrap()
                    .unwrap();
            }
        })
    };
    let mut r = SqliteEvents::<u64>::open(&path).unwrap();
    let mut seen = BTreeSet::new();
    while !writer.is_finished() {
        let log = r.read_all(0, usize::MAX).unwrap();
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1);
        }
        assert_eq!(log.len() % 2, 0, "half a batch visible");
        seen.insert(log.len());
    }
    writer.join().unwrap();
    assert_eq!(r.head().unwrap(), 600);
}
