//! The conformance suite every [`JobStore`] passes: named cases, each a script of
//! commands run on a fresh store *and* on a fresh sans-IO [`Queue`] (the reference
//! semantics), comparing every answer (enqueue results, leases, heartbeat deadlines,
//! acks, nacks, redrives) and, after every step, the counts, the dead letters and the
//! next due instant; plus checks that hold whatever the model says (fencing tokens only
//! grow and are never handed out twice, the counts balance, a retry is due within the
//! backoff's bounds). A seeded random differential case runs long random command
//! sequences the same way.
//!
//! **Retry instants.** A store draws its own jitter (the SQL stores hash key and fence;
//! the memory store draws as the model does), so the instants of a retry may differ:
//! the suite checks the store's instant lies within `[now, now + ceiling(attempt)]`
//! (the full-jitter bounds of the configured backoff), then *steers* the model to the
//! store's instant, so the two stay in step and every later answer is compared exactly.
//!
//! **Fencing tokens** are compared by order, not value (a Postgres sequence may skip
//! numbers): each token a store hands out must be larger than every one before.
//!
//! ```
//! use faultline::queue::store::{MemoryJobs, conformance};
//!
//! conformance::run(|config| Ok(MemoryJobs::new(config)))?;
//! # Ok::<(), conformance::Failure>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use super::JobStore;
use crate::clock::{Instant, Origin};
use crate::name::Name;
use crate::queue::core::{
    Enqueued, Fenced, Job, JobId, JobType, LEASE_EXPIRED, Lease, LeaseToken, Nacked, Payload,
    Queue, QueueConfig,
};
use crate::splitmix::SplitMix64;
use crate::store::StoreError;

/// A conformance case the store failed: which, at which step, and what differed.
#[derive(Debug, thiserror::Error)]
#[error("conformance case `{case}` failed at step {step}: {detail}")]
pub struct Failure {
    /// The case's name (one of [`CASES`]).
    pub case: &'static str,
    /// The command's number within the case (0: making the store).
    pub step: usize,
    /// What the store answered and what was expected.
    pub detail: String,
}

