//! A profile service on SQLite: the profile row and its sync job commit in one
//! transaction, a relay moves the job into the queue in the same database file, and a
//! worker pool delivers it to a replica table that applies each version once.
//!
//! ```sh
//! cargo run --example durable_jobs
//! ```
//!
//! Run it twice: the second run finds the first run's rows in the file (its path is
//! printed), and a job enqueued but not yet delivered when a process dies is delivered
//! by the next one. Point it at Postgres by swapping `SqliteJobs::open(path, config)`
//! for `PostgresJobs::connect(url, config)` and the `rusqlite` transactions for
//! `postgres` ones (`PostgresOutbox`, `postgres::apply_once`).

use std::time::Duration;

use faultline::name::Name;
use faultline::queue::store::sqlite::{self, SqliteJobs, SqliteOutbox};
use faultline::queue::tokio::{PoolConfig, StoreQueue, WorkerPool};
use faultline::queue::{Applied, Job, JobType, Lease, Payload, QueueConfig, Staging};
use faultline::store::StoreError;

const SYNC_PROFILE: JobType = JobType::from_static("sync_profile");

/// The service's own write: the profile row and its sync job, in one transaction
/// (both commit, or neither does).
fn rename(jobs: &mut SqliteJobs, user: &str, name: &str) -> Result<u64, StoreError> {
    let tx = jobs.connection_mut().transaction()?;
    let version: i64 = tx.query_row(
        "INSERT INTO profiles (user, name, version) VALUES (?1, ?2, 1)
         ON CONFLICT (user) DO UPDATE SET name = excluded.name, version = version + 1
         RETURNING version",
        rusqlite::params![user, name],
        |r| r.get(0),
    )?;
    let version = u64::try_from(version).unwrap_or(0);
    let key = Name::new(user).map_err(|e| StoreError::Corrupt {
        what: "user".into(),
        detail: e.to_string(),
    })?;
    let payload = Payload::encode(&(name, version)).map_err(|e| StoreError::Corrupt {
        what: "payload".into(),
        detail: e.to_string(),
    })?;
    let mut outbox = SqliteOutbox::new(&tx);
    outbox.stage(Job::keyed(SYNC_PROFILE, key, version, payload))?;
    outbox.finish()?;
    tx.commit()?;
    Ok(version)
}

/// The replica's side: applies a lease in its own transaction, once per version, and
/// never over a newer one (the fencing token is checked here too).
fn apply(path: &std::path::Path, lease: &Lease) -> Result<Applied, StoreError> {
    let mut conn = faultline::store::sqlite::open(path)?;
    let tx = conn.transaction()?;
    let applied = sqlite::apply_once(&tx, lease)?;
    if applied == Applied::Applied {
        let (name, version): (String, u64) =
            lease
                .job
                .payload
                .decode()
                .map_err(|e| StoreError::Corrupt {
                    what: "payload".into(),
                    detail: e.to_string(),
                })?;
        let user = lease.job.key.key().map(|k| k.as_str().to_owned());
        tx.execute(
            "INSERT INTO replica (user, name, version) VALUES (?1, ?2, ?3)
             ON CONFLICT (user) DO UPDATE SET name = excluded.name, version = excluded.version",
            rusqlite::params![user, name, i64::try_from(version).unwrap_or(i64::MAX)],
        )?;
    }
    tx.commit()?;
    Ok(applied)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("faultline-durable-jobs.sqlite");
    println!("database: {}", path.display());
    let config = QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(5))
        .build()?;
    let mut jobs = SqliteJobs::open(&path, config)?;
    jobs.connection_mut().execute_batch(
        "CREATE TABLE IF NOT EXISTS profiles (user TEXT PRIMARY KEY, name TEXT, version INTEGER);
         CREATE TABLE IF NOT EXISTS replica (user TEXT PRIMARY KEY, name TEXT, version INTEGER);",
    )?;
    // Three renames of one user: the queue coalesces what is still waiting.
    let mut latest = 0;
    for name in ["Ada", "Ada L.", "Ada Lovelace"] {
        latest = rename(&mut jobs, "ada", name)?;
    }

    let queue = StoreQueue::open({
        let path = path.clone();
        move || SqliteJobs::open(&path, config)
    })
    .await?;
    // The relay: staged jobs move into the queue, due on the queue's clock.
    let now = queue.now();
    queue.with(move |jobs| jobs.relay(now)).await?;
    let pool = WorkerPool::spawn(&queue, PoolConfig::builder().workers(2).build()?, {
        let path = path.clone();
        move |lease: Lease| {
            let path = path.clone();
            async move {
                // A database write: on a blocking thread, off the runtime's.
                tokio::task::spawn_blocking(move || apply(&path, &lease))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
                    .map(|_| ())
            }
        }
    })?;
    queue.settled().await?;
    let report = pool.shutdown().await;
    let counts = queue.counts().await?;

    let conn = faultline::store::sqlite::open(&path)?;
    let (name, version): (String, i64) = conn.query_row(
        "SELECT name, version FROM replica WHERE user = 'ada'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!(
        "replica: ada = {name:?} at version {version} (profile at {latest}); delivered {}, queue {counts:?}",
        report.delivered
    );
    if u64::try_from(version).ok() != Some(latest) || name != "Ada Lovelace" {
        return Err(
            format!("the replica holds {name:?} v{version}, not the latest v{latest}").into(),
        );
    }
    Ok(())
}
