//! The decisions around the verified core that a CQRS driver makes: how a command's
//! append is guarded, what follows each outcome of an attempt (done, refused, conflict:
//! back off and decide again, or give up), and when a projection follower steps, yields
//! or sleeps until its next poll. One sans-IO state machine for each, which both the
//! simulated world's clients and projections ([`world`](crate::cqrs::world)) and the
//! tokio adapter ([`tokio`](crate::cqrs::tokio)) drive, so the retry loop and the follower
//! the service runs are the ones the simulator exercises (quinn over quinn-proto).
//!
//! Pure: `now` and the jitter generator are inputs, nothing here sleeps or locks. The
//! drivers own the store, the runner, the timers and the wake-ups, and carry out what
//! these machines answer.

use crate::clock::Instant;
use crate::config::ConfigError;
use crate::cqrs::core::{ExpectedVersion, Step};
use crate::retry::{Backoff, RetryPolicy};
use std::time::Duration;

/// The expectation a command appends under, having loaded its stream at `version`: no
/// stream yet at 0, else exactly that version (optimistic concurrency).
pub(crate) fn expected_at(version: u64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

/// How one attempt of a command ended (load, decide, append).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The events were appended (or there were none to append).
    Appended,
    /// The aggregate refused the command.
    Rejected,
    /// The append met another writer's events (a wrong expected version).
    Conflict,
}

/// What the driver does after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The command is over: answer with what the attempt returned (appended, or refused:
    /// a refusal is the aggregate's answer, never retried).
    Done,
    /// Wait this long, then load, decide and append again.
    RetryAfter(Duration),
    /// A conflict on the last allowed attempt: answer with that conflict.
    GiveUp,
}

/// The retry policy of command handling: at most `attempts_max` attempts, a jittered
/// backoff between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CommandPolicy {
    retry: RetryPolicy,
}

impl CommandPolicy {
    /// The backoff every command driver uses: from 1 ms, doubling, up to 100 ms.
    pub(crate) fn default_backoff() -> Backoff {
        // 1 ms > 0 and 100 ms >= 1 ms: the only errors `Backoff::new` has cannot occur.
        Backoff::new(Duration::from_millis(1), Duration::from_millis(100)).unwrap_or_default()
    }

    /// Up to `attempts_max` attempts with `backoff` between them.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] on `attempts_max` outside 1 to [`RetryPolicy::ATTEMPTS_MAX_LIMIT`].
    pub(crate) fn new(attempts_max: u32, backoff: Backoff) -> Result<Self, ConfigError> {
        Ok(CommandPolicy {
            retry: RetryPolicy::new(attempts_max, backoff)?,
        })
    }

    /// Attempts in total, the first included.
    #[cfg(feature = "tokio")]
    pub(crate) fn attempts_max(&self) -> u32 {
        self.retry.attempts_max()
    }

    /// The backoff between attempts.
    #[cfg(feature = "tokio")]
    pub(crate) fn backoff(&self) -> Backoff {
        self.retry.backoff()
    }

    /// A new command, at its first attempt.
    pub(crate) fn start(&self) -> Command {
        Command { attempt: 1 }
    }

    /// The attempt of `command` ended with `outcome`: what now. Draws from `jitter` only
    /// for a retry.
    pub(crate) fn on_outcome(
        &self,
        command: &mut Command,
        outcome: Outcome,
        jitter: &mut (impl rand::Rng + ?Sized),
    ) -> Next {
        match outcome {
            Outcome::Appended | Outcome::Rejected => Next::Done,
            Outcome::Conflict => match self.retry.next_delay(command.attempt, jitter) {
                None => Next::GiveUp,
                Some(delay) => {
                    command.attempt += 1;
                    Next::RetryAfter(delay)
                }
            },
        }
    }
}

/// One command in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    attempt: u32,
}

impl Command {
    /// The attempt under way, from 1.
    #[cfg(test)]
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Steps a follower takes in one turn before it yields to other work.
pub(crate) const STEPS_PER_TURN: usize = 1_024;

/// What a projection follower does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Step the runner again.
    Step,
    /// Step again, after letting other work run (the turn is used up).
    Yield,
    /// Idle: wait for a wake-up (an append, a delivery, a restart, a rebuild) or the
    /// poll at this instant, whichever comes first.
    Sleep {
        /// The next poll.
        until: Instant,
    },
}

/// The driver of one [`ProjectionRunner`](crate::cqrs::core::ProjectionRunner): it steps
/// the runner until it reports idle, a turn of at most [`STEPS_PER_TURN`] steps at a
/// time; idle, it waits to be woken, and polls the log on a fixed cadence (every `poll`
/// from its start) as the fallback for a lost wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Follower {
    poll: Duration,
    next_poll: Instant,
    stepping: bool,
    down: bool,
    turn: usize,
}

impl Follower {
    /// A follower started at `now`, idle, polling every `poll` from then.
    pub(crate) fn new(now: Instant, poll: Duration) -> Self {
        Follower {
            poll,
            next_poll: now.saturating_add(poll),
            stepping: false,
            down: false,
            turn: 0,
        }
    }

