//! The built-in scenarios as [`Host`]s: each runs any implementation of its contract in
//! its world, through the world's one run function.
//!
//! Plug-in runs get the engine's report, the knobs, the plan, the verdicts, the
//! coverage and the trace; the pattern-specific histograms and timelines are the
//! reference's (their metric and description code is written for the reference's world
//! type), so a plug-in's pages show none yet.

use crate::breaker::contract::CallGuard;
use crate::breaker::pattern::BreakerPattern;
use crate::breaker::world::SmsWorld;
use crate::bus::contract::EventBus;
use crate::bus::pattern::BusPattern;
use crate::bus::world::BusWorld;
use crate::cqrs::contract::EventSourced;
use crate::cqrs::pattern::CqrsPattern;
use crate::cqrs::world::CqrsWorld;
use crate::harness::Host;
use crate::queue::contract::TaskQueue;
use crate::queue::pattern::QueuePattern;
use crate::queue::world::QueueWorld;
use crate::saga::choreographed::pattern::ChoreoPattern;
use crate::saga::choreographed::world::ChoreoWorld;
use crate::saga::orchestrated::pattern::SagaPattern;
use crate::saga::orchestrated::world::SagaWorld;
use crate::saga::twopc::pattern::TwoPcPattern;
use crate::saga::twopc::world::TwoPcWorld;
use crate::saga::{SagaCoordinator, TwoPcCoordinator};
use faultline_sim::{FaultPlan, RunReport, TraceMode};

impl<G: CallGuard> Host<SmsWorld<G>> for BreakerPattern {
    fn simulate_in(
        &self,
        world: SmsWorld<G>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SmsWorld<G>) {
        crate::breaker::world::run(world, plan, trace)
    }
}

impl<B: EventBus> Host<BusWorld<B>> for BusPattern {
    fn simulate_in(
        &self,
        world: BusWorld<B>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, BusWorld<B>) {
        crate::bus::world::run(world, plan, trace)
    }
}

impl<O: SagaCoordinator> Host<SagaWorld<O>> for SagaPattern {
    fn simulate_in(
        &self,
        world: SagaWorld<O>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, SagaWorld<O>) {
        crate::saga::orchestrated::world::run(world, plan, trace)
    }
}

impl<B: EventBus> Host<ChoreoWorld<B>> for ChoreoPattern {
    fn simulate_in(
        &self,
        world: ChoreoWorld<B>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, ChoreoWorld<B>) {
        crate::saga::choreographed::world::run(world, plan, trace)
    }
}

impl<C: TwoPcCoordinator> Host<TwoPcWorld<C>> for TwoPcPattern {
    fn simulate_in(
        &self,
        world: TwoPcWorld<C>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, TwoPcWorld<C>) {
        crate::saga::twopc::world::run(world, plan, trace)
    }
}

impl<Q: TaskQueue> Host<QueueWorld<Q>> for QueuePattern {
    fn simulate_in(
        &self,
        world: QueueWorld<Q>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, QueueWorld<Q>) {
        crate::queue::world::run(world, plan, trace)
    }
}

impl<E: EventSourced> Host<CqrsWorld<E>> for CqrsPattern {
    fn simulate_in(
        &self,
        world: CqrsWorld<E>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, CqrsWorld<E>) {
        crate::cqrs::world::run(world, plan, trace)
    }
}
