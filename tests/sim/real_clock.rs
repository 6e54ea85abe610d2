//! Breaker crates that read the real clock (failsafe, recloser), hosted on a
//! `TokioHost` whose thread's `CLOCK_MONOTONIC` follows the engine through
//! `faultline-clock`: their open-state wait elapses in virtual time, the same way on
//! every run; without the virtual clock it never does.
//!
//! The workload: one caller every 100 ms against an API that fails for the first
//! second (each answer takes 10 ms), through a breaker that opens after three failures
//! and waits 2 s. The engine advances the host in steps of one second.

use faultline::harness::hosted::TokioHost;
use faultline_sim::{SimDuration, SimTime};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

const TICK_MS: u64 = 100;
const OUTAGE_MS: u64 = 1_000;
const ANSWER_MS: u64 = 10;
const WAIT: Duration = Duration::from_secs(2);
const RUN_MS: u64 = 6_000;
const ENGINE_STEP_MS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Ok,
    Err,
    Rejected,
}

/// One call's start time (engine ms) and what the caller got.
type Log = Vec<(u64, Seen)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaker {
    Failsafe,
    Recloser,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    /// No virtual clock: the breakers read the real one.
    Real,
    /// The virtual clock, told at each poll of host tasks and each `advance_to`.
    PerPoll,
    /// The same plus a 1 ms step inside `advance_to`.
    Stepped,
}

/// The fake API: fails during the outage, answers after `ANSWER_MS`.
async fn api(clock: faultline::harness::hosted::VirtualClock) -> Result<(), ()> {
    let started = clock.now().as_millis();
    tokio::time::sleep(Duration::from_millis(ANSWER_MS)).await;
    if started < OUTAGE_MS { Err(()) } else { Ok(()) }
}

async fn caller(
    breaker: Breaker,
    clock: faultline::harness::hosted::VirtualClock,
    log: Rc<RefCell<Log>>,
) {
    use failsafe::futures::CircuitBreaker as _;
    let failsafe = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            3,
            failsafe::backoff::constant(WAIT),
        ))
        .build();
    let recloser = recloser::AsyncRecloser::from(
        recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(3)
            .half_open_len(1)
            .open_wait(WAIT)
            .build(),
    );
    let mut ticks = tokio::time::interval(Duration::from_millis(TICK_MS));
    loop {
        ticks.tick().await;
        let at = clock.now().as_millis();
        let seen = match breaker {
            Breaker::Failsafe => match failsafe.call(api(clock)).await {
                Ok(()) => Seen::Ok,
                Err(failsafe::Error::Inner(())) => Seen::Err,
                Err(failsafe::Error::Rejected) => Seen::Rejected,
            },
            Breaker::Recloser => match recloser.call(api(clock)).await {
                Ok(()) => Seen::Ok,
                Err(recloser::Error::Inner(())) => Seen::Err,
                Err(recloser::Error::Rejected) => Seen::Rejected,
            },
        };
        log.borrow_mut().push((at, seen));
    }
}

/// One run on a thread of its own (the virtual clock is per thread). With `nested`,
/// the caller is spawned by a host task through `spawn_local`, so the host does not
/// wrap its polls.
fn run(breaker: Breaker, clock: Clock, nested: bool) -> Log {
    std::thread::spawn(move || {
        let mut host = match clock {
            Clock::Real => TokioHost::new().expect("runtime"),
            Clock::PerPoll | Clock::Stepped => {
                // Installed before the runtime is built, so tokio's paused clock and
                // std's agree on this thread.
                let virt = faultline_clock::Virtual::install(Duration::from_secs(3_600))
                    .expect("virtual clock");
                let step = (clock == Clock::Stepped).then(|| SimDuration::from_millis(1));
                TokioHost::new()
                    .expect("runtime")
                    .follow_time(move |t| virt.set(Duration::from_nanos(t.as_nanos())), step)
            }
        };
        let log = Rc::new(RefCell::new(Vec::new()));
        let task_log = Rc::clone(&log);
        let vclock = host.clock();
        if nested {
            host.spawn(async move {
                let _ = tokio::task::spawn_local(caller(breaker, vclock, task_log)).await;
            });
        } else {
            host.spawn(caller(breaker, vclock, task_log));
        }
        for ms in (ENGINE_STEP_MS..=RUN_MS).step_by(ENGINE_STEP_MS as usize) {
            host.advance_to(SimTime::from_millis(ms));
        }
        log.take()
    })
    .join()
    .expect("run thread")
}

