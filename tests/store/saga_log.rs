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

// ----- the tokio runner over stores that block -----

mod runner {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use faultline::saga::orchestrated::store::postgres::PostgresLog;
    use faultline::saga::orchestrated::store::sqlite::SqliteLog;
    use faultline::saga::orchestrated::store::{LogStore, MemoryLog, StoreError};
    use faultline::saga::orchestrated::tokio::{RunnerError, SagaRunner};
    use faultline::saga::{
        Command, InventoryService, LogRecord, Order, PaymentService, SagaConfig, SagaId, SagaState,
        Services, StepId,
    };

    use crate::support;

    const ORDER: Order = Order {
        item: 1,
        qty: 1,
        amount: 100,
    };

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    type Check = Arc<dyn Fn(&Command) + Send + Sync>;

    /// A runner over `log` whose participants are the in-memory checkout services,
    /// each call first running `check` on its command.
    fn runner<S: LogStore + 'static>(log: S, check: Check) -> Result<SagaRunner, RunnerError> {
        let services = Arc::new(Mutex::new(Services::new(
            InventoryService::new([(1, 1000)]),
            PaymentService::new(),
        )));
        let call = move |cmd: Command| {
            let services = Arc::clone(&services);
            let check = Arc::clone(&check);
            async move {
                check(&cmd);
                tokio::time::sleep(Duration::from_millis(1)).await;
                services.lock().unwrap().handle(&cmd)
            }
        };
        let config = SagaConfig::builder()
            .step_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut b = SagaRunner::builder(config, log);
        for step in StepId::ALL {
            b = b.step(step, call.clone(), call.clone());
        }
        b.build()
    }

    /// The promise "a record is durable before the next output", seen from outside:
    /// each participant, when called, reads the SQLite file through a connection of its
    /// own and finds the command's intent there. Then compaction through the runner.
    #[test]
    fn a_command_leaves_only_after_its_intent_is_in_the_database() {
        let path = support::sqlite_path("saga-runner-durable");
        let seen = Arc::new(AtomicU64::new(0));
        let check: Check = {
            let path = path.clone();
            let seen = Arc::clone(&seen);
            Arc::new(move |cmd: &Command| {
                let conn = rusqlite::Connection::open(&path).unwrap();
                let lines: Vec<String> = conn
                    .prepare("SELECT line FROM faultline_saga_log WHERE saga = ?1")
                    .unwrap()
                    .query_map([i64::try_from(cmd.saga.0).unwrap()], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let intent = lines.iter().any(|l| {
                    let r = LogRecord::<Order>::decode_line(l.as_bytes()).unwrap();
                    matches!(r, LogRecord::StepIntent { step, .. } | LogRecord::CompensationIntent { step, .. } if step == cmd.step)
                });
                assert!(
                    intent,
                    "{cmd:?} sent before its intent was durable: {lines:?}"
                );
                seen.fetch_add(1, Ordering::SeqCst);
            })
        };
        runtime().block_on(async {
            let r = runner(SqliteLog::open(&path).unwrap(), check).unwrap();
            for n in 1..=20 {
                r.submit(SagaId(n), ORDER).await.unwrap();
            }
            r.wait_at_rest().await.unwrap();
            assert!(r.sagas().iter().all(|(_, s)| *s == SagaState::Completed));
            let before = r.history(SagaId(3)).unwrap().unwrap();
            assert_eq!(before.steps.len(), 3);
            let removed = r.compact().await.unwrap();
            assert_eq!(removed, 20 * 6, "three intents and three outcomes per saga");
            let after = r.history(SagaId(3)).unwrap().unwrap();
            assert_eq!((after.payload, after.state), (ORDER, SagaState::Completed));
            assert!(matches!(
                r.submit(SagaId(3), ORDER).await,
                Err(RunnerError::AlreadyKnown(_))
            ));
        });
        assert_eq!(seen.load(Ordering::SeqCst), 60);
        // A restarted runner over the compacted log still refuses the finished ids.
        runtime().block_on(async {
            let r = runner(SqliteLog::open(&path).unwrap(), Arc::new(|_: &Command| {})).unwrap();
            assert_eq!(r.sagas().len(), 20);
            assert!(matches!(
                r.start(SagaId(7), ORDER),
                Err(RunnerError::AlreadyKnown(_))
            ));
        });
    }

    /// The synchronous Postgres client works under the runner (it would panic on a
    /// runtime thread): build, submit, history, compact, drop, all on a current-thread
    /// runtime.
    #[test]
    fn a_runner_over_a_postgres_log_runs_and_compacts() {
        let Some(url) = support::pg_url("saga runner over postgres") else {
            return;
        };
        runtime().block_on(async {
            let log = PostgresLog::open(&url).unwrap();
            let r = runner(log, Arc::new(|_: &Command| {})).unwrap();
            for n in 1..=10 {
                r.submit(SagaId(n), ORDER).await.unwrap();
            }
            r.wait_at_rest().await.unwrap();
            assert_eq!(
                r.history(SagaId(1)).unwrap().unwrap().state,
                SagaState::Completed
            );
            assert_eq!(r.compact().await.unwrap(), 60);
            drop(r);
            let r = runner(PostgresLog::open(&url).unwrap(), Arc::new(|_: &Command| {})).unwrap();
            assert_eq!(r.sagas().len(), 10);
        });
    }

    /// A log whose appends take 20 ms (a slow disk).
    struct Slow(MemoryLog);

    impl LogStore for Slow {
        fn append(&mut self, record: &LogRecord) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.append(record)
        }
        fn load(&mut self) -> Result<Vec<LogRecord>, StoreError> {
            self.0.load()
        }
    }

    /// The runtime's only thread is never blocked by an append: a ticker task on the
    /// same current-thread runtime keeps ticking while a saga's eight slow appends run.
    #[test]
    fn slow_appends_do_not_block_the_runtime_thread() {
        runtime().block_on(async {
            let ticks = Arc::new(AtomicU64::new(0));
            let ticker = {
                let ticks = Arc::clone(&ticks);
                tokio::spawn(async move {
                    let mut gap_max = Duration::ZERO;
                    let mut last = Instant::now();
                    loop {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        gap_max = gap_max.max(last.elapsed());
                        last = Instant::now();
                        if ticks.fetch_add(1, Ordering::SeqCst) == u64::MAX {
                            return gap_max;
                        }
                    }
                })
            };
            let r = runner(Slow(MemoryLog::new()), Arc::new(|_: &Command| {})).unwrap();
            let began = Instant::now();
            r.submit(SagaId(1), ORDER).await.unwrap();
            r.wait_at_rest().await.unwrap();
            let took = began.elapsed();
            let n = ticks.load(Ordering::SeqCst);
            ticker.abort();
            assert!(took >= Duration::from_millis(160), "{took:?}");
            // A blocked thread would tick about once per append (8 times); a free one
            // ticks every millisecond or so.
            assert!(n >= 60, "only {n} ticks in {took:?}");
        });
    }
}

