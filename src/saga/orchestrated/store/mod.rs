//! Durable storage for the saga log: the [`LogStore`] trait and its implementations,
//! none of which needs tokio (the trait is synchronous; the tokio
#![cfg_attr(
    feature = "tokio",
    doc = "[`SagaRunner`](super::tokio::SagaRunner) calls a store that blocks on a blocking"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "`SagaRunner` calls a store that blocks on a blocking"
)]
//! thread).
//!
//! - [`MemoryLog`]: a shared `Vec`, durable across a dropped handle only.
//! - [`FileLog`]: a JSON-lines file, fsynced on every append.
#![cfg_attr(
    feature = "sqlite",
    doc = "- [`sqlite::SqliteLog`] (feature `sqlite`): one row per record in a SQLite database,"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "- `sqlite::SqliteLog` (feature `sqlite`): one row per record in a SQLite database,"
)]
//!   the embedded default.
#![cfg_attr(
    feature = "postgres",
    doc = "- [`postgres::PostgresLog`] (feature `postgres`): the same on a Postgres server."
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "- `postgres::PostgresLog` (feature `postgres`): the same on a Postgres server."
)]
//! - [`conformance`]: the suite every store must pass (run it against yours).
//!
//! Every store keeps each record as its encoded line of the
//! [versioned format](super::log#the-stored-format), so the format's versioning and
//! migration apply to the databases too.
//!
//! # Compaction
//!
//! A long-lived log would grow forever. [`LogStore::compact`] removes the records of
//! every saga that is *finished* (ended [`Completed`](SagaState::Completed) or
//! [`Compensated`](SagaState::Compensated)) except its `Started` and `Ended` records:
//! that pair is the saga's finished marker, so a coordinator recovered from a compacted
//! log still knows the id (it refuses to start it again) and its payload and end state
//! ([`SagaHistory`] shows those; the per-step detail is gone). Every record of a saga
//! still running, and of one that ended [`Failed`](SagaState::Failed) (a human must
//! look at it), is kept, in order. [`compacted`] is the rule, as a function of the
//! records.
//!
//! # One writer
//!
#![cfg_attr(
    feature = "sqlite",
    doc = "One coordinator appends to a log at a time. [`SqliteLog`](sqlite::SqliteLog) and"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "One coordinator appends to a log at a time. `SqliteLog` and"
)]
#![cfg_attr(
    feature = "postgres",
    doc = "[`PostgresLog`](postgres::PostgresLog) enforce it: opening one takes the log over (an"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "`PostgresLog` enforce it: opening one takes the log over (an"
)]
//! epoch in the database grows by one), and a store opened earlier fails every later
//! append or compaction with [`StoreError::Fenced`] (its runner halts), so two
//! coordinators never drive the same sagas. [`FileLog`] does not detect a second
//! writer: open one file from one process at a time.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::saga::orchestrated::history::SagaHistory;
use crate::saga::orchestrated::log::{LineError, LogRecord};
use crate::saga::services::{Order, Refusal, SagaData, SagaId, SagaState};

pub mod conformance;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a [`LogStore`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the storage failed.
    #[error("saga log i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A complete line of the log could not be read back: the log was damaged (not
    /// merely cut short by a crash), or written by a newer format version
    /// ([`LineError::NewerVersion`]).
    #[error("saga log {} line {line}: {problem}", path.display())]
    Corrupt {
        /// The log's file (for a store that is not a file, what names the store).
        path: PathBuf,
        /// The line, counting from 1 (for a database, the row's sequence number).
        line: usize,
        /// What is wrong with it.
        problem: LineError,
    },
    /// The database failed (SQLite or Postgres), or holds a newer schema.
    #[error("saga log: {0}")]
    Database(#[from] crate::store::StoreError),
    /// Another coordinator opened this log since this store did (see [one
    /// writer](self#one-writer)): nothing was written.
    #[error(
        "saga log taken over: this store holds epoch {held}, the log is at epoch {current} (another coordinator opened it)"
    )]
    Fenced {
        /// The epoch this store took when it was opened.
        held: i64,
        /// The log's epoch now.
        current: i64,
    },
}

