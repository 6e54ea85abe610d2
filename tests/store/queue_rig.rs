//! What the queue's crash test and many-workers test share: the database a test runs
//! on ([`Db`]: a SQLite file or a Postgres database, passed to child processes through
//! the environment), a version-checked target living in that same database
//! ([`Target`]: the queue's `apply_once` in the caller's transaction, with an effects
//! log that is the tests' view of what took effect), the
//! clock a process maps onto the store's origin, and a drain that runs every job to
//! its end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use faultline::clock::{Instant, Origin};
use faultline::name::Name;
use faultline::queue::store::JobStore;
use faultline::queue::{Applied, Job, JobId, JobType, Lease, Payload, QueueConfig};
use faultline::store::{Migration, StoreError};

/// The keyed jobs' type ("bring key k to version v").
pub const SYNC: JobType = JobType::from_static("sync");
/// The unique jobs' type ("do this once").
pub const EMAIL: JobType = JobType::from_static("email");

/// The environment variable that tells a child which database to work on.
pub const DB_VAR: &str = "FAULTLINE_QC_DB";

/// Where a test's queue and target live.
#[derive(Clone, Debug)]
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Postgres database: its URL, and the server's admin URL (in the parent only:
    /// to copy the database).
    Postgres { url: String, admin: Option<String> },
}

impl Db {
    /// The database as one string for a child's environment.
    pub fn to_env(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite:{}", p.display()),
            Db::Postgres { url, .. } => format!("postgres:{url}"),
        }
    }

    /// The database [`DB_VAR`] names (in a child).
    pub fn from_env() -> Db {
        let s = std::env::var(DB_VAR).expect("FAULTLINE_QC_DB");
        if let Some(p) = s.strip_prefix("sqlite:") {
            Db::Sqlite(PathBuf::from(p))
        } else if let Some(u) = s.strip_prefix("postgres:") {
            Db::Postgres {
                url: u.to_owned(),
                admin: None,
            }
        } else {
            panic!("{DB_VAR}={s}: neither sqlite: nor postgres:")
        }
    }

    /// A fresh Postgres database (or `None`: skipped, said once).
    pub fn postgres(what: &str) -> Option<Db> {
        let url = crate::support::pg_url(what)?;
        let admin = faultline::store::postgres::TestServer::shared()
            .ok()
            .flatten()
            .map(|s| s.admin_url().to_owned());
        Some(Db::Postgres { url, admin })
    }

    /// The queue on this database (migrated on open).
    pub fn jobs(&self, config: QueueConfig) -> Result<Box<dyn JobStore>, StoreError> {
        Ok(match self {
            Db::Sqlite(p) => Box::new(faultline::queue::store::sqlite::SqliteJobs::open(
                p, config,
            )?),
            Db::Postgres { url, .. } => Box::new(
                faultline::queue::store::postgres::PostgresJobs::connect(url, config)?,
            ),
        })
    }

    /// The target on this database (migrated on open).
    pub fn target(&self) -> Result<Target, StoreError> {
        Target::open(self)
    }

    /// A copy of the database as it is now (nobody may be writing it): a SQLite file
    /// copied with its WAL, a Postgres database created from it as a template.
    pub fn snapshot(&self, name: &str) -> Db {
        match self {
            Db::Sqlite(p) => {
                let dir = p.parent().expect("a file in a directory").join(name);
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("snapshot dir");
                let to = dir.join("db.sqlite");
                std::fs::copy(p, &to).expect("copy the database file");
                let wal = PathBuf::from(format!("{}-wal", p.display()));
                if wal.exists() {
                    std::fs::copy(&wal, format!("{}-wal", to.display())).expect("copy the WAL");
                }
                Db::Sqlite(to)
            }
            Db::Postgres { url, admin } => {
                let admin_url = admin.as_deref().expect("the parent knows the admin URL");
                let from = dbname(url);
                let to = format!("{from}_{name}");
                let mut c = faultline::store::postgres::connect(admin_url).expect("admin");
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {to}"))
                    .expect("drop an old snapshot");
                // A killed child's backends end when they notice the closed socket; a
                // template must have no connections, so end them and retry.
                let mut last = None;
                for _ in 0..100 {
                    let _ = c.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&from],
                    );
                    match c.batch_execute(&format!("CREATE DATABASE {to} TEMPLATE {from}")) {
                        Ok(()) => {
                            return Db::Postgres {
                                url: with_dbname(url, &to),
                                admin: admin.clone(),
                            };
                        }
                        Err(e) => last = Some(e),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                panic!("snapshot of {from}: {last:?}")
            }
        }
    }

    /// Deletes a snapshot.
    pub fn drop_snapshot(self) {
        match self {
            Db::Sqlite(p) => {
                let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
            }
            Db::Postgres { url, admin } => {
                let mut c =
                    faultline::store::postgres::connect(admin.as_deref().expect("admin URL"))
                        .expect("admin");
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {}", dbname(&url)));
            }
        }
    }
}

