//! The queue's crash tests with real processes: a child process works against the
//! durable queue (a SQLite file, a Postgres database) in a loop: it enqueues keyed jobs
//! (six keys, versions that only grow) and unique jobs, leases, delivers each leased job
//! to a version-checked target in the same database, acks (or nacks a failed delivery),
//! and sometimes stalls a lease past its deadline before it delivers and acks it late,
//! as a worker that paused would. Every answer the store gave is noted, fsynced, in a
//! side file *after* the store returned. The parent SIGKILLs the child at a seeded
//! random moment, 50 times per store; the next child takes over the dead one's leases
//! once they expire.
//!
//! After each kill the parent checks:
//!
//! - **fences only grow**: every fence handed out is larger than every fence handed out
//!   before it, in this process or an earlier one (so none is handed out twice);
//! - **fenced at ack**: the store accepted no ack, nack or heartbeat under a lease that
//!   had expired (its `now` at or past the deadline) or that a newer lease on the key
//!   had replaced;
//! - **no acknowledged enqueue lost** and **no double effect**: on a copy of the
//!   database, drained to the end in virtual time (expired leases retried, dead letters
//!   redriven), every keyed version the store acknowledged is at the target (or a newer
//!   one is), every acknowledged unique job took effect exactly once, and the effects
//!   log shows no unique job applied twice and no key's versions going backwards or
//!   repeating;
//! - **counts balance**: on the database and on the drained copy (which also holds as
//!   many jobs enqueued and done as the store acknowledged).
//!
//! At the end one last child drains the real database to completion (waiting out the
//! dead child's leases) and the same checks run on it, with every job at its end.
//!
//! Each check is shown to fail: the same loop over broken stores (an enqueue
//! acknowledged before it is written, an ack that skips the fence check, fences
//! counted in memory) and a target without the version check, each caught by its
//! check.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use faultline::clock::Instant;
use faultline::queue::store::JobStore;
use faultline::queue::{
    Applied, DeadLetter, Enqueued, Fenced, Job, Lease, LeaseToken, Nacked, QueueConfig, QueueCounts,
};
use faultline::store::StoreError;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crash;
use crate::queue_rig::{self as rig, Check, Clock, Db};

const LOG_VAR: &str = "FAULTLINE_QC_LOG";
const ROUND_VAR: &str = "FAULTLINE_QC_ROUND";
const MUTANT_VAR: &str = "FAULTLINE_QC_MUTANT";
const CHILD: &str = "queue_crash::queue_crash_child";

/// Kills per store.
const ROUNDS: u32 = 50;
/// The longest a child works before it is killed.
const MAX_DELAY: Duration = Duration::from_millis(800);
const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];

fn config() -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_millis(150))
        .attempts_max(4)
        .backoff(Duration::from_millis(5), Duration::from_millis(40))
        .build()
        .expect("config")
}

// ----- the side file: what the store answered, in order -----

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Round(u32),
    Enq {
        key: String,
        version: u64,
        outcome: String,
    },
    Lease {
        key: String,
        fence: u64,
        deadline: u64,
    },
    /// A heartbeat, ack or nack answered.
    Settle {
        what: String,
        key: String,
        fence: u64,
        now: u64,
        ok: bool,
        deadline: u64,
    },
}

fn parse(line: &str) -> Option<Event> {
    let w: Vec<&str> = line.split(' ').collect();
    let n = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(match *w.first()? {
        "round" => Event::Round(u32::try_from(n(1)?).ok()?),
        "enq" => Event::Enq {
            key: w.get(1)?.to_string(),
            version: n(2)?,
            outcome: w.get(3)?.to_string(),
        },
        "lease" => Event::Lease {
            key: w.get(1)?.to_string(),
            fence: n(2)?,
            deadline: n(3)?,
        },
        what @ ("hb" | "ack" | "nack") => Event::Settle {
            what: what.to_owned(),
            key: w.get(1)?.to_string(),
            fence: n(2)?,
            now: n(3)?,
            ok: *w.get(4)? != "fenced",
            deadline: n(5).unwrap_or(0),
        },
        _ => return None,
    })
}

fn events(log: &Path) -> Vec<Event> {
    crash::acknowledged(log)
        .iter()
        .map(|l| parse(l).unwrap_or_else(|| panic!("unreadable side-file line {l:?}")))
        .collect()
}