type Script = fn(&mut Pair<'_>) -> Result<(), Failure>;
type Config = fn() -> QueueConfig;

/// The cases: name, configuration, script.
const TABLE: &[(&str, Config, Script)] = &[
    ("enqueue_lease_ack", standard, enqueue_lease_ack),
    ("fencing", standard, fencing),
    ("heartbeat", standard, heartbeat),
    ("coalesce", standard, coalesce),
    ("high_water_mark", standard, high_water_mark),
    ("unique_once", standard, unique_once),
    ("run_at", standard, run_at),
    ("retry_backoff", five_attempts, retry_backoff),
    (
        "dead_letter_and_redrive",
        two_attempts,
        dead_letter_and_redrive,
    ),
    ("expired_last_attempt", one_attempt, expired_last_attempt),
    (
        "redrive_keeps_key_order",
        one_attempt,
        redrive_keeps_key_order,
    ),
    ("nack_superseded", standard, nack_superseded),
    ("expired_with_waiting", standard, expired_with_waiting),
    ("fences_grow", two_attempts, fences_grow),
    ("origin", standard, origin),
    ("differential", three_attempts, differential),
];

/// The names of the cases, in the order [`run`] runs them.
pub const CASES: &[&str] = &[
    "enqueue_lease_ack",
    "fencing",
    "heartbeat",
    "coalesce",
    "high_water_mark",
    "unique_once",
    "run_at",
    "retry_backoff",
    "dead_letter_and_redrive",
    "expired_last_attempt",
    "redrive_keeps_key_order",
    "nack_superseded",
    "expired_with_waiting",
    "fences_grow",
    "origin",
    "differential",
];

/// Runs every case of [`CASES`], each on a store of its own from `make` (given the
/// case's configuration: the store must implement it). Stops at the first failure.
///
/// # Errors
///
/// The [`Failure`] of the first case that failed (a `make` that fails is a failure of
/// that case at step 0).
pub fn run<S: JobStore>(
    mut make: impl FnMut(QueueConfig) -> Result<S, StoreError>,
) -> Result<(), Failure> {
    for name in CASES {
        run_case(name, &mut make)?;
    }
    Ok(())
}

/// Runs the case `name` (one of [`CASES`]) on a store from `make`.
///
/// # Errors
///
/// The case's [`Failure`]; an unknown name is a failure too.
pub fn run_case<S: JobStore>(
    name: &str,
    mut make: impl FnMut(QueueConfig) -> Result<S, StoreError>,
) -> Result<(), Failure> {
    let Some(&(case, config, script)) = TABLE.iter().find(|(n, _, _)| *n == name) else {
        return Err(Failure {
            case: "unknown",
            step: 0,
            detail: format!("no case named `{name}`"),
        });
    };
    let config = config();
    let mut store = make(config).map_err(|e| Failure {
        case,
        step: 0,
        detail: format!("making the store failed: {e}"),
    })?;
    let mut pair = Pair::new(case, config, &mut store);
    script(&mut pair)?;
    pair.observe()
}

fn config(attempts: u32) -> QueueConfig {
    QueueConfig::builder()
        .visibility_timeout(Duration::from_millis(100))
        .attempts_max(attempts)
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .build()
        .unwrap_or_default()
}
fn standard() -> QueueConfig {
    config(5)
}
fn five_attempts() -> QueueConfig {
    config(5)
}
fn three_attempts() -> QueueConfig {
    config(3)
}
fn two_attempts() -> QueueConfig {
    config(2)
}
fn one_attempt() -> QueueConfig {
    config(1)
}

const SYNC: JobType = JobType::from_static("sync");
const MAIL: JobType = JobType::from_static("mail");

fn name(n: u64) -> Name {
    Name::new(&format!("k{n}")).unwrap_or(Name::from_static("k"))
}

fn keyed(k: u64, v: u64) -> Job {
    let payload = Payload::encode(&format!("k{k} v{v}")).unwrap_or_default();
    Job::keyed(SYNC, name(k), v, payload)
}

fn unique(id: u64) -> Job {
    let payload = Payload::encode(&serde_json::json!({"id": id, "to": "a@x"})).unwrap_or_default();
    Job::unique(MAIL, JobId(id), payload)
}

/// The store under test and the model, driven in step.
struct Pair<'s> {
    case: &'static str,
    config: QueueConfig,
    model: Queue,
    store: &'s mut dyn JobStore,
    now: Instant,
    step: usize,
    /// Every lease handed out: the store's, and the model's token for it.
    leases: Vec<(Lease, LeaseToken)>,
    /// The largest fencing token the store handed out.
    fence_high: Option<u64>,
}

impl<'s> Pair<'s> {
    fn new(case: &'static str, config: QueueConfig, store: &'s mut dyn JobStore) -> Self {
        Pair {
            case,
            config,
            model: Queue::new(config),
            store,
            now: Instant::from_millis(1_000),
            step: 0,
            leases: Vec::new(),
            fence_high: None,
        }
    }

    fn fail(&self, detail: impl Into<String>) -> Failure {
        Failure {
            case: self.case,
            step: self.step,
            detail: detail.into(),
        }
    }

    fn ok<T>(&self, what: &str, r: Result<T, StoreError>) -> Result<T, Failure> {
        r.map_err(|e| self.fail(format!("{what}: store error: {e}")))
    }

    fn same<T: PartialEq + Debug>(&self, what: &str, got: T, want: T) -> Result<(), Failure> {
        if got == want {
            Ok(())
        } else {
            Err(self.fail(format!(
                "{what}: the store answered {got:?}, expected {want:?}"
            )))
        }
    }

    fn check(&self, cond: bool, what: impl FnOnce() -> String) -> Result<(), Failure> {
        if cond { Ok(()) } else { Err(self.fail(what())) }
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
    }

