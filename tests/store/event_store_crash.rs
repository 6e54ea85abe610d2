//! Crash tests of the event store with real processes: a child appends events at the
//! exact version it read and runs an exactly-once projection into a read-model table,
//! noting every acknowledged append, until it is SIGKILLed at a random point; 50
//! times per store. After each kill: no acknowledged append is lost, every stream is
//! gap-free, the global log is gap-free and the union of the streams, and the read
//! model equals the fold of the events up to the projection's checkpoint.
//!
//! Two broken children show the checks have teeth: one behind a store that answers
//! `Ok` before it commits (appends are buffered and written eight at a time), one
//! whose projection commits its read model and its checkpoint in two transactions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline::cqrs::store::postgres::{PostgresEvents, PostgresProjector};
use faultline::cqrs::store::sqlite::{SqliteEvents, SqliteProjector};
use faultline::cqrs::store::{CheckpointStore, EventStorage};
use faultline::cqrs::{AppendError, Appended, ExpectedVersion, Recorded, StreamId};
use faultline::store::StoreError;

use crate::crash::{acknowledged, kill_loop, note_acknowledged, ready, role};
use crate::event_store::{BUMP_PG, BUMP_SQLITE, TOTALS, fold_totals};
use crate::support;

const CHILD: &str = "event_store_crash::event_store_crash_child";
const DB_VAR: &str = "FAULTLINE_ES_DB";
const ACKS_VAR: &str = "FAULTLINE_ES_ACKS";
const PROJECTION: &str = "totals";
const STREAMS: u64 = 5;

type Totals = BTreeMap<u32, (i64, i64)>;

/// A broken store: it answers an append at once from what it knows, and writes the
/// appends to the real store only eight at a time (the mutant "acks before commit").
struct AcksBeforeCommit<St> {
    inner: St,
    pending: Vec<(StreamId, ExpectedVersion, Vec<u64>)>,
    versions: BTreeMap<StreamId, u64>,
    head: Option<u64>,
}

impl<St: EventStorage<u64>> AcksBeforeCommit<St> {
    fn flush(&mut self) -> Result<(), StoreError> {
        for (s, x, e) in std::mem::take(&mut self.pending) {
            let _ = self.inner.append(s, x, &e)?;
        }
        Ok(())
    }
}

impl<St: EventStorage<u64>> EventStorage<u64> for AcksBeforeCommit<St> {
    fn append(
        &mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: &[u64],
    ) -> Result<Result<Appended, AppendError>, StoreError> {
        let actual = self.version(stream)?;
        let head = match self.head {
            Some(h) => h,
            None => self.inner.head()?,
        };
        let n = events.len() as u64;
        self.versions.insert(stream, actual + n);
        self.head = Some(head + n);
        self.pending.push((stream, expected, events.to_vec()));
        if self.pending.len() >= 8 {
            self.flush()?;
        }
        Ok(Ok(Appended {
            from_version: actual,
            to_version: actual + n,
            first_position: head + 1,
            last_position: head + n,
        }))
    }
    fn read_stream(&mut self, s: StreamId, v: u64) -> Result<Vec<Recorded<u64>>, StoreError> {
        self.inner.read_stream(s, v)
    }
    fn read_all(&mut self, a: u64, m: usize) -> Result<Vec<Recorded<u64>>, StoreError> {
        self.inner.read_all(a, m)
    }
    fn head(&mut self) -> Result<u64, StoreError> {
        self.inner.head()
    }
    fn version(&mut self, s: StreamId) -> Result<u64, StoreError> {
        match self.versions.get(&s) {
            Some(v) => Ok(*v),
            None => self.inner.version(s),
        }
    }
    fn save_snapshot(
        &mut self,
        s: StreamId,
        v: u64,
        j: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inner.save_snapshot(s, v, j)
    }
    fn load_snapshot(
        &mut self,
        s: StreamId,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
        self.inner.load_snapshot(s)
    }
}