// ----- the checks -----

/// What the checks saw, for the report.
#[derive(Debug, Default)]
struct Seen {
    enqueues: u64,
    leases: u64,
    takeovers: u64,
    refused_late: u64,
    refused_taken_over: u64,
    dead_redriven: u64,
}

/// The side file's own checks: fences only grow; nothing accepted under a dead lease.
fn check_log(ev: &[Event], seen: &mut Seen) -> Vec<String> {
    let mut out = Vec::new();
    let mut round = 0;
    let mut high: Option<(u64, u32)> = None;
    // Per key: the newest lease (fence, deadline, round) and whether it was settled.
    let mut leases: BTreeMap<&str, (u64, u64, u32)> = BTreeMap::new();
    let mut settled: BTreeSet<(String, u64)> = BTreeSet::new();
    seen.enqueues = 0;
    seen.leases = 0;
    seen.takeovers = 0;
    seen.refused_late = 0;
    seen.refused_taken_over = 0;
    for e in ev {
        match e {
            Event::Round(r) => round = *r,
            Event::Enq { .. } => seen.enqueues += 1,
            Event::Lease {
                key,
                fence,
                deadline,
            } => {
                seen.leases += 1;
                if let Some((h, r)) = high
                    && *fence <= h
                {
                    out.push(format!(
                        "fences_only_grow: round {round} was handed fence {fence} on {key}, not above fence {h} handed out in round {r}"
                    ));
                }
                high = Some(high.map_or((*fence, round), |(h, r)| {
                    if *fence > h { (*fence, round) } else { (h, r) }
                }));
                if let Some((f, _, r)) = leases.get(key.as_str())
                    && *r < round
                    && !settled.contains(&(key.clone(), *f))
                {
                    seen.takeovers += 1;
                }
                leases.insert(key, (*fence, *deadline, round));
            }
            Event::Settle {
                what,
                key,
                fence,
                now,
                ok,
                deadline,
            } => {
                let Some((newest, dl, _)) = leases.get_mut(key.as_str()) else {
                    out.push(format!(
                        "fenced_at_ack: round {round}: {what} on {key} under fence {fence}, never handed out"
                    ));
                    continue;
                };
                if !ok {
                    if *fence != *newest {
                        seen.refused_taken_over += 1;
                    } else if *now >= *dl {
                        seen.refused_late += 1;
                    }
                    continue;
                }
                if *fence != *newest {
                    out.push(format!(
                        "fenced_at_ack: round {round}: {what} on {key} under fence {fence} accepted after fence {newest} took the job over"
                    ));
                } else if *now >= *dl {
                    out.push(format!(
                        "fenced_at_ack: round {round}: {what} on {key} under fence {fence} accepted at {now}, at or past its deadline {dl}"
                    ));
                } else if settled.contains(&(key.clone(), *fence)) {
                    out.push(format!(
                        "fenced_at_ack: round {round}: {what} on {key} under fence {fence} accepted after the lease was settled"
                    ));
                } else if what == "hb" {
                    *dl = *deadline;
                } else {
                    settled.insert((key.clone(), *fence));
                }
            }
        }
    }
    out
}

/// Checks a database whose every job has run to its end against the side file:
/// nothing acknowledged lost, no double effect, counts balanced and covering what the
/// store acknowledged.
fn check_drained(
    ev: &[Event],
    counts: QueueCounts,
    dead: &[DeadLetter],
    effects: &[rig::Effect],
    versions: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut out = rig::double_effects(effects);
    let mut applied: BTreeMap<&str, u64> = BTreeMap::new();
    for e in effects {
        *applied.entry(e.key.as_str()).or_default() += 1;
    }
    let mut accepted = 0;
    let mut acks = 0;
    for e in ev {
        match e {
            Event::Enq {
                key,
                version,
                outcome,
            } => {
                if outcome != "duplicate" {
                    accepted += 1;
                }
                if key.contains('#') {
                    if !applied.contains_key(key.as_str()) {
                        out.push(format!(
                            "no_acknowledged_enqueue_lost: unique job {key} was acknowledged ({outcome}) but never took effect"
                        ));
                    }
                } else {
                    let at = versions.get(key).copied().unwrap_or(0);
                    if at < *version {
                        out.push(format!(
                            "no_acknowledged_enqueue_lost: {key} version {version} was acknowledged ({outcome}) but the target ends at version {at}"
                        ));
                    }
                }
            }
            Event::Settle { what, ok: true, .. } if what == "ack" => acks += 1,
            _ => {}
        }
    }
    if !counts.balanced() || counts.in_flight() != 0 || counts.dead != 0 {
        out.push(format!(
            "counts_balance: after the drain {counts:?} (balanced {}, {} dead letters listed)",
            counts.balanced(),
            dead.len()
        ));
    }
    if counts.enqueued < accepted {
        out.push(format!(
            "counts_balance: the store counts {} jobs enqueued but acknowledged {accepted} new ones",
            counts.enqueued
        ));
    }
    if counts.done < acks {
        out.push(format!(
            "counts_balance: the store counts {} jobs done but accepted {acks} acks",
            counts.done
        ));
    }
    out
}