/// Durable storage for the saga log of a definition with payload `P` and refusal `R`.
///
/// `append` must make the record durable before it returns (the runner performs the
/// next output only then); `load` returns every record appended so far, in order (after
/// a [`compact`](LogStore::compact), the records it kept, in order).
pub trait LogStore<P = Order, R = Refusal>: Send {
    /// Makes `record` durable at the end of the log.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the record may not be durable; the runner then halts.
    fn append(&mut self, record: &LogRecord<P, R>) -> Result<(), StoreError>;

    /// Every durable record, in the order appended.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the log cannot be read.
    fn load(&mut self) -> Result<Vec<LogRecord<P, R>>, StoreError>;

    /// The history of `saga` from the durable records ([`SagaHistory::of`]): `None`
    /// if the log does not know it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the log cannot be read.
    fn history(&mut self, saga: SagaId) -> Result<Option<SagaHistory<P, R>>, StoreError>
    where
        P: SagaData,
        R: SagaData,
    {
        Ok(SagaHistory::of(saga, &self.load()?))
    }

    /// Removes the records of finished sagas but their finished markers (see
    /// [compaction](self#compaction)), atomically: a crash leaves the log as it was or
    /// compacted. Returns how many records it removed. The default removes nothing (a
    /// store that cannot compact keeps everything).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the log cannot be read or rewritten; it is then unchanged.
    fn compact(&mut self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Whether a call may block its thread (on a disk or a network). The tokio runner
    /// calls a store that blocks on a blocking thread, never on the runtime's own, and
    /// one that does not ([`MemoryLog`]) inline. True unless a store says otherwise.
    fn blocks(&self) -> bool {
        true
    }
}

/// True for a saga state that compaction may reduce to its finished marker.
fn finished(state: SagaState) -> bool {
    matches!(state, SagaState::Completed | SagaState::Compensated)
}

/// The records [`LogStore::compact`] keeps, in order: every record of a saga not
/// finished, and the `Started` and `Ended` records of one that is (see
/// [compaction](self#compaction)).
pub fn compacted<P: Clone, R: Clone>(records: &[LogRecord<P, R>]) -> Vec<LogRecord<P, R>> {
    let done: BTreeSet<SagaId> = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Ended { saga, state } if finished(*state) => Some(*saga),
            _ => None,
        })
        .collect();
    records
        .iter()
        .filter(|r| {
            matches!(r, LogRecord::Started { .. } | LogRecord::Ended { .. })
                || !done.contains(&r.saga())
        })
        .cloned()
        .collect()
}

/// The record's kind as the databases store it (the line format's `type`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn kind<P, R>(record: &LogRecord<P, R>) -> &'static str {
    match record {
        LogRecord::Started { .. } => "started",
        LogRecord::StepIntent { .. } => "step_intent",
        LogRecord::StepOutcome { .. } => "step_outcome",
        LogRecord::CompensationIntent { .. } => "compensation_intent",
        LogRecord::CompensationDone { .. } => "compensation_done",
        LogRecord::Ended { .. } => "ended",
    }
}

/// Whether the record is the `Ended` of a finished saga (the databases' `finished`
/// column, which compaction selects on).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn ends_finished<P, R>(record: &LogRecord<P, R>) -> bool {
    matches!(record, LogRecord::Ended { state, .. } if finished(*state))
}

/// A saga id as a database's signed 64-bit column holds it (the same bits).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn saga_column(saga: SagaId) -> i64 {
    i64::from_ne_bytes(saga.0.to_ne_bytes())
}

/// An in-memory log: a shared `Vec`. Clones are handles to the same records, so a test
/// can drop a runner and build another over the same log (a process restart in which
/// the log survives).
#[derive(Debug)]
pub struct MemoryLog<P = Order, R = Refusal> {
    records: Arc<Mutex<Vec<LogRecord<P, R>>>>,
}

impl<P, R> Clone for MemoryLog<P, R> {
    fn clone(&self) -> Self {
        MemoryLog {
            records: Arc::clone(&self.records),
        }
    }
}

