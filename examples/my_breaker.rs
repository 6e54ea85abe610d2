//! A `faultline` binary of your own: a circuit breaker written from scratch against the
//! [`CallGuard`] contract, registered next to the built-in patterns, so every subcommand,
//! report page and `summary.json` works for it.
//!
//! ```sh
//! cargo run --release --example my_breaker -- sweep my-breaker
//! cargo run --release --example my_breaker -- run my-breaker --seed 7
//! cargo run --release --example my_breaker -- list
//! cargo test --release --example my_breaker
//! ```
//!
//! `MyBreaker` trips after `failures_to_trip` failures in a row, rejects callers for a
//! fixed `wait_in_open`, then lets one probe through: its success closes the breaker,
//! its failure opens it again. No retries, no fallback; a plain limit on requests in
//! progress. [`CallGuard::policy`] declares exactly that, and the invariants judge it by
//! that declaration.

use faultline::breaker::State;
use faultline::breaker::contract::{
    Answer, ApiError, ApiReply, CallGuard, GuardMetrics, Policy, Step, Transition, TripRule, Why,
};
use faultline::breaker::pattern::BreakerPattern;
use faultline::breaker::world::{SmsKnobs, SmsWorld};
use faultline::clock::Instant;
use faultline::harness::{Pattern, Plugin};
use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

/// The breaker's settings.
#[derive(Clone, Copy, Debug)]
struct MyConfig {
    /// Failures in a row (API errors and timeouts) that open it.
    failures_to_trip: u32,
    /// How long it stays open before one probe may go through.
    wait_in_open: Duration,
    /// How long a call may take before the caller is told it timed out.
    timeout: Duration,
    /// Most requests in progress at once.
    in_progress_max: u32,
}

/// What an attempt's outcome says about the API's health.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Says nothing: a bad request (the API is fine) or a caller who left.
    Nothing,
}

/// A request in progress: the episode (the state and when it was entered) it was sent in.
#[derive(Debug)]
struct Ticket {
    episode: u64,
}

struct MyBreaker {
    config: MyConfig,
    state: State,
    /// Counts every state change, so a late reply from an earlier state is not counted.
    episode: u64,
    failures_in_a_row: u32,
    opened_at: Instant,
    probe_sent: bool,
    in_progress: u32,
    transitions: VecDeque<Transition>,
    metrics: GuardMetrics,
}

impl MyBreaker {
    fn new(config: MyConfig) -> Self {
        MyBreaker {
            config,
            state: State::Closed,
            episode: 0,
            failures_in_a_row: 0,
            opened_at: Instant::ZERO,
            probe_sent: false,
            in_progress: 0,
            transitions: VecDeque::new(),
            metrics: GuardMetrics::default(),
        }
    }

    fn go(&mut self, to: State, now: Instant) {
        self.transitions.push_back(Transition {
            from: self.state,
            to,
            at: now,
        });
        self.state = to;
        self.episode += 1;
        self.failures_in_a_row = 0;
        self.probe_sent = false;
        self.opened_at = now;
    }

    /// An attempt is over.
    fn finish(&mut self, ticket: Ticket, now: Instant, outcome: Outcome) {
        self.in_progress -= 1;
        if ticket.episode != self.episode {
            return; // sent in an earlier state: says nothing about this one
        }
        match (self.state, outcome) {
            (State::Closed, Outcome::Success) => self.failures_in_a_row = 0,
            (State::Closed, Outcome::Failure) => {
                self.failures_in_a_row += 1;
                if self.failures_in_a_row >= self.config.failures_to_trip {
                    self.go(State::Open, now);
                }
            }
            (State::HalfOpen, Outcome::Success) => self.go(State::Closed, now),
            (State::HalfOpen, Outcome::Failure) => self.go(State::Open, now),
            // The probe told nothing: start a fresh half-open episode with a fresh probe.
            (State::HalfOpen, Outcome::Nothing) => self.go(State::HalfOpen, now),
            _ => {}
        }
    }

    fn rejected(retry_after: Duration) -> Step<Ticket> {
        Step::Answer(Answer::Failed(Why::Rejected { retry_after }))
    }
}

impl CallGuard for MyBreaker {
    type Ticket = Ticket;

