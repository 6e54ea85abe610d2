//! The [`World`] trait (a model driven by events) and its [`Ctx`] (what a world may
//! touch while handling one: the clock, the schedule, its random stream, the fault plan,
//! the trace and the coverage marks).

use crate::fault::{Fault, FaultPlan, FaultView};
use crate::queue::{EventQueue, TimerId};
use crate::rng::SimRng;
use crate::time::{SimDuration, SimTime};
use crate::trace::{Coverage, Trace, TraceMode};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A model the engine runs: it receives events and schedules new ones.
///
/// The engine calls, in this order: [`start`](World::start) once at time zero;
/// [`handle`](World::handle) for each event and [`on_fault`](World::on_fault) at each
/// fault's start and end, in `(time, sequence)` order; at the plan's horizon,
/// [`heal`](World::heal) (faults are over, the liveness phase begins); then, after each
/// event of the liveness phase, [`is_quiescent`](World::is_quiescent), and once it says
/// yes, [`finish`](World::finish) for the checks that hold only at rest. A run that
/// ends any other way ends with [`stopped`](World::stopped).
///
/// Any of them may return a [`Violation`], which ends the run as a failure.
///
/// ```
/// use faultline_sim::prelude::*;
///
/// /// Pings every 10 ms until the horizon, and checks the API is up when it pings.
/// struct Pinger { pings: u64 }
///
/// impl World for Pinger {
///     type Event = ();
///     fn marks(&self) -> Vec<&'static str> { vec!["pinger.down"] }
///     fn start(&mut self, ctx: &mut Ctx<()>) -> Result<(), Violation> {
///         ctx.schedule_in(SimDuration::from_millis(10), ());
///         Ok(())
///     }
///     fn handle(&mut self, ctx: &mut Ctx<()>, _: ()) -> Result<(), Violation> {
///         self.pings += 1;
///         if ctx.faults().is_down("api") {
///             ctx.cover("pinger.down");
///         }
///         if !ctx.is_healed() {
///             ctx.schedule_in(SimDuration::from_millis(10), ());
///         }
///         Ok(())
///     }
///     fn is_quiescent(&self, _: &Ctx<()>) -> bool { true }
/// }
///
/// let plan = FaultPlan::from_json(
///     r#"{"horizon_ms": 1000, "faults": [
///         {"kind": "outage", "target": "api", "from_ms": 100, "until_ms": 200}]}"#,
/// ).unwrap();
/// let mut world = Pinger { pings: 0 };
/// let report = Simulation::new(7).plan(plan).run(&mut world);
/// assert!(report.outcome.is_pass());
/// assert_eq!(report.coverage.count("pinger.down"), 10);
/// ```
pub trait World {
    /// The world's own events. `Debug` is used to describe them in the trace.
    type Event: fmt::Debug;

    /// The coverage marks this world may hit (so that a mark never hit shows up).
    fn marks(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Called once at time zero, before any event: schedule the first events here.
    fn start(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation>;

    /// Handles one event at `ctx.now()`.
    fn handle(&mut self, ctx: &mut Ctx<Self::Event>, event: Self::Event) -> Result<(), Violation>;

    /// Called when a fault starts (`edge.started`) or ends. Crash faults in particular
    /// need this: the world stops and restarts the node. Default: nothing.
    fn on_fault(&mut self, ctx: &mut Ctx<Self::Event>, edge: FaultEdge) -> Result<(), Violation> {
        let _ = (ctx, edge);
        Ok(())
    }

    /// Called at the horizon, after every still-active fault has ended: from here on
    /// nothing fails by plan. Default: nothing.
    fn heal(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation> {
        let _ = ctx;
        Ok(())
    }

    /// True when the world has settled (nothing in flight, everything converged).
    /// Asked after each event of the liveness phase.
    fn is_quiescent(&self, ctx: &Ctx<Self::Event>) -> bool;

    /// Checks that hold at rest (convergence, conservation). Default: none.
    fn finish(&mut self, ctx: &mut Ctx<Self::Event>) -> Result<(), Violation> {
        let _ = ctx;
        Ok(())
    }

    /// Called once when a run ends without passing: on a violation (the world's own,
    /// one [`finish`](World::finish) found, or the engine's: a stall, the liveness or
    /// the event bound), at the time it stopped. A world that computes its figures at
    /// rest computes them here up to the stop, from what it observed, so that a run
    /// stopped early does not report the figures of a run that never happened. It can
    /// neither schedule, record nor fail: the run is over, and its trace and digest are
    /// what they were. Default: nothing.
    fn stopped(&mut self, ctx: &Ctx<Self::Event>) {
        let _ = ctx;
    }
}

/// A fault starting or ending, as delivered to [`World::on_fault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEdge {
    /// Index of the fault in the plan.
    pub index: usize,
    /// The fault itself.
    pub fault: Fault,
    /// True at the start of its window, false at its end (or at the horizon).
    pub started: bool,
}

/// An invariant broken, in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The invariant's name, e.g. `breaker.no_call_while_open`.
    pub invariant: Cow<'static, str>,
    /// What was seen, in words, with the numbers that show it.
    pub message: String,
    /// When it was detected (filled in by the engine).
    pub at: SimTime,
}

impl Violation {
    /// A violation of `invariant`, described by `message`.
    pub fn new(invariant: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Violation {
            invariant: invariant.into(),
            message: message.into(),
            at: SimTime::ZERO,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} violated at {}: {}",
            self.invariant, self.at, self.message
        )
    }
}