/// Everything after round `round`'s kill: the log, the store's counts, and a copy of
/// the database drained in virtual time.
fn check_round(db: &Db, log: &Path, round: u32, seen: &mut Seen) -> Vec<String> {
    let ev = events(log);
    let mut out = check_log(&ev, seen);
    {
        let mut jobs = db.jobs(config()).expect("reopen the store");
        let c = jobs.counts().expect("counts");
        if !c.balanced() {
            out.push(format!(
                "counts_balance: after the kill of round {round}: {c:?}"
            ));
        }
    }
    let copy = db.snapshot(&format!("r{round}"));
    {
        let mut jobs = copy.jobs(config()).expect("open the copy");
        let mut target = copy.target().expect("the copy's target");
        let origin = rig::origin(jobs.as_mut());
        // Past every lease the dead child held.
        let start = Clock::Real(origin).now() + config().visibility_timeout() * 2;
        let d = rig::drain(
            jobs.as_mut(),
            &mut target,
            &mut Clock::Virtual(start),
            "drain",
            1_000_000,
        );
        seen.dead_redriven += d.redriven;
        out.extend(check_drained(
            &ev,
            jobs.counts().expect("counts"),
            &jobs.dead_letters().expect("dead letters"),
            &target.effects().expect("effects"),
            &target.versions().expect("versions"),
        ));
    }
    copy.drop_snapshot();
    out
}

/// The whole test on `db`: `rounds` kills, each checked, then the final drain by a last
/// child, checked. Returns the violations (empty when the store kept its promises).
fn crash_loop(db: &Db, what: &str, rounds: u32, seed: u64, mutant: &str) -> Vec<String> {
    let dir = crate::support::temp_dir(&format!("qc-{what}"));
    let log = dir.join("acks");
    let db_env = db.to_env();
    let log_env = log.display().to_string();
    let mut violations = Vec::new();
    let mut seen = Seen::default();
    let started = WallInstant::now();
    // The round number reaches the child through a file: `kill_loop`'s environment is
    // fixed for all rounds.
    let round_file = dir.join("round");
    let round_env = round_file.display().to_string();
    std::fs::write(&round_file, "0").expect("round file");
    let killed = crash::kill_loop(
        CHILD,
        "work",
        &[
            (rig::DB_VAR, &db_env),
            (LOG_VAR, &log_env),
            (ROUND_VAR, &round_env),
            (MUTANT_VAR, mutant),
        ],
        rounds,
        seed,
        MAX_DELAY,
        |round| {
            let v = check_round(db, &log, round, &mut seen);
            violations.extend(v.into_iter().map(|v| format!("after kill {round}: {v}")));
            std::fs::write(&round_file, (round + 1).to_string()).expect("round file");
        },
    );
    // The last child drains the real database, waiting out the dead child's leases.
    let mut child = crash::spawn(
        CHILD,
        "drain",
        &[
            (rig::DB_VAR, &db_env),
            (LOG_VAR, &log_env),
            (ROUND_VAR, &round_env),
        ],
    );
    let status = child.wait().expect("the drain child");
    assert!(status.success(), "{what}: the drain child failed: {status}");
    let ev = events(&log);
    violations.extend(check_log(&ev, &mut seen));
    {
        let mut jobs = db.jobs(config()).expect("reopen the store");
        let mut target = db.target().expect("target");
        let c = jobs.counts().expect("counts");
        violations.extend(
            check_drained(
                &ev,
                c,
                &jobs.dead_letters().expect("dead letters"),
                &target.effects().expect("effects"),
                &target.versions().expect("versions"),
            )
            .into_iter()
            .map(|v| format!("after the final drain: {v}")),
        );
        let _ = writeln!(
            std::io::stderr(),
            "queue crash ({what}{}): {rounds} rounds, {killed} killed mid-work, {} enqueues and {} leases acknowledged, {} leases taken over from a killed process, acks/nacks/heartbeats refused: {} after the deadline and {} after a newer lease, {} dead letters redriven by the drains; final counts {c:?}; {:.1} s",
            if mutant.is_empty() {
                String::new()
            } else {
                format!(", mutant {mutant}")
            },
            seen.enqueues,
            seen.leases,
            seen.takeovers,
            seen.refused_late,
            seen.refused_taken_over,
            seen.dead_redriven,
            started.elapsed().as_secs_f64()
        );
    }
    if violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if mutant.is_empty() {
        assert_eq!(
            killed, rounds,
            "{what}: every child works until it is killed (one ended on its own)"
        );
    }
    violations
}

