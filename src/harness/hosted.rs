//! The tokio harness: real async code (faultline's own adapters, a tower stack, another
//! crate's breaker, a user's service) run deterministically inside a simulated world.
//!
//! A [`TokioHost`] owns a single-threaded tokio runtime whose clock is paused and a
//! [`LocalSet`] for the tasks of one run. The engine's clock leads:
//! a hosted world calls [`TokioHost::advance_to`] with the engine's `now` at each of its
//! events, and the runtime runs every task due until then, its own timers in order
//! (tokio's clock jumps from timer to timer while the runtime is idle, which is what a
//! paused clock does), so the code under test sees the virtual time as
//! [`tokio::time::Instant`] at every step. Nothing is sent to another thread and
//! nothing waits for a wall clock.
//!
//! The far side of the world (the SMS API, the targets, the services, the store) is a
//! set of async endpoints in the same runtime: they ask a
//! [`FaultState`](faultline_sim::FaultState) at the time they are called (outage? how
//! much slower? an error?) and log what they saw, with the time they saw it, into a
//! log the world drains after each step; the oracles judge those observations, never
//! what the code under test says of itself.
//!
//! Determinism is checked on every run ([`simulate_twice`]): the world is run twice on
//! fresh runtimes and the digests compared; code that draws unseeded randomness (an
//! unbiased `tokio::select!`, a `HashMap` iterated, `rand::rng()`) or reads a wall clock
//! fails the run with `sim.determinism`, naming the first trace entry where the two runs
//! part.
//!
//! Timer resolution is tokio's: one millisecond. A hosted world that needs finer steps
//! models them in the engine, not in the code under test.

use faultline_sim::{RunReport, SimTime, Simulation, TraceMode, Violation, World};
use std::future::Future;
use tokio::task::{JoinHandle, LocalSet};

/// The invariant a hosted run fails when two runs of one seed differ.
pub const DETERMINISM: &str = "sim.determinism";

/// A single-threaded tokio runtime on a paused clock, stepped by a world. See the
/// [module docs](self).
pub struct TokioHost {
    rt: tokio::runtime::Runtime,
    local: LocalSet,
    clock: VirtualClock,
}

/// The hosted runtime's clock read as engine time: what an endpoint asks to know when
/// it is called. `Copy`, so every endpoint holds one; only meaningful inside the host's
/// runtime (outside it, tokio's clock is not the paused one).
#[derive(Clone, Copy, Debug)]
pub struct VirtualClock {
    origin: tokio::time::Instant,
}

impl VirtualClock {
    /// Engine time now: time since the host started.
    pub fn now(&self) -> SimTime {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
        SimTime::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The tokio instant of engine time `t`.
    pub fn instant(&self, t: SimTime) -> tokio::time::Instant {
        self.origin + std::time::Duration::from_nanos(t.as_nanos())
    }
}

impl TokioHost {
    /// A fresh runtime at engine time zero.
    ///
    /// # Errors
    ///
    /// The runtime's own, when the OS refuses what it needs (it starts no thread, so
    /// this is rare).
    pub fn new() -> std::io::Result<TokioHost> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        let origin = rt.block_on(async { tokio::time::Instant::now() });
        Ok(TokioHost {
            rt,
            local: LocalSet::new(),
            clock: VirtualClock { origin },
        })
    }

    /// The clock endpoints read.
    pub fn clock(&self) -> VirtualClock {
        self.clock
    }

    /// Engine time as the runtime last left it.
    pub fn now(&self) -> SimTime {
        let _in_runtime = self.rt.enter();
        self.clock.now()
    }

    /// Spawns `task` on the run's task set; it starts at the next
    /// [`advance_to`](TokioHost::advance_to).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.local.spawn_local(task)
    }

    /// Runs every task until engine time `t`: tasks ready now, then tokio's timers in
    /// their order up to `t` (a `t` in the past runs what is ready and returns).
    pub fn advance_to(&mut self, t: SimTime) {
        let until = self.clock.instant(t);
        self.local.block_on(
            &self.rt,
            async move { tokio::time::sleep_until(until).await },
        );
    }

    /// Runs `future` to its end on the run's task set (the other tasks run meanwhile,
    /// and the clock moves as they need it to): for a setup step that awaits, such as
    /// opening a store.
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        self.local.block_on(&self.rt, future)
    }
}

impl std::fmt::Debug for TokioHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioHost").finish_non_exhaustive()
    }
}

/// A hosted world that can be built again from what it was made of, for the second run
/// of the determinism check.
pub trait Rerun: World + Sized {
    /// A world like `self` was before it ran: same knobs, same code under test, nothing
    /// run yet.
    fn fresh(&self) -> Self;
}

/// Runs `world` under `sim`, then a [`fresh`](Rerun::fresh) copy of it, and compares
/// the two: the first run's report when they agree; when they differ, that report
/// turned into a violation of [`DETERMINISM`] that names the first trace entry where
/// the runs part (both are run once more with the full trace to find it). The world
/// returned is the one of the first run.
pub fn simulate_twice<W: Rerun>(sim: &Simulation, mut world: W) -> (RunReport, W) {
    let blank = world.fresh();
    let mut second = world.fresh();
    let mut report = sim.run(&mut world);
    let again = sim.run(&mut second);
    if let Err(differ) = faultline_sim::compare_runs(&report, &again) {
        let full = sim.clone().trace(TraceMode::Full);
        let a = full.run(&mut blank.fresh());
        let b = full.run(&mut blank.fresh());
        let text = match faultline_sim::compare_runs(&a, &b) {
            Err(e) => e.to_string(),
            // The traced runs agreed: the difference is real, only not caught in the
            // trace the second time.
            Ok(()) => differ.to_string(),
        };
        let mut v = Violation::new(DETERMINISM, text);
        v.at = report.end;
        report.outcome = faultline_sim::Outcome::Violated(v);
    }
    (report, world)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn tasks_see_virtual_time_and_timers_fire_in_order() {
        let mut host = TokioHost::new().expect("runtime");
        let clock = host.clock();
        let seen = Rc::new(RefCell::new(Vec::new()));
        for ms in [30u64, 10, 20] {
            let seen = Rc::clone(&seen);
            host.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                seen.borrow_mut().push((ms, clock.now()));
            });
        }
        host.advance_to(SimTime::from_millis(15));
        assert_eq!(seen.borrow().len(), 1);
        assert_eq!(host.now(), SimTime::from_millis(15));
        host.advance_to(SimTime::from_millis(1_000));
        let got: Vec<_> = seen.borrow().clone();
        assert_eq!(
            got,
            vec![
                (10, SimTime::from_millis(10)),
                (20, SimTime::from_millis(20)),
                (30, SimTime::from_millis(30)),
            ]
        );
        assert_eq!(host.now(), SimTime::from_millis(1_000));
    }
}
