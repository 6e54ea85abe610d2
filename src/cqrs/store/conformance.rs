//! The conformance suite every [`EventStorage`] + [`CheckpointStore`] passes: the
//! memory, SQLite and Postgres stores run it in `tests/store/event_store.rs`, and so
//! can yours.
//!
//! [`run`] takes a function that makes a fresh, empty store, and checks each promise
//! on a store of its own, through what the store answers and what it reads back
//! (never through what it says about itself), then a seeded random differential run
//! against the in-memory [`EventStore`]. The first broken promise is returned as a
//! [`Failure`] naming its case.
//!
//! ```
//! use faultline::cqrs::store::MemoryEvents;
//! use faultline::cqrs::store::conformance;
//!
//! conformance::run(|| Ok(MemoryEvents::new())).unwrap();
//! ```

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{BATCH_MAX, CheckpointStore, EventStorage};
use crate::cqrs::core::{AppendError, Appended, EventStore, ExpectedVersion, Recorded, StreamId};
use crate::store::StoreError;

/// The event the suite appends: a number and a text, so JSON stores round-trip
/// strings with quotes, escapes and non-ASCII text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// A number.
    pub n: u64,
    /// A text.
    pub note: String,
}

fn probe(n: u64) -> Probe {
    let notes = [
        "plain",
        "quote \" and \\ back",
        "naïve 🦀",
        "line\nbreak",
        "",
    ];
    Probe {
        n,
        note: notes[(n % notes.len() as u64) as usize].to_owned(),
    }
}

/// A broken promise: the case, and what was seen.
#[derive(Debug, thiserror::Error)]
#[error("event store conformance, case `{case}`: {detail}")]
pub struct Failure {
    /// The case that failed (e.g. `exact_version`).
    pub case: &'static str,
    /// What the store did instead.
    pub detail: String,
}

impl Failure {
    fn store(case: &'static str, e: StoreError) -> Self {
        Failure {
            case,
            detail: format!("the store failed: {e}"),
        }
    }
}

type Check<St> = fn(&mut St) -> Result<(), String>;