// ----- the child -----

fn note(log: &Path, line: &str) {
    crash::note_acknowledged(log, line);
}

fn outcome(e: Enqueued) -> &'static str {
    match e {
        Enqueued::New => "new",
        Enqueued::Coalesced => "coalesced",
        Enqueued::Queued => "queued",
        Enqueued::Duplicate => "duplicate",
    }
}

/// The worker part of a child: delivers `lease` to the target and acks it (or nacks a
/// failed delivery), noting each answer.
fn deliver(
    jobs: &mut dyn JobStore,
    target: &mut rig::Target,
    clock: &Clock,
    log: &Path,
    lease: &Lease,
    fail: bool,
    check: Check,
) {
    let key = lease.job.key;
    let fence = lease.token.fence();
    if fail {
        let now = clock.now();
        let r = jobs.nack(&lease.token, "target down", now).expect("nack");
        let what = match r {
            Ok(Nacked::Retry { .. }) => "retry",
            Ok(Nacked::Superseded) => "superseded",
            Ok(Nacked::DeadLettered) => "dead",
            Err(Fenced { .. }) => "fenced",
        };
        note(
            log,
            &format!("nack {key} {fence} {} {what}", now.as_nanos()),
        );
        return;
    }
    let _verdict: Applied = target
        .apply(lease, "child", check, None)
        .expect("apply")
        .expect("no outage");
    let now = clock.now();
    let r = jobs.ack(&lease.token, now).expect("ack");
    let what = if r.is_ok() { "ok" } else { "fenced" };
    note(log, &format!("ack {key} {fence} {} {what}", now.as_nanos()));
}

