//! A `faultline` binary of your own: your breaker registered next to the built-in
//! patterns, so every subcommand, report page and `summary.json` works for it.
//!
//! ```sh
//! cargo run --release --example my_breaker -- sweep my-breaker --seeds 0..200
//! cargo run --release --example my_breaker -- run my-breaker --seed 7
//! cargo run --release --example my_breaker -- list
//! ```
//!
//! `MyBreaker` here wraps the reference guard and passes every event through: it shows
//! the shape of a plug-in (a type implementing
//! [`CallGuard`](faultline::breaker::contract::CallGuard), a constructor of the SMS world
//! holding it) in a few lines. Yours keeps the same shape with its own logic inside.

use faultline::breaker::circuit::State;
use faultline::breaker::contract::{ApiReply, CallGuard, GuardMetrics, Policy, Step, Transition};
use faultline::breaker::guard::Guard;
use faultline::breaker::pattern::BreakerPattern;
use faultline::breaker::world::{SmsKnobs, SmsWorld};
use faultline::clock::Instant;
use faultline::harness::{Pattern, Plugin};
use std::process::ExitCode;

/// Your circuit breaker. Here: the reference guard under another name.
struct MyBreaker {
    inner: Guard,
}

impl CallGuard for MyBreaker {
    type Ticket = <Guard as CallGuard>::Ticket;

    fn on_request(&mut self, now: Instant) -> Step<Self::Ticket> {
        self.inner.on_request(now)
    }

    fn on_reply(
        &mut self,
        ticket: Self::Ticket,
        now: Instant,
        reply: ApiReply,
    ) -> Step<Self::Ticket> {
        self.inner.on_reply(ticket, now, reply)
    }

    fn on_timeout(&mut self, ticket: Self::Ticket, now: Instant) -> Step<Self::Ticket> {
        self.inner.on_timeout(ticket, now)
    }

    fn on_retry_due(&mut self, ticket: Self::Ticket, now: Instant) -> Step<Self::Ticket> {
        self.inner.on_retry_due(ticket, now)
    }

    fn on_cancel(&mut self, ticket: Self::Ticket, now: Instant) {
        self.inner.on_cancel(ticket, now);
    }

    fn policy(&self) -> Policy {
        self.inner.policy()
    }
    fn state(&self) -> State {
        self.inner.state()
    }

    fn poll_transition(&mut self) -> Option<Transition> {
        self.inner.poll_transition()
    }

    fn metrics(&self) -> GuardMetrics {
        self.inner.metrics()
    }
}

fn main() -> ExitCode {
    // The SMS world of each seed's knobs, with your breaker in it, under its own name.
    let mine = Plugin::new(BreakerPattern, "my-breaker", |knobs: &SmsKnobs| {
        let inner = knobs.reference_guard()?;
        SmsWorld::new(knobs.clone(), MyBreaker { inner })
    })
    .about("my circuit breaker in front of the flaky SMS API");
    let mut patterns: Vec<&dyn Pattern> = faultline::registry::patterns();
    patterns.push(&mine);
    faultline::cli::main(&patterns)
}
