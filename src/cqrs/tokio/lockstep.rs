//! The adapter and the sans-IO driver core agree: [`EventSourcedService`] and the
//! [`CommandPolicy`] / [`Follower`] the simulated world drives, run on one paused tokio
//! clock through the same script (commands, another writer's appends during a decision,
//! refusals, crashes and rebuilds of a projection), must make the same decisions: the
//! same loads at the same instants (so the same backoff sleeps from the same jitter),
//! the same expected versions, the same answers, and projections at the same position,
//! checkpoint and rebuild state whenever the script looks.
//!
//! The sans-IO side carries out what the cores answer with the same tokio timers as the
//! adapter (a `RetryAfter` is a `tokio::time::sleep`), so tokio's rounding of timers to
//! the millisecond is the same on both sides.

use super::{EventSourcedService, JITTER_SEED};
use crate::clock::Instant;
use crate::cqrs::core::{
    Aggregate, AppendError, ExecuteError, ExpectedVersion, ProjectionRunner, Repository, StreamId,
};
use crate::cqrs::driver::{CommandPolicy, Follow, Follower, Next, Outcome, expected_at};
use crate::cqrs::item::{Item, ItemCommand, ItemEvent, StockView, StoredEvent};
use crate::splitmix::SplitMix64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One scripted command: the gap before it, its stream and command, how long each
/// decision thinks, and for each attempt whether another writer appends to the stream
/// while it thinks (an attempt beyond the list: no).
#[derive(Clone, Debug)]
struct Cmd {
    gap: Duration,
    stream: StreamId,
    command: ItemCommand,
    think: Duration,
    interfere: Vec<bool>,
}

/// An answer, as both sides can state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    Appended {
        from: u64,
        to: u64,
        last: u64,
    },
    Rejected,
    Conflict {
        expected: ExpectedVersion,
        actual: u64,
    },
}

/// What one side did with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    /// When each decision started (each load), since the shared origin, and the stock
    /// it saw.
    loads: Vec<(Duration, u64)>,
    said: Said,
    conflicts: u64,
}

fn script() -> Vec<Cmd> {
    let c = |gap, stream, command, think, interfere: &[bool]| Cmd {
        gap: ms(gap),
        stream: StreamId(stream),
        command,
        think: ms(think),
        interfere: interfere.to_vec(),
    };
    vec![
        // A new stream, raced on its first attempt: the conflict is at "no stream".
        c(0, 1, ItemCommand::Restock { units: 5 }, 3, &[true]),
        c(5, 1, ItemCommand::Withdraw { units: 2 }, 2, &[]),
        // Raced on every attempt: gives up after attempts_max.
        c(1, 1, ItemCommand::Withdraw { units: 1 }, 4, &[true; 8]),
        // Refused: answered at once, never retried.
        c(2, 1, ItemCommand::Withdraw { units: 500 }, 1, &[true]),
        c(0, 2, ItemCommand::Restock { units: 12 }, 0, &[false, true]),
        c(7, 2, ItemCommand::Withdraw { units: 11 }, 6, &[true, true]),
        c(3, 3, ItemCommand::Withdraw { units: 1 }, 1, &[]),
        c(0, 3, ItemCommand::Restock { units: 3 }, 9, &[true, false]),
    ]
}

fn interfering() -> Vec<StoredEvent> {
    vec![StoredEvent::Current(ItemEvent::Restocked { units: 1 })]
}

fn said(
    result: Result<crate::cqrs::Executed<ItemEvent>, ExecuteError<crate::cqrs::ItemRejection>>,
) -> Said {
    match result {
        Ok(done) => Said::Appended {
            from: done.appended.from_version,
            to: done.appended.to_version,
            last: done.appended.last_position,
        },
        Err(ExecuteError::Rejected(_)) => Said::Rejected,
        Err(ExecuteError::Append(AppendError::WrongExpectedVersion {
            expected, actual, ..
        })) => Said::Conflict { expected, actual },
        Err(other) => panic!("unexpected error {other}"),
    }
}