/// A child: works against the store until killed (role `work`), or drains it to the
/// end and exits (role `drain`).
#[test]
fn queue_crash_child() {
    let Some(role) = crash::role() else { return };
    let db = Db::from_env();
    let log = PathBuf::from(std::env::var(LOG_VAR).expect("log"));
    let round_file = std::env::var(ROUND_VAR).expect("round");
    let round: u64 = std::fs::read_to_string(round_file)
        .expect("round file")
        .trim()
        .parse()
        .expect("round number");
    let mutant = std::env::var(MUTANT_VAR).unwrap_or_default();
    let mut jobs = mutants::wrap(db.jobs(config()).expect("open the store"), &mutant);
    let mut target = db.target().expect("open the target");
    let origin = rig::origin(jobs.as_mut());
    let mut clock = Clock::Real(origin);
    if role == "drain" {
        crash::ready();
        let d = rig::drain(jobs.as_mut(), &mut target, &mut clock, "final", 1_000_000);
        println!("drained: {d:?}");
        return;
    }
    let check = if mutant == "unchecked_target" {
        Check::Unchecked
    } else {
        Check::Versioned
    };
    note(&log, &format!("round {round}"));
    crash::ready();
    let mut rng = ChaCha8Rng::seed_from_u64(round);
    let mut next = round * 100_000;
    // Stalled leases, each with the moment its worker wakes up: up to twice the
    // visibility timeout later, so about half of them wake up expired.
    let mut held: Vec<(Lease, WallInstant)> = Vec::new();
    let stall = |rng: &mut ChaCha8Rng| {
        let max = u64::try_from(config().visibility_timeout().as_millis() * 2).expect("ms");
        WallInstant::now() + Duration::from_millis(rng.random_range(0..=max))
    };
    loop {
        let p = rng.random_range(0..100u32);
        if p < 25 {
            next += 1;
            let job: Job = if rng.random_ratio(3, 4) {
                rig::keyed(KEYS[rng.random_range(0..KEYS.len())], next)
            } else {
                rig::unique(next)
            };
            let (key, version) = (job.key, job.version);
            let e = jobs.enqueue(job, clock.now()).expect("enqueue");
            note(&log, &format!("enq {key} {version} {}", outcome(e)));
        } else if let Some(i) = held
            .iter()
            .position(|(_, wake)| p < 40 && *wake <= WallInstant::now())
        {
            // A stalled worker wakes up: heartbeat (and stall again), or deliver late.
            let (lease, _) = held.swap_remove(i);
            if rng.random_ratio(1, 3) {
                let now = clock.now();
                let r = jobs.heartbeat(&lease.token, now).expect("heartbeat");
                let (key, fence) = (lease.job.key, lease.token.fence());
                match r {
                    Ok(d) => {
                        note(
                            &log,
                            &format!("hb {key} {fence} {} ok {}", now.as_nanos(), d.as_nanos()),
                        );
                        let wake = stall(&mut rng);
                        held.push((lease, wake));
                    }
                    Err(_) => note(&log, &format!("hb {key} {fence} {} fenced", now.as_nanos())),
                }
            } else {
                deliver(
                    jobs.as_mut(),
                    &mut target,
                    &clock,
                    &log,
                    &lease,
                    false,
                    check,
                );
            }
        } else {
            match jobs.lease(clock.now()).expect("lease") {
                Some(lease) => {
                    note(
                        &log,
                        &format!(
                            "lease {} {} {}",
                            lease.job.key,
                            lease.token.fence(),
                            lease.deadline.as_nanos()
                        ),
                    );
                    if held.len() < 3 && rng.random_ratio(1, 6) {
                        let wake = stall(&mut rng);
                        held.push((lease, wake));
                    } else {
                        let fail = rng.random_ratio(1, 6);
                        deliver(
                            jobs.as_mut(),
                            &mut target,
                            &clock,
                            &log,
                            &lease,
                            fail,
                            check,
                        );
                    }
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

// ----- broken stores, to show each check catches its defect -----

mod mutants {
    use super::*;

    /// `inner`, or the broken store `mutant` names around it.
    pub fn wrap(inner: Box<dyn JobStore>, mutant: &str) -> Box<dyn JobStore> {
        match mutant {
            "" | "unchecked_target" => inner,
            "ack_before_durable" => Box::new(AckBeforeDurable {
                inner,
                buffered: Vec::new(),
            }),
            "ack_without_fence" => Box::new(AckWithoutFence { inner }),
            "fence_in_memory" => Box::new(FenceInMemory {
                inner,
                next: 1,
                tokens: BTreeMap::new(),
            }),
            m => panic!("unknown mutant {m}"),
        }
    }

    /// Answers an enqueue at once and writes it later, in batches of eight: the
    /// "acknowledged before durable" defect. A kill loses the batch.
    struct AckBeforeDurable {
        inner: Box<dyn JobStore>,
        buffered: Vec<(Job, Instant)>,
    }

    /// Accepts an ack the store refused as fenced.
    struct AckWithoutFence {
        inner: Box<dyn JobStore>,
    }

    /// Hands out fences from a counter kept in memory (starting at 1 in every process),
    /// translating them to the store's own.
    struct FenceInMemory {
        inner: Box<dyn JobStore>,
        next: u64,
        tokens: BTreeMap<LeaseToken, LeaseToken>,
    }

    impl FenceInMemory {
        fn real(&self, t: &LeaseToken) -> LeaseToken {
            self.tokens.get(t).copied().unwrap_or(*t)
        }
    }

    impl JobStore for AckBeforeDurable {
        forward_reads!();
        fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
            self.buffered.push((job, now));
            if self.buffered.len() >= 8 {
                for (j, t) in std::mem::take(&mut self.buffered) {
                    self.inner.enqueue(j, t)?;
                }
            }
            Ok(Enqueued::New)
        }
        fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
            self.inner.lease(now)
        }
        fn heartbeat(
            &mut self,
            t: &LeaseToken,
            now: Instant,
        ) -> Result<Result<Instant, Fenced>, StoreError> {
            self.inner.heartbeat(t, now)
        }
        fn ack(&mut self, t: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
            self.inner.ack(t, now)
        }
        fn nack(
            &mut self,
            t: &LeaseToken,
            e: &str,
            now: Instant,
        ) -> Result<Result<Nacked, Fenced>, StoreError> {
            self.inner.nack(t, e, now)
        }
    }

    impl JobStore for AckWithoutFence {
        forward_reads!();
        fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
            self.inner.enqueue(job, now)
        }
        fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
            self.inner.lease(now)
        }
        fn heartbeat(
            &mut self,
            t: &LeaseToken,
            now: Instant,
        ) -> Result<Result<Instant, Fenced>, StoreError> {
            self.inner.heartbeat(t, now)
        }
        fn ack(&mut self, t: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
            self.inner.ack(t, now).map(|_| Ok(()))
        }
        fn nack(
            &mut self,
            t: &LeaseToken,
            e: &str,
            now: Instant,
        ) -> Result<Result<Nacked, Fenced>, StoreError> {
            self.inner.nack(t, e, now)
        }
    }

    impl JobStore for FenceInMemory {
        forward_reads!();
        fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
            self.inner.enqueue(job, now)
        }
        fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
            let Some(mut lease) = self.inner.lease(now)? else {
                return Ok(None);
            };
            let mine = LeaseToken::new(lease.token.key(), self.next);
            self.next += 1;
            self.tokens.insert(mine, lease.token);
            lease.token = mine;
            Ok(Some(lease))
        }
        fn heartbeat(
            &mut self,
            t: &LeaseToken,
            now: Instant,
        ) -> Result<Result<Instant, Fenced>, StoreError> {
            let r = self.real(t);
            self.inner.heartbeat(&r, now)
        }
        fn ack(&mut self, t: &LeaseToken, now: Instant) -> Result<Result<(), Fenced>, StoreError> {
            let r = self.real(t);
            self.inner.ack(&r, now)
        }
        fn nack(
            &mut self,
            t: &LeaseToken,
            e: &str,
            now: Instant,
        ) -> Result<Result<Nacked, Fenced>, StoreError> {
            let r = self.real(t);
            self.inner.nack(&r, e, now)
        }
    }
}