    /// Compares the counts, the dead letters and the next due instant; the counts
    /// must balance.
    fn observe(&mut self) -> Result<(), Failure> {
        let counts = self.store.counts();
        let counts = self.ok("counts", counts)?;
        self.same("counts", counts, self.model.counts())?;
        self.check(counts.balanced(), || {
            format!("counts do not balance: {counts:?}")
        })?;
        let dead = self.store.dead_letters();
        let dead = self.ok("dead_letters", dead)?;
        // The attempt history and the redrive count are the sans-IO queue's extras: a
        // store need not keep them (the SQL stores keep the last error only).
        let bare = |mut letters: Vec<crate::queue::core::DeadLetter>| {
            for l in &mut letters {
                l.history.clear();
                l.redrives = 0;
            }
            letters
        };
        self.same(
            "dead_letters",
            bare(dead),
            bare(self.model.dead_letters().to_vec()),
        )?;
        let due = self.store.next_due();
        let due = self.ok("next_due", due)?;
        self.same("next_due", due, self.model.poll_timeout())
    }

    fn enqueue(&mut self, job: Job) -> Result<Enqueued, Failure> {
        self.step += 1;
        let now = self.now;
        let got = self.store.enqueue(job.clone(), now);
        let got = self.ok("enqueue", got)?;
        let want = self.model.enqueue(job.clone(), now);
        self.same(&format!("enqueue {} v{}", job.key, job.version), got, want)?;
        self.observe()?;
        Ok(got)
    }

    /// Leases; returns the lease's index in `leases`.
    fn lease(&mut self) -> Result<Option<usize>, Failure> {
        self.step += 1;
        let now = self.now;
        let got = self.store.lease(now);
        let got = self.ok("lease", got)?;
        let want = self.model.lease(now);
        let out = match (got, want) {
            (None, None) => None,
            (Some(g), Some(w)) => {
                let fence = g.token.fence();
                let high = self.fence_high;
                self.check(high.is_none_or(|h| fence > h), || {
                    format!(
                        "fencing token {fence} handed out after {high:?}: tokens must only grow"
                    )
                })?;
                self.fence_high = Some(fence);
                let view = |l: &Lease| {
                    (
                        l.job.clone(),
                        l.token.key(),
                        l.attempt,
                        l.deadline,
                        l.redriven,
                    )
                };
                self.same(
                    "lease (job, key, attempt, deadline, redriven)",
                    view(&g),
                    view(&w),
                )?;
                self.leases.push((g, w.token));
                Some(self.leases.len() - 1)
            }
            (g, w) => {
                return Err(self.fail(format!(
                    "lease: the store answered {:?}, expected {:?}",
                    g.map(|l| (l.job.key, l.job.version)),
                    w.map(|l| (l.job.key, l.job.version))
                )));
            }
        };
        self.observe()?;
        Ok(out)
    }

    /// The lease `i` must be the one `lease()` returned `Some` for.
    fn leased(&mut self) -> Result<usize, Failure> {
        self.lease()?
            .ok_or_else(|| self.fail("lease: nothing was due, expected a job"))
    }

    fn fenced_same<T: PartialEq + Debug>(
        &self,
        what: &str,
        got: Result<T, Fenced>,
        want: Result<T, Fenced>,
        token: LeaseToken,
    ) -> Result<bool, Failure> {
        match (got, want) {
            (Ok(g), Ok(w)) => self.same(what, g, w).map(|()| true),
            (Err(g), Err(_)) => {
                self.same(
                    &format!("{what}: the refusal"),
                    g,
                    Fenced::new(token.key(), token.fence()),
                )?;
                Ok(false)
            }
            (g, w) => Err(self.fail(format!(
                "{what} of lease {} on {}: the store answered {g:?}, expected {w:?}",
                token.fence(),
                token.key()
            ))),
        }
    }

    fn heartbeat(&mut self, i: usize) -> Result<bool, Failure> {
        self.step += 1;
        let (s, m) = (self.leases[i].0.token, self.leases[i].1);
        let now = self.now;
        let got = self.store.heartbeat(&s, now);
        let got = self.ok("heartbeat", got)?;
        let want = self.model.heartbeat(&m, now);
        let ok = self.fenced_same("heartbeat", got, want, s)?;
        self.observe()?;
        Ok(ok)
    }

    fn ack(&mut self, i: usize) -> Result<bool, Failure> {
        self.step += 1;
        let (s, m) = (self.leases[i].0.token, self.leases[i].1);
        let now = self.now;
        let got = self.store.ack(&s, now);
        let got = self.ok("ack", got)?;
        let want = self.model.ack(&m, now);
        let ok = self.fenced_same("ack", got, want, s)?;
        self.observe()?;
        Ok(ok)
    }

