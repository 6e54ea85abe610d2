//! The conformance suite of [`LogStore`]: what every saga log must do, checked from
//! what the store gives back (its loads, its histories, what a coordinator recovers
//! from it), never from what it says about itself. Run it against your own store:
//!
//! ```
//! use faultline::saga::orchestrated::store::{MemoryLog, conformance};
//!
//! conformance::run(
//!     || Ok(MemoryLog::new()),
//!     // "Drop the store and open it again from where it keeps its records": a
//!     // memory log survives as long as a handle does.
//!     |store: MemoryLog| Ok(store.clone()),
//! )
//! .unwrap();
//! ```
//!
//! The cases, in order (each [`Failure`] names its case):
//!
//! - `empty`: a fresh store loads nothing and knows no saga;
//! - `append_load_order`: every kind of record, of several sagas interleaved, loads back
//!   as appended, in order (saga ids up to `u64::MAX`);
//! - `durable_across_reopen`: a store dropped and reopened loads the same records;
//! - `history`: [`LogStore::history`] is the history of the records, per saga;
//! - `compaction_drops_finished`: [`LogStore::compact`] keeps exactly [`compacted`]'s
//!   records, in order (a completed and a compensated saga reduced to their finished
//!   markers) and says how many it removed;
//! - `compaction_keeps_running`: every record of a running and of a failed saga is kept,
//!   and a coordinator recovered from the compacted log decides exactly as one
//!   recovered from the whole log (same states, same resends) and still refuses the
//!   finished ids;
//! - `compaction_durable`: the compacted log survives a reopen;
//! - `append_after_compaction`: a record appended after compaction loads back at the end,
//!   across a reopen; compacting again removes what became finished, and nothing
//!   twice.
//!
//! [`file_torn_tail`] adds the torn-tail case for a store kept in a file.

use std::path::Path;

use super::{LogStore, StoreError, compacted};
use crate::clock::Instant;
use crate::saga::orchestrated::config::SagaConfig;
use crate::saga::orchestrated::core::{Orchestrator, Output};
use crate::saga::orchestrated::history::SagaHistory;
use crate::saga::orchestrated::log::LogRecord;
use crate::saga::services::{Order, Refusal, SagaId, SagaState, StepId};

/// A case of the suite failed.
#[derive(Debug, thiserror::Error)]
#[error("saga log conformance case `{case}` failed: {detail}")]
pub struct Failure {
    /// The case.
    pub case: &'static str,
    /// What went wrong.
    pub detail: String,
}

fn fail(case: &'static str, detail: impl Into<String>) -> Failure {
    Failure {
        case,
        detail: detail.into(),
    }
}

fn store<T>(case: &'static str, what: &str, r: Result<T, StoreError>) -> Result<T, Failure> {
    r.map_err(|e| fail(case, format!("{what} failed: {e}")))
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(
    case: &'static str,
    what: &str,
    got: &T,
    want: &T,
) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(fail(
            case,
            format!("{what}: got\n  {got:?}\nwant\n  {want:?}"),
        ))
    }
}

const ORDER: Order = Order {
    item: 1,
    qty: 2,
    amount: 500,
};

/// The sagas of the suite: 1 completed, 2 compensated, 3 running (its payment intent
/// in flight), 4 failed, `u64::MAX` running (its first intent in flight).
const DONE: SagaId = SagaId(1);
const UNDONE: SagaId = SagaId(2);
const RUNNING: SagaId = SagaId(3);
const FAILED: SagaId = SagaId(4);
const LAST: SagaId = SagaId(u64::MAX);

fn intent(saga: SagaId, step: StepId, attempt: u32) -> LogRecord {
    LogRecord::StepIntent {
        saga,
        step,
        attempt,
    }
}

fn outcome(saga: SagaId, step: StepId, ok: bool, refusal: Option<Refusal>) -> LogRecord {
    LogRecord::StepOutcome {
        saga,
        step,
        ok,
        refusal,
    }
}

fn started(saga: SagaId, amount: u64) -> LogRecord {
    LogRecord::Started {
        saga,
        payload: Order { amount, ..ORDER },
    }
}

