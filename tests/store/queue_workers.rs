//! Many workers on one Postgres database: three worker processes (children of this
//! test binary, started together, four worker threads each with connections of their
//! own) deliver 10,000 jobs (6,000 keyed: 400 keys at versions 1 to 15; 4,000 unique)
//! that the parent enqueues meanwhile from four producer threads. Each job goes to one
//! of four targets in the same database, version-checked and fenced
//! (`queue_rig::Target`), whose availability flips on a seeded schedule (a table of
//! outages: a delivery during one fails, is nacked and retried after the backoff).
//!
//! Checked at the end, from the target's effects log and the store: nothing lost
//! (every key at version 15, every unique job applied exactly once), no double effect,
//! counts balanced (every job enqueued done or superseded, none in flight, none dead),
//! and the work spread across the three processes (each applied at least a sixth of
//! the effects; the split is printed). About 16 s here (2 cores, beside the crash
//! tests; 36 s before PostgresJobs prepared its statements); the test fails past
//! 150 s.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant as WallInstant};

use faultline::queue::QueueConfig;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crash;
use crate::queue_rig::{self as rig, Check, Clock, Db};

const DONE_VAR: &str = "FAULTLINE_QC_DONE";
const NAME_VAR: &str = "FAULTLINE_QC_WORKER";
const CHILD: &str = "queue_workers::queue_worker_child";

const KEYS: u64 = 400;
const VERSIONS: u64 = 15;
const UNIQUE: u64 = 4_000;
const PROCESSES: usize = 3;
const THREADS: usize = 4;
const PRODUCERS: u64 = 4;
const TARGETS: i32 = 4;

fn config() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(5))
        .attempts_max(1_000)
        .backoff(Duration::from_millis(20), Duration::from_millis(400))
        .build()
        .expect("config")
}

/// The target a job goes to.
fn target_of(key: &str) -> i32 {
    let sum: u32 = key.bytes().map(u32::from).sum();
    i32::try_from(sum % 4).expect("small")
}

fn key_name(k: u64) -> String {
    format!("p{k}")
}