    fn nack(&mut self, i: usize, error: &str) -> Result<Option<Nacked>, Failure> {
        self.step += 1;
        let (lease, m) = (self.leases[i].0.clone(), self.leases[i].1);
        let now = self.now;
        let got = self.store.nack(&lease.token, error, now);
        let got = self.ok("nack", got)?;
        let want = self.model.nack(&m, error, now);
        match (&got, &want) {
            (Ok(Nacked::Retry { at }), Ok(Nacked::Retry { .. })) => {
                let ceiling = self.config.backoff().ceiling(lease.attempt);
                let at = *at;
                self.check(at >= now && at.saturating_since(now) <= ceiling, || {
                    format!(
                        "nack of attempt {}: retry at {:?} after now, outside the full-jitter bounds [0, {ceiling:?}]",
                        lease.attempt,
                        at.saturating_since(now)
                    )
                })?;
                // Steer the model to the store's draw.
                self.model.steer_due(lease.token.key(), at);
            }
            _ => {
                self.fenced_same("nack", got.clone(), want, lease.token)?;
            }
        }
        self.observe()?;
        Ok(got.ok())
    }

    fn redrive(&mut self) -> Result<usize, Failure> {
        self.step += 1;
        let now = self.now;
        let got = self.store.redrive(now);
        let got = self.ok("redrive", got)?;
        let want = self.model.redrive(now);
        self.same("redrive", got, want)?;
        self.observe()?;
        Ok(got)
    }

    fn next_due(&mut self) -> Result<Option<Instant>, Failure> {
        let r = self.store.next_due();
        self.ok("next_due", r)
    }

    fn dead(&mut self) -> Result<Vec<crate::queue::core::DeadLetter>, Failure> {
        let r = self.store.dead_letters();
        self.ok("dead_letters", r)
    }

    fn lease_none(&mut self) -> Result<(), Failure> {
        match self.lease()? {
            None => Ok(()),
            Some(i) => Err(self.fail(format!(
                "lease: handed out {}, expected nothing",
                self.leases[i].0.job.key
            ))),
        }
    }
}

fn enqueue_lease_ack(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    p.enqueue(unique(1))?;
    let a = p.leased()?;
    let b = p.leased()?;
    p.lease_none()?;
    p.check(p.leases[a].0.job.key != p.leases[b].0.job.key, || {
        "one job handed out twice".into()
    })?;
    p.advance(10);
    p.ack(a)?;
    p.ack(b)?;
    p.lease_none()
}

fn fencing(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    let a = p.leased()?;
    p.advance(50);
    p.lease_none()?;
    p.advance(50);
    // The lease expired at its deadline: the job is handed out again.
    let b = p.leased()?;
    p.advance(1);
    let late = [p.ack(a)?, p.heartbeat(a)?, p.nack(a, "late")?.is_some()];
    p.check(late == [false; 3], || {
        format!("the late worker's ack, heartbeat and nack were accepted: {late:?}")
    })?;
    p.ack(b)?;
    // An ack of a lease already acked is refused too.
    p.ack(b)?;
    Ok(())
}

fn heartbeat(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    let a = p.leased()?;
    p.advance(80);
    p.heartbeat(a)?;
    p.advance(70);
    p.lease_none()?;
    p.advance(20);
    p.heartbeat(a)?;
    p.advance(99);
    p.lease_none()?;
    p.ack(a)?;
    p.lease_none()
}

fn coalesce(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    p.enqueue(keyed(1, 2))?;
    p.enqueue(keyed(1, 2))?;
    let a = p.leased()?;
    p.enqueue(keyed(1, 3))?;
    p.enqueue(keyed(1, 4))?;
    p.lease_none()?;
    p.advance(1);
    p.ack(a)?;
    let b = p.leased()?;
    p.enqueue(keyed(1, 5))?;
    p.ack(b)?;
    let c = p.leased()?;
    p.ack(c)?;
    p.lease_none()
}

