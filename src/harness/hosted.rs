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
//!
//! # Code that reads the real clock
//!
//! Some crates (failsafe, recloser) read `std::time::Instant::now()`, not tokio's
//! clock, so in a paused runtime their waits never elapse. [`TokioHost::follow_time`]
//! gives a host a hook it calls with its engine time whenever the code under test may
//! look: before every poll of a task it runs, at the end of every
//! [`advance_to`](TokioHost::advance_to) and, when asked, at every multiple of a step
//! inside it. A test binary wires the `faultline-clock` crate (a per-thread virtual
//! `CLOCK_MONOTONIC`) into that hook, so `Instant::now()` on the host's thread follows
//! the engine. The library itself never links it: it only calls the hook.

use faultline_sim::{RunReport, SimDuration, SimTime, Simulation, TraceMode, Violation, World};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use tokio::task::{JoinHandle, LocalSet};

/// The invariant a hosted run fails when two runs of one seed differ.
pub const DETERMINISM: &str = "sim.determinism";

/// A single-threaded tokio runtime on a paused clock, stepped by a world. See the
/// [module docs](self).
pub struct TokioHost {
    rt: tokio::runtime::Runtime,
    local: LocalSet,
    clock: VirtualClock,
    follow: Option<Follow>,
}

/// What [`TokioHost::follow_time`] installed.
struct Follow {
    hook: TimeHook,
    step: Option<SimDuration>,
}

type TimeHook = Rc<RefCell<Box<dyn FnMut(SimTime)>>>;

fn tell(hook: &TimeHook, t: SimTime) {
    // A hook that is running does not hear of itself (it cannot be, on one thread,
    // unless it polls the runtime, which it must not).
    if let Ok(mut hook) = hook.try_borrow_mut() {
        hook(t);
    }
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
            follow: None,
        })
    }

    /// The host calls `hook` with its engine time whenever code it runs may read a
    /// clock: before each poll of a task [spawned](TokioHost::spawn) or
    /// [blocked on](TokioHost::block_on) through it (exact: the time tokio shows the
    /// task), at the end of each [`advance_to`](TokioHost::advance_to), and, with
    /// `step`, at every multiple of `step` inside an `advance_to` (tokio jumps its
    /// clock from timer to timer while idle; the steps are timers of their own, so a
    /// task the code under test spawns itself, which the host does not wrap, sees the
    /// time to within one step). A zero `step` means none.
    ///
    /// For crates that read `std::time::Instant` (see the [module docs](self)): the
    /// hook sets a virtual clock. Call it before spawning: tasks spawned before are
    /// not wrapped. The hook must not touch the host.
    pub fn follow_time(
        mut self,
        hook: impl FnMut(SimTime) + 'static,
        step: Option<SimDuration>,
    ) -> TokioHost {
        let hook: TimeHook = Rc::new(RefCell::new(Box::new(hook)));
        tell(&hook, self.now());
        self.follow = Some(Follow {
            hook,
            step: step.filter(|s| s.as_nanos() > 0),
        });
        self
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

    /// Calls `f` inside the runtime's context: where the code under test is built, so
    /// the tokio clock it captures (a breaker's time origin) is the paused one.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _in_runtime = self.rt.enter();
        f()
    }

    /// Spawns `task` on the run's task set; it starts at the next
    /// [`advance_to`](TokioHost::advance_to).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        match &self.follow {
            None => self.local.spawn_local(task),
            Some(follow) => self
                .local
                .spawn_local(told(Rc::clone(&follow.hook), self.clock, task)),
        }
    }

    /// Runs every task until engine time `t`: tasks ready now, then tokio's timers in
    /// their order up to `t` (a `t` in the past runs what is ready and returns).
    pub fn advance_to(&mut self, t: SimTime) {
        let until = self.clock.instant(t);
        let Some(follow) = &self.follow else {
            self.local.block_on(
                &self.rt,
                async move { tokio::time::sleep_until(until).await },
            );
            return;
        };
        let (hook, step, clock) = (Rc::clone(&follow.hook), follow.step, self.clock);
        self.local.block_on(&self.rt, async move {
            // This future is polled before the tasks on each turn of the task set, so
            // the tasks a step's timers wake see the step's time.
            if let Some(step) = step {
                let step = step.as_nanos();
                let mut next = (clock.now().as_nanos() / step).saturating_add(1) * step;
                while next < t.as_nanos() {
                    tokio::time::sleep_until(clock.instant(SimTime::from_nanos(next))).await;
                    tell(&hook, clock.now());
                    next = next.saturating_add(step);
                }
            }
            tokio::time::sleep_until(until).await;
            tell(&hook, clock.now());
        });
    }

    /// Runs `future` to its end on the run's task set (the other tasks run meanwhile,
    /// and the clock moves as they need it to): for a setup step that awaits, such as
    /// opening a store.
    pub fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match &self.follow {
            None => self.local.block_on(&self.rt, future),
            Some(follow) => {
                let told = told(Rc::clone(&follow.hook), self.clock, future);
                self.local.block_on(&self.rt, told)
            }
        }
    }
}

/// `task`, with the hook told the host's time before each of its polls.
async fn told<F: Future>(hook: TimeHook, clock: VirtualClock, task: F) -> F::Output {
    let mut task = std::pin::pin!(task);
    std::future::poll_fn(move |cx| {
        tell(&hook, clock.now());
        task.as_mut().poll(cx)
    })
    .await
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
/// the two (every entry the world records is digested, the trace off included): the first run's report when they agree; when they differ, that report
/// turned into a violation of [`DETERMINISM`] that names the first trace entry where
/// the runs part (both are run once more with the full trace to find it). The world
/// returned is the one of the first run.
pub fn simulate_twice<W: Rerun>(sim: &Simulation, mut world: W) -> (RunReport, W) {
    // What the world records of the code under test is its only trace of it: with the
    // trace off, record into a ring of none, so every entry is still digested (and the
    // digest is the same whatever the trace mode).
    let ring;
    let sim = if matches!(sim.trace_mode(), TraceMode::Off) {
        ring = sim.clone().trace(TraceMode::Ring(0));
        &ring
    } else {
        sim
    };
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

    #[test]
    fn the_time_hook_hears_each_poll_and_each_step() {
        let heard = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&heard);
        let mut host = TokioHost::new()
            .expect("runtime")
            .follow_time(move |t| log.borrow_mut().push(t.as_millis()), None);
        let seen_by_task = Rc::new(RefCell::new(Vec::new()));
        let (probe, task_log) = (Rc::clone(&heard), Rc::clone(&seen_by_task));
        host.spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(7)).await;
                // The hook was told this poll's time before the poll.
                task_log.borrow_mut().push(probe.borrow().last().copied());
            }
        });
        host.advance_to(SimTime::from_millis(20));
        assert_eq!(*seen_by_task.borrow(), vec![Some(7), Some(14)]);
        assert_eq!(heard.borrow().last(), Some(&20));

        let steps = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&steps);
        let mut host = TokioHost::new().expect("runtime").follow_time(
            move |t| log.borrow_mut().push(t.as_millis()),
            Some(SimDuration::from_millis(1)),
        );
        host.advance_to(SimTime::from_millis(3));
        host.advance_to(SimTime::from_millis(2));
        assert_eq!(*steps.borrow(), vec![0, 1, 2, 3, 3]);
    }
}
