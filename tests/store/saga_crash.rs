//! Saga crash tests with real processes: a child runs checkout sagas (a `SagaRunner` on
//! a current-thread tokio runtime, submitting one saga after another and compacting the
//! log now and then) against participants whose state lives in a database (stock, two
//! money accounts, an idempotency table keyed by saga, step and kind, and a plain table
//! of every effect applied), and is SIGKILLed at a random point, 50 times per store
//! (a file log with SQLite participants, SQLite for both, Postgres for both).
//!
//! After each kill the parent checks: every saga the child acknowledged (after
//! `submit` returned) is in the log; no effect was applied twice. Every other round
//! (and the last) the parent recovers a runner from the log, drives every saga to rest
//! and checks that each is fully done or fully compensated, and that stock and money
//! are conserved; on the rounds between, the next child does the recovering.
//! A log that answers `Ok` before the record is durable is caught.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline::saga::orchestrated::store::postgres::PostgresLog;
use faultline::saga::orchestrated::store::sqlite::SqliteLog;
use faultline::saga::orchestrated::store::{FileLog, LogStore, StoreError};
use faultline::saga::orchestrated::tokio::{RunnerError, SagaRunner};
use faultline::saga::{
    Command, Kind, LogRecord, Order, Refusal, Reply, SagaConfig, SagaId, SagaState, StepId,
};

use crate::crash::{acknowledged, kill_loop, note_acknowledged, ready, role};
use crate::support;

const STOCK: i64 = 300;
const CUSTOMER: i64 = 10_000_000;
const ROUNDS: u32 = 50;

fn order(n: u64) -> Order {
    Order {
        item: 1,
        qty: u32::try_from(1 + n % 3).unwrap(),
        amount: 100 + (n * 37) % 400,
    }
}

fn step_code(step: StepId) -> i64 {
    StepId::ALL.iter().position(|s| *s == step).unwrap() as i64
}

fn kind_code(kind: Kind) -> i64 {
    match kind {
        Kind::Action => 0,
        Kind::Compensation => 1,
    }
}

fn saga_code(saga: SagaId) -> i64 {
    i64::try_from(saga.0).unwrap()
}

// ----- the participants, in a database -----

/// A connection that runs SQL with integer parameters written `$1`, `$2`, ... in
/// order of first use.
trait Sql: Send {
    fn exec(&mut self, sql: &str, params: &[i64]) -> Result<u64, String>;
    fn one(&mut self, sql: &str, params: &[i64]) -> Result<Option<i64>, String>;
    fn rows(&mut self, sql: &str) -> Result<Vec<[i64; 3]>, String>;
    fn batch(&mut self, sql: &str) -> Result<(), String>;
    fn begin(&mut self) -> Result<(), String>;
}

struct Lite(rusqlite::Connection);

