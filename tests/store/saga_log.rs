//! The saga log's conformance suite against every store, and proof that it can fail.

use faultline::saga::orchestrated::store::postgres::PostgresLog;
use faultline::saga::orchestrated::store::sqlite::SqliteLog;
use faultline::saga::orchestrated::store::{
    FileLog, LogStore, MemoryLog, StoreError, compacted, conformance,
};
use faultline::saga::{LogRecord, SagaId, SagaState};

use crate::support;

#[test]
fn memory_log_conforms() {
    conformance::run(|| Ok(MemoryLog::new()), |s: MemoryLog| Ok(s.clone())).unwrap();
}

#[test]
fn file_log_conforms() {
    let dir = support::temp_dir("saga-file");
    let mut n = 0;
    conformance::run(
        || {
            n += 1;
            FileLog::open(dir.join(format!("log-{n}.jsonl")))
        },
        |s: FileLog| {
            let path = s.path().to_path_buf();
            drop(s);
            FileLog::open(path)
        },
    )
    .unwrap();
    conformance::file_torn_tail(&dir.join("torn.jsonl"), |p| FileLog::open(p)).unwrap();
    // A compaction leaves no temporary file behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".compact"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn sqlite_log_conforms() {
    let mut n = 0;
    conformance::run(
        || {
            n += 1;
            SqliteLog::open(support::sqlite_path(&format!("saga-log-{n}")))
        },
        |s: SqliteLog| {
            let path = s.path().to_path_buf();
            drop(s);
            SqliteLog::open(path)
        },
    )
    .unwrap();
}

#[test]
fn postgres_log_conforms() {
    let Some(url) = support::pg_url("saga log conformance") else {
        return;
    };
    conformance::run(
        || PostgresLog::open(&url),
        |s: PostgresLog| {
            drop(s);
            PostgresLog::open(&url)
        },
    )
    .unwrap();
}

/// A second writer on a database log is fenced: the store opened first fails its next
/// append and compaction, writes nothing, and the newer one goes on.
fn second_writer_is_fenced<S: LogStore>(
    mut first: S,
    open_second: impl FnOnce() -> Result<S, StoreError>,
) {
    let started = LogRecord::Started {
        saga: SagaId(1),
        payload: faultline::saga::Order {
            item: 1,
            qty: 1,
            amount: 1,
        },
    };
    first.append(&started).unwrap();
    let mut second = open_second().unwrap();
    let err = first
        .append(&LogRecord::Ended {
            saga: SagaId(1),
            state: SagaState::Completed,
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                held: 1,
                current: 2
            }
        ),
        "{err}"
    );
    assert!(matches!(first.compact(), Err(StoreError::Fenced { .. })));
    assert_eq!(second.load().unwrap(), vec![started]);
    second
        .append(&LogRecord::Ended {
            saga: SagaId(1),
            state: SagaState::Completed,
        })
        .unwrap();
    assert_eq!(second.load().unwrap().len(), 2);
}

#[test]
fn sqlite_log_fences_a_second_writer() {
    let path = support::sqlite_path("saga-log-fence");
    second_writer_is_fenced(SqliteLog::open(&path).unwrap(), || SqliteLog::open(&path));
}

#[test]
fn postgres_log_fences_a_second_writer() {
    let Some(url) = support::pg_url("saga log fencing") else {
        return;
    };
    second_writer_is_fenced(PostgresLog::open(&url).unwrap(), || PostgresLog::open(&url));
}

// ----- the suite has teeth -----

/// A memory log broken in one way.
#[derive(Clone)]
struct Broken {
    log: MemoryLog,
    flaw: Flaw,
}

#[derive(Clone, Copy, Debug)]
enum Flaw {
    /// Compaction also drops the records of sagas still running (keeping only every
    /// saga's Started and Ended records).
    CompactsRunning,
    /// Compaction drops finished sagas whole (no finished marker left).
    DropsFinishedMarkers,
    /// The last record appended is not durable: a reopen loses it.
    LosesLastOnReopen,
    /// The history is read from the last records only (a wrong `WHERE`).
    HistoryOfOthers,
}

impl LogStore for Broken {
    fn append(&mut self, record: &LogRecord) -> Result<(), StoreError> {
        self.log.append(record)
    }

    fn load(&mut self) -> Result<Vec<LogRecord>, StoreError> {
        self.log.load()
    }

    fn history(
        &mut self,
        saga: SagaId,
    ) -> Result<Option<faultline::saga::SagaHistory>, StoreError> {
        let records = self.log.load()?;
        match self.flaw {
            Flaw::HistoryOfOthers => Ok(faultline::saga::SagaHistory::of(
                saga,
                &records[records.len() / 2..],
            )),
            _ => Ok(faultline::saga::SagaHistory::of(saga, &records)),
        }
    }

    fn compact(&mut self) -> Result<usize, StoreError> {
        let records = self.log.load()?;
        let kept: Vec<LogRecord> = match self.flaw {
            Flaw::CompactsRunning => records
                .iter()
                .filter(|r| matches!(r, LogRecord::Started { .. } | LogRecord::Ended { .. }))
                .cloned()
                .collect(),
            Flaw::DropsFinishedMarkers => {
                let finished = compacted(&records);
                let done: Vec<SagaId> = finished
                    .iter()
                    .filter_map(|r| match r {
                        LogRecord::Ended {
                            saga,
                            state: SagaState::Completed | SagaState::Compensated,
                        } => Some(*saga),
                        _ => None,
                    })
                    .collect();
                finished
                    .into_iter()
                    .filter(|r| !done.contains(&r.saga()))
                    .collect()
            }
            _ => compacted(&records),
        };
        let removed = records.len() - kept.len();
        let mut fresh = MemoryLog::new();
        for r in &kept {
            fresh.append(r)?;
        }
        self.log = fresh;
        Ok(removed)
    }
}

fn reopen_broken(mut s: Broken) -> Result<Broken, StoreError> {
    match s.flaw {
        Flaw::LosesLastOnReopen => {
            let mut records = s.log.load()?;
            records.pop();
            let mut log = MemoryLog::new();
            for r in &records {
                log.append(r)?;
            }
            Ok(Broken { log, flaw: s.flaw })
        }
        _ => Ok(s),
    }
}

#[test]
fn the_suite_catches_broken_logs() {
    for (flaw, case) in [
        (Flaw::CompactsRunning, "compaction_drops_finished"),
        (Flaw::DropsFinishedMarkers, "compaction_drops_finished"),
        (Flaw::LosesLastOnReopen, "durable_across_reopen"),
        (Flaw::HistoryOfOthers, "history"),
    ] {
        let err = conformance::run(
            || {
                Ok(Broken {
                    log: MemoryLog::new(),
                    flaw,
                })
            },
            reopen_broken,
        )
        .unwrap_err();
        assert_eq!(err.case, case, "{flaw:?}: {err}");
    }
}