fn high_water_mark(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 3))?;
    p.enqueue(unique(7))?;
    for _ in 0..2 {
        let a = p.leased()?;
        p.ack(a)?;
    }
    p.advance(10);
    for job in [keyed(1, 1), keyed(1, 3), keyed(1, 2), unique(7)] {
        let e = p.enqueue(job)?;
        p.check(e == Enqueued::Duplicate, || {
            format!("a version or id seen before was accepted again: {e:?}")
        })?;
    }
    p.enqueue(keyed(1, 4))?;
    let a = p.leased()?;
    p.ack(a)?;
    p.enqueue(keyed(1, 4))?;
    Ok(())
}

fn unique_once(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(unique(1))?;
    p.enqueue(unique(2))?;
    p.enqueue(unique(1))?;
    let a = p.leased()?;
    let b = p.leased()?;
    p.enqueue(unique(3))?;
    p.ack(a)?;
    p.enqueue(unique(1))?;
    p.ack(b)?;
    let c = p.leased()?;
    p.ack(c)?;
    p.lease_none()
}

fn run_at(p: &mut Pair<'_>) -> Result<(), Failure> {
    let t0 = p.now;
    p.enqueue(unique(1).run_at(t0 + Duration::from_millis(500)))?;
    p.enqueue(keyed(1, 1))?;
    let a = p.leased()?;
    p.ack(a)?;
    for ms in [1, 250, 248] {
        p.advance(ms);
        p.lease_none()?;
    }
    p.advance(1);
    let b = p.leased()?;
    p.ack(b)?;
    // A run-at in the past is due at once; a newer version behind a lease keeps its
    // own run-at.
    p.enqueue(keyed(2, 1).run_at(t0))?;
    let c = p.leased()?;
    let later = p.now + Duration::from_millis(300);
    p.enqueue(keyed(2, 2).run_at(later))?;
    p.advance(10);
    p.ack(c)?;
    p.advance(289);
    p.lease_none()?;
    p.advance(1);
    let d = p.leased()?;
    p.ack(d)?;
    // Two jobs due at the same instant: the key order decides.
    let at = p.now + Duration::from_millis(5);
    p.enqueue(keyed(4, 1).run_at(at))?;
    p.enqueue(keyed(3, 1).run_at(at))?;
    p.enqueue(unique(9).run_at(at))?;
    p.advance(5);
    for _ in 0..3 {
        let e = p.leased()?;
        p.ack(e)?;
    }
    Ok(())
}

fn retry_backoff(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    p.enqueue(unique(1))?;
    // Ten failed attempts (five of each job), each retry leased at its instant and not
    // a nanosecond before; the last attempts dead-letter.
    for _ in 0..10 {
        if let Some(at) = p.next_due()?
            && at > p.now
        {
            p.now = Instant::from_nanos(at.as_nanos() - 1);
            p.lease_none()?;
            p.now = at;
        }
        let a = p.leased()?;
        let attempt = p.leases[a].0.attempt;
        p.nack(a, &format!("error {attempt}"))?;
    }
    p.lease_none()
}

fn dead_letter_and_redrive(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    p.enqueue(unique(1))?;
    for round in 1..=2 {
        for _ in 0..2 {
            let a = p.leased()?;
            p.nack(a, &format!("down {round}"))?;
        }
        p.advance(40);
    }
    p.lease_none()?;
    let n = p.redrive()?;
    p.check(n == 2, || format!("redrove {n}, expected 2"))?;
    p.redrive()?;
    for _ in 0..2 {
        let a = p.leased()?;
        p.ack(a)?;
    }
    p.lease_none()?;
    let dead = p.dead()?;
    p.check(
        dead.len() == 2 && dead.iter().all(|d| d.redriven_at.is_some()),
        || format!("dead letters are kept, marked redriven: {dead:?}"),
    )
}

fn expired_last_attempt(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    let _a = p.leased()?;
    p.advance(100);
    p.lease_none()?;
    let dead = p.dead()?;
    p.check(
        dead.len() == 1 && dead[0].last_error == LEASE_EXPIRED,
        || format!("an expired last attempt is a dead letter with `{LEASE_EXPIRED}`: {dead:?}"),
    )
}

