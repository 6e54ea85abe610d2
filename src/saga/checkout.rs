//! What the saga worlds share to check `saga.settling` and to measure latency: when
//! each saga checked out and came to rest, the fault windows, and the spans each saga
//! spent queueing behind other sagas (for the disk, or on the bus).

use crate::saga::services::SagaId;
use faultline_sim::prelude::*;
use std::collections::BTreeMap;

/// The settling ledger of one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settling {
    checkout_at: BTreeMap<SagaId, SimTime>,
    rested_at: BTreeMap<SagaId, SimTime>,
    /// Fault windows seen: (start, end; `None` while active).
    fault_windows: Vec<(SimTime, Option<SimTime>)>,
    queue_waits: BTreeMap<SagaId, Vec<(SimTime, SimTime)>>,
}

impl Settling {
    /// `saga`'s customer checked out at `at`.
    pub(crate) fn checkout(&mut self, saga: SagaId, at: SimTime) {
        self.checkout_at.insert(saga, at);
    }

    /// `saga` came to rest at `at`; false (and nothing changes) if it had already.
    pub(crate) fn rested(&mut self, saga: SagaId, at: SimTime) -> bool {
        if self.rested_at.contains_key(&saga) {
            return false;
        }
        self.rested_at.insert(saga, at);
        true
    }

    /// A fault started or ended at `at`.
    pub(crate) fn fault_edge(&mut self, started: bool, at: SimTime) {
        if started {
            self.fault_windows.push((at, None));
        } else if let Some(w) = self.fault_windows.iter_mut().find(|w| w.1.is_none()) {
            w.1 = Some(at);
        }
    }

    /// True when no fault is active.
    pub(crate) fn is_calm(&self) -> bool {
        self.fault_windows.iter().all(|w| w.1.is_some())
    }

    /// `saga` waited in a queue behind other sagas from `from` to `until`.
    pub(crate) fn queued(&mut self, saga: SagaId, from: SimTime, until: SimTime) {
        if until > from {
            self.queue_waits
                .entry(saga)
                .or_default()
                .push((from, until));
        }
    }

    /// Each saga's time from checkout to rest, in saga order.
    pub(crate) fn latencies(&self) -> Vec<SimDuration> {
        self.rested_at
            .iter()
            .filter_map(|(saga, rested)| Some(*rested - *self.checkout_at.get(saga)?))
            .collect()
    }

    /// For each saga at rest: how long it took to come to rest after the later of its
    /// checkout and the end of the last fault that began before it came to rest, not
    /// counting the time it spent queued behind other sagas (the union of its spans, so
    /// overlapping waits count once).
    pub(crate) fn settle_times(&self) -> Vec<(SagaId, SimDuration)> {
        self.rested_at
            .iter()
            .filter_map(|(saga, rested)| {
                let checkout = *self.checkout_at.get(saga)?;
                let calm = self
                    .fault_windows
                    .iter()
                    .filter(|(start, _)| start < rested)
                    .map(|(_, end)| end.unwrap_or(*rested))
                    .fold(checkout, SimTime::max);
                let mut spans: Vec<(SimTime, SimTime)> = self
                    .queue_waits
                    .get(saga)
                    .into_iter()
                    .flatten()
                    .map(|(from, until)| ((*from).max(calm), (*until).min(*rested)))
                    .filter(|(from, until)| from < until)
                    .collect();
                spans.sort();
                let mut queued = 0u64;
                let mut reach = calm;
                for (from, until) in spans {
                    let from = from.max(reach);
                    if until > from {
                        queued += (until - from).as_nanos();
                        reach = until;
                    }
                }
                let took = (*rested - calm).as_nanos().saturating_sub(queued);
                Some((*saga, SimDuration::from_nanos(took)))
            })
            .collect()
    }

    /// `saga.settling`: every saga came to rest within `bound` (see
    /// [`settle_times`](Settling::settle_times)).
    pub(crate) fn check(&self, bound: SimDuration) -> Result<(), Violation> {
        match self
            .settle_times()
            .into_iter()
            .find(|(_, took)| *took > bound)
        {
            Some((saga, took)) => Err(Violation::new(
                "saga.settling",
                format!(
                    "{saga} came to rest {took} after the later of its checkout and the last fault's end, past its bound of {bound}"
                ),
            )),
            None => Ok(()),
        }
    }
}