// ----- the tests -----

fn remove_sqlite(db: &Db) {
    if let Db::Sqlite(p) = db
        && let Some(dir) = p.parent()
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn require_clean(what: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{what}: {} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn sqlite_queue_survives_50_sigkills() {
    if crash::role().is_some() {
        return;
    }
    let db = Db::Sqlite(crate::support::sqlite_path("qc-sqlite"));
    let v = crash_loop(&db, "sqlite", ROUNDS, 16, "");
    require_clean("sqlite", &v);
    remove_sqlite(&db);
}

#[test]
fn postgres_queue_survives_50_sigkills() {
    if crash::role().is_some() {
        return;
    }
    let Some(db) = Db::postgres("queue crash") else {
        return;
    };
    let v = crash_loop(&db, "postgres", ROUNDS, 17, "");
    require_clean("postgres", &v);
}

/// Each check catches the defect it is there for (on SQLite: the checks do not depend
/// on the database). Few rounds each: a defect shows within a few kills.
#[test]
fn the_crash_checks_catch_broken_stores() {
    if crash::role().is_some() {
        return;
    }
    for (mutant, checks) in [
        (
            "ack_before_durable",
            &["no_acknowledged_enqueue_lost", "counts_balance"][..],
        ),
        ("ack_without_fence", &["fenced_at_ack"]),
        ("fence_in_memory", &["fences_only_grow"]),
        ("unchecked_target", &["no_double_effect"]),
    ] {
        let db = Db::Sqlite(crate::support::sqlite_path(&format!("qc-{mutant}")));
        let v = crash_loop(&db, "sqlite", 8, 99, mutant);
        remove_sqlite(&db);
        for check in checks {
            let first = v.iter().find(|v| v.contains(check));
            assert!(
                first.is_some(),
                "{mutant} was not caught by {check}; violations: {v:#?}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "mutant {mutant}: caught by {check} ({} violations in all; first: {})",
                v.len(),
                first.map_or("", String::as_str)
            );
        }
    }
}
