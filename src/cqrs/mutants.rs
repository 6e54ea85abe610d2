//! Deliberately broken inventories ("mutants") the CQRS invariants must catch: the
//! reference with one defect each, (a) to (d) the classic event-sourcing bugs, and two more so every
//! invariant has a mutant to catch.

use crate::config::ConfigError;
use crate::cqrs::contract::Inventory;
use crate::cqrs::core::Flaw;
use crate::cqrs::invariants;
use crate::cqrs::pattern::CqrsPattern;
use crate::cqrs::world::{CqrsKnobs, CqrsWorld};
use crate::harness::Mutant;

/// The world for `knobs` with the reference inventory carrying `flaw` (its repository
/// and every projection runner).
fn flawed(knobs: &CqrsKnobs, flaw: Flaw) -> Result<CqrsWorld<Inventory>, ConfigError> {
    let mut inv = knobs.reference()?;
    inv.repository.set_flaw(flaw);
    for r in &mut inv.runners {
        r.flaw = flaw;
    }
    Ok(CqrsWorld::new(knobs.clone(), inv))
}

/// The catalog.
pub const CATALOG: &[Mutant<CqrsPattern>] = &[
    Mutant::new(
        "push_without_checkpoint",
        "(a) events are pushed to the projections after commit, with no checkpoint and no catch-up: \
                 a crash between append and dispatch, or a lost delivery, loses read-model updates",
        invariants::CAUGHT_UP,
        |k| flawed(k, Flaw::PushNoCheckpoint),
    ),
    Mutant::new(
        "checkpoint_before_apply",
        "(b) the checkpoint is written before the event is applied: a crash in between skips it",
        invariants::CAUGHT_UP,
        |k| flawed(k, Flaw::CheckpointBeforeApply),
    ),
    Mutant::new(
        "last_writer_wins",
        "(c) appends skip the expected-version check: of two commands that loaded the same version, both append",
        invariants::NO_LOST_WRITE,
        |k| flawed(k, Flaw::NoVersionCheck),
    ),
    Mutant::new(
        "non_idempotent_apply",
        "(d) the read model applies an event it already applied (a replay or a duplicate) again",
        invariants::IDEMPOTENT_REPLAY,
        |k| flawed(k, Flaw::NonIdempotentApply),
    ),
    Mutant::new(
        "stale_snapshot",
        "a snapshot holds the state one event before the version it claims",
        invariants::SNAPSHOT_FOLD,
        |k| flawed(k, Flaw::StaleSnapshot),
    ),
    Mutant::new(
        "rebuild_in_place",
        "a rebuild resets the live read model to empty instead of building a new one beside it",
        invariants::MONOTONIC_READS,
        |k| flawed(k, Flaw::RebuildInPlace),
    ),
    Mutant::new(
        "position_ahead_of_apply",
        "the checkpoint is written before the event is applied, and a query reports the read model at the checkpoint: \
         its position is ahead of what it applied",
        invariants::CAUGHT_UP,
        |k| flawed(k, Flaw::PositionAheadOfApply),
    ),
];