impl std::error::Error for Violation {}

/// Which phase a run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Faults are active; safety invariants must hold.
    Safety,
    /// Every fault is healed; the world must settle.
    Liveness,
}

/// The engine's side of a run, lent to the world for each call.
pub struct Ctx<E> {
    pub(crate) queue: EventQueue<E>,
    pub(crate) rng: SimRng,
    pub(crate) fault_rng: SimRng,
    pub(crate) trace: Trace,
    pub(crate) coverage: Coverage,
    pub(crate) plan: FaultPlan,
    pub(crate) fault_hits: Vec<u64>,
    pub(crate) phase: Phase,
    pub(crate) seed: u64,
}

/// The engine's own events. All are known before the run starts, so they live in a
/// sorted list beside the heap (which then holds the world's events unwrapped) and are
/// merged with it by `(time, seq)`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EngineEvent {
    FaultStart(usize),
    FaultEnd(usize),
    Horizon,
}

impl<E> Ctx<E> {
    pub(crate) fn new(seed: u64, plan: FaultPlan, mode: TraceMode, marks: &[&str]) -> Self {
        let root = SimRng::new(seed);
        let hits = vec![0; plan.faults.len()];
        Ctx {
            queue: EventQueue::with_capacity(1024),
            rng: root.fork("world"),
            fault_rng: root.fork("faults"),
            trace: Trace::new(mode),
            coverage: Coverage::declare(marks.iter().copied()),
            plan,
            fault_hits: hits,
            phase: Phase::Safety,
            seed,
        }
    }

    /// The current virtual time.
    #[inline(always)]
    pub fn now(&self) -> SimTime {
        self.queue.now()
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True in the liveness phase (faults healed).
    pub fn is_healed(&self) -> bool {
        self.phase == Phase::Liveness
    }

    /// End of the safety phase.
    pub fn horizon(&self) -> SimTime {
        self.plan.horizon()
    }

    /// The whole fault plan (for display; query it through [`faults`](Ctx::faults)).
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Schedules `event` after `delay`.
    #[inline(always)]
    pub fn schedule_in(&mut self, delay: SimDuration, event: E) -> TimerId {
        self.queue.schedule_in(delay, event)
    }

    /// Schedules `event` at `time` (a past time runs now, after what is already due).
    #[inline(always)]
    pub fn schedule_at(&mut self, time: SimTime, event: E) -> TimerId {
        self.queue.schedule_at(time, event)
    }

    /// Cancels a scheduled event; false if it already ran or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.queue.cancel(id)
    }

    /// Number of pending events (the world's and the engine's).
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The world's random stream. Fork it ([`SimRng::fork`]) to give each component
    /// its own.
    #[inline(always)]
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// The fault plan as it stands now.
    #[inline]
    pub fn faults(&mut self) -> FaultView<'_> {
        FaultView {
            plan: &self.plan,
            now: self.queue.now(),
            healed: self.phase == Phase::Liveness,
            hits: &mut self.fault_hits,
            rng: &mut self.fault_rng,
        }
    }

    /// Adds hits counted outside the engine (by a [`FaultState`](crate::fault::FaultState)
    /// of the same plan) to the run's per-fault hit counts.
    pub fn add_fault_hits(&mut self, hits: &[u64]) {
        for (total, h) in self.fault_hits.iter_mut().zip(hits) {
            *total += h;
        }
    }

    /// Records that `actor` did `what` now. Free when the trace is off: `what` is not
    /// even formatted.
    #[inline]
    pub fn record(&mut self, actor: impl Into<Cow<'static, str>>, what: impl fmt::Display) {
        if self.trace.is_on() {
            let now = self.queue.now();
            self.trace.record(now, actor, what);
        }
    }

    /// True when the trace keeps entries (so building a costly description pays off).
    #[inline(always)]
    pub fn is_tracing(&self) -> bool {
        self.trace.is_on()
    }

    /// Counts a hit of coverage mark `mark`.
    #[inline]
    pub fn cover(&mut self, mark: &str) {
        self.coverage.hit(mark);
    }

    /// Coverage so far.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }
}
