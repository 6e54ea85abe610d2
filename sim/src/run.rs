//! [`Simulation`]: runs a [`World`] under a [`FaultPlan`] from a seed, in two phases.
//!
//! **Safety**: from time zero to the plan's horizon, faults active. **Liveness**: every
//! fault healed; the run goes on until the world reports quiescence, within a bound
//! (`liveness_max`, and `events_max` over the whole run). A world that never settles,
//! or that stalls with nothing scheduled, is a reported failure, never a hang.

use crate::fault::FaultPlan;
use crate::time::{SimDuration, SimTime};
use crate::trace::{Coverage, TraceEntry, TraceMode};
use crate::world::{Ctx, EngineEvent, FaultEdge, Phase, Violation, World};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Default bound on events in one run.
pub const EVENTS_MAX_DEFAULT: u64 = 50_000_000;
/// Default bound on the liveness phase.
pub const LIVENESS_MAX_DEFAULT: SimDuration = SimDuration::from_secs(3_600);

/// A configured run. Build it, then [`run`](Simulation::run) a world.
///
/// ```
/// use faultline_sim::prelude::*;
/// let sim = Simulation::new(42)
///     .plan(FaultPlan::healthy(5_000))
///     .trace(TraceMode::Ring(256))
///     .events_max(1_000_000)
///     .liveness_max(SimDuration::from_secs(60))
///     .replay_hint("cargo run --release -- replay toy --seed {seed}");
/// assert_eq!(sim.seed(), 42);
/// ```
#[derive(Clone, Debug)]
pub struct Simulation {
    seed: u64,
    plan: FaultPlan,
    trace: TraceMode,
    events_max: u64,
    liveness_max: SimDuration,
    replay_hint: Option<String>,
}

impl Simulation {
    /// A run from `seed` with no faults, horizon zero, trace off and default bounds.
    pub fn new(seed: u64) -> Self {
        Simulation {
            seed,
            plan: FaultPlan::healthy(0),
            trace: TraceMode::Off,
            events_max: EVENTS_MAX_DEFAULT,
            liveness_max: LIVENESS_MAX_DEFAULT,
            replay_hint: None,
        }
    }
    /// The fault plan (its horizon ends the safety phase).
    pub fn plan(mut self, plan: FaultPlan) -> Self {
        self.plan = plan;
        self
    }
    /// How much trace to keep.
    pub fn trace(mut self, mode: TraceMode) -> Self {
        self.trace = mode;
        self
    }
    /// Most events in the whole run; reaching it is a failure.
    pub fn events_max(mut self, n: u64) -> Self {
        self.events_max = n;
        self
    }
    /// Longest liveness phase; not settling within it is a failure.
    pub fn liveness_max(mut self, d: SimDuration) -> Self {
        self.liveness_max = d;
        self
    }
    /// The command that replays this run, shown in failure messages. `{seed}` is
    /// replaced by the seed.
    pub fn replay_hint(mut self, hint: impl Into<String>) -> Self {
        self.replay_hint = Some(hint.into());
        self
    }
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// What the trace keeps.
    pub fn trace_mode(&self) -> TraceMode {
        self.trace
    }

    /// The fault plan.
    pub fn fault_plan(&self) -> &FaultPlan {
        &self.plan
    }

    fn hint(&self) -> String {
        match &self.replay_hint {
            Some(h) => h.replace("{seed}", &self.seed.to_string()),
            None => format!(
                "rerun Simulation::new({}) with the same fault plan and world",
                self.seed
            ),
        }
    }

    /// Runs `world` to the end and reports what happened. One thread, no wall clock:
    /// the same seed, plan and world always give the same report and digest.
    pub fn run<W: World>(&self, world: &mut W) -> RunReport {
        self.run_explained(world, |_| None)
    }