async fn adapter(attempts_max: u32) -> Vec<Record> {
    let origin = tokio::time::Instant::now();
    let s =
        EventSourcedService::<Item, StoredEvent>::new(Repository::new(3).unwrap(), attempts_max)
            .unwrap();
    let mut out = Vec::new();
    for cmd in script() {
        tokio::time::sleep(cmd.gap).await;
        let loads = Arc::new(Mutex::new(Vec::new()));
        let result = s
            .execute_with(cmd.stream, |state: Item| {
                let s = s.clone();
                let loads = Arc::clone(&loads);
                let cmd = cmd.clone();
                async move {
                    let attempt = {
                        let mut l = loads.lock().unwrap();
                        l.push((origin.elapsed(), state.stock));
                        l.len()
                    };
                    tokio::time::sleep(cmd.think).await;
                    if cmd.interfere.get(attempt - 1).copied().unwrap_or(false) {
                        s.with_repository(|r| {
                            r.append(cmd.stream, ExpectedVersion::Any, interfering())
                        })
                        .unwrap();
                    }
                    state.decide(&cmd.command)
                }
            })
            .await;
        let loads = loads.lock().unwrap().clone();
        out.push(Record {
            loads,
            said: said(result),
            conflicts: s.conflicts(),
        });
    }
    out
}