/// The child's work: append at the exact version read (1 to 3 events, numbered so
/// every event's value is unique), note each acknowledged append, run one projection
/// batch after each append.
fn work<St: EventStorage<u64>>(store: &mut St, mut project: impl FnMut(), acks: &Path) -> ! {
    // Drop a torn last line (a kill inside the write), so this child's first line
    // starts on a line of its own.
    if let Ok(text) = std::fs::read_to_string(acks) {
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            let f = std::fs::OpenOptions::new().write(true).open(acks).unwrap();
            f.set_len(complete as u64).unwrap();
            f.sync_all().unwrap();
        }
    }
    let mut n = acknowledged(acks).len() as u64;
    ready();
    loop {
        let stream = StreamId((n % STREAMS) as u32);
        let v = store.version(stream).expect("version");
        let events: Vec<u64> = (0..1 + n % 3).map(|k| n * 10 + k + 1).collect();
        match store
            .append(stream, ExpectedVersion::Exact(v), &events)
            .expect("append")
        {
            Ok(a) => {
                let values: Vec<String> = events.iter().map(u64::to_string).collect();
                note_acknowledged(
                    acks,
                    &format!(
                        "{} {} {} {} {}",
                        stream.0,
                        a.to_version,
                        a.last_position,
                        events.len(),
                        values.join(",")
                    ),
                );
                n += 1;
            }
            Err(e) => panic!("the only writer conflicted: {e}"),
        }
        project();
    }
}

/// The child of every crash test below, by role: `sqlite`, `postgres`,
/// `sqlite-acks-before-commit`, `sqlite-split-checkpoint`.
#[test]
fn event_store_crash_child() {
    let Some(role) = role() else { return };
    let db = std::env::var(DB_VAR).expect("db");
    let acks = PathBuf::from(std::env::var(ACKS_VAR).expect("acks"));
    let bump_sqlite = |tx: &rusqlite::Connection, rs: &[Recorded<u64>]| {
        for r in rs {
            tx.execute(BUMP_SQLITE, [i64::from(r.stream.0), r.event as i64])?;
        }
        Ok::<_, rusqlite::Error>(())
    };
    match role.as_str() {
        "sqlite" | "sqlite-acks-before-commit" => {
            let mut p = SqliteProjector::<u64>::open(&db, PROJECTION, 5).unwrap();
            p.connection().execute_batch(TOTALS).unwrap();
            let project = move || {
                p.run_batch(|tx, rs| bump_sqlite(tx, rs)).unwrap().unwrap();
            };
            let mut store = SqliteEvents::<u64>::open(&db).unwrap();
            if role == "sqlite" {
                work(&mut store, project, &acks)
            } else {
                let mut broken = AcksBeforeCommit {
                    inner: store,
                    pending: Vec::new(),
                    versions: BTreeMap::new(),
                    head: None,
                };
                work(&mut broken, project, &acks)
            }
        }
        "sqlite-split-checkpoint" => {
            // The read model and the checkpoint in two transactions: a kill between
            // them makes the next run apply the batch again.
            let mut cp = SqliteEvents::<u64>::open(&db).unwrap();
            let mut rm = SqliteEvents::<u64>::open(&db).unwrap();
            rm.connection().execute_batch(TOTALS).unwrap();
            let project = move || {
                let at = cp.load_checkpoint(PROJECTION).unwrap();
                let rs = rm.read_all(at, 5).unwrap();
                let Some(last) = rs.last().map(|r| r.position) else {
                    return;
                };
                let conn = rm.connection();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                bump_sqlite(conn, &rs).unwrap();
                conn.execute_batch("COMMIT").unwrap();
                cp.save_checkpoint(PROJECTION, last).unwrap();
            };
            let mut store = SqliteEvents::<u64>::open(&db).unwrap();
            work(&mut store, project, &acks)
        }
        "postgres" => {
            let mut p = PostgresProjector::<u64>::connect(&db, PROJECTION, 5).unwrap();
            p.client().batch_execute(TOTALS).unwrap();
            let project = move || {
                p.run_batch(|tx, rs| {
                    for r in rs {
                        tx.execute(BUMP_PG, &[&i64::from(r.stream.0), &(r.event as i64)])?;
                    }
                    Ok::<_, postgres::Error>(())
                })
                .unwrap()
                .unwrap();
            };
            let mut store = PostgresEvents::<u64>::connect(&db).unwrap();
            work(&mut store, project, &acks)
        }
        other => panic!("unknown role {other}"),
    }
}

