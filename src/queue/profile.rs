//! Profile sync, one use of the generic queue: a profile change must reach every
//! target service at its latest version. A profile's copy at a target is a *keyed* job
//! of type [`SYNC_PROFILE`] ("bring `target` up to `version` of `profile`", key
//! `p{profile}@t{target}`), so a newer version coalesces with an older one still
//! waiting; the targets hold a [`Replica`] that applies only newer versions and refuses
//! deliveries from a lease that was taken over.
//!
//! The simulated queue worlds run this, mixed with unique jobs; so do the
//! `queue_jobs` example and the tokio adapter's tests.
//!
//! ```
//! use faultline::clock::Instant;
//! use faultline::queue::profile::{self, ProfileId, ProfileService, Replica, TargetId};
//! use faultline::queue::{Outbox, Queue, QueueConfig};
//!
//! let mut profiles = ProfileService::new(&[TargetId(0), TargetId(1)]);
//! let mut outbox = Outbox::new();
//! let mut queue = Queue::new(QueueConfig::builder().build()?);
//! let mut replicas = [Replica::new(), Replica::new()];
//! let t = Instant::ZERO;
//!
//! // The profile write and its two jobs, in one step; then the relay moves them.
//! outbox.write(|tx| profiles.update(tx, ProfileId(7)))?;
//! outbox.write(|tx| profiles.update(tx, ProfileId(7)))?; // coalesces in the queue
//! outbox.relay(|job| { queue.enqueue(job, t); true });
//!
//! while let Some(lease) = queue.lease(t) {
//!     let (p, target) = profile::parse(&lease.job.key).ok_or("not a profile sync")?;
//!     replicas[target.0 as usize].apply(p, lease.job.version, lease.token.fence());
//!     queue.ack(&lease.token, t)?;
//! }
//! assert_eq!(replicas[0].version(ProfileId(7)), Some(2));
//! assert_eq!(replicas[1].version(ProfileId(7)), Some(2));
//! assert!(queue.counts().balanced());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::name::Name;
use crate::queue::core::{Applied, Flaw, Job, JobKey, JobType, Payload, Slot, Staging};
use std::collections::BTreeMap;
use std::fmt;

/// The job type of a profile's copy at a target.
pub const SYNC_PROFILE: JobType = JobType::from_static("sync_profile");

/// A user profile's id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ProfileId(pub u64);

/// A target service's id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetId(pub u32);

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The key of `profile`'s copy at `target`: `p{profile}@t{target}`.
pub fn key(profile: ProfileId, target: TargetId) -> JobKey {
    // At most 33 bytes of digits and letters: always a valid name.
    let name =
        Name::new(&format!("p{}@t{}", profile.0, target.0)).unwrap_or(Name::from_static("p?@t?"));
    JobKey::keyed(SYNC_PROFILE, name)
}

/// The profile and target of a [`SYNC_PROFILE`] key; `None` for any other job.
pub fn parse(key: &JobKey) -> Option<(ProfileId, TargetId)> {
    let Slot::Key(name) = key.slot else {
        return None;
    };
    if key.job_type != SYNC_PROFILE {
        return None;
    }
    let (p, t) = name.as_str().strip_prefix('p')?.split_once("@t")?;
    Some((ProfileId(p.parse().ok()?), TargetId(t.parse().ok()?)))
}

/// The job "bring `target` up to `version` of `profile`" (no payload: the target reads
/// the profile at that version, or the job carries it in a payload of your own).
pub fn job(profile: ProfileId, target: TargetId, version: u64) -> Job {
    Job {
        key: key(profile, target),
        version,
        payload: Payload::default(),
        run_at: None,
        target: None,
    }
}

/// The profile service's side: the profiles' versions, and the jobs each update
/// stages (one per target) in the same write.
#[derive(Clone, Debug, Default)]
pub struct ProfileService {
    targets: Vec<TargetId>,
    versions: BTreeMap<ProfileId, u64>,
}

impl ProfileService {
    /// A profile service whose profiles are copied to `targets`.
    pub fn new(targets: &[TargetId]) -> Self {
        ProfileService {
            targets: targets.to_vec(),
            versions: BTreeMap::new(),
        }
    }

    /// Writes a new version of `profile` and stages, in the same write `tx`, one job
    /// per target. Returns the new version (1 for the first write). The version is
    /// written only once every job is staged.
    pub fn update<S: Staging>(&mut self, tx: &mut S, profile: ProfileId) -> Result<u64, S::Error> {
        let v = self.version(profile).unwrap_or(0) + 1;
        for t in &self.targets {
            tx.stage(job(profile, *t, v))?;
        }
        self.versions.insert(profile, v);
        Ok(v)
    }

    /// Writes a new version of `profile` *without* its jobs: the dual write of a
    /// service with no outbox (for the mutant that shows why the outbox exists).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // a hook of the sim feature's mutants
    pub(crate) fn write(&mut self, profile: ProfileId) -> u64 {
        let v = self.versions.entry(profile).or_insert(0);
        *v += 1;
        *v
    }