fn redrive_keeps_key_order(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    p.enqueue(keyed(2, 1))?;
    for _ in 0..2 {
        let a = p.leased()?;
        p.nack(a, "down")?;
    }
    // A newer version of key 1 since: its dead version is superseded, not delivered.
    p.enqueue(keyed(1, 2))?;
    p.redrive()?;
    let a = p.leased()?;
    let b = p.leased()?;
    p.lease_none()?;
    p.ack(a)?;
    p.ack(b)?;
    // A key live again: its dead version waits for nothing, it is superseded.
    p.enqueue(keyed(3, 1))?;
    let c = p.leased()?;
    p.nack(c, "down")?;
    p.redrive()?;
    let d = p.leased()?;
    p.enqueue(keyed(3, 2))?;
    p.nack(d, "down again")?;
    let e = p.leased()?;
    p.ack(e)?;
    p.redrive()?;
    p.lease_none()
}

fn nack_superseded(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    let a = p.leased()?;
    p.enqueue(keyed(1, 2).run_at(p.now + Duration::from_millis(20)))?;
    let n = p.nack(a, "down")?;
    p.check(n == Some(Nacked::Superseded), || {
        format!("a failed version with a newer one waiting is superseded: {n:?}")
    })?;
    p.lease_none()?;
    p.advance(20);
    let b = p.leased()?;
    p.ack(b)?;
    Ok(())
}

fn expired_with_waiting(p: &mut Pair<'_>) -> Result<(), Failure> {
    p.enqueue(keyed(1, 1))?;
    let a = p.leased()?;
    p.enqueue(keyed(1, 2))?;
    p.advance(100);
    // The enqueue after the deadline waits behind the (expired) lease still.
    p.enqueue(keyed(1, 3))?;
    let b = p.leased()?;
    p.ack(a)?;
    p.ack(b)?;
    p.lease_none()
}

fn fences_grow(p: &mut Pair<'_>) -> Result<(), Failure> {
    for k in 0..4 {
        p.enqueue(keyed(k, 1))?;
    }
    for round in 0..30u64 {
        match p.lease()? {
            Some(i) if round % 3 == 0 => {
                p.ack(i)?;
            }
            Some(i) if round % 3 == 1 => {
                p.nack(i, "down")?;
            }
            _ => p.advance(41),
        }
        if round % 7 == 0 {
            p.enqueue(keyed(round % 4, round + 2))?;
        }
    }
    Ok(())
}

fn origin(p: &mut Pair<'_>) -> Result<(), Failure> {
    let wall = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let first = Origin::new(wall, Instant::from_millis(5));
    let later = Origin::new(wall + Duration::from_secs(60), Instant::from_millis(60_005));
    p.step += 1;
    let got = p.store.origin(first);
    let got = p.ok("origin", got)?;
    p.same("origin (the first)", got, first)?;
    p.step += 1;
    let got = p.store.origin(later);
    let got = p.ok("origin", got)?;
    p.same("origin (the first stays)", got, first)
}

/// Seeded random command sequences, compared step by step with the model.
fn differential(p: &mut Pair<'_>) -> Result<(), Failure> {
    for seed in 0..4 {
        differential_seed(p, seed, 150)?;
        // The next seed continues on the same store, later on.
        p.advance(10_000);
    }
    Ok(())
}