/// The records of the suite, the sagas interleaved as a live coordinator writes them.
fn records() -> Vec<LogRecord> {
    use StepId as S;
    vec![
        started(DONE, 100),
        intent(DONE, S::ORDER, 1),
        started(UNDONE, 200),
        intent(UNDONE, S::ORDER, 1),
        outcome(DONE, S::ORDER, true, None),
        intent(DONE, S::INVENTORY, 1),
        started(RUNNING, 300),
        outcome(UNDONE, S::ORDER, true, None),
        intent(RUNNING, S::ORDER, 1),
        intent(UNDONE, S::INVENTORY, 1),
        outcome(DONE, S::INVENTORY, true, None),
        outcome(UNDONE, S::INVENTORY, false, Some(Refusal::OutOfStock)),
        intent(DONE, S::PAYMENT, 1),
        LogRecord::CompensationIntent {
            saga: UNDONE,
            step: S::ORDER,
            attempt: 1,
        },
        outcome(RUNNING, S::ORDER, true, None),
        started(FAILED, 400),
        intent(FAILED, S::ORDER, 1),
        outcome(DONE, S::PAYMENT, true, None),
        LogRecord::Ended {
            saga: DONE,
            state: SagaState::Completed,
        },
        LogRecord::CompensationDone {
            saga: UNDONE,
            step: S::ORDER,
        },
        intent(RUNNING, S::INVENTORY, 1),
        LogRecord::Ended {
            saga: UNDONE,
            state: SagaState::Compensated,
        },
        outcome(FAILED, S::ORDER, true, None),
        intent(FAILED, S::INVENTORY, 1),
        outcome(RUNNING, S::INVENTORY, true, None),
        outcome(FAILED, S::INVENTORY, false, Some(Refusal::OutOfStock)),
        LogRecord::CompensationIntent {
            saga: FAILED,
            step: S::ORDER,
            attempt: 1,
        },
        LogRecord::CompensationIntent {
            saga: FAILED,
            step: S::ORDER,
            attempt: 2,
        },
        started(LAST, 500),
        intent(RUNNING, S::PAYMENT, 2),
        LogRecord::Ended {
            saga: FAILED,
            state: SagaState::Failed,
        },
        intent(LAST, S::ORDER, 1),
    ]
}

/// What a coordinator recovered from `records` decides: every saga's state, and the
/// outputs of the recovery (the resends), in order.
#[allow(clippy::type_complexity)]
fn recovery(records: &[LogRecord]) -> (Vec<(SagaId, SagaState)>, Vec<Output>) {
    let mut orch = Orchestrator::recover(SagaConfig::default(), records, Instant::ZERO);
    let mut outputs = Vec::new();
    while let Some(o) = orch.poll_output() {
        outputs.push(o);
    }
    (orch.sagas().collect(), outputs)
}