/// Appends per second of each saga log (each append durable on return), and how long a
/// compaction of 1,000 finished sagas takes. Not a benchmark of record: run it with
/// `cargo test --release --test store saga_log_rates -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn saga_log_rates() {
    fn measure<S: LogStore>(name: &str, mut s: S) {
        let order = faultline::saga::Order {
            item: 1,
            qty: 1,
            amount: 1,
        };
        let n = 1000u64;
        let began = std::time::Instant::now();
        for saga in 1..=n {
            s.append(&LogRecord::Started {
                saga: SagaId(saga),
                payload: order,
            })
            .unwrap();
        }
        let took = began.elapsed();
        for saga in 1..=n {
            for step in faultline::saga::StepId::ALL {
                s.append(&LogRecord::StepIntent {
                    saga: SagaId(saga),
                    step,
                    attempt: 1,
                })
                .unwrap();
            }
            s.append(&LogRecord::Ended {
                saga: SagaId(saga),
                state: SagaState::Completed,
            })
            .unwrap();
        }
        let began_c = std::time::Instant::now();
        let removed = s.compact().unwrap();
        let compact = began_c.elapsed();
        eprintln!(
            "{name}: {:.0} appends/s ({n} in {took:?}); compaction removed {removed} records in {compact:?}",
            n as f64 / took.as_secs_f64()
        );
    }
    let dir = support::temp_dir("saga-rates");
    measure("memory", MemoryLog::new());
    measure("file", FileLog::open(dir.join("log.jsonl")).unwrap());
    measure("sqlite", SqliteLog::open(dir.join("db.sqlite")).unwrap());
    if let Some(url) = support::pg_url("saga log rates") {
        measure("postgres", PostgresLog::open(&url).unwrap());
    }
}