/// What the parent reads back after a kill.
struct Found {
    log: Vec<Recorded<u64>>,
    streams: Vec<Vec<Recorded<u64>>>,
    checkpoint: u64,
    totals: Totals,
}

fn read_back<St: EventStorage<u64>>(
    s: &mut St,
    checkpoint: u64,
    totals: Totals,
) -> Result<Found, StoreError> {
    let log = s.read_all(0, usize::MAX)?;
    let streams = (0..STREAMS)
        .map(|i| s.read_stream(StreamId(i as u32), 1))
        .collect::<Result<_, _>>()?;
    Ok(Found {
        log,
        streams,
        checkpoint,
        totals,
    })
}

fn found_sqlite(db: &Path) -> Found {
    let mut s = SqliteEvents::<u64>::open(db).unwrap();
    let checkpoint = s.load_checkpoint(PROJECTION).unwrap();
    let conn = s.connection();
    conn.execute_batch(TOTALS).unwrap();
    let totals: Totals = conn
        .prepare("SELECT stream, events, total FROM totals")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    read_back(&mut s, checkpoint, totals).unwrap()
}

fn found_postgres(url: &str) -> Found {
    let mut s = PostgresEvents::<u64>::connect(url).unwrap();
    let checkpoint = s.load_checkpoint(PROJECTION).unwrap();
    s.client().batch_execute(TOTALS).unwrap();
    let totals: Totals = s
        .client()
        .query("SELECT stream, events, total FROM totals", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, (r.get(1), r.get(2))))
        .collect();
    read_back(&mut s, checkpoint, totals).unwrap()
}

/// Every promise after a kill, or the first one broken.
fn check(found: &Found, acks: &[String]) -> Result<(), String> {
    let log = &found.log;
    for (i, r) in log.iter().enumerate() {
        if r.position != i as u64 + 1 {
            return Err(format!(
                "global log has a gap before position {}",
                r.position
            ));
        }
    }
    let mut union: Vec<(u64, u32, u64, u64)> = Vec::new();
    for (i, stream) in found.streams.iter().enumerate() {
        for (k, r) in stream.iter().enumerate() {
            if r.version != k as u64 + 1 || r.stream.0 != i as u32 {
                return Err(format!("stream {i} has a gap before version {}", r.version));
            }
            union.push((r.position, r.stream.0, r.version, r.event));
        }
    }
    union.sort_unstable();
    let all: Vec<_> = log
        .iter()
        .map(|r| (r.position, r.stream.0, r.version, r.event))
        .collect();
    if union != all {
        return Err("the global log is not the union of the streams".to_owned());
    }
    for line in acks {
        let f: Vec<&str> = line.split(' ').collect();
        let [stream, to_version, last_position, len, values] = f[..] else {
            return Err(format!("bad acknowledgement line {line:?}"));
        };
        let (stream, to_version, last_position, len): (u32, u64, u64, u64) = (
            stream.parse().unwrap(),
            to_version.parse().unwrap(),
            last_position.parse().unwrap(),
            len.parse().unwrap(),
        );
        let values: Vec<u64> = values.split(',').map(|v| v.parse().unwrap()).collect();
        for (k, value) in values.iter().enumerate() {
            let position = last_position + 1 - len + k as u64;
            let version = to_version + 1 - len + k as u64;
            let want = (position, stream, version, *value);
            let got = all.get(position as usize - 1);
            if got != Some(&want) {
                return Err(format!(
                    "acknowledged append lost: {line:?} wants {want:?} at position {position}, the store has {got:?}"
                ));
            }
        }
    }
    let upto = found.checkpoint as usize;
    if upto > log.len() {
        return Err(format!("checkpoint {upto} past the head {}", log.len()));
    }
    let want = fold_totals(&log[..upto]);
    if found.totals != want {
        return Err(format!(
            "read model {:?} is not the fold of the log up to checkpoint {upto}: {want:?}",
            found.totals
        ));
    }
    Ok(())
}

