//! What the checkout worlds share, whichever protocol runs the checkout (the
//! orchestrated saga, the choreographed saga, two-phase commit):
//!
//! - [`SagaKnobs`]: every knob of one checkout scenario, from one seed (rate, stock,
//!   declined cards, latency, disk time, timeouts, attempts, backoff), and the fault
//!   plans over the same nodes and links. One seed gives all three worlds the same
//!   scenario. Each room adds what is its own: the orchestrator's configuration and
//!   settling bound (`SagaKnobs::config`, `SagaKnobs::settle_bound`, in
//!   [`orchestrated::world`](crate::saga::orchestrated::world)), the bus's
//!   configuration (`ChoreoWorld::bus_config`), the 2PC timing (`twopc::world::config_of`).
//! - [`checkouts`]: the customers of a run, from their own random stream (and, inside
//!   the crate, the arrivals the saga worlds schedule from it).
//! - [`service_node`], [`COORDINATOR_NODE`], [`SERVICE_NODES`]: the nodes fault plans
//!   name.
//! - The settling ledger (crate-private): when each saga checked out and came to rest,
//!   the fault windows, and the spans each saga spent queueing behind other sagas (for
//!   the disk, or on the bus), to check `saga.settling` and to measure latency.

use crate::saga::invariants::SETTLING;
use crate::saga::services::{
    InventoryService, Order, PaymentService, SagaId, SagaState, Services, StepId,
};
use faultline_sim::FaultKindTag;
use faultline_sim::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// The checkout's definition: its steps in execution order (order, inventory, payment;
/// not their names' order).
pub const STEPS: [StepId; 3] = StepId::ALL;

/// The node of the coordinator in fault plans (the orchestrator, or 2PC's
/// coordinator; the choreography has none).
pub const COORDINATOR_NODE: &str = "orchestrator";

/// The nodes of the three services in fault plans, in step order.
pub const SERVICE_NODES: [&str; 3] = ["orders", "inventory", "payment"];

/// The node of the service that runs `step`.
pub fn service_node(step: StepId) -> &'static str {
    use crate::saga::services::CheckoutStep as S;
    match step.checkout() {
        Some(S::Order) => "orders",
        Some(S::Inventory) => "inventory",
        Some(S::Payment) => "payment",
        // Not a checkout step: no node of the checkout runs it.
        None => "other",
    }
}

/// Every knob of one checkout scenario, all from one seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SagaKnobs {
    /// The seed.
    pub seed: u64,
    /// End of the safety phase, ms.
    pub horizon_ms: u64,
    /// Checkouts per second.
    pub checkouts_per_sec: u32,
    /// Items on sale, each with this stock.
    pub stock: Vec<u32>,
    /// Share of checkouts whose card is declined, percent.
    pub decline_percent: u32,
    /// Network latency per message, ms (min, max).
    pub latency_ms: (u64, u64),
    /// Time to make one log record durable, ms.
    pub disk_ms: u64,
    /// Per-attempt step timeout, ms.
    pub step_timeout_ms: u64,
    /// Attempts per step action.
    pub attempts_max: u32,
    /// Attempts per compensation before the saga fails.
    pub compensation_attempts_max: u32,
    /// Retry backoff (base, cap), ms.
    pub backoff_ms: (u64, u64),
}

impl SagaKnobs {
    /// Expands `seed` into every knob.
    pub fn from_seed(seed: u64) -> SagaKnobs {
        let mut r = SimRng::new(seed).fork("saga.knobs");
        let items = r.between(1, 3) as usize;
        let base = r.between(10, 100);
        SagaKnobs {
            seed,
            horizon_ms: 20_000,
            checkouts_per_sec: r.between(2, 30) as u32,
            stock: (0..items).map(|_| r.between(10, 300) as u32).collect(),
            decline_percent: r.between(0, 20) as u32,
            latency_ms: {
                let lo = r.between(1, 10);
                (lo, lo + r.between(0, 20))
            },
            disk_ms: r.between(1, 5),
            step_timeout_ms: r.between(100, 800),
            attempts_max: r.between(1, 4) as u32,
            compensation_attempts_max: r.between(5, 12) as u32,
            backoff_ms: (base, base * r.between(1, 10)),
        }
    }

