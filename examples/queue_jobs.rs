//! Jobs of two types through one queue, with an outbox that joins the caller's write.
//!
//! ```sh
//! cargo run --example queue_jobs
//! ```
//!
//! A user service signs users up and renames them. Each write stages its jobs in the
//! same step ([`Outbox::write`]): a signup stages a **"sync_profile"** job (keyed by the
//! user: the CRM only needs the latest version, so a rename coalesces with a sync still
//! waiting) and a **"send_welcome_email"** job (unique: each one is sent once, however
//! often it is delivered, because the mailer dedupes by job key and fence with an
//! [`Inbox`]). A relay moves the committed jobs into a [`SharedQueue`]; a
//! [`WorkerPool`] delivers them with one handler that matches on the job type.
//!
//! The mailer loses the acknowledgement of its first send (the mail went out, the
//! worker saw an error), so that job is delivered again and the inbox keeps it to one
//! mail; one address bounces every time, so its job ends in the dead-letter queue with
//! the mailer's error as its last error. A signup whose own write fails stages nothing.
//!
//! `tests/sim/queue_jobs.rs` runs [`demo`] on tokio's paused clock and checks all of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use faultline::name::Name;
use faultline::queue::tokio::{PoolConfig, SharedQueue, WorkerPool};
use faultline::queue::{
    Applied, DeadLetter, Inbox, Job, JobKey, JobType, Lease, Outbox, Payload, QueueConfig,
};
use serde::{Deserialize, Serialize};

/// Keyed by user: the CRM's copy of the profile, latest version wins.
pub const SYNC_PROFILE: JobType = JobType::from_static("sync_profile");
/// Unique: one welcome email per signup.
pub const WELCOME_EMAIL: JobType = JobType::from_static("send_welcome_email");

/// The payload of a profile sync: the profile as of its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The user's display name.
    pub name: String,
    /// The user's address.
    pub email: String,
}

/// The payload of a welcome email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Where to send it.
    pub address: String,
    /// Whom to greet.
    pub name: String,
}

/// The CRM: a copy of each profile, applied only when newer, refusing a delivery from
/// a lease that was taken over.
#[derive(Debug, Default)]
pub struct Crm {
    /// user key -> (version, fence, profile).
    pub copies: BTreeMap<String, (u64, u64, Profile)>,
}

impl Crm {
    fn apply(&mut self, key: &str, version: u64, fence: u64, profile: Profile) -> Applied {
        match self.copies.get(key) {
            Some((_, seen, _)) if fence < *seen => Applied::Fenced,
            Some((held, _, _)) if version <= *held => Applied::Stale,
            _ => {
                self.copies
                    .insert(key.to_owned(), (version, fence, profile));
                Applied::Applied
            }
        }
    }
}

/// The mailer: sends each welcome email once (its inbox dedupes by job and fence).
#[derive(Debug, Default)]
pub struct Mailer {
    inbox: Inbox,
    /// Every mail that went out, in order.
    pub sent: Vec<Welcome>,
    /// Deliveries to a good address (redeliveries included).
    pub deliveries: u32,
    /// The next send loses its acknowledgement (the mail goes out; the worker sees an
    /// error and the job is retried).
    pub lose_next_ack: bool,
}

/// The mailer's answer for an address that bounces.
pub const BOUNCED: &str = "550 mailbox unavailable";

impl Mailer {
    fn send(&mut self, key: JobKey, fence: u64, mail: Welcome) -> Result<(), String> {
        if mail.address.starts_with("bounce@") {
            return Err(BOUNCED.to_owned());
        }
        self.deliveries += 1;
        match self.inbox.apply(key, fence) {
            Applied::Applied => self.sent.push(mail),
            Applied::Stale => {} // sent before: acknowledge, send nothing
            Applied::Fenced => return Err("a newer lease holds this job".to_owned()),
        }
        if std::mem::take(&mut self.lose_next_ack) {
            return Err("connection reset after DATA".to_owned());
        }
        Ok(())
    }
}

/// Why a write was refused (the caller's own write failed).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// The user service: its users table and its outbox, written together.
#[derive(Debug, Default)]
pub struct Users {
    /// user key -> (version, profile).
    pub rows: BTreeMap<String, (u64, Profile)>,
    /// The outbox its writes stage jobs in.
    pub outbox: Outbox,
}

impl Users {
    /// Signs a user up: the row, its profile sync and its welcome email, in one write.
    pub fn sign_up(&mut self, key: &str, profile: Profile) -> Result<(), Refused> {
        let rows = &mut self.rows;
        self.outbox.write(|tx| {
            let name = Name::new(key).map_err(|e| Refused(e.to_string()))?;
            let welcome = Welcome {
                address: profile.email.clone(),
                name: profile.name.clone(),
            };
            tx.stage(Job::keyed(SYNC_PROFILE, name, 1, encode(&profile)?));
            tx.stage_unique(WELCOME_EMAIL, encode(&welcome)?);
            // The caller's own change, last: a constraint it violates fails the whole
            // write, and the staged jobs are discarded with it.
            if !profile.email.contains('@') || rows.contains_key(key) {
                return Err(Refused(format!("invalid signup for {key}")));
            }
            rows.insert(key.to_owned(), (1, profile));
            Ok(())
        })
    }