/// When the breaker opened (the answer time of the last failure before the first
/// rejection) and when it next admitted a call.
fn open_and_probe(log: &Log) -> (u64, Option<u64>) {
    let first_rejected = log
        .iter()
        .position(|&(_, s)| s == Seen::Rejected)
        .expect("the breaker opened");
    let opened = log[..first_rejected]
        .iter()
        .rev()
        .find(|&&(_, s)| s == Seen::Err)
        .map(|&(at, _)| at + ANSWER_MS)
        .expect("a failure opened it");
    let probe = log[first_rejected..]
        .iter()
        .find(|&&(_, s)| s != Seen::Rejected)
        .map(|&(at, _)| at);
    (opened, probe)
}

fn assert_half_opens_after_its_wait(breaker: Breaker, clock: Clock, nested: bool) -> Log {
    let log = run(breaker, clock, nested);
    assert_eq!(
        log,
        run(breaker, clock, nested),
        "{breaker:?} {clock:?}: two runs differ"
    );
    let (opened, probe) = open_and_probe(&log);
    let wait = u64::try_from(WAIT.as_millis()).expect("ms");
    // The first call after the wait: the first tick strictly after `opened + wait`
    // (both crates want `now > until`).
    let due = ((opened + wait) / TICK_MS + 1) * TICK_MS;
    assert_eq!(probe, Some(due), "{breaker:?} {clock:?}: {log:?}");
    // The probe finds the API back and the breaker closes: every later call succeeds.
    assert!(
        log.iter()
            .filter(|&&(at, _)| at >= due)
            .all(|&(_, s)| s == Seen::Ok),
        "{breaker:?}: {log:?}"
    );
    log
}

#[test]
fn failsafe_half_opens_after_its_wait_in_virtual_time() {
    let log = assert_half_opens_after_its_wait(Breaker::Failsafe, Clock::PerPoll, false);
    // Opened at 210 ms (the third failure's answer), probe at 2 300 ms.
    assert_eq!(open_and_probe(&log), (210, Some(2_300)));
    assert_eq!(
        log,
        assert_half_opens_after_its_wait(Breaker::Failsafe, Clock::Stepped, false)
    );
}

#[test]
fn recloser_half_opens_after_its_wait_in_virtual_time() {
    let log = assert_half_opens_after_its_wait(Breaker::Recloser, Clock::PerPoll, false);
    // recloser opens on the call after its ring of three is full of failures (that
    // call still runs): opened at 310 ms, probe at 2 400 ms.
    assert_eq!(open_and_probe(&log), (310, Some(2_400)));
    assert_eq!(
        log,
        assert_half_opens_after_its_wait(Breaker::Recloser, Clock::Stepped, false)
    );
}

#[test]
fn on_the_real_clock_neither_breaker_ever_half_opens() {
    for breaker in [Breaker::Failsafe, Breaker::Recloser] {
        let log = run(breaker, Clock::Real, false);
        assert_eq!(log, run(breaker, Clock::Real, false));
        let (_, probe) = open_and_probe(&log);
        // Six virtual seconds pass in a few real milliseconds: the 2 s wait on the
        // real clock has not elapsed, so the breaker is still open at the end.
        assert_eq!(probe, None, "{breaker:?}: {log:?}");
    }
}

#[test]
fn a_task_the_host_does_not_wrap_needs_the_step() {
    // Spawned by the code under test, not through the host: told only at the end of
    // each `advance_to`, the breaker's clock lags up to one engine step (here 1 s).
    let lagging = run(Breaker::Failsafe, Clock::PerPoll, true);
    let (opened, probe) = open_and_probe(&lagging);
    assert_eq!((opened, probe), (210, Some(3_000)), "{lagging:?}");
    // With the 1 ms step it sees the exact time.
    let log = assert_half_opens_after_its_wait(Breaker::Failsafe, Clock::Stepped, true);
    assert_eq!(open_and_probe(&log), (210, Some(2_300)));
}

/// The step's cost: six simulated seconds of the workload, per-poll hook against the
/// 1 ms step, wall time measured from a thread without the virtual clock.
/// `cargo test --test sim real_clock::step_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check"]
fn step_cost() {
    // Twice over, so the first round's warm-up shows.
    for clock in [Clock::Real, Clock::PerPoll, Clock::Stepped].repeat(2) {
        let started = std::time::Instant::now();
        for _ in 0..50 {
            run(Breaker::Failsafe, clock, false);
        }
        println!("{clock:?}: {:?} per 6 s simulated", started.elapsed() / 50);
    }
}