/// The database name in a URL or key-value connection string.
fn dbname(url: &str) -> String {
    if let Some(kv) = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
    {
        return kv.to_owned();
    }
    let path = url.split_once("://").map_or(url, |(_, r)| r);
    let path = path.split('?').next().unwrap_or(path);
    path.rsplit_once('/')
        .map_or("postgres", |(_, d)| d)
        .to_owned()
}

fn with_dbname(url: &str, name: &str) -> String {
    if url.contains("dbname=") {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        return format!("{} dbname={name}", kept.join(" "));
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The keyed job `key` at `version`, its payload derived from both (so enqueueing the
/// same version twice is the same job).
pub fn keyed(key: &str, version: u64) -> Job {
    Job::keyed(
        SYNC,
        Name::new(key).expect("key"),
        version,
        Payload::encode(&format!("{key}@{version}")).expect("payload"),
    )
}

/// The unique job `id`.
pub fn unique(id: u64) -> Job {
    Job::unique(
        EMAIL,
        JobId(id),
        Payload::encode(&format!("mail {id}")).expect("payload"),
    )
}

/// A process's clock on the store's scale: the wall clock through the stored origin,
/// or (to drain a copy at once) virtual time that jumps to whatever is due next.
pub enum Clock {
    Real(Origin),
    Virtual(Instant),
}

impl Clock {
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real(o) => o.saturating_instant(SystemTime::now()),
            Clock::Virtual(t) => *t,
        }
    }
    /// Waits until `t` (at most `cap` of real time).
    pub fn wait_until(&mut self, t: Instant, cap: Duration) {
        match self {
            Clock::Real(_) => {
                let d = t.saturating_since(self.now()).min(cap);
                std::thread::sleep(d.max(Duration::from_micros(200)));
            }
            Clock::Virtual(now) => *now = (*now).max(t),
        }
    }
}

/// The store's origin, proposing the wall clock's now as instant zero.
pub fn origin(jobs: &mut dyn JobStore) -> Origin {
    jobs.origin(Origin::new(SystemTime::now(), Instant::ZERO))
        .expect("the store's origin")
}

/// One effect the target recorded: the job (its key as `JobKey`'s display), the
/// version and fence it was applied under, and who applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub key: String,
    pub version: u64,
    pub fence: u64,
    pub worker: String,
}

const TARGET_COMPONENT: &str = "qc_target";

const SQLITE_TARGET: &[Migration] = &["CREATE TABLE faultline_qc_effects (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         job_key TEXT NOT NULL,
         version INTEGER NOT NULL,
         fence INTEGER NOT NULL,
         worker TEXT NOT NULL
     );
     CREATE TABLE faultline_qc_outages (
         target INTEGER NOT NULL,
         from_ns INTEGER NOT NULL,
         until_ns INTEGER NOT NULL
     );"];

const POSTGRES_TARGET: &[Migration] = &["CREATE TABLE faultline_qc_effects (
         seq BIGSERIAL PRIMARY KEY,
         job_key TEXT NOT NULL,
         version BIGINT NOT NULL,
         fence BIGINT NOT NULL,
         worker TEXT NOT NULL
     );
     CREATE TABLE faultline_qc_outages (
         target INTEGER NOT NULL,
         from_ns BIGINT NOT NULL,
         until_ns BIGINT NOT NULL
     );"];

