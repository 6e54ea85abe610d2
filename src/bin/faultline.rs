//! `faultline`: run, replay, sweep, merge and mutate the built-in patterns' simulations,
//! and write self-contained HTML reports. All of it is [`faultline::cli`]; a binary of
//! your own passes your plug-ins beside [`faultline::registry::patterns`].
//!
//! Exit codes: 0 every invariant held; 1 a violation was found (printed with the
//! command that replays it); 2 bad usage or bad input.

use std::process::ExitCode;

fn main() -> ExitCode {
    faultline::cli::main(&faultline::registry::patterns())
}