    /// [`run`](Simulation::run), with `pending` to say what a run that stalls or does
    /// not settle left unfinished: when it returns words (naming the entities still in
    /// flight: the saga, the task, the subscriber), the outcome is a [`Violation`] of
    /// the same name (`sim.stalled`, `sim.liveness`) whose message ends with them. A
    /// passing run is the same as under `run`, digest included.
    ///
    /// ```
    /// use faultline_sim::prelude::*;
    ///
    /// /// Never settles and schedules nothing: a deadlock.
    /// struct Stuck;
    /// impl World for Stuck {
    ///     type Event = ();
    ///     fn start(&mut self, _: &mut Ctx<()>) -> Result<(), Violation> { Ok(()) }
    ///     fn handle(&mut self, _: &mut Ctx<()>, _: ()) -> Result<(), Violation> { Ok(()) }
    ///     fn is_quiescent(&self, _: &Ctx<()>) -> bool { false }
    /// }
    ///
    /// let report = Simulation::new(1).run_explained(&mut Stuck, |_| Some("job 7 waits for a lock".into()));
    /// assert_eq!(report.outcome.invariant(), Some("sim.stalled"));
    /// assert!(report.outcome.to_string().contains("job 7 waits for a lock"));
    /// ```
    pub fn run_explained<W: World>(
        &self,
        world: &mut W,
        pending: impl Fn(&W) -> Option<String>,
    ) -> RunReport {
        let marks = world.marks();
        let mut ctx: Ctx<W::Event> = Ctx::new(self.seed, self.plan.clone(), self.trace, &marks);
        let horizon = self.plan.horizon();
        let mut engine = vec![(horizon, ctx.queue.reserve_seq(), EngineEvent::Horizon)];
        for (i, f) in self.plan.faults.iter().enumerate() {
            if f.from() < horizon {
                engine.push((
                    f.from(),
                    ctx.queue.reserve_seq(),
                    EngineEvent::FaultStart(i),
                ));
                if f.until() < horizon {
                    engine.push((f.until(), ctx.queue.reserve_seq(), EngineEvent::FaultEnd(i)));
                }
            }
        }
        engine.sort_by_key(|(t, seq, _)| (*t, *seq));
        let mut events: u64 = 0;
        let mut deadline = SimTime::MAX;
        let outcome = self.drive(
            world,
            &mut ctx,
            &engine,
            horizon,
            &mut events,
            &mut deadline,
        );
        let outcome = match outcome {
            Ok(o @ (Outcome::Stalled | Outcome::NotQuiescent { .. })) => match pending(world) {
                Some(what) => Err(Violation::new(
                    o.invariant().unwrap_or_default().to_string(),
                    format!("{}; still pending: {what}", o.reason()),
                )),
                None => Ok(o),
            },
            other => other,
        };
        if !matches!(outcome, Ok(Outcome::Passed)) {
            world.stopped(&ctx);
        }
        let outcome = match outcome {
            Err(mut v) => {
                v.at = ctx.now();
                ctx.record("sim", format_args!("VIOLATION {v}"));
                Outcome::Violated(v)
            }
            Ok(o) => o,
        };
        let end = ctx.now();
        let quiesced_at = matches!(outcome, Outcome::Passed).then_some(end);
        let digest = {
            let mut d = crate::trace::Digest::new();
            d.write_u64(ctx.trace.digest());
            d.write_u64(events);
            d.write_u64(end.as_nanos());
            d.value()
        };
        let Ctx {
            trace,
            coverage,
            fault_hits,
            ..
        } = ctx;
        RunReport {
            seed: self.seed,
            outcome,
            events,
            horizon,
            end,
            quiesced_at,
            digest,
            coverage,
            fault_hits,
            trace: trace.into_entries(),
            replay: self.hint(),
        }
    }