    fn on_request(&mut self, now: Instant) -> Step<Ticket> {
        if self.in_progress >= self.config.in_progress_max {
            return Step::Answer(Answer::Failed(Why::BulkheadFull));
        }
        if self.state == State::Open {
            let until = self.opened_at + self.config.wait_in_open;
            if now < until {
                return Self::rejected(until - now);
            }
            self.go(State::HalfOpen, now);
        }
        if self.state == State::HalfOpen {
            if self.probe_sent {
                return Self::rejected(self.config.wait_in_open);
            }
            self.probe_sent = true;
        }
        self.in_progress += 1;
        self.metrics.admitted += 1;
        Step::Send {
            ticket: Ticket {
                episode: self.episode,
            },
            timeout: Some(self.config.timeout),
        }
    }

    fn on_reply(&mut self, ticket: Ticket, now: Instant, reply: ApiReply) -> Step<Ticket> {
        let (outcome, answer) = match reply {
            ApiReply::Ok => (Outcome::Success, Answer::Delivered),
            // A bad number is the caller's fault, not the API's.
            ApiReply::Err(e @ ApiError::InvalidNumber) => {
                (Outcome::Nothing, Answer::Failed(Why::Api(e)))
            }
            ApiReply::Err(e) => (Outcome::Failure, Answer::Failed(Why::Api(e))),
        };
        match outcome {
            Outcome::Success => self.metrics.succeeded += 1,
            Outcome::Failure => self.metrics.failed += 1,
            Outcome::Nothing => self.metrics.ignored += 1,
        }
        self.finish(ticket, now, outcome);
        Step::Answer(answer)
    }

    fn on_timeout(&mut self, ticket: Ticket, now: Instant) -> Step<Ticket> {
        self.metrics.failed += 1;
        self.finish(ticket, now, Outcome::Failure);
        Step::Answer(Answer::Failed(Why::Timeout))
    }

    fn on_retry_due(&mut self, ticket: Ticket, now: Instant) -> Step<Ticket> {
        // Never asked for (this breaker does not retry); answer rather than panic.
        self.metrics.released += 1;
        self.finish(ticket, now, Outcome::Nothing);
        Step::Answer(Answer::Failed(Why::DeadlineReached))
    }

    fn on_cancel(&mut self, ticket: Ticket, now: Instant) {
        self.metrics.released += 1;
        self.finish(ticket, now, Outcome::Nothing);
    }

    fn state(&self) -> State {
        self.state
    }

    fn poll_transition(&mut self) -> Option<Transition> {
        self.transitions.pop_front()
    }

    fn metrics(&self) -> GuardMetrics {
        self.metrics
    }

    /// What this breaker promises, from its own settings: the invariants hold it to this.
    fn policy(&self) -> Policy {
        Policy {
            trip: TripRule::ConsecutiveFailures {
                failures: self.config.failures_to_trip,
            },
            half_open_calls_permitted: 1,
            wait_in_open_min: self.config.wait_in_open,
            wait_in_open_max: self.config.wait_in_open,
            answer_within: self.config.timeout,
            in_progress_max: self.config.in_progress_max,
        }
    }
}

/// Your breaker in each seed's SMS world, under its own name. The callers' deadline and
/// bulkhead size come from the seed's knobs; the rest of the settings are yours.
fn my_breaker() -> Plugin<BreakerPattern, SmsWorld<MyBreaker>> {
    Plugin::new(BreakerPattern, "my-breaker", |knobs: &SmsKnobs| {
        let breaker = MyBreaker::new(MyConfig {
            failures_to_trip: 5,
            wait_in_open: Duration::from_secs(1),
            timeout: Duration::from_millis(knobs.timeout_ms),
            in_progress_max: knobs.bulkhead_max,
        });
        SmsWorld::new(knobs.clone(), breaker)
    })
    .about("my circuit breaker (5 failures in a row, 1 s open, 1 probe) in front of the SMS API")
}

/// The command, with your breaker next to the built-in patterns.
fn main() -> ExitCode {
    let mine = my_breaker();
    let mut patterns: Vec<&dyn Pattern> = faultline::registry::patterns();
    patterns.push(&mine);
    faultline::cli::main(&patterns)
}

/// The same breaker from `cargo test --example my_breaker` (in your crate: a file in
/// `tests/`): sweeps seeds 0..1000, or `FAULTLINE_SEEDS`, and on a failure writes the
/// shrunk plan and fails with the line that replays it.
#[cfg(test)]
mod tests {
    #[test]
    fn my_breaker_keeps_its_promises() {
        faultline::check::Check::new(&super::my_breaker())
            .test_command("cargo test --release --example my_breaker my_breaker_keeps_its_promises")
            .run();
    }
}