impl<P, R> Default for MemoryLog<P, R> {
    fn default() -> Self {
        MemoryLog {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<P: SagaData, R: SagaData> MemoryLog<P, R> {
    /// An empty log.
    pub fn new() -> Self {
        MemoryLog::default()
    }

    /// A copy of the records so far.
    pub fn records(&self) -> Vec<LogRecord<P, R>> {
        lock(&self.records).clone()
    }

    /// How many records were appended.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// True when no record was appended.
    pub fn is_empty(&self) -> bool {
        lock(&self.records).is_empty()
    }
}

impl<P: SagaData, R: SagaData> LogStore<P, R> for MemoryLog<P, R> {
    fn append(&mut self, record: &LogRecord<P, R>) -> Result<(), StoreError> {
        lock(&self.records).push(record.clone());
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<LogRecord<P, R>>, StoreError> {
        Ok(self.records())
    }

    fn compact(&mut self) -> Result<usize, StoreError> {
        let mut records = lock(&self.records);
        let kept = compacted(&records);
        let removed = records.len() - kept.len();
        *records = kept;
        Ok(removed)
    }

    fn blocks(&self) -> bool {
        false
    }
}

/// An append-only JSON-lines file, one record per line in the
/// [versioned format](crate::saga::orchestrated::log#the-stored-format), synced
/// ([`File::sync_data`]) on every append. It reads lines of every earlier format
/// version (a file begun by an older faultline is read and appended to as it is) and
/// refuses lines of a newer one ([`LineError::NewerVersion`]).
///
/// A crash in the middle of an append leaves an incomplete last line (no newline): it
/// is ignored (the record was never durable, so nothing was done after it) and cut off
/// by [`open`](FileLog::open) so that later appends start on a fresh line. A complete
/// line that cannot be read is [`StoreError::Corrupt`], naming the file and line.
///
/// [`compact`](LogStore::compact) writes the kept records (as lines of the current
/// version) to a temporary file beside it (`<path>.compact`), syncs it, renames it over
/// the log and syncs the directory: a crash leaves the old log or the new one whole.
///
/// The file holds one definition's records: `P` and `R` are its payload and refusal
/// types (the checkout's by default), which every line must read as. One process
/// appends to it at a time (not detected: see [one writer](self#one-writer)).
#[derive(Debug)]
pub struct FileLog<P = Order, R = Refusal> {
    path: PathBuf,
    file: File,
    records: PhantomData<fn() -> (P, R)>,
}

impl<P: SagaData, R: SagaData> FileLog<P, R> {
    /// Opens the log at `path`, creating it if missing, after checking its records.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the file cannot be opened, read or truncated;
    /// [`StoreError::Corrupt`] for a complete line that is not a record (or is of a
    /// newer format version).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut file = open_append(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (_, complete) = parse_lines::<P, R>(&path, &bytes)?;
        if complete < bytes.len() {
            // Cut the torn tail off, so the next append starts on its own line.
            file.set_len(u64::try_from(complete).unwrap_or(u64::MAX))?;
            file.sync_data()?;
        }
        Ok(FileLog {
            path,
            file,
            records: PhantomData,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file a compaction writes before renaming it over the log.
    fn compact_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".compact");
        PathBuf::from(name)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

impl<P: SagaData, R: SagaData> LogStore<P, R> for FileLog<P, R> {
    fn append(&mut self, record: &LogRecord<P, R>) -> Result<(), StoreError> {
        let mut line = record.encode_line();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<LogRecord<P, R>>, StoreError> {
        let bytes = std::fs::read(&self.path)?;
        Ok(parse_lines(&self.path, &bytes)?.0)
    }

    fn compact(&mut self) -> Result<usize, StoreError> {
        let records = self.load()?;
        let kept = compacted(&records);
        let removed = records.len() - kept.len();
        if removed == 0 {
            return Ok(0);
        }
        let temp = self.compact_path();
        let mut text = String::new();
        for record in &kept {
            text.push_str(&record.encode_line());
            text.push('\n');
        }
        // The handle appends go through once the new file is in place: opened before
        // the rename, so that nothing can fail between the rename and the swap.
        let mut file = open_append(&temp)?;
        file.set_len(0)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &self.path)?;
        self.file = file;
        // The rename is durable once the directory is.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(dir)?.sync_all()?;
        Ok(removed)
    }
}

/// The records of the complete lines of `bytes`, and the length of those lines (an
/// incomplete last line, without its newline, is left out).
#[allow(clippy::type_complexity)]
fn parse_lines<P: SagaData, R: SagaData>(
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<LogRecord<P, R>>, usize), StoreError> {
    let (records, tail) =
        crate::saga::orchestrated::log::decode_log(bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            line: e.line,
            problem: e.problem,
        })?;
    Ok((records, tail.complete))
}