async fn sans_io(attempts_max: u32) -> Vec<Record> {
    let origin = tokio::time::Instant::now();
    let mut repo = Repository::<Item, StoredEvent>::new(3).unwrap();
    let policy = CommandPolicy::new(attempts_max, CommandPolicy::default_backoff()).unwrap();
    let mut jitter = SplitMix64(JITTER_SEED);
    let mut conflicts = 0;
    let mut out = Vec::new();
    for cmd in script() {
        tokio::time::sleep(cmd.gap).await;
        let mut run = policy.start();
        let mut loads = Vec::new();
        let said = loop {
            let loaded = repo.rehydrate(cmd.stream);
            loads.push((origin.elapsed(), loaded.state.stock));
            tokio::time::sleep(cmd.think).await;
            if cmd
                .interfere
                .get(run.attempt() as usize - 1)
                .copied()
                .unwrap_or(false)
            {
                repo.append(cmd.stream, ExpectedVersion::Any, interfering())
                    .unwrap();
            }
            let (outcome, result) = match loaded.state.decide(&cmd.command) {
                Err(why) => (Outcome::Rejected, Err(ExecuteError::Rejected(why))),
                Ok(events) => match repo.commit(cmd.stream, expected_at(loaded.version), events) {
                    Ok(done) => (Outcome::Appended, Ok(done)),
                    Err(e) => {
                        conflicts += 1;
                        (Outcome::Conflict, Err(e))
                    }
                },
            };
            match policy.on_outcome(&mut run, outcome, &mut jitter) {
                Next::Done | Next::GiveUp => break said(result),
                Next::RetryAfter(d) => tokio::time::sleep(d).await,
            }
        };
        out.push(Record {
            loads,
            said,
            conflicts,
        });
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_command_loop_makes_the_policys_decisions() {
    for attempts_max in [1, 3, 5] {
        let a = adapter(attempts_max).await;
        let b = sans_io(attempts_max).await;
        assert_eq!(a, b, "attempts_max {attempts_max}: adapter vs sans-IO");
        // The script does what it is for: conflicts, retries with backoff (when allowed),
        // a give-up at "no stream", a refusal.
        let retried = a.iter().any(|r| r.loads.len() > 1);
        assert_eq!(retried, attempts_max > 1, "{a:?}");
        assert!(a.iter().any(|r| r.said == Said::Rejected));
        assert!(a.iter().any(|r| matches!(r.said, Said::Conflict { .. })));
        if attempts_max == 1 {
            assert!(a.iter().any(|r| matches!(
                r.said,
                Said::Conflict {
                    expected: ExpectedVersion::NoStream,
                    ..
                }
            )));
        }
    }
}

/// One scripted action on the projection side, after a gap.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Restock `units` on a stream through the service.
    Append(u32, u64),
    Crash,
    Rebuild,
}

fn projection_script() -> Vec<(Duration, Act)> {
    let mut s = Vec::new();
    for i in 0..12u32 {
        s.push((
            ms(u64::from(i % 4) * 3),
            Act::Append(i % 3, u64::from(i) + 1),
        ));
    }
    s.push((ms(5), Act::Crash));
    s.push((ms(4), Act::Rebuild));
    s.push((ms(2), Act::Append(0, 2)));
    s.push((ms(1), Act::Crash));
    s.push((ms(3), Act::Rebuild));
    s.push((ms(2), Act::Crash));
    s.push((ms(130), Act::Append(1, 1)));
    s.push((ms(10), Act::Rebuild));
    s.push((ms(250), Act::Append(2, 4)));
    s
}

/// (time, position, checkpoint, rebuilding) before each action and after the last.
type Seen = Vec<(Duration, u64, u64, bool)>;

const POLL: Duration = Duration::from_millis(40);
const CHECKPOINT_EVERY: u64 = 4;

/// Lets every ready task run (the projection task reacts to a wake-up at once).
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

async fn projection_adapter() -> Seen {
    let origin = tokio::time::Instant::now();
    let s = EventSourcedService::<Item, StoredEvent>::new(Repository::new(3).unwrap(), 3).unwrap();
    let view = s.spawn_projection(
        ProjectionRunner::<StockView>::new(CHECKPOINT_EVERY).unwrap(),
        POLL,
    );
    let mut seen = Vec::new();
    let look = |seen: &mut Seen| {
        let r = view.query();
        seen.push((
            origin.elapsed(),
            r.position,
            view.checkpoint(),
            view.rebuilding(),
        ));
    };
    for (gap, act) in projection_script() {
        tokio::time::sleep(gap).await;
        settle().await;
        look(&mut seen);
        match act {
            Act::Append(stream, units) => {
                s.execute(StreamId(stream), ItemCommand::Restock { units })
                    .await
                    .unwrap();
            }
            Act::Crash => view.crash(),
            Act::Rebuild => view.rebuild(),
        }
    }
    settle().await;
    look(&mut seen);
    seen
}

/// The follower as the world drives it: wake on an append, a crash's restart and a
/// rebuild; step until it sleeps; poll on its cadence.
async fn projection_sans_io() -> Seen {
    let origin = tokio::time::Instant::now();
    let now = || Instant::ZERO.saturating_add(origin.elapsed());
    let mut repo = Repository::<Item, StoredEvent>::new(3).unwrap();
    let mut runner = ProjectionRunner::<StockView>::new(CHECKPOINT_EVERY).unwrap();
    let mut follower = Follower::new(now(), POLL);
    let run = |follower: &mut Follower,
               runner: &mut ProjectionRunner<StockView>,
               repo: &Repository<Item, StoredEvent>| {
        // Step and Yield both step again (nothing else runs here); Sleep ends the turn.
        while let Follow::Step | Follow::Yield = follower.stepped(runner.step(repo.store())) {}
    };
    follower.wake();
    run(&mut follower, &mut runner, &repo);
    let mut seen = Vec::new();
    for (gap, act) in projection_script() {
        let until = now().saturating_add(gap);
        while follower.next_poll() <= until {
            let at = follower.next_poll();
            tokio::time::sleep_until(origin + Duration::from_nanos(at.as_nanos())).await;
            if follower.poll_fired(now()) {
                run(&mut follower, &mut runner, &repo);
            }
        }
        tokio::time::sleep_until(origin + Duration::from_nanos(until.as_nanos())).await;
        seen.push((
            origin.elapsed(),
            runner.read_model().position,
            runner.checkpoint(),
            runner.rebuilding(),
        ));
        match act {
            Act::Append(stream, units) => {
                repo.execute(StreamId(stream), &ItemCommand::Restock { units })
                    .unwrap();
            }
            Act::Crash => runner.crash(),
            Act::Rebuild => runner.rebuild(),
        }
        if follower.wake() {
            run(&mut follower, &mut runner, &repo);
        }
    }
    seen.push((
        origin.elapsed(),
        runner.read_model().position,
        runner.checkpoint(),
        runner.rebuilding(),
    ));
    seen
}

#[tokio::test(start_paused = true)]
async fn the_projection_task_follows_as_the_follower_decides() {
    let a = projection_adapter().await;
    let b = projection_sans_io().await;
    assert_eq!(a, b, "adapter vs sans-IO");
    // The script reaches what it is for: a crash replays, a rebuild swaps in.
    assert!(
        a.last().is_some_and(|l| l.1 > 0 && l.1 == l.2 && !l.3),
        "{a:?}"
    );
}