    /// True while it steps (not idle).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // read by the world's quiescence
    pub(crate) fn stepping(&self) -> bool {
        self.stepping
    }

    /// The instant of the next poll.
    #[cfg_attr(not(any(feature = "sim", test)), allow(dead_code))] // the world's polls
    pub(crate) fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// Something may have changed (an append, a delivery, a rebuild): true when the
    /// follower was idle and now starts stepping (the driver schedules a step); false
    /// when it was stepping already, or is down.
    pub(crate) fn wake(&mut self) -> bool {
        if self.stepping || self.down {
            return false;
        }
        self.stepping = true;
        self.turn = 0;
        true
    }

    /// The poll due at or before `now` fired: the next one is one `poll` later on the
    /// cadence (skipping any already past), and the follower wakes (see
    /// [`wake`](Self::wake)).
    pub(crate) fn poll_fired(&mut self, now: Instant) -> bool {
        while self.next_poll <= now && !self.poll.is_zero() {
            self.next_poll = self.next_poll.saturating_add(self.poll);
        }
        if self.poll.is_zero() {
            self.next_poll = now;
        }
        self.wake()
    }

    /// The runner went down (a crash): it stops stepping, and no wake-up or poll
    /// starts it until it is [`restarted`](Self::restarted).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // the world's crashes
    pub(crate) fn stopped(&mut self) {
        self.stepping = false;
        self.down = true;
        self.turn = 0;
    }

    /// The runner is back after a crash: it wakes to catch up from its checkpoint (see
    /// [`wake`](Self::wake)).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))] // the world's restarts
    pub(crate) fn restarted(&mut self) -> bool {
        self.down = false;
        self.wake()
    }

    /// The runner did `step`: what now.
    pub(crate) fn stepped(&mut self, step: Step) -> Follow {
        if step == Step::Idle {
            self.stepping = false;
            self.turn = 0;
            return Follow::Sleep {
                until: self.next_poll,
            };
        }
        self.stepping = true;
        self.turn += 1;
        if self.turn >= STEPS_PER_TURN {
            self.turn = 0;
            Follow::Yield
        } else {
            Follow::Step
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splitmix::SplitMix64;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_conflict_retries_with_backoff_until_attempts_max_and_a_refusal_ends() {
        let policy = CommandPolicy::new(3, CommandPolicy::default_backoff()).unwrap();
        let mut rng = SplitMix64(1);
        let mut c = policy.start();
        assert_eq!(c.attempt(), 1);
        let Next::RetryAfter(d1) = policy.on_outcome(&mut c, Outcome::Conflict, &mut rng) else {
            panic!("expected a retry");
        };
        assert!(d1 <= ms(1));
        let Next::RetryAfter(d2) = policy.on_outcome(&mut c, Outcome::Conflict, &mut rng) else {
            panic!("expected a retry");
        };
        assert!(d2 <= ms(2));
        assert_eq!(c.attempt(), 3);
        assert_eq!(
            policy.on_outcome(&mut c, Outcome::Conflict, &mut rng),
            Next::GiveUp
        );
        let mut c = policy.start();
        assert_eq!(
            policy.on_outcome(&mut c, Outcome::Rejected, &mut rng),
            Next::Done
        );
        assert_eq!(
            policy.on_outcome(&mut c, Outcome::Appended, &mut rng),
            Next::Done
        );
        assert!(CommandPolicy::new(0, CommandPolicy::default_backoff()).is_err());
        assert_eq!(expected_at(0), ExpectedVersion::NoStream);
        assert_eq!(expected_at(4), ExpectedVersion::Exact(4));
    }

    #[test]
    fn a_follower_steps_in_turns_and_polls_on_a_fixed_cadence() {
        let mut f = Follower::new(Instant::ZERO, ms(100));
        assert!(!f.stepping());
        assert!(f.wake());
        assert!(!f.wake(), "already stepping");
        let applied = Step::Applied {
            position: 1,
            replay: false,
        };
        for _ in 1..STEPS_PER_TURN {
            assert_eq!(f.stepped(applied), Follow::Step);
        }
        assert_eq!(f.stepped(applied), Follow::Yield);
        assert_eq!(f.stepped(applied), Follow::Step);
        assert_eq!(
            f.stepped(Step::Idle),
            Follow::Sleep {
                until: Instant::from_millis(100)
            }
        );
        // A late poll keeps the cadence.
        assert!(f.poll_fired(Instant::from_millis(250)));
        assert_eq!(f.next_poll(), Instant::from_millis(300));
        assert_eq!(
            f.stepped(Step::Idle),
            Follow::Sleep {
                until: Instant::from_millis(300)
            }
        );
        f.stopped();
        assert!(!f.stepping());
        assert!(!f.wake(), "down");
        assert!(!f.poll_fired(Instant::from_millis(300)), "down");
        assert_eq!(f.next_poll(), Instant::from_millis(400));
        assert!(f.restarted());
        assert!(f.stepping());
    }
}