impl Sql for Lite {
    fn exec(&mut self, sql: &str, params: &[i64]) -> Result<u64, String> {
        self.0
            .execute(&sql.replace('$', "?"), rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }
    fn one(&mut self, sql: &str, params: &[i64]) -> Result<Option<i64>, String> {
        use rusqlite::OptionalExtension;
        self.0
            .query_row(
                &sql.replace('$', "?"),
                rusqlite::params_from_iter(params),
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())
    }
    fn rows(&mut self, sql: &str) -> Result<Vec<[i64; 3]>, String> {
        let mut stmt = self.0.prepare(sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }
    fn batch(&mut self, sql: &str) -> Result<(), String> {
        self.0.execute_batch(sql).map_err(|e| e.to_string())
    }
    fn begin(&mut self) -> Result<(), String> {
        self.batch("BEGIN IMMEDIATE")
    }
}

/// A Postgres client, dropped on a thread of its own (its drop blocks on a runtime of
/// its own, which must not happen on a tokio thread).
struct Pg(Option<postgres::Client>);

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

impl Pg {
    fn c(&mut self) -> &mut postgres::Client {
        self.0.as_mut().unwrap()
    }
}

fn pg_params(params: &[i64]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Sql for Pg {
    fn exec(&mut self, sql: &str, params: &[i64]) -> Result<u64, String> {
        self.c()
            .execute(sql, &pg_params(params))
            .map_err(|e| e.to_string())
    }
    fn one(&mut self, sql: &str, params: &[i64]) -> Result<Option<i64>, String> {
        self.c()
            .query_opt(sql, &pg_params(params))
            .map(|r| r.map(|r| r.get(0)))
            .map_err(|e| e.to_string())
    }
    fn rows(&mut self, sql: &str) -> Result<Vec<[i64; 3]>, String> {
        self.c()
            .query(sql, &[])
            .map(|rows| {
                rows.iter()
                    .map(|r| [r.get(0), r.get(1), r.get(2)])
                    .collect()
            })
            .map_err(|e| e.to_string())
    }
    fn batch(&mut self, sql: &str) -> Result<(), String> {
        self.c().batch_execute(sql).map_err(|e| e.to_string())
    }
    fn begin(&mut self) -> Result<(), String> {
        self.batch("BEGIN")
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS faultline_test_stock (item BIGINT PRIMARY KEY, available BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS faultline_test_money (account BIGINT PRIMARY KEY, balance BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS faultline_test_applied (
        saga BIGINT NOT NULL, step BIGINT NOT NULL, kind BIGINT NOT NULL, refusal BIGINT NOT NULL,
        PRIMARY KEY (saga, step, kind));
    CREATE TABLE IF NOT EXISTS faultline_test_effects (saga BIGINT NOT NULL, step BIGINT NOT NULL, kind BIGINT NOT NULL);
    INSERT INTO faultline_test_stock (item, available) VALUES (1, 300) ON CONFLICT DO NOTHING;
    INSERT INTO faultline_test_money (account, balance) VALUES (0, 10000000), (1, 0) ON CONFLICT DO NOTHING;
";

/// Refusal codes in `faultline_test_applied` (0: done).
fn refusal_code(r: Refusal) -> i64 {
    match r {
        Refusal::OutOfStock => 1,
        Refusal::CardDeclined => 2,
        _ => 3,
    }
}

fn refusal_of(code: i64) -> Refusal {
    match code {
        1 => Refusal::OutOfStock,
        2 => Refusal::CardDeclined,
        _ => Refusal::Compensated,
    }
}

/// One command, in one transaction: applied at most once per (saga, step, kind) (a
/// repeat gets the first answer), an action after its compensation refused.
fn apply(db: &mut dyn Sql, cmd: &Command) -> Result<Reply, String> {
    let (saga, step, kind) = (
        saga_code(cmd.saga),
        step_code(cmd.step),
        kind_code(cmd.kind),
    );
    let qty = i64::from(cmd.payload.qty);
    let amount = i64::try_from(cmd.payload.amount).unwrap();
    let seen =
        "SELECT refusal FROM faultline_test_applied WHERE saga = $1 AND step = $2 AND kind = $3";
    let effect = "INSERT INTO faultline_test_effects (saga, step, kind) VALUES ($1, $2, $3)";
    if let Some(code) = db.one(seen, &[saga, step, kind])? {
        return Ok(if code == 0 {
            Reply::Ok
        } else {
            Reply::Refused(refusal_of(code))
        });
    }
    let refusal = match cmd.kind {
        Kind::Action => {
            if db.one(seen, &[saga, step, 1])?.is_some() {
                Some(Refusal::Compensated)
            } else if cmd.step == StepId::INVENTORY {
                let available = db
                    .one(
                        "SELECT available FROM faultline_test_stock WHERE item = 1",
                        &[],
                    )?
                    .unwrap_or(0);
                if available >= qty {
                    db.exec(
                        "UPDATE faultline_test_stock SET available = available - $1 WHERE item = 1",
                        &[qty],
                    )?;
                    None
                } else {
                    Some(Refusal::OutOfStock)
                }
            } else if cmd.step == StepId::PAYMENT {
                if amount % 5 == 0 {
                    Some(Refusal::CardDeclined)
                } else {
                    db.exec(
                        "UPDATE faultline_test_money SET balance = balance - $1 WHERE account = 0",
                        &[amount],
                    )?;
                    db.exec(
                        "UPDATE faultline_test_money SET balance = balance + $1 WHERE account = 1",
                        &[amount],
                    )?;
                    None
                }
            } else {
                None // placing the order: the effect row is the order
            }
        }
        Kind::Compensation => {
            if db.one(seen, &[saga, step, 0])? == Some(0) {
                if cmd.step == StepId::INVENTORY {
                    db.exec(
                        "UPDATE faultline_test_stock SET available = available + $1 WHERE item = 1",
                        &[qty],
                    )?;
                } else if cmd.step == StepId::PAYMENT {
                    db.exec(
                        "UPDATE faultline_test_money SET balance = balance + $1 WHERE account = 0",
                        &[amount],
                    )?;
                    db.exec(
                        "UPDATE faultline_test_money SET balance = balance - $1 WHERE account = 1",
                        &[amount],
                    )?;
                }
                db.exec(effect, &[saga, step, kind])?;
            }
            None
        }
    };
    if refusal.is_none() && cmd.kind == Kind::Action {
        db.exec(effect, &[saga, step, kind])?;
    }
    db.exec(
        "INSERT INTO faultline_test_applied (saga, step, kind, refusal) VALUES ($1, $2, $3, $4)",
        &[saga, step, kind, refusal.map_or(0, refusal_code)],
    )?;
    Ok(refusal.map_or(Reply::Ok, Reply::Refused))
}

type Db = Arc<Mutex<Box<dyn Sql>>>;

fn call(db: &Db, cmd: Command) -> Reply {
    let mut db = db.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let db = &mut **db;
    if db.begin().is_err() {
        return Reply::Failed;
    }
    match apply(db, &cmd) {
        Ok(reply) => match db.batch("COMMIT") {
            Ok(()) => reply,
            Err(_) => Reply::Failed,
        },
        Err(_) => {
            let _ = db.batch("ROLLBACK");
            Reply::Failed
        }
    }
}

// ----- the stores -----

/// Where one store's test keeps everything.
#[derive(Clone, Debug)]
struct Place {
    /// `file`, `sqlite`, `postgres`, or `sqlite-laggy` (the broken log).
    kind: String,
    /// The participants' database: a SQLite path or a Postgres URL (for the SQLite and
    /// Postgres logs, the log's too).
    db: String,
    /// The file log (kind `file`).
    file: PathBuf,
    /// The acknowledgement file.
    acks: PathBuf,
}

impl Place {
    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FAULTLINE_SAGA_KIND", self.kind.clone()),
            ("FAULTLINE_SAGA_DB", self.db.clone()),
            ("FAULTLINE_SAGA_FILE", self.file.display().to_string()),
            ("FAULTLINE_SAGA_ACKS", self.acks.display().to_string()),
        ]
    }

    fn from_env() -> Place {
        let var = |k: &str| std::env::var(k).unwrap();
        Place {
            kind: var("FAULTLINE_SAGA_KIND"),
            db: var("FAULTLINE_SAGA_DB"),
            file: PathBuf::from(var("FAULTLINE_SAGA_FILE")),
            acks: PathBuf::from(var("FAULTLINE_SAGA_ACKS")),
        }
    }

    fn open_db(&self) -> Box<dyn Sql> {
        let mut db: Box<dyn Sql> = if self.kind == "postgres" {
            let url = self.db.clone();
            let client =
                std::thread::spawn(move || faultline::store::postgres::connect(&url).unwrap())
                    .join()
                    .unwrap();
            Box::new(Pg(Some(client)))
        } else {
            Box::new(Lite(faultline::store::sqlite::open(&self.db).unwrap()))
        };
        if self.kind == "postgres" {
            // Two processes may create the tables at once: take turns.
            let client = db.as_mut();
            client
                .batch(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(4242); {SCHEMA} COMMIT;"
                ))
                .unwrap();
        } else {
            db.batch(SCHEMA).unwrap();
        }
        db
    }

    fn open_log(&self) -> Box<dyn LogStore> {
        match self.kind.as_str() {
            "file" => Box::new(FileLog::open(&self.file).unwrap()),
            "sqlite" => Box::new(SqliteLog::open(&self.db).unwrap()),
            "sqlite-laggy" => Box::new(Laggy {
                inner: SqliteLog::open(&self.db).unwrap(),
                buffer: Vec::new(),
            }),
            "postgres" => Box::new(PostgresLog::open(&self.db).unwrap()),
            other => panic!("unknown store {other}"),
        }
    }
}

/// The broken log: answers `Ok` before the record is durable (it reaches the database
/// eight records at a time).
struct Laggy {
    inner: SqliteLog,
    buffer: Vec<LogRecord>,
}

impl LogStore for Laggy {
    fn append(&mut self, record: &LogRecord) -> Result<(), StoreError> {
        self.buffer.push(*record);
        if self.buffer.len() >= 8 {
            for r in std::mem::take(&mut self.buffer) {
                self.inner.append(&r)?;
            }
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<LogRecord>, StoreError> {
        let mut records = self.inner.load()?;
        records.extend(self.buffer.iter().cloned());
        Ok(records)
    }
}

fn config() -> SagaConfig {
    SagaConfig::builder()
        .step_timeout(Duration::from_secs(5))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .compensation_attempts_max(100)
        .build()
        .unwrap()
}

fn runner(log: Box<dyn LogStore>, db: &Db) -> Result<SagaRunner, RunnerError> {
    let participant = {
        let db = Arc::clone(db);
        move |cmd: Command| {
            let db = Arc::clone(&db);
            async move {
                tokio::task::spawn_blocking(move || call(&db, cmd))
                    .await
                    .unwrap_or(Reply::Failed)
            }
        }
    };
    let mut builder = SagaRunner::builder(config(), BoxLog(log));
    for step in StepId::ALL {
        builder = builder.step(step, participant.clone(), participant.clone());
    }
    builder.build()
}

/// A boxed log as a `LogStore` (the runner takes one by value).
struct BoxLog(Box<dyn LogStore>);

impl LogStore for BoxLog {
    fn append(&mut self, record: &LogRecord) -> Result<(), StoreError> {
        self.0.append(record)
    }
    fn load(&mut self) -> Result<Vec<LogRecord>, StoreError> {
        self.0.load()
    }
    fn history(
        &mut self,
        saga: SagaId,
    ) -> Result<Option<faultline::saga::SagaHistory>, StoreError> {
        self.0.history(saga)
    }
    fn compact(&mut self) -> Result<usize, StoreError> {
        self.0.compact()
    }
    fn blocks(&self) -> bool {
        self.0.blocks()
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ----- the child -----

/// The child: recovers from the log, then submits sagas one after another (several in
/// flight), noting each once `submit` returned, compacting every 20.
#[test]
fn saga_crash_child() {
    let Some(_) = role() else { return };
    let place = Place::from_env();
    let db: Db = Arc::new(Mutex::new(place.open_db()));
    let log = place.open_log();
    let next = acknowledged(&place.acks)
        .last()
        .map_or(1, |l| l.parse::<u64>().unwrap() + 1);
    current_thread().block_on(async {
        let runner = runner(log, &db).unwrap();
        ready();
        for n in next.. {
            match runner.submit(SagaId(n), order(n)).await {
                Ok(()) | Err(RunnerError::AlreadyKnown(_)) => {
                    note_acknowledged(&place.acks, &n.to_string())
                }
                Err(e) => panic!("{e}"),
            }
            if n % 20 == 0 {
                runner.compact().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

// ----- the parent -----

/// What the database and the log say after a round.
fn check_round(place: &Place, recover: bool) -> Result<(), String> {
    let mut db = place.open_db();
    let dup = db.rows(
        "SELECT saga, step, kind FROM faultline_test_effects
         GROUP BY saga, step, kind HAVING COUNT(*) > 1",
    )?;
    if !dup.is_empty() {
        return Err(format!("effects applied twice (saga, step, kind): {dup:?}"));
    }
    let mut log = place.open_log();
    let records = log.load().map_err(|e| e.to_string())?;
    let known: BTreeSet<u64> = records
        .iter()
        .filter(|r| matches!(r, LogRecord::Started { .. }))
        .map(|r| r.saga().0)
        .collect();
    let acks = acknowledged(&place.acks);
    let lost: Vec<&String> = acks
        .iter()
        .filter(|a| !known.contains(&a.parse::<u64>().unwrap()))
        .collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} acknowledged sagas are not in the log: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    if !recover {
        return Ok(());
    }
    let shared: Db = Arc::new(Mutex::new(db));
    let states: BTreeMap<u64, SagaState> = current_thread().block_on(async {
        let runner = runner(log, &shared).map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(120), runner.wait_at_rest())
            .await
            .map_err(|_| "the sagas did not come to rest in 120 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let states = runner
            .sagas()
            .into_iter()
            .map(|(s, st)| (s.0, st))
            .collect();
        drop(runner);
        Ok::<_, String>(states)
    })?;
    let mut db = Arc::try_unwrap(shared)
        .ok()
        .map(|m| m.into_inner().unwrap())
        .ok_or("the participants are still shared")?;
    let effects: BTreeSet<[i64; 3]> = db
        .rows("SELECT saga, step, kind FROM faultline_test_effects")?
        .into_iter()
        .collect();
    let mut sold = 0;
    let mut paid = 0;
    for (&saga, &state) in &states {
        let s = i64::try_from(saga).unwrap();
        let has = |step: i64, kind: i64| effects.contains(&[s, step, kind]);
        match state {
            SagaState::Completed => {
                if !(0..3).all(|st| has(st, 0) && !has(st, 1)) {
                    return Err(format!(
                        "saga {saga} completed but not every step is done once"
                    ));
                }
                sold += i64::from(order(saga).qty);
                paid += i64::try_from(order(saga).amount).unwrap();
            }
            SagaState::Compensated => {
                if let Some(st) = (0..3).find(|st| has(*st, 0) != has(*st, 1)) {
                    return Err(format!(
                        "saga {saga} compensated but step {st} is not undone (action {}, compensation {})",
                        has(st, 0),
                        has(st, 1)
                    ));
                }
            }
            other => return Err(format!("saga {saga} came to rest {other:?}")),
        }
    }
    if let Some(stray) = effects
        .iter()
        .find(|e| !states.contains_key(&(e[0] as u64)))
    {
        return Err(format!(
            "an effect of a saga the log does not know: {stray:?}"
        ));
    }
    let available = db
        .one(
            "SELECT available FROM faultline_test_stock WHERE item = 1",
            &[],
        )?
        .unwrap_or(-1);
    let customer = db
        .one(
            "SELECT balance FROM faultline_test_money WHERE account = 0",
            &[],
        )?
        .unwrap_or(-1);
    let merchant = db
        .one(
            "SELECT balance FROM faultline_test_money WHERE account = 1",
            &[],
        )?
        .unwrap_or(-1);
    if available != STOCK - sold || available < 0 {
        return Err(format!(
            "stock not conserved: {available} left, {sold} sold of {STOCK}"
        ));
    }
    if customer + merchant != CUSTOMER || merchant != paid {
        return Err(format!(
            "money not conserved: customer {customer}, merchant {merchant}, completed sagas paid {paid}"
        ));
    }
    Ok(())
}

/// Runs the kill loop for `place`; returns the rounds' failures.
fn crash_loop(place: &Place, rounds: u32, seed: u64) -> (u32, Vec<String>) {
    let envs = place.envs();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut failures = Vec::new();
    let killed = kill_loop(
        "saga_crash::saga_crash_child",
        "saga",
        &envs,
        rounds,
        seed,
        Duration::from_millis(300),
        |round| {
            if let Err(e) = check_round(place, round % 2 == 1 || round + 1 == rounds) {
                failures.push(format!("round {round}: {e}"));
            }
        },
    );
    (killed, failures)
}

fn place(kind: &str, db: String, dir: &Path) -> Place {
    Place {
        kind: kind.to_owned(),
        db,
        file: dir.join("saga.jsonl"),
        acks: dir.join("acks"),
    }
}

fn survives(place: &Place, seed: u64) {
    let (killed, failures) = crash_loop(place, ROUNDS, seed);
    assert!(failures.is_empty(), "{}: {failures:#?}", place.kind);
    let acks = acknowledged(&place.acks).len();
    assert!(
        killed >= ROUNDS - 2,
        "{}: only {killed} children killed",
        place.kind
    );
    assert!(
        acks >= 100,
        "{}: only {acks} sagas acknowledged",
        place.kind
    );
    eprintln!(
        "{}: {killed} kills, {acks} sagas acknowledged, all at rest and conserved",
        place.kind
    );
}

#[test]
fn sagas_survive_kills_with_a_file_log() {
    let dir = support::temp_dir("saga-crash-file");
    let db = dir.join("participants.sqlite").display().to_string();
    survives(&place("file", db, &dir), 1);
}

#[test]
fn sagas_survive_kills_with_a_sqlite_log() {
    let dir = support::temp_dir("saga-crash-sqlite");
    let db = dir.join("db.sqlite").display().to_string();
    survives(&place("sqlite", db, &dir), 2);
}

#[test]
fn sagas_survive_kills_with_a_postgres_log() {
    let Some(url) = support::pg_url("saga crash tests") else {
        return;
    };
    let dir = support::temp_dir("saga-crash-postgres");
    survives(&place("postgres", url, &dir), 3);
}

#[test]
fn a_log_that_acknowledges_before_durable_is_caught() {
    let dir = support::temp_dir("saga-crash-laggy");
    let db = dir.join("db.sqlite").display().to_string();
    let (_, failures) = crash_loop(&place("sqlite-laggy", db, &dir), 6, 4);
    assert!(
        failures.iter().any(|f| f.contains("not in the log")),
        "the lagging log went unnoticed: {failures:#?}"
    );
}