    fn drive<W: World>(
        &self,
        world: &mut W,
        ctx: &mut Ctx<W::Event>,
        engine: &[(SimTime, u64, EngineEvent)],
        horizon: SimTime,
        events: &mut u64,
        deadline: &mut SimTime,
    ) -> Result<Outcome, Violation> {
        world.start(ctx)?;
        let mut next_engine = 0;
        loop {
            // The next event is the earlier, by (time, seq), of the engine's next and the
            // heap's top. Once the engine's list is done, only the heap remains.
            let mut from_engine = None;
            if let Some(&(et, eseq, ev)) = engine.get(next_engine)
                && ctx.queue.peek_key().is_none_or(|key| (et, eseq) < key)
            {
                next_engine += 1;
                ctx.queue.advance_to(et);
                from_engine = Some((et, ev));
            }
            let (t, slot) = match from_engine {
                Some((t, ev)) => (t, Err(ev)),
                None => match ctx.queue.pop() {
                    Some((t, e)) => (t, Ok(e)),
                    None => {
                        // Only the liveness phase can run dry: the horizon is pending
                        // until then.
                        return if world.is_quiescent(ctx) {
                            world.finish(ctx)?;
                            Ok(Outcome::Passed)
                        } else {
                            Ok(Outcome::Stalled)
                        };
                    }
                },
            };
            if t > *deadline {
                return Ok(Outcome::NotQuiescent {
                    liveness_max: self.liveness_max,
                });
            }
            *events += 1;
            if *events > self.events_max {
                return Ok(Outcome::EventsExhausted {
                    events_max: self.events_max,
                });
            }
            ctx.trace.digest_time(t);
            match slot {
                Ok(e) => {
                    if ctx.trace.is_on() {
                        ctx.trace.record(t, "event", format_args!("{e:?}"));
                    }
                    world.handle(ctx, e)?;
                }
                Err(EngineEvent::FaultStart(i)) | Err(EngineEvent::FaultEnd(i)) => {
                    let started = matches!(slot, Err(EngineEvent::FaultStart(_)));
                    let fault = ctx.plan.faults[i].clone();
                    ctx.record(
                        "sim",
                        format_args!("fault {} {fault}", if started { "starts" } else { "ends" }),
                    );
                    world.on_fault(
                        ctx,
                        FaultEdge {
                            index: i,
                            fault,
                            started,
                        },
                    )?;
                }
                Err(EngineEvent::Horizon) => {
                    // Heal: end every fault still active at the horizon, then switch.
                    for i in 0..ctx.plan.faults.len() {
                        let f = &ctx.plan.faults[i];
                        if f.from() < horizon && f.until() >= horizon {
                            let fault = f.clone();
                            ctx.record("sim", format_args!("fault ends (healed) {fault}"));
                            world.on_fault(
                                ctx,
                                FaultEdge {
                                    index: i,
                                    fault,
                                    started: false,
                                },
                            )?;
                        }
                    }
                    ctx.phase = Phase::Liveness;
                    ctx.record("sim", "horizon: faults healed, liveness phase begins");
                    *deadline = horizon + self.liveness_max;
                    world.heal(ctx)?;
                }
            }
            if ctx.phase == Phase::Liveness && world.is_quiescent(ctx) {
                ctx.record("sim", "quiescent");
                world.finish(ctx)?;
                return Ok(Outcome::Passed);
            }
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Every invariant held and the world settled.
    Passed,
    /// An invariant was broken.
    Violated(Violation),
    /// The liveness phase ran past its bound without the world settling.
    NotQuiescent {
        /// The bound that was reached.
        liveness_max: SimDuration,
    },
    /// Nothing was scheduled any more, yet the world had not settled (a deadlock).
    Stalled,
    /// The run reached its bound on events.
    EventsExhausted {
        /// The bound that was reached.
        events_max: u64,
    },
}

impl Outcome {
    /// True for [`Outcome::Passed`].
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
    /// Short name of the invariant or bound that failed (`None` when passed).
    pub fn invariant(&self) -> Option<&str> {
        match self {
            Outcome::Passed => None,
            Outcome::Violated(v) => Some(&v.invariant),
            Outcome::NotQuiescent { .. } => Some("sim.liveness"),
            Outcome::Stalled => Some("sim.stalled"),
            Outcome::EventsExhausted { .. } => Some("sim.events_max"),
        }
    }
}

impl Outcome {
    /// What went wrong, in words, without the invariant's name.
    fn reason(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Violated(v) => v.message.clone(),
            Outcome::NotQuiescent { liveness_max } => {
                format!("the world did not settle within {liveness_max} after the faults healed")
            }
            Outcome::Stalled => {
                "nothing is scheduled, yet the world has not settled (deadlock)".into()
            }
            Outcome::EventsExhausted { events_max } => {
                format!("the run reached {events_max} events (a livelock, or raise events_max)")
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.invariant()) {
            (Outcome::Violated(v), _) => write!(f, "{v}"),
            (_, Some(name)) => write!(f, "{name} violated: {}", self.reason()),
            (_, None) => f.write_str("passed"),
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Events processed (the world's and the engine's).
    pub events: u64,
    /// End of the safety phase.
    pub horizon: SimTime,
    /// Virtual time when the run stopped.
    pub end: SimTime,
    /// When the world settled, if it did.
    pub quiesced_at: Option<SimTime>,
    /// Stable digest of the run: equal seeds, plans and worlds give equal digests.
    pub digest: u64,
    /// Coverage marks and their hit counts.
    pub coverage: Coverage,
    /// For each fault of the plan (by index), how often it fired.
    pub fault_hits: Vec<u64>,
    /// The retained trace entries.
    pub trace: Vec<TraceEntry>,
    /// The command that replays this run.
    pub replay: String,
}

impl RunReport {
    /// The failure, if the run failed, ready to print.
    pub fn failure(&self) -> Option<Failure> {
        if self.outcome.is_pass() {
            return None;
        }
        Some(Failure {
            seed: self.seed,
            outcome: self.outcome.clone(),
            at: self.end,
            replay: self.replay.clone(),
        })
    }

    /// Panics with the failure message (seed and replay command included) when the run
    /// failed. Meant for tests.
    #[track_caller]
    pub fn assert_pass(&self) {
        if let Some(f) = self.failure() {
            panic!("{f}");
        }
    }
}

/// A failed run, displayed with its seed and the command that replays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub outcome: Outcome,
    /// When the run stopped.
    pub at: SimTime,
    /// The command that replays it.
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.outcome)?;
        writeln!(f, "  seed:   {}", self.seed)?;
        writeln!(f, "  at:     {}", self.at)?;
        write!(f, "  replay: {}", self.replay)
    }
}

impl std::error::Error for Failure {}