    /// The same knobs with a safety phase of `horizon_ms` (the seed's default is
    /// 20 s): the fault plans are drawn over it ([`fault_plan`](SagaKnobs::fault_plan),
    /// `orchestrated_fault_plan`) and customers check out until it ends, at the same
    /// rate, so a longer horizon is a longer run of the same scenario (the benches over
    /// horizons use it). Every other knob is the seed's.
    ///
    /// ```
    /// use faultline::saga::checkout::SagaKnobs;
    ///
    /// let knobs = SagaKnobs::from_seed(7).with_horizon_ms(10 * 60_000);
    /// assert_eq!(knobs.fault_plan().horizon_ms, 600_000);
    /// assert_eq!(knobs.checkouts_per_sec, SagaKnobs::from_seed(7).checkouts_per_sec);
    /// ```
    pub fn with_horizon_ms(mut self, horizon_ms: u64) -> SagaKnobs {
        self.horizon_ms = horizon_ms;
        self
    }

    /// The fault plans the checkout worlds understand: crashes, outages, slowness,
    /// errors and lossy links, on the coordinator node (`orchestrator`) and the three
    /// services (`orders`, `inventory`, `payment`) and their `to-*` and `from-*` links.
    pub fn fault_profile(&self) -> FaultProfile {
        self.fault_profile_for(&SERVICE_NODES)
    }

    /// The fault plans of [`fault_profile`](SagaKnobs::fault_profile) over the
    /// coordinator node and the participant nodes `nodes` (and their `to-*` and
    /// `from-*` links) instead of the checkout's three services.
    pub fn fault_profile_for(&self, nodes: &[&str]) -> FaultProfile {
        let mut p = FaultProfile::new(self.horizon_ms)
            .kinds(FaultKindTag::UNTORN)
            .faults(1, 8)
            .duration_ms(100, 4_000)
            .latency_ms_max(1_500)
            .node(COORDINATOR_NODE);
        for &s in nodes {
            p = p
                .target(s)
                .node(s)
                .link(format!("to-{s}"))
                .link(format!("from-{s}"));
        }
        p
    }

    /// The fault plan this seed generates.
    pub fn fault_plan(&self) -> FaultPlan {
        FaultPlan::generate(
            &mut SimRng::new(self.seed).fork("saga.plan"),
            &self.fault_profile(),
        )
    }

    /// The items on sale with their stock: (item, units).
    pub(crate) fn stock_rows(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.stock.iter().enumerate().map(|(i, s)| (i as u32, *s))
    }

    /// The sagas whose card is declined, from their own random stream
    /// (`saga.declines`): the same customers' cards in every world.
    pub(crate) fn declined(&self) -> Vec<SagaId> {
        let mut r = SimRng::new(self.seed).fork("saga.declines");
        (0..10_000)
            .filter(|_| r.below(100) < u64::from(self.decline_percent))
            .map(SagaId)
            .collect()
    }

    /// The three saga services with the knobs' stock and declined cards; payment's
    /// idempotency is switched off only by a mutant.
    pub(crate) fn services(&self, idempotent_payment: bool) -> Services {
        let mut payment = PaymentService::new().with_declined(self.declined());
        payment.idempotent = idempotent_payment;
        Services::new(InventoryService::new(self.stock_rows()), payment)
    }
}

/// Share of regular arrivals, percent, that a burst follows (see [`checkouts`]).
pub const BURST_PERCENT: u64 = 8;
/// Most checkouts in one burst, besides the arrival that opens it.
pub const BURST_SIZE_MAX: u64 = 3;
/// Longest spacing between two checkouts of a burst, µs (sub-millisecond, so that
/// their sagas race each other at the services and for the log).
pub const BURST_SPACING_US_MAX: u64 = 900;