/// Runs every case, each on a fresh store from `make`.
///
/// # Errors
///
/// The first [`Failure`]: a promise broken, or a store error where none was due.
pub fn run<St, F>(mut make: F) -> Result<(), Failure>
where
    St: EventStorage<Probe> + CheckpointStore,
    F: FnMut() -> Result<St, StoreError>,
{
    let cases: [(&'static str, Check<St>); 12] = [
        ("empty_store", empty_store),
        ("append_no_stream", append_no_stream),
        ("exact_version", exact_version),
        ("any_version", any_version),
        ("refused_batches", refused_batches),
        ("batch_is_atomic_and_consecutive", batch_is_atomic),
        ("read_stream_from_version", read_stream_from_version),
        ("read_all_after_and_max", read_all_after_and_max),
        ("events_round_trip", events_round_trip),
        ("snapshots_latest_wins", snapshots),
        ("checkpoints", checkpoints),
        ("differential", |s| differential(s, 0x0e5)),
    ];
    for (case, check) in cases {
        let mut store = make().map_err(|e| Failure::store(case, e))?;
        check(&mut store).map_err(|detail| Failure { case, detail })?;
    }
    Ok(())
}

/// A store error as a case's failure text.
fn se<T>(r: Result<T, StoreError>) -> Result<T, String> {
    r.map_err(|e| format!("the store failed: {e}"))
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    ensure(got == want, || {
        format!("{what}: got {got:?}, expected {want:?}")
    })
}

fn append_ok<St: EventStorage<Probe>>(
    s: &mut St,
    stream: StreamId,
    expected: ExpectedVersion,
    events: &[Probe],
) -> Result<Appended, String> {
    se(s.append(stream, expected, events))?
        .map_err(|e| format!("append to {stream} at {expected} refused: {e}"))
}

/// What the store holds, read back: the global log, each stream's events.
fn positions_and_versions<St: EventStorage<Probe>>(
    s: &mut St,
) -> Result<Vec<(u32, u64, u64)>, String> {
    let log = se(s.read_all(0, usize::MAX))?;
    Ok(log
        .iter()
        .map(|r| (r.stream.0, r.version, r.position))
        .collect())
}

fn empty_store<St: EventStorage<Probe> + CheckpointStore>(s: &mut St) -> Result<(), String> {
    eq("head of an empty store", se(s.head())?, 0)?;
    eq(
        "version of a stream never written",
        se(s.version(StreamId(3)))?,
        0,
    )?;
    eq("read_all of an empty store", se(s.read_all(0, 10))?, vec![])?;
    eq(
        "read_stream of a stream never written",
        se(s.read_stream(StreamId(3), 1))?,
        vec![],
    )?;
    eq(
        "snapshot never saved",
        se(s.load_snapshot(StreamId(3)))?,
        None,
    )?;
    eq("checkpoint never saved", se(s.load_checkpoint("view"))?, 0)
}

fn append_no_stream<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    let a = append_ok(
        s,
        StreamId(1),
        ExpectedVersion::NoStream,
        &[probe(1), probe(2)],
    )?;
    eq(
        "first append's range",
        a,
        Appended {
            from_version: 0,
            to_version: 2,
            first_position: 1,
            last_position: 2,
        },
    )?;
    let again = se(s.append(StreamId(1), ExpectedVersion::NoStream, &[probe(3)]))?;
    eq(
        "second append at no stream",
        again,
        Err(AppendError::WrongExpectedVersion {
            stream: StreamId(1),
            expected: ExpectedVersion::NoStream,
            actual: 2,
        }),
    )?;
    let zero = se(s.append(StreamId(1), ExpectedVersion::Exact(0), &[probe(3)]))?;
    ensure(zero.is_err(), || {
        format!("append at version 0 to a stream at 2 was accepted: {zero:?}")
    })?;
    eq("head after a refused append", se(s.head())?, 2)?;
    eq(
        "version after a refused append",
        se(s.version(StreamId(1)))?,
        2,
    )?;
    eq(
        "log after a refused append",
        positions_and_versions(s)?,
        vec![(1, 1, 1), (1, 2, 2)],
    )
}

fn exact_version<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    let item = StreamId(7);
    append_ok(s, item, ExpectedVersion::Exact(0), &[probe(1)])?;
    append_ok(s, item, ExpectedVersion::Exact(1), &[probe(2), probe(3)])?;
    for wrong in [0, 1, 2, 4, 9] {
        let r = se(s.append(item, ExpectedVersion::Exact(wrong), &[probe(99)]))?;
        eq(
            &format!("append at version {wrong} to a stream at 3"),
            r,
            Err(AppendError::WrongExpectedVersion {
                stream: item,
                expected: ExpectedVersion::Exact(wrong),
                actual: 3,
            }),
        )?;
    }
    eq("version after refusals", se(s.version(item))?, 3)?;
    eq("head after refusals", se(s.head())?, 3)?;
    let a = append_ok(s, item, ExpectedVersion::Exact(3), &[probe(4)])?;
    eq(
        "range of an exact append",
        (a.from_version, a.to_version),
        (3, 4),
    )?;
    let events: Vec<u64> = se(s.read_stream(item, 1))?
        .iter()
        .map(|r| r.event.n)
        .collect();
    eq("the stream's events", events, vec![1, 2, 3, 4])
}

fn any_version<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    append_ok(s, StreamId(1), ExpectedVersion::Any, &[probe(1)])?;
    append_ok(s, StreamId(2), ExpectedVersion::Any, &[probe(2)])?;
    let a = append_ok(s, StreamId(1), ExpectedVersion::Any, &[probe(3)])?;
    eq(
        "an append at any version goes to the end",
        a,
        Appended {
            from_version: 1,
            to_version: 2,
            first_position: 3,
            last_position: 3,
        },
    )
}