fn differential_seed(p: &mut Pair<'_>, seed: u64, steps: usize) -> Result<(), Failure> {
    let mut rng = SplitMix64(0x636f_6e66_6f72_6d00 ^ seed);
    let mut roll = |n: u64| rng.next() % n;
    let mut versions: BTreeMap<u64, u64> = BTreeMap::new();
    let base = 100 * (seed + 1);
    for _ in 0..steps {
        let r = roll(100);
        match r {
            0..=19 => {
                let k = base + roll(3);
                let v = versions.entry(k).or_insert(0);
                // Mostly newer, sometimes a replay or an older one.
                *v = (*v + roll(3)).saturating_sub(roll(2)).max(1);
                let mut job = keyed(k, *v);
                if roll(3) == 0 {
                    job = job.run_at(p.now + Duration::from_millis(roll(300)));
                }
                p.enqueue(job)?;
            }
            20..=27 => {
                let mut job = unique(base + roll(6));
                if roll(4) == 0 {
                    job = job.run_at(p.now + Duration::from_millis(roll(200)));
                }
                p.enqueue(job)?;
            }
            28..=49 => {
                p.lease()?;
            }
            50..=57 if !p.leases.is_empty() => {
                let i = recent(&p.leases, roll(8));
                p.heartbeat(i)?;
            }
            58..=71 if !p.leases.is_empty() => {
                let i = recent(&p.leases, roll(6));
                p.ack(i)?;
            }
            72..=82 if !p.leases.is_empty() => {
                let i = recent(&p.leases, roll(6));
                let e = format!("error {}", roll(5));
                p.nack(i, &e)?;
            }
            83..=85 => {
                p.redrive()?;
            }
            _ => {
                let ms = [1, 5, 20, 40, 99, 100, 150][usize::try_from(roll(7)).unwrap_or(0)];
                p.advance(ms);
            }
        }
    }
    Ok(())
}