/// The checkouts of a run up to `horizon`: (arrival, saga, order), in arrival order,
/// so that they do not depend on how many messages a protocol sends or on crashes.
/// The orchestrated, choreographed and 2PC worlds all take their customers from here:
/// the same seed, the same customers.
///
/// Regular customers come at a steady rate with jitter (`saga.arrivals`: spacing
/// between half and one and a half times the mean: 17 ms to 750 ms). After
/// [`BURST_PERCENT`] % of them a burst follows: 1 to [`BURST_SIZE_MAX`] more
/// checkouts, each 20 µs to [`BURST_SPACING_US_MAX`] µs after the one before, with
/// orders of their own, all drawn from their own stream (`saga.bursts`), so the
/// regular customers' times and orders are those of a run without bursts. Saga ids
/// follow arrival order.
pub fn checkouts(knobs: &SagaKnobs, horizon: SimTime) -> Vec<(SimTime, SagaId, Order)> {
    let mut r = SimRng::new(knobs.seed).fork("saga.arrivals");
    let mut bursts = SimRng::new(knobs.seed).fork("saga.bursts");
    let mean = 1_000_000_000 / u64::from(knobs.checkouts_per_sec.max(1));
    let items = knobs.stock.len() as u64;
    let mut out = Vec::new();
    let mut at = SimTime::from_millis(1);
    while at < horizon {
        let next = at + SimDuration::from_nanos(r.between(mean / 2, mean + mean / 2));
        let order = Order {
            item: r.below(items) as u32,
            qty: r.between(1, 3) as u32,
            amount: r.between(100, 5_000),
        };
        out.push((at, SagaId(out.len() as u64), order));
        if bursts.below(100) < BURST_PERCENT {
            let mut t = at;
            for _ in 0..bursts.between(1, BURST_SIZE_MAX) {
                t += SimDuration::from_micros(bursts.between(20, BURST_SPACING_US_MAX));
                let order = Order {
                    item: bursts.below(items) as u32,
                    qty: bursts.between(1, 3) as u32,
                    amount: bursts.between(100, 5_000),
                };
                if t < next.min(horizon) {
                    out.push((t, SagaId(out.len() as u64), order));
                }
            }
        }
        at = next;
    }
    out
}

/// A run's customers as they arrive: the [`checkouts`] made at the start, and how many
/// have checked out so far.
#[derive(Clone, Debug)]
pub(crate) struct Arrivals<P = Order> {
    list: Vec<(SimTime, SagaId, P)>,
    next: usize,
}

impl<P> Default for Arrivals<P> {
    fn default() -> Self {
        Arrivals {
            list: Vec::new(),
            next: 0,
        }
    }
}

impl Arrivals {
    /// The customers of `knobs` up to `horizon` (the plan's), none arrived yet.
    pub(crate) fn new(knobs: &SagaKnobs, horizon: SimTime) -> Self {
        Arrivals::from_list(checkouts(knobs, horizon))
    }
}

impl<P: Copy> Arrivals<P> {
    /// The customers of `list` ((arrival, saga, payload), in arrival order), none
    /// arrived yet.
    pub(crate) fn from_list(list: Vec<(SimTime, SagaId, P)>) -> Self {
        Arrivals { list, next: 0 }
    }

    /// When the first customer arrives.
    pub(crate) fn first_at(&self) -> Option<SimTime> {
        self.list.first().map(|&(at, _, _)| at)
    }

    /// The next customer checks out: its saga and order, and when the one after it
    /// arrives; `None` once every customer has.
    pub(crate) fn arrive(&mut self) -> Option<(SagaId, P, Option<SimTime>)> {
        let &(_, saga, order) = self.list.get(self.next)?;
        self.next += 1;
        let then = self.list.get(self.next).map(|&(at, _, _)| at);
        Some((saga, order, then))
    }