/// Runs `rounds` kills of the child in `role`, checking after each; returns the
/// broken promises (round, what), the appends acknowledged and the children killed.
fn crash_rounds(
    role: &str,
    db: &str,
    dir: &Path,
    rounds: u32,
    seed: u64,
    read: impl Fn() -> Found,
) -> (Vec<(u32, String)>, usize, u32) {
    let acks = dir.join("acks");
    let acks_s = acks.display().to_string();
    let mut broken = Vec::new();
    let killed = kill_loop(
        CHILD,
        role,
        &[(DB_VAR, db), (ACKS_VAR, &acks_s)],
        rounds,
        seed,
        Duration::from_millis(150),
        |round| {
            if let Err(e) = check(&read(), &acknowledged(&acks)) {
                broken.push((round, e));
            }
        },
    );
    (broken, acknowledged(&acks).len(), killed)
}

#[test]
fn event_store_survives_kills_sqlite() {
    let dir = support::temp_dir("es-crash-sqlite");
    let db = dir.join("db.sqlite");
    let (broken, acked, killed) =
        crash_rounds("sqlite", &db.display().to_string(), &dir, 50, 16, || {
            found_sqlite(&db)
        });
    assert_eq!(broken, vec![], "promises broken after a kill");
    assert_eq!(killed, 50);
    assert!(acked >= 50, "the children did work: {acked} appends");
    let f = found_sqlite(&db);
    eprintln!(
        "sqlite crash: 50 kills, {acked} appends acknowledged, {} events, checkpoint {}",
        f.log.len(),
        f.checkpoint
    );
}

#[test]
fn event_store_survives_kills_postgres() {
    let Some(url) = support::pg_url("event store crash") else {
        return;
    };
    let dir = support::temp_dir("es-crash-pg");
    let (broken, acked, killed) =
        crash_rounds("postgres", &url, &dir, 50, 17, || found_postgres(&url));
    assert_eq!(broken, vec![], "promises broken after a kill");
    assert_eq!(killed, 50);
    assert!(acked >= 50, "the children did work: {acked} appends");
    let f = found_postgres(&url);
    eprintln!(
        "postgres crash: 50 kills, {acked} appends acknowledged, {} events, checkpoint {}",
        f.log.len(),
        f.checkpoint
    );
}

/// A store that answers `Ok` before it commits loses acknowledged appends to a kill,
/// and the check says so.
#[test]
fn crash_check_catches_a_store_that_acks_before_commit() {
    let dir = support::temp_dir("es-crash-mutant-ack");
    let db = dir.join("db.sqlite");
    let (broken, _, _) = crash_rounds(
        "sqlite-acks-before-commit",
        &db.display().to_string(),
        &dir,
        10,
        18,
        || found_sqlite(&db),
    );
    // Once an acknowledged append is lost it stays lost: what counts is the first round.
    eprintln!(
        "acks before commit: caught after kill {:?} of 10: {:?}",
        broken.first().map(|b| b.0 + 1),
        broken.first().map(|b| &b.1)
    );
    assert!(
        broken
            .iter()
            .any(|(_, e)| e.starts_with("acknowledged append lost")),
        "no kill exposed the early acks: {broken:?}"
    );
}

/// A projection that commits its read model and its checkpoint separately counts a
/// batch twice after a kill between them, and the check says so.
#[test]
fn crash_check_catches_a_projection_with_a_separate_checkpoint() {
    let dir = support::temp_dir("es-crash-mutant-split");
    let db = dir.join("db.sqlite");
    let (broken, _, _) = crash_rounds(
        "sqlite-split-checkpoint",
        &db.display().to_string(),
        &dir,
        30,
        19,
        || found_sqlite(&db),
    );
    // Once broken, the store stays broken: what counts is the first round.
    eprintln!(
        "separate checkpoint: caught after kill {:?} of 30: {:?}",
        broken.first().map(|b| b.0 + 1),
        broken.first().map(|b| &b.1)
    );
    assert!(
        broken.iter().any(|(_, e)| e.starts_with("read model")),
        "no kill fell between the read model's commit and the checkpoint's: {broken:?}"
    );
}