    /// The targets.
    pub fn targets(&self) -> &[TargetId] {
        &self.targets
    }

    /// The latest version of `profile`.
    pub fn version(&self, profile: ProfileId) -> Option<u64> {
        self.versions.get(&profile).copied()
    }

    /// Every profile and its latest version.
    pub fn versions(&self) -> &BTreeMap<ProfileId, u64> {
        &self.versions
    }
}

/// A target service's copy of the profiles: applies a version only if it holds an
/// older one, and refuses deliveries from a lease that was taken over.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    held: BTreeMap<ProfileId, (u64, u64)>,
    pub(crate) flaw: Option<Flaw>,
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Self {
        Replica::default()
    }

    /// The version of `profile` held, if any.
    pub fn version(&self, profile: ProfileId) -> Option<u64> {
        self.held.get(&profile).map(|h| h.0)
    }

    /// Applies `version` of `profile`, delivered under fencing token `fence`.
    pub fn apply(&mut self, profile: ProfileId, version: u64, fence: u64) -> Applied {
        let (held, seen) = self.held.get(&profile).copied().unwrap_or((0, 0));
        if fence < seen && self.flaw != Some(Flaw::NoVersionCheck) {
            return Applied::Fenced;
        }
        let newer = match self.flaw {
            Some(Flaw::NoVersionCheck) => version != held,
            Some(Flaw::ReapplySameVersion) => version >= held,
            _ => version > held,
        };
        if newer {
            self.held.insert(profile, (version, fence));
            Applied::Applied
        } else {
            self.held.insert(profile, (held, fence.max(seen)));
            Applied::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::core::{JobId, Outbox};

    #[test]
    fn keys_parse_back_and_other_jobs_do_not() {
        let k = key(ProfileId(u64::MAX), TargetId(u32::MAX));
        assert_eq!(parse(&k), Some((ProfileId(u64::MAX), TargetId(u32::MAX))));
        assert_eq!(
            key(ProfileId(1), TargetId(0)).to_string(),
            "sync_profile:p1@t0"
        );
        let other = JobKey::unique(JobType::from_static("x"), JobId(1));
        assert_eq!(parse(&other), None);
    }

    #[test]
    fn an_update_stages_one_job_per_target_in_its_write() {
        let mut s = ProfileService::new(&[TargetId(0), TargetId(1)]);
        let mut o = Outbox::new();
        assert_eq!(o.write(|tx| s.update(tx, ProfileId(3))), Ok(1));
        assert_eq!(o.write(|tx| s.update(tx, ProfileId(3))), Ok(2));
        assert_eq!(o.backlog(), 4);
        let versions: Vec<u64> = o.rows().map(|j| j.version).collect();
        assert_eq!(versions, [1, 1, 2, 2]);
    }

    /// A database transaction of the caller's, as the next issue's SQL outbox will
    /// have: staging inserts a row and may fail; nothing is visible until commit.
    struct Tx {
        rows: Vec<Job>,
        fail_at: usize,
        ids: u64,
    }

    impl Staging for Tx {
        type Error = String;
        fn stage(&mut self, job: Job) -> Result<(), String> {
            if self.rows.len() == self.fail_at {
                return Err("insert into outbox: disk full".into());
            }
            self.rows.push(job);
            Ok(())
        }
        fn next_id(&mut self) -> JobId {
            self.ids += 1;
            JobId(self.ids)
        }
    }

    #[test]
    fn an_update_stages_through_any_transaction_and_writes_nothing_when_staging_fails() {
        let mut s = ProfileService::new(&[TargetId(0), TargetId(1)]);
        let mut tx = Tx {
            rows: Vec::new(),
            fail_at: 1,
            ids: 0,
        };
        assert_eq!(
            s.update(&mut tx, ProfileId(9)),
            Err("insert into outbox: disk full".to_string())
        );
        assert_eq!(s.version(ProfileId(9)), None, "no version without its jobs");
        let mut tx = Tx {
            rows: Vec::new(),
            fail_at: usize::MAX,
            ids: 0,
        };
        assert_eq!(s.update(&mut tx, ProfileId(9)), Ok(1));
        assert_eq!(tx.rows.len(), 2);
        assert_eq!(
            tx.stage_unique(SYNC_PROFILE, Payload::default()),
            Ok(JobId(1))
        );
    }

    #[test]
    fn the_replica_applies_newer_versions_once_and_refuses_old_fences() {
        let mut r = Replica::new();
        assert_eq!(r.apply(ProfileId(1), 2, 5), Applied::Applied);
        assert_eq!(r.apply(ProfileId(1), 2, 6), Applied::Stale);
        assert_eq!(r.apply(ProfileId(1), 1, 7), Applied::Stale);
        assert_eq!(r.apply(ProfileId(1), 3, 4), Applied::Fenced);
        assert_eq!(r.version(ProfileId(1)), Some(2));
    }
}