    /// True when the customer who checked out last came within a millisecond of the
    /// one before (a burst).
    pub(crate) fn in_burst(&self) -> bool {
        match self
            .next
            .checked_sub(2)
            .map(|i| (self.list.get(i), self.list.get(i + 1)))
        {
            Some((Some(&(a, _, _)), Some(&(b, _, _)))) => b - a < SimDuration::from_millis(1),
            _ => false,
        }
    }

    /// The sagas of the customers who have checked out, in arrival order.
    pub(crate) fn arrived(&self) -> impl Iterator<Item = SagaId> + '_ {
        self.list[..self.next].iter().map(|&(_, saga, _)| saga)
    }
}

/// The settling ledger of one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settling {
    checkout_at: BTreeMap<SagaId, SimTime>,
    rested_at: BTreeMap<SagaId, SimTime>,
    /// Fault windows seen: (start, end; `None` while active).
    fault_windows: Vec<(SimTime, Option<SimTime>)>,
    queue_waits: BTreeMap<SagaId, Vec<(SimTime, SimTime)>>,
    /// The last transient failure each saga met outside the fault plan (a participant
    /// answering "failed, retry now"): its settling counts from there too.
    disrupted_at: BTreeMap<SagaId, SimTime>,
    /// How the sagas seen coming to rest through [`ended`](Settling::ended) ended.
    endings: Endings,
}

/// How the sagas a world saw come to rest ended, counted as it saw each one come to
/// rest: the figures of a run stopped before it came to rest (at rest, a world counts
/// them again from every saga's final state and checks them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Endings {
    /// Seen come to rest Completed.
    pub(crate) completed: u64,
    /// Seen come to rest Compensated.
    pub(crate) compensated: u64,
    /// Seen come to rest Failed.
    pub(crate) failed: u64,
}

impl Settling {
    /// `saga` came to rest at `at` in `state`, as the world saw it: [`rested`](Settling::rested),
    /// and counted in [`endings`](Settling::endings) the first time.
    pub(crate) fn ended(&mut self, saga: SagaId, at: SimTime, state: SagaState) -> bool {
        let first = self.rested(saga, at);
        if first {
            let e = &mut self.endings;
            match state {
                SagaState::Completed => e.completed += 1,
                SagaState::Failed => e.failed += 1,
                _ => e.compensated += 1,
            }
        }
        first
    }

    /// How the sagas seen through [`ended`](Settling::ended) ended.
    pub(crate) fn endings(&self) -> Endings {
        self.endings
    }

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

    /// `saga` met a transient failure at `at` that is not in the fault plan (a
    /// participant answered "failed, retry now"): like a fault's end, its settling
    /// counts from the latest such time before it came to rest.
    pub(crate) fn disrupted(&mut self, saga: SagaId, at: SimTime) {
        if !self.rested_at.contains_key(&saga) {
            let t = self.disrupted_at.entry(saga).or_insert(at);
            *t = (*t).max(at);
        }
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
                    .fold(checkout, SimTime::max)
                    .max(
                        self.disrupted_at
                            .get(saga)
                            .copied()
                            .filter(|t| t < rested)
                            .unwrap_or(checkout),
                    );
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

    /// [`SETTLING`]: every saga came to rest within `bound` (see
    /// [`settle_times`](Settling::settle_times)).
    pub(crate) fn check(&self, bound: SimDuration) -> Result<(), Violation> {
        match self
            .settle_times()
            .into_iter()
            .find(|(_, took)| *took > bound)
        {
            Some((saga, took)) => Err(Violation::new(
                SETTLING,
                format!(
                    "{saga} came to rest {took} after the later of its checkout and the last fault's end, past its bound of {bound}"
                ),
            )),
            None => Ok(()),
        }
    }
}