/// How the target checks a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A version-checked, fenced target: a keyed job only if newer than the version
    /// applied, a unique job once, nothing under a fence older than one seen.
    Versioned,
    /// The mutant: applies whatever it is handed.
    Unchecked,
}

/// Why a delivery did not take effect at the target: it is down.
#[derive(Debug)]
pub struct Outage;

/// A version-checked target in the queue's own database: the queue's `apply_once`
/// (its table `faultline_applied`: the version and highest fence applied per job key)
/// and this test's log of every effect, written in the same transaction as the check.
/// The log is the tests' view of what took effect; `apply_once` is under test too.
pub enum Target {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).expect("fits in i64")
}
fn u64_of(n: i64) -> u64 {
    u64::try_from(n).expect("not negative")
}

impl Target {
    fn open(db: &Db) -> Result<Target, StoreError> {
        Ok(match db {
            Db::Sqlite(p) => {
                let mut c = faultline::store::sqlite::open(p)?;
                // `apply_once`'s table comes with the queue's schema.
                faultline::queue::store::sqlite::migrate(&mut c)?;
                faultline::store::sqlite::migrate(&mut c, TARGET_COMPONENT, SQLITE_TARGET)?;
                Target::Sqlite(c)
            }
            Db::Postgres { url, .. } => {
                let mut c = faultline::store::postgres::connect(url)?;
                faultline::queue::store::postgres::migrate(&mut c)?;
                faultline::store::postgres::migrate(&mut c, TARGET_COMPONENT, POSTGRES_TARGET)?;
                Target::Postgres(c)
            }
        })
    }

    /// Applies `lease` at `now` for `worker`, in one transaction: fails with
    /// [`Outage`] when `target`'s outage schedule says it is down at `now`, else checks
    /// (per `check`), records the effect and the new version.
    pub fn apply(
        &mut self,
        lease: &Lease,
        worker: &str,
        check: Check,
        outage_of: Option<(i32, Instant)>,
    ) -> Result<Result<Applied, Outage>, StoreError> {
        let key = lease.job.key.to_string();
        let version = i64_of(lease.job.version);
        let fence = i64_of(lease.token.fence());
        match self {
            Target::Sqlite(c) => {
                use rusqlite::OptionalExtension;
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                if let Some((target, now)) = outage_of {
                    let down: Option<i64> = tx
                        .query_row(
                            "SELECT 1 FROM faultline_qc_outages
                             WHERE target = ?1 AND from_ns <= ?2 AND ?2 < until_ns",
                            rusqlite::params![target, i64_of(now.as_nanos())],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if down.is_some() {
                        return Ok(Err(Outage));
                    }
                }
                let verdict = match check {
                    Check::Versioned => faultline::queue::store::sqlite::apply_once(&tx, lease)?,
                    Check::Unchecked => Applied::Applied,
                };
                if verdict == Applied::Applied {
                    tx.execute(
                        "INSERT INTO faultline_qc_effects (job_key, version, fence, worker)
                         VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![key, version, fence, worker],
                    )?;
                }
                tx.commit()?;
                Ok(Ok(verdict))
            }
            Target::Postgres(c) => {
                let mut tx = c.transaction()?;
                if let Some((target, now)) = outage_of {
                    let down = tx.query_opt(
                        "SELECT 1 FROM faultline_qc_outages
                         WHERE target = $1 AND from_ns <= $2 AND $2 < until_ns",
                        &[&target, &i64_of(now.as_nanos())],
                    )?;
                    if down.is_some() {
                        return Ok(Err(Outage));
                    }
                }
                let verdict = match check {
                    Check::Versioned => {
                        faultline::queue::store::postgres::apply_once(&mut tx, lease)?
                    }
                    Check::Unchecked => Applied::Applied,
                };
                if verdict == Applied::Applied {
                    tx.execute(
                        "INSERT INTO faultline_qc_effects (job_key, version, fence, worker)
                         VALUES ($1, $2, $3, $4)",
                        &[&key, &version, &fence, &worker],
                    )?;
                }
                tx.commit()?;
                Ok(Ok(verdict))
            }
        }
    }

    /// Every effect, in the order they took effect.
    pub fn effects(&mut self) -> Result<Vec<Effect>, StoreError> {
        let sql = "SELECT job_key, version, fence, worker FROM faultline_qc_effects ORDER BY seq";
        Ok(match self {
            Target::Sqlite(c) => {
                let mut st = c.prepare(sql)?;
                let rows = st.query_map([], |r| {
                    Ok(Effect {
                        key: r.get(0)?,
                        version: u64_of(r.get(1)?),
                        fence: u64_of(r.get(2)?),
                        worker: r.get(3)?,
                    })
                })?;
                rows.collect::<Result<_, _>>()?
            }
            Target::Postgres(c) => c
                .query(sql, &[])?
                .iter()
                .map(|r| Effect {
                    key: r.get(0),
                    version: u64_of(r.get(1)),
                    fence: u64_of(r.get(2)),
                    worker: r.get(3),
                })
                .collect(),
        })
    }

    /// The version last applied per job key, from the effects log (unique jobs: 1).
    pub fn versions(&mut self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self
            .effects()?
            .into_iter()
            .map(|e| (e.key, e.version))
            .collect())
    }