fn refused_batches<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    append_ok(s, StreamId(1), ExpectedVersion::Any, &[probe(1)])?;
    eq(
        "an empty append",
        se(s.append(StreamId(1), ExpectedVersion::Any, &[]))?,
        Err(AppendError::Empty {
            stream: StreamId(1),
        }),
    )?;
    let big: Vec<Probe> = (0..=BATCH_MAX as u64).map(probe).collect();
    eq(
        "an append over the batch limit",
        se(s.append(StreamId(1), ExpectedVersion::Any, &big))?,
        Err(AppendError::BatchTooLarge {
            stream: StreamId(1),
            len: BATCH_MAX + 1,
            max: BATCH_MAX,
        }),
    )?;
    let full: Vec<Probe> = (0..BATCH_MAX as u64).map(probe).collect();
    let a = append_ok(s, StreamId(1), ExpectedVersion::Exact(1), &full)?;
    eq(
        "an append at the batch limit",
        (a.to_version, a.last_position),
        (BATCH_MAX as u64 + 1, BATCH_MAX as u64 + 1),
    )
}

fn batch_is_atomic<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    append_ok(s, StreamId(1), ExpectedVersion::Any, &[probe(1), probe(2)])?;
    append_ok(s, StreamId(2), ExpectedVersion::Any, &[probe(3)])?;
    append_ok(
        s,
        StreamId(1),
        ExpectedVersion::Exact(2),
        &[probe(4), probe(5), probe(6)],
    )?;
    // A refused batch writes none of its events.
    let r = se(s.append(
        StreamId(2),
        ExpectedVersion::Exact(0),
        &[probe(7), probe(8)],
    ))?;
    ensure(r.is_err(), || format!("a stale batch was accepted: {r:?}"))?;
    eq(
        "the global log (stream, version, position)",
        positions_and_versions(s)?,
        vec![
            (1, 1, 1),
            (1, 2, 2),
            (2, 1, 3),
            (1, 3, 4),
            (1, 4, 5),
            (1, 5, 6),
        ],
    )?;
    let ns: Vec<u64> = se(s.read_all(0, usize::MAX))?
        .iter()
        .map(|r| r.event.n)
        .collect();
    eq("the events in log order", ns, vec![1, 2, 3, 4, 5, 6])
}

fn read_stream_from_version<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    for i in 1..=5 {
        append_ok(s, StreamId(1), ExpectedVersion::Any, &[probe(i)])?;
        append_ok(s, StreamId(2), ExpectedVersion::Any, &[probe(100 + i)])?;
    }
    let got: Vec<(u64, u64, u64)> = se(s.read_stream(StreamId(2), 3))?
        .iter()
        .map(|r| (r.version, r.position, r.event.n))
        .collect();
    eq(
        "stream 2 from version 3",
        got,
        vec![(3, 6, 103), (4, 8, 104), (5, 10, 105)],
    )?;
    eq(
        "from version 0",
        se(s.read_stream(StreamId(1), 0))?.len(),
        5,
    )?;
    eq("past the end", se(s.read_stream(StreamId(1), 6))?, vec![])
}

fn read_all_after_and_max<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    for i in 1..=7 {
        append_ok(
            s,
            StreamId((i % 3) as u32),
            ExpectedVersion::Any,
            &[probe(i)],
        )?;
    }
    let p = |v: Vec<Recorded<Probe>>| v.iter().map(|r| r.position).collect::<Vec<_>>();
    eq("after 0, max 3", p(se(s.read_all(0, 3))?), vec![1, 2, 3])?;
    eq("after 3, max 3", p(se(s.read_all(3, 3))?), vec![4, 5, 6])?;
    eq("after 6, max 3", p(se(s.read_all(6, 3))?), vec![7])?;
    eq("after the head", p(se(s.read_all(7, 3))?), vec![])?;
    eq("max 0", p(se(s.read_all(0, 0))?), vec![])?;
    eq("head", se(s.head())?, 7)
}