/// One of the last few leases (mostly the valid ones, sometimes a stale one).
fn recent(leases: &[(Lease, LeaseToken)], back: u64) -> usize {
    let back = usize::try_from(back).unwrap_or(0);
    leases.len() - 1 - back.min(leases.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::core::{DeadLetter, Flaw, QueueCounts};
    use crate::queue::store::MemoryJobs;

    #[test]
    fn the_memory_store_passes_every_case() {
        assert_eq!(CASES.len(), TABLE.len());
        for (name, (t, _, _)) in CASES.iter().zip(TABLE) {
            assert_eq!(name, t);
        }
        run(|c| Ok(MemoryJobs::new(c))).unwrap();
    }

    fn flawed(flaw: Flaw) -> impl FnMut(QueueConfig) -> Result<MemoryJobs, StoreError> {
        move |c| {
            let mut q = Queue::new(c);
            q.flaw = flaw;
            Ok(MemoryJobs::from_queue(q))
        }
    }

    /// A store that lies in one answer, around a correct one.
    struct Liar {
        inner: MemoryJobs,
        lie: Lie,
        /// The real token of each fence reported under [`Lie::FenceReused`].
        real: Vec<LeaseToken>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Lie {
        /// A duplicate reported as new (the high-water mark forgotten).
        DuplicateAsNew,
        /// A retry due later than the backoff allows.
        BackoffTooLong,
        /// Every lease's fencing token reported as 1.
        FenceReused,
        /// The origin is overwritten by every process.
        OriginOverwritten,
        /// A superseded nack reported as a retry at once.
        SupersededAsRetry,
        /// A coalesced enqueue reported as queued.
        CoalescedAsQueued,
    }

    impl JobStore for Liar {
        fn visibility_timeout(&self) -> std::time::Duration {
            self.inner.visibility_timeout()
        }
        fn origin(&mut self, proposed: Origin) -> Result<Origin, StoreError> {
            let o = self.inner.origin(proposed)?;
            Ok(if self.lie == Lie::OriginOverwritten {
                proposed
            } else {
                o
            })
        }
        fn enqueue(&mut self, job: Job, now: Instant) -> Result<Enqueued, StoreError> {
            let e = self.inner.enqueue(job, now)?;
            Ok(match (self.lie, e) {
                (Lie::DuplicateAsNew, Enqueued::Duplicate) => Enqueued::New,
                (Lie::CoalescedAsQueued, Enqueued::Coalesced) => Enqueued::Queued,
                _ => e,
            })
        }
        fn lease(&mut self, now: Instant) -> Result<Option<Lease>, StoreError> {
            let mut l = self.inner.lease(now)?;
            if self.lie == Lie::FenceReused
                && let Some(l) = l.as_mut()
            {
                self.real.push(l.token);
                l.token = LeaseToken::new(l.token.key(), 1);
            }
            Ok(l)
        }
        fn heartbeat(
            &mut self,
            token: &LeaseToken,
            now: Instant,
        ) -> Result<Result<Instant, Fenced>, StoreError> {
            let t = self.real_token(token);
            self.inner.heartbeat(&t, now)
        }
        fn ack(
            &mut self,
            token: &LeaseToken,
            now: Instant,
        ) -> Result<Result<(), Fenced>, StoreError> {
            let t = self.real_token(token);
            self.inner.ack(&t, now)
        }
        fn nack(
            &mut self,
            token: &LeaseToken,
            error: &str,
            now: Instant,
        ) -> Result<Result<Nacked, Fenced>, StoreError> {
            let t = self.real_token(token);
            let n = self.inner.nack(&t, error, now)?;
            Ok(match (self.lie, &n) {
                (Lie::BackoffTooLong, Ok(Nacked::Retry { at })) => Ok(Nacked::Retry {
                    at: *at + Duration::from_millis(41),
                }),
                (Lie::SupersededAsRetry, Ok(Nacked::Superseded)) => Ok(Nacked::Retry { at: now }),
                _ => n,
            })
        }
        fn redrive(&mut self, now: Instant) -> Result<usize, StoreError> {
            self.inner.redrive(now)
        }
        fn counts(&mut self) -> Result<QueueCounts, StoreError> {
            self.inner.counts()
        }
        fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, StoreError> {
            self.inner.dead_letters()
        }
        fn next_due(&mut self) -> Result<Option<Instant>, StoreError> {
            self.inner.next_due()
        }
    }

    impl Liar {
        fn real_token(&self, token: &LeaseToken) -> LeaseToken {
            if self.lie != Lie::FenceReused {
                return *token;
            }
            self.real
                .iter()
                .rev()
                .find(|t| t.key() == token.key())
                .copied()
                .unwrap_or(*token)
        }
    }

    fn liar(lie: Lie) -> impl FnMut(QueueConfig) -> Result<Liar, StoreError> {
        move |c| {
            Ok(Liar {
                inner: MemoryJobs::new(c),
                lie,
                real: Vec::new(),
            })
        }
    }

    fn caught<S: JobStore>(
        case: &str,
        make: impl FnMut(QueueConfig) -> Result<S, StoreError>,
    ) -> Failure {
        match run_case(case, make) {
            Ok(()) => panic!("case `{case}` passed a broken store"),
            Err(f) => {
                assert_eq!(f.case, case, "{f}");
                f
            }
        }
    }

    /// Every case fails on a store broken in the way it checks.
    #[test]
    fn every_case_catches_a_broken_store() {
        let mut covered = std::collections::BTreeSet::new();
        let flaws = [
            ("enqueue_lease_ack", Flaw::NoLease),
            ("fencing", Flaw::NoFencing),
            ("fencing", Flaw::LeaseNeverExpires),
            ("heartbeat", Flaw::HeartbeatNotExtended),
            ("heartbeat", Flaw::HeartbeatIgnored),
            ("unique_once", Flaw::UniqueCoalesceByType),
            ("run_at", Flaw::RunAtIgnored),
            ("dead_letter_and_redrive", Flaw::DropAfterMaxAttempts),
            ("dead_letter_and_redrive", Flaw::DeadLetterWithoutError),
            ("expired_last_attempt", Flaw::DeadLetterWithoutError),
            ("redrive_keeps_key_order", Flaw::RedriveOutOfOrder),
            ("expired_with_waiting", Flaw::LeaseNeverExpires),
            ("differential", Flaw::RunAtIgnored),
            ("differential", Flaw::NoFencing),
            ("differential", Flaw::EnqueueInOwnTask),
        ];
        for (case, flaw) in flaws {
            let f = caught(case, flawed(flaw));
            println!("{flaw:?}: {f}");
            covered.insert(case);
        }
        let lies = [
            ("high_water_mark", Lie::DuplicateAsNew),
            ("coalesce", Lie::CoalescedAsQueued),
            ("retry_backoff", Lie::BackoffTooLong),
            ("fences_grow", Lie::FenceReused),
            ("origin", Lie::OriginOverwritten),
            ("nack_superseded", Lie::SupersededAsRetry),
        ];
        for (case, lie) in lies {
            let f = caught(case, liar(lie));
            println!("{f}");
            covered.insert(case);
        }
        let missing: Vec<_> = CASES.iter().filter(|c| !covered.contains(*c)).collect();
        assert!(missing.is_empty(), "cases never shown to fail: {missing:?}");
    }
}