#[test]
fn three_worker_processes_share_one_postgres_queue() {
    if crash::role().is_some() {
        return;
    }
    let Some(db) = Db::postgres("queue workers") else {
        return;
    };
    let started = WallInstant::now();
    let mut jobs = db.jobs(config()).expect("store");
    let mut target = db.target().expect("target");
    let origin = rig::origin(jobs.as_mut());
    let clock = Clock::Real(origin);
    // The outage schedule: each target up 300..1500 ms, then down 100..600 ms, for
    // two minutes from now.
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let mut outages = 0;
    for t in 0..TARGETS {
        let mut at = clock.now();
        let end = at + Duration::from_secs(120);
        while at < end {
            at = at + Duration::from_millis(rng.random_range(300..1_500));
            let until = at + Duration::from_millis(rng.random_range(100..600));
            target.add_outage(t, at, until).expect("outage");
            outages += 1;
            at = until;
        }
    }
    drop(target);
    let dir = crate::support::temp_dir("qc-workers");
    let done = dir.join("producer-done");
    let db_env = db.to_env();
    let done_env = done.display().to_string();
    let names: Vec<String> = (0..PROCESSES).map(|i| format!("w{i}")).collect();
    let mut children: Vec<_> = names
        .iter()
        .map(|n| {
            crash::spawn(
                CHILD,
                "worker",
                &[(rig::DB_VAR, &db_env), (DONE_VAR, &done_env), (NAME_VAR, n)],
            )
        })
        .collect();
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut out = c.stdout.take().expect("piped");
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            })
        })
        .collect();
    // The producers: keys and ids split by thread, so one thread enqueues a key's
    // versions in order.
    let producing = WallInstant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut jobs = db.jobs(config()).expect("producer store");
                let clock = Clock::Real(rig::origin(jobs.as_mut()));
                let mut n = 0u64;
                let mut duplicates = 0u64;
                let ids: Vec<u64> = (p..UNIQUE).step_by(PRODUCERS as usize).collect();
                let mut chunks = ids.chunks(ids.len().div_ceil(VERSIONS as usize));
                for v in 1..=VERSIONS {
                    let keyed = (p..KEYS)
                        .step_by(PRODUCERS as usize)
                        .map(|k| rig::keyed(&key_name(k), v));
                    let unique = chunks
                        .next()
                        .unwrap_or(&[])
                        .iter()
                        .map(|&id| rig::unique(id));
                    for job in keyed.chain(unique) {
                        let e = jobs.enqueue(job, clock.now()).expect("enqueue");
                        duplicates += u64::from(e == faultline::queue::Enqueued::Duplicate);
                        n += 1;
                    }
                }
                (n, duplicates)
            })
        })
        .collect();
    let mut enqueued = 0;
    for p in producers {
        let (n, dups) = p.join().expect("producer");
        assert_eq!(dups, 0, "no enqueue of this test is a duplicate");
        enqueued += n;
    }
    assert_eq!(enqueued, KEYS * VERSIONS + UNIQUE);
    let produced_s = producing.elapsed().as_secs_f64();
    std::fs::write(&done, "done").expect("done flag");
    // Wait for the workers, at most 150 s in all.
    let deadline = started + Duration::from_secs(150);
    for (c, n) in children.iter_mut().zip(&names) {
        loop {
            if let Some(status) = c.try_wait().expect("child status") {
                assert!(status.success(), "worker {n} failed: {status}");
                break;
            }
            if WallInstant::now() > deadline {
                for c in &mut children {
                    let _ = c.kill();
                }
                panic!("the workers did not finish within 150 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let outputs: Vec<String> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();

    // The checks.
    let mut target = db.target().expect("target");
    let effects = target.effects().expect("effects");
    let versions = target.versions().expect("versions");
    let doubles = rig::double_effects(&effects);
    assert!(
        doubles.is_empty(),
        "double effects:\n{}",
        doubles.join("\n")
    );
    for k in 0..KEYS {
        let key = format!("{}:{}", rig::SYNC, key_name(k));
        assert_eq!(
            versions.get(&key).copied(),
            Some(VERSIONS),
            "{key} ends at its latest version"
        );
    }
    let mut unique_applied: BTreeMap<&str, u32> = BTreeMap::new();
    let mut split: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &effects {
        if e.key.contains('#') {
            *unique_applied.entry(&e.key).or_default() += 1;
        }
        *split.entry(&e.worker).or_default() += 1;
    }
    for id in 0..UNIQUE {
        let key = format!("{}#{id}", rig::EMAIL);
        assert_eq!(
            unique_applied.get(key.as_str()).copied(),
            Some(1),
            "{key} applied exactly once"
        );
    }
    let c = jobs.counts().expect("counts");
    assert!(c.balanced(), "{c:?}");
    assert_eq!(c.enqueued, enqueued, "{c:?}");
    assert_eq!(c.in_flight(), 0, "{c:?}");
    assert_eq!(c.dead, 0, "{c:?}");
    assert_eq!(c.done + c.superseded, c.enqueued, "{c:?}");
    let total: u64 = split.values().sum();
    for n in &names {
        let mine = split.get(n.as_str()).copied().unwrap_or(0);
        assert!(
            mine * 6 >= total,
            "worker {n} applied {mine} of {total} effects: not a real share ({split:?})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let reports: Vec<&str> = outputs
        .iter()
        .flat_map(|o| o.lines().filter(|l| l.starts_with("worker ")))
        .collect();
    let _ = writeln!(
        std::io::stderr(),
        "queue workers (postgres): {enqueued} jobs enqueued by {PRODUCERS} producer threads in {produced_s:.1} s, delivered by {PROCESSES} processes x {THREADS} threads in {elapsed:.1} s in all; {} effects at the targets, split {split:?}; counts {c:?}; {outages} outages scheduled; {}",
        effects.len(),
        reports.join("; ")
    );
}

/// A worker process: `THREADS` threads lease, deliver and ack until the producer is
/// done and nothing is left in flight; then prints what it did.
#[test]
fn queue_worker_child() {
    let Some(_) = crash::role() else { return };
    let db = Db::from_env();
    let done = PathBuf::from(std::env::var(DONE_VAR).expect("done flag"));
    let name = std::env::var(NAME_VAR).expect("worker name");
    crash::ready();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (db, done, name) = (db.clone(), done.clone(), name.clone());
            std::thread::spawn(move || {
                let mut jobs = db.jobs(config()).expect("worker store");
                let mut target = db.target().expect("worker target");
                let mut clock = Clock::Real(rig::origin(jobs.as_mut()));
                let (mut acked, mut nacked, mut fenced) = (0u64, 0u64, 0u64);
                loop {
                    let now = clock.now();
                    let Some(lease) = jobs.lease(now).expect("lease") else {
                        if done.exists() && jobs.counts().expect("counts").in_flight() == 0 {
                            return (acked, nacked, fenced);
                        }
                        let next = jobs.next_due().expect("next due");
                        clock.wait_until(
                            next.unwrap_or(now + Duration::from_millis(10)),
                            Duration::from_millis(10),
                        );
                        continue;
                    };
                    let t = target_of(&lease.job.key.to_string());
                    let r = target
                        .apply(&lease, &name, Check::Versioned, Some((t, clock.now())))
                        .expect("apply");
                    match r {
                        Ok(_) => match jobs.ack(&lease.token, clock.now()).expect("ack") {
                            Ok(()) => acked += 1,
                            Err(_) => fenced += 1,
                        },
                        Err(rig::Outage) => {
                            let n = jobs
                                .nack(&lease.token, "target down", clock.now())
                                .expect("nack");
                            if n.is_ok() {
                                nacked += 1;
                            } else {
                                fenced += 1;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let (mut a, mut n, mut f) = (0, 0, 0);
    for t in threads {
        let (x, y, z) = t.join().expect("worker thread");
        a += x;
        n += y;
        f += z;
    }
    println!("worker {name}: {a} acked, {n} nacked during outages, {f} fenced");
}