    /// Renames a user: a new version of the row and its profile sync.
    pub fn rename(&mut self, key: &str, name: &str) -> Result<(), Refused> {
        let rows = &mut self.rows;
        self.outbox.write(|tx| {
            let (version, profile) = rows
                .get(key)
                .cloned()
                .ok_or_else(|| Refused(format!("no user {key}")))?;
            let profile = Profile {
                name: name.to_owned(),
                ..profile
            };
            let key_name = Name::new(key).map_err(|e| Refused(e.to_string()))?;
            tx.stage(Job::keyed(
                SYNC_PROFILE,
                key_name,
                version + 1,
                encode(&profile)?,
            ));
            rows.insert(key.to_owned(), (version + 1, profile));
            Ok(())
        })
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Payload, Refused> {
    Payload::encode(value).map_err(|e| Refused(e.to_string()))
}

/// What [`demo`] ends with.
#[derive(Debug)]
pub struct Outcome {
    /// The users table.
    pub users: BTreeMap<String, (u64, Profile)>,
    /// The CRM's copies.
    pub crm: Crm,
    /// The mails sent.
    pub sent: Vec<Welcome>,
    /// Deliveries to a good address the mailer saw (redeliveries included).
    pub mail_deliveries: u32,
    /// The queue's dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Whether the failed signup staged anything.
    pub refused_signup_staged: usize,
}

/// Delivers one lease: one handler, matching on the job type.
async fn deliver(lease: Lease, crm: &Mutex<Crm>, mailer: &Mutex<Mailer>) -> Result<(), String> {
    // A network call in real life.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fence = lease.token.fence();
    let job = lease.job;
    match job.job_type() {
        t if t == SYNC_PROFILE => {
            let profile: Profile = job.payload.decode().map_err(|e| e.to_string())?;
            let key = job.key.key().map(|k| k.to_string()).unwrap_or_default();
            let mut crm = crm.lock().unwrap_or_else(PoisonError::into_inner);
            match crm.apply(&key, job.version, fence, profile) {
                Applied::Applied | Applied::Stale => Ok(()),
                Applied::Fenced => Err("a newer lease holds this profile".to_owned()),
            }
        }
        t if t == WELCOME_EMAIL => {
            let mail: Welcome = job.payload.decode().map_err(|e| e.to_string())?;
            let mut mailer = mailer.lock().unwrap_or_else(PoisonError::into_inner);
            mailer.send(job.key, fence, mail)
        }
        other => Err(format!("no handler for job type {other}")),
    }
}

/// Signs up three users (one bounces), renames one twice, tries a signup that fails,
/// and delivers everything through a pool of two workers.
pub async fn demo() -> Result<Outcome, Box<dyn std::error::Error>> {
    let config = QueueConfig::builder()
        .visibility_timeout(Duration::from_secs(5))
        .attempts_max(3)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()?;
    let queue = SharedQueue::new(config);
    let crm = Arc::new(Mutex::new(Crm::default()));
    let mailer = Arc::new(Mutex::new(Mailer {
        lose_next_ack: true,
        ..Mailer::default()
    }));
    let pool = WorkerPool::spawn(
        &queue,
        PoolConfig::builder()
            .workers(2)
            .poll_interval(Duration::from_millis(100))
            .build()?,
        {
            let (crm, mailer) = (Arc::clone(&crm), Arc::clone(&mailer));
            move |lease| {
                let (crm, mailer) = (Arc::clone(&crm), Arc::clone(&mailer));
                async move { deliver(lease, &crm, &mailer).await }
            }
        },
    )?;

    let mut users = Users::default();
    let profile = |name: &str, email: &str| Profile {
        name: name.to_owned(),
        email: email.to_owned(),
    };
    users.sign_up("ada", profile("Ada", "ada@example.com"))?;
    users.sign_up("grace", profile("Grace", "grace@example.com"))?;
    users.sign_up("eve", profile("Eve", "bounce@example.com"))?;
    let before = users.outbox.backlog();
    let refused = users.sign_up("mallory", profile("Mallory", "not-an-address"));
    let refused_signup_staged = users.outbox.backlog() - before;
    if refused.is_ok() {
        return Err("the signup with an invalid address was accepted".into());
    }
    users.rename("ada", "Ada Lovelace")?;
    users.rename("ada", "Ada King")?;
    queue.relay(&mut users.outbox);

    queue.settled().await;
    pool.shutdown().await;
    let crm = std::mem::take(&mut *crm.lock().unwrap_or_else(PoisonError::into_inner));
    let mailer = std::mem::take(&mut *mailer.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Outcome {
        users: users.rows,
        crm,
        sent: mailer.sent,
        mail_deliveries: mailer.deliveries,
        dead_letters: queue.dead_letters(),
        refused_signup_staged,
    })
}

#[allow(dead_code)] // run by `cargo run --example`; the test includes this file too
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let out = runtime.block_on(demo())?;
    for (key, (version, _fence, profile)) in &out.crm.copies {
        println!("crm: {key} at version {version}: {profile:?}");
    }
    for mail in &out.sent {
        println!("mailer: sent a welcome to {} <{}>", mail.name, mail.address);
    }
    for letter in &out.dead_letters {
        println!(
            "dead letter: {} after {} attempts, last error: {}",
            letter.job.key, letter.attempts, letter.last_error
        );
    }
    println!(
        "the refused signup staged {} jobs",
        out.refused_signup_staged
    );
    Ok(())
}