    /// Writes an outage schedule: target `t` is down from `from` until `until`.
    pub fn add_outage(&mut self, t: i32, from: Instant, until: Instant) -> Result<(), StoreError> {
        let (a, b) = (i64_of(from.as_nanos()), i64_of(until.as_nanos()));
        match self {
            Target::Sqlite(c) => {
                c.execute(
                    "INSERT INTO faultline_qc_outages (target, from_ns, until_ns) VALUES (?1, ?2, ?3)",
                    rusqlite::params![t, a, b],
                )?;
            }
            Target::Postgres(c) => {
                c.execute(
                    "INSERT INTO faultline_qc_outages (target, from_ns, until_ns) VALUES ($1, $2, $3)",
                    &[&t, &a, &b],
                )?;
            }
        }
        Ok(())
    }
}

/// The effects log's double effects: a unique job applied twice, or a key whose
/// applied versions do not strictly increase.
pub fn double_effects(effects: &[Effect]) -> Vec<String> {
    let mut out = Vec::new();
    let mut last: BTreeMap<&str, &Effect> = BTreeMap::new();
    for e in effects {
        if let Some(prev) = last.get(e.key.as_str()) {
            if e.key.contains('#') {
                out.push(format!(
                    "no_double_effect: unique job {} applied twice (fences {} by {} and {} by {})",
                    e.key, prev.fence, prev.worker, e.fence, e.worker
                ));
            } else if e.version <= prev.version {
                out.push(format!(
                    "no_double_effect: {} applied at version {} (fence {}) after version {} (fence {})",
                    e.key, e.version, e.fence, prev.version, prev.fence
                ));
            }
        }
        last.insert(&e.key, e);
    }
    out
}

/// What a drain did.
#[derive(Debug, Default)]
pub struct Drained {
    pub delivered: u64,
    pub redriven: u64,
}

/// Runs every job in `jobs` to its end: leases, applies at `target` (checked), acks;
/// waits for what is due later (real or virtual time); redrives the dead letters.
/// Returns when nothing is queued and nothing is dead, or panics after `limit` leases.
pub fn drain(
    jobs: &mut dyn JobStore,
    target: &mut Target,
    clock: &mut Clock,
    worker: &str,
    limit: u64,
) -> Drained {
    let mut d = Drained::default();
    let mut leases = 0u64;
    loop {
        let now = clock.now();
        if let Some(lease) = jobs.lease(now).expect("drain: lease") {
            leases += 1;
            assert!(leases <= limit, "drain: more than {limit} leases");
            target
                .apply(&lease, worker, Check::Versioned, None)
                .expect("drain: apply")
                .expect("no outage");
            if jobs
                .ack(&lease.token, clock.now())
                .expect("drain: ack")
                .is_ok()
            {
                d.delivered += 1;
            }
            continue;
        }
        match jobs.next_due().expect("drain: next_due") {
            Some(t) => clock.wait_until(t, Duration::from_millis(20)),
            None => {
                let n = jobs.redrive(now).expect("drain: redrive");
                if n == 0 {
                    return d;
                }
                d.redriven += n as u64;
            }
        }
    }
}