fn events_round_trip<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    let events: Vec<Probe> = (0..5).map(probe).collect();
    append_ok(s, StreamId(u32::MAX), ExpectedVersion::NoStream, &events)?;
    let back: Vec<Probe> = se(s.read_stream(StreamId(u32::MAX), 1))?
        .into_iter()
        .map(|r| r.event)
        .collect();
    eq("events read back", back, events)
}

fn snapshots<St: EventStorage<Probe>>(s: &mut St) -> Result<(), String> {
    let state = |n: u64| serde_json::json!({ "stock": n, "note": "naïve \"q\"" });
    se(s.save_snapshot(StreamId(1), 2, &state(2)))?;
    eq(
        "a saved snapshot",
        se(s.load_snapshot(StreamId(1)))?,
        Some((2, state(2))),
    )?;
    se(s.save_snapshot(StreamId(1), 5, &state(5)))?;
    se(s.save_snapshot(StreamId(1), 3, &state(3)))?;
    eq(
        "the latest snapshot after an older one was saved",
        se(s.load_snapshot(StreamId(1)))?,
        Some((5, state(5))),
    )?;
    eq(
        "another stream's snapshot",
        se(s.load_snapshot(StreamId(2)))?,
        None,
    )
}

fn checkpoints<St: CheckpointStore>(s: &mut St) -> Result<(), String> {
    se(s.save_checkpoint("stock", 4))?;
    se(s.save_checkpoint("low", 9))?;
    eq("checkpoint of stock", se(s.load_checkpoint("stock"))?, 4)?;
    eq("checkpoint of low", se(s.load_checkpoint("low"))?, 9)?;
    se(s.save_checkpoint("stock", 11))?;
    eq(
        "checkpoint of stock overwritten",
        se(s.load_checkpoint("stock"))?,
        11,
    )?;
    eq("checkpoint of another", se(s.load_checkpoint("other"))?, 0)
}

/// Random appends (random streams, batch sizes and expectations, right and wrong) and
/// reads, each answer compared with the in-memory [`EventStore`]'s.
fn differential<St: EventStorage<Probe>>(s: &mut St, seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model: EventStore<Probe> = EventStore::new();
    let mut n = 0;
    for step in 0..300 {
        let stream = StreamId(rng.random_range(0..5u32));
        match rng.random_range(0..10u32) {
            0..=5 => {
                let len = rng.random_range(0..4usize);
                let events: Vec<Probe> = (0..len)
                    .map(|_| {
                        n += 1;
                        probe(n)
                    })
                    .collect();
                let v = model.version(stream);
                let expected = match rng.random_range(0..5u32) {
                    0 => ExpectedVersion::Any,
                    1 => ExpectedVersion::NoStream,
                    2 => ExpectedVersion::Exact(v.saturating_sub(1)),
                    3 => ExpectedVersion::Exact(v + 1),
                    _ => ExpectedVersion::Exact(v),
                };
                let want = model.append(stream, expected, events.iter().cloned());
                let got = se(s.append(stream, expected, &events))?;
                eq(
                    &format!("step {step}: append {len} to {stream} at {expected}"),
                    got,
                    want,
                )?;
            }
            6 => {
                let from = rng.random_range(0..6u64);
                let want: Vec<_> = model.read_stream(stream, from).cloned().collect();
                eq(
                    &format!("step {step}: read {stream} from {from}"),
                    se(s.read_stream(stream, from))?,
                    want,
                )?;
            }
            7 => {
                let after = rng.random_range(0..=model.head() + 1);
                let max = rng.random_range(0..8usize);
                eq(
                    &format!("step {step}: read_all after {after} max {max}"),
                    se(s.read_all(after, max))?,
                    model.read_all(after, max).to_vec(),
                )?;
            }
            8 => eq(&format!("step {step}: head"), se(s.head())?, model.head())?,
            _ => eq(
                &format!("step {step}: version of {stream}"),
                se(s.version(stream))?,
                model.version(stream),
            )?,
        }
    }
    eq(
        "the whole log at the end",
        se(s.read_all(0, usize::MAX))?,
        model.read_all(0, usize::MAX).to_vec(),
    )
}
