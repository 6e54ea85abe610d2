//! The generated saga (`saga-any`) as a [`Scenario`] of the harness.

use crate::config::ConfigError;
use crate::harness::{Description, Host, Metric, Mutant, Scenario, notes};
use crate::saga::generated::mutants::CATALOG;
use crate::saga::generated::{AnyKnobs, Job, Ledgers, Reason};
use crate::saga::invariants::ORCHESTRATED as INVARIANTS;
use crate::saga::orchestrated::core::Flaw;
use crate::saga::orchestrated::pattern::{compensated_share, completed_share, recoveries};
use crate::saga::orchestrated::world::{SagaWorld, run_as};
use crate::saga::report::saga_timeline;
use crate::saga::{Orchestrator, SagaCoordinator};
use faultline_sim::{FaultPlan, FaultProfile, RunReport, SeedRange, TraceMode};

/// The orchestrated saga world around a coordinator of jobs and the generated
/// [`Ledgers`].
pub type AnyWorld<O = Orchestrator<Job, Reason>> = SagaWorld<O, Ledgers>;

/// A saga whose definition the seed generates (2 to 6 steps, refusal points, "failed,
/// retry now" answers), orchestrated from a durable log.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyPattern;

impl AnyPattern {
    /// The reference world for `knobs` with the orchestrator carrying `flaw`, the
    /// participants `ledgers`; conformance to the reference's policy is checked.
    pub(crate) fn world(
        knobs: &AnyKnobs,
        config: crate::saga::SagaConfig,
        flaw: Flaw,
        ledgers: Ledgers,
    ) -> Result<AnyWorld, ConfigError> {
        let coordinator = Orchestrator::new(config)
            .with_flaw(flaw)
            .with_tamper(crate::saga::generated::one_more);
        SagaWorld::with_participants(knobs.base.clone(), coordinator, ledgers)?
            .conforming_to_reference()
    }
}

/// The figures of a run, as read from what the world observed.
const fn metrics<O: SagaCoordinator<Job, Reason>>() -> [Metric<AnyWorld<O>>; 6] {
    [
        Metric {
            name: "steps",
            unit: "count",
            value: |w| Some(w.services.ledgers.len() as f64),
        },
        completed_share(),
        compensated_share(),
        Metric {
            name: "sagas failed",
            unit: "count",
            value: |w| Some(w.stats.failed as f64),
        },
        Metric {
            name: "failed, retry now answers",
            unit: "count",
            value: |w| Some(w.services.failed_replies() as f64),
        },
        recoveries(),
    ]
}

impl Scenario for AnyPattern {
    type Knobs = AnyKnobs;
    type World = AnyWorld;

    const NAME: &'static str = "saga-any";
    const ABOUT: &'static str = "a saga whose definition the seed generates (2-6 steps, refusal points, failed-retry-now answers) over idempotent ledgers, orchestrated from a durable log";
    const PROMISES: &'static [(&'static str, &'static str)] = &crate::saga::invariants::PROMISES;
    const INVARIANTS: &'static [&'static str] = &INVARIANTS;
    const METRICS: &'static [Metric<AnyWorld>] = &metrics::<Orchestrator<Job, Reason>>();
    const MUTANTS: &'static [Mutant<Self>] = CATALOG;
    const DEFAULT_SEEDS: SeedRange = SeedRange {
        start: 0,
        end: 2_000,
    };

    fn seed_knobs(&self, seed: u64) -> AnyKnobs {
        AnyKnobs::from_seed(seed)
    }

    fn fault_profile(&self, knobs: &AnyKnobs) -> FaultProfile {
        knobs.fault_profile()
    }

    fn fault_plan(&self, knobs: &AnyKnobs) -> FaultPlan {
        knobs.fault_plan()
    }

    fn reference(&self, knobs: &AnyKnobs) -> Result<AnyWorld, ConfigError> {
        AnyPattern::world(
            knobs,
            knobs.config_builder().build()?,
            Flaw::None,
            knobs.ledgers(),
        )
    }

    fn simulate(
        &self,
        world: AnyWorld,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, AnyWorld) {
        run_as(world, plan, trace, Self::NAME)
    }

    fn describe(&self, knobs: &AnyKnobs, report: &RunReport, world: &AnyWorld) -> Description {
        describe(knobs, report, world)
    }
}

/// Runs any coordinator of jobs in this world, for a plug-in
/// ([`Plugin`](crate::harness::Plugin)): build its world with
/// [`SagaWorld::with_participants`] from the knobs' base, your coordinator (configured
/// with [`Definition::step_ids`](crate::saga::generated::Definition::step_ids)) and
/// [`AnyKnobs::ledgers`]; it gets the reference's metrics and report view.
impl<O: SagaCoordinator<Job, Reason>> Host<AnyWorld<O>> for AnyPattern {
    fn simulate_in(
        &self,
        world: AnyWorld<O>,
        plan: FaultPlan,
        trace: TraceMode,
    ) -> (RunReport, AnyWorld<O>) {
        run_as(world, plan, trace, Self::NAME)
    }

    fn metrics_in(&self) -> Vec<Metric<AnyWorld<O>>> {
        metrics::<O>().to_vec()
    }

    fn describe_in(
        &self,
        knobs: &AnyKnobs,
        report: &RunReport,
        world: &AnyWorld<O>,
    ) -> Description {
        describe(knobs, report, world)
    }
}

/// The report view of one run of any coordinator of jobs, from what the world observed.
fn describe<O: SagaCoordinator<Job, Reason>>(
    knobs: &AnyKnobs,
    report: &RunReport,
    world: &AnyWorld<O>,
) -> Description {
    let s = &world.stats;
    let definition: Vec<String> = knobs
        .definition
        .steps
        .iter()
        .map(|st| {
            let refuses = if st.refuse_percent > 0 {
                format!("refuses {} % ({})", st.refuse_percent, st.reason)
            } else {
                "never refuses".to_string()
            };
            format!("{} [{refuses}, failed {} %]", st.name, st.failed_percent)
        })
        .collect();
    let figures = vec![
        ("definition".into(), definition.join(" -> ")),
        ("sagas started".into(), s.started.to_string()),
        ("completed".into(), s.completed.to_string()),
        ("compensated".into(), s.compensated.to_string()),
        ("failed (alerted)".into(), s.failed.to_string()),
        ("recoveries from the log".into(), s.recoveries.to_string()),
        ("commands sent".into(), s.sends.to_string()),
        (
            "failed, retry now answers".into(),
            world.services.failed_replies().to_string(),
        ),
        ("log records made durable".into(), s.records.to_string()),
    ];
    Description {
        notes: notes(&INVARIANTS, |_| String::new()),
        figures,
        timeline: saga_timeline(&world.lanes, report.end),
    }
}