/// Runs the suite: `fresh` makes an empty store (each call a store of its own: a new
/// file, a new database), `reopen` drops a store and opens it again from where it keeps
/// its records (the path, the URL) as a restarted process would.
///
/// # Errors
///
/// The first [`Failure`], naming its case.
pub fn run<S, F, G>(mut fresh: F, mut reopen: G) -> Result<(), Failure>
where
    S: LogStore<Order, Refusal>,
    F: FnMut() -> Result<S, StoreError>,
    G: FnMut(S) -> Result<S, StoreError>,
{
    let all = records();

    let case = "empty";
    let mut s = store(case, "making a fresh store", fresh())?;
    expect_eq(case, "load", &store(case, "load", s.load())?, &Vec::new())?;
    expect_eq(
        case,
        "history",
        &store(case, "history", s.history(DONE))?,
        &None,
    )?;

    let case = "append_load_order";
    for (i, record) in all.iter().enumerate() {
        store(case, &format!("append #{i} {record:?}"), s.append(record))?;
    }
    expect_eq(case, "load", &store(case, "load", s.load())?, &all)?;

    let case = "durable_across_reopen";
    s = store(case, "reopen", reopen(s))?;
    expect_eq(
        case,
        "load after reopen",
        &store(case, "load", s.load())?,
        &all,
    )?;

    let case = "history";
    for saga in [DONE, UNDONE, RUNNING, FAILED, LAST, SagaId(99)] {
        expect_eq(
            case,
            &format!("history of {saga}"),
            &store(case, "history", s.history(saga))?,
            &SagaHistory::of(saga, &all),
        )?;
    }

    let case = "compaction_drops_finished";
    let kept = compacted(&all);
    let removed = store(case, "compact", s.compact())?;
    let loaded = store(case, "load after compact", s.load())?;
    expect_eq(case, "records kept", &loaded, &kept)?;
    expect_eq(case, "records removed", &removed, &(all.len() - kept.len()))?;
    for saga in [DONE, UNDONE] {
        let markers = loaded.iter().filter(|r| r.saga() == saga).count();
        expect_eq(
            case,
            &format!("records left of finished {saga}"),
            &markers,
            &2,
        )?;
    }

    let case = "compaction_keeps_running";
    for saga in [RUNNING, FAILED, LAST] {
        let before: Vec<_> = all.iter().filter(|r| r.saga() == saga).collect();
        let after: Vec<_> = loaded.iter().filter(|r| r.saga() == saga).collect();
        expect_eq(case, &format!("records of {saga}"), &after, &before)?;
    }
    expect_eq(
        case,
        "recovery from the compacted log (states, resends)",
        &recovery(&loaded),
        &recovery(&all),
    )?;
    let mut orch = Orchestrator::recover(SagaConfig::default(), &loaded, Instant::ZERO);
    for saga in [DONE, UNDONE] {
        if orch.start(saga, ORDER, Instant::ZERO) {
            return Err(fail(
                case,
                format!(
                    "a coordinator recovered from the compacted log started the finished {saga} again"
                ),
            ));
        }
    }
    for saga in [DONE, UNDONE] {
        let h = store(case, "history", s.history(saga))?;
        let want = SagaHistory::of(saga, &all).map(|h| (h.payload, h.state));
        expect_eq(
            case,
            &format!("payload and end state of finished {saga}"),
            &h.map(|h| (h.payload, h.state)),
            &want,
        )?;
    }

    let case = "compaction_durable";
    s = store(case, "reopen", reopen(s))?;
    expect_eq(
        case,
        "load after reopen",
        &store(case, "load", s.load())?,
        &kept,
    )?;

    let case = "append_after_compaction";
    let more = [
        outcome(RUNNING, StepId::PAYMENT, true, None),
        LogRecord::Ended {
            saga: RUNNING,
            state: SagaState::Completed,
        },
    ];
    for record in &more {
        store(case, "append", s.append(record))?;
    }
    let mut want = kept.clone();
    want.extend(more.iter().cloned());
    s = store(case, "reopen", reopen(s))?;
    expect_eq(
        case,
        "load after reopen",
        &store(case, "load", s.load())?,
        &want,
    )?;
    let removed = store(case, "second compact", s.compact())?;
    let again = compacted(&want);
    expect_eq(
        case,
        "second compaction removed",
        &removed,
        &(want.len() - again.len()),
    )?;
    expect_eq(
        case,
        "records after second compaction",
        &store(case, "load", s.load())?,
        &again,
    )?;
    let removed = store(case, "third compact", s.compact())?;
    expect_eq(case, "third compaction removed", &removed, &0)?;
    s = store(case, "reopen", reopen(s))?;
    expect_eq(
        case,
        "load after reopen",
        &store(case, "load", s.load())?,
        &again,
    )?;
    drop(s);
    Ok(())
}

/// The torn-tail case for a log kept in a file (such as [`FileLog`](super::FileLog)):
/// `open` opens the store at `path`. A crash in the middle of an append leaves an
/// incomplete last line: the store must load the complete records before it, and a
/// record appended after it must load back whole, across a reopen.
///
/// # Errors
///
/// A [`Failure`] of the case `torn_tail`.
pub fn file_torn_tail<S, F>(path: &Path, mut open: F) -> Result<(), Failure>
where
    S: LogStore<Order, Refusal>,
    F: FnMut(&Path) -> Result<S, StoreError>,
{
    let case = "torn_tail";
    let all = records();
    let mut s = store(case, "open", open(path))?;
    for record in &all[..5] {
        store(case, "append", s.append(record))?;
    }
    drop(s);
    let torn = all[5].encode_line();
    let half = &torn.as_bytes()[..torn.len() / 2];
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| fail(case, format!("opening the file to tear it: {e}")))?;
        file.write_all(half)
            .map_err(|e| fail(case, format!("tearing the file: {e}")))?;
    }
    let mut s = store(case, "open after a torn append", open(path))?;
    expect_eq(
        case,
        "load after a torn append",
        &store(case, "load", s.load())?,
        &all[..5].to_vec(),
    )?;
    store(case, "append after a torn tail", s.append(&all[5]))?;
    drop(s);
    let mut s = store(case, "reopen", open(path))?;
    expect_eq(
        case,
        "load after reopen",
        &store(case, "load", s.load())?,
        &all[..6].to_vec(),
    )?;
    Ok(())
}
