//! Shrinking a failing fault plan found by a seed (outside proptest): try simpler plans
//! and keep each one that still fails, until nothing simpler fails.
//!
//! The steps, repeated while any succeeds: drop faults (halves of the list first, then
//! one at a time, delta-debugging style); shorten each fault (halve its window); move it
//! later (halve the gap to the horizon); soften it (halve ratios and latencies). Every
//! candidate is a valid plan. The number of runs is bounded by `runs_max`.

use crate::fault::{Fault, FaultKind, FaultPlan};
use crate::rng::Ratio;

/// What shrinking did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    /// The smallest failing plan found.
    pub plan: FaultPlan,
    /// Candidate plans run.
    pub runs: usize,
    /// Faults in the original plan.
    pub faults_before: usize,
}

/// Shrinks `plan`, which must fail, keeping every candidate for which `fails` is true.
/// `fails` should check for the same failure (the same invariant), so the shrunk plan
/// still shows the bug that was found.
pub fn shrink_plan(
    plan: &FaultPlan,
    mut fails: impl FnMut(&FaultPlan) -> bool,
    runs_max: usize,
) -> Shrunk {
    let mut best = plan.clone();
    let mut runs = 0;
    let mut attempt = |candidate: &FaultPlan, runs: &mut usize| -> bool {
        if *runs >= runs_max || candidate.validate().is_err() {
            return false;
        }
        *runs += 1;
        fails(candidate)
    };
    loop {
        let mut progress = false;
        // 1. Drop chunks of faults, halves first.
        let mut chunk = best.faults.len().div_ceil(2).max(1);
        while chunk >= 1 && !best.faults.is_empty() {
            let mut start = 0;
            while start < best.faults.len() {
                let mut candidate = best.clone();
                let end = (start + chunk).min(candidate.faults.len());
                candidate.faults.drain(start..end);
                if attempt(&candidate, &mut runs) {
                    best = candidate;
                    progress = true;
                } else {
                    start += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
        // 2-4. Simplify each fault.
        for i in 0..best.faults.len() {
            for simpler in simplifications(&best.faults[i], best.horizon_ms) {
                let mut candidate = best.clone();
                candidate.faults[i] = simpler;
                if attempt(&candidate, &mut runs) {
                    best = candidate;
                    progress = true;
                    break;
                }
            }
        }
        if !progress || runs >= runs_max {
            break;
        }
    }
    Shrunk {
        plan: best,
        runs,
        faults_before: plan.faults.len(),
    }
}

/// Simpler versions of one fault, most useful first: shorter, later, softer.
fn simplifications(f: &Fault, horizon_ms: u64) -> Vec<Fault> {
    let mut out = Vec::new();
    let len = f.until_ms - f.from_ms;
    if len > 1 {
        out.push(Fault {
            until_ms: f.from_ms + len / 2,
            ..f.clone()
        });
    }
    let end = horizon_ms.max(f.until_ms);
    let gap = end - f.until_ms;
    if gap > 1 {
        let shift = gap / 2;
        out.push(Fault {
            from_ms: f.from_ms + shift,
            until_ms: f.until_ms + shift,
            ..f.clone()
        });
    }
    let half = |r: Ratio| {
        Ratio::new(r.num() / 2, r.den())
            .ok()
            .filter(|h| h.num() > 0)
    };
    let softer = match f.kind {
        FaultKind::Errors { ratio } => half(ratio).map(|ratio| FaultKind::Errors { ratio }),
        FaultKind::Drop { ratio } => half(ratio).map(|ratio| FaultKind::Drop { ratio }),
        FaultKind::Duplicate { ratio } => half(ratio).map(|ratio| FaultKind::Duplicate { ratio }),
        FaultKind::Slow {
            latency_ms_min,
            latency_ms_max,
        } if latency_ms_max > 1 => Some(FaultKind::Slow {
            latency_ms_min: latency_ms_min / 2,
            latency_ms_max: latency_ms_max / 2,
        }),
        FaultKind::Delay {
            ratio,
            latency_ms_min,
            latency_ms_max,
        } if latency_ms_max > 1 => Some(FaultKind::Delay {
            ratio,
            latency_ms_min: latency_ms_min / 2,
            latency_ms_max: latency_ms_max / 2,
        }),
        // A torn crash shrinks to a crash: does the tear matter?
        FaultKind::TornCrash => Some(FaultKind::Crash),
        _ => None,
    };
    if let Some(kind) = softer {
        out.push(Fault { kind, ..f.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultProfile;
    use crate::rng::SimRng;

    #[test]
    fn shrinks_to_the_fault_that_matters() {
        // Fails whenever an outage of at least 500 ms exists.
        let fails = |p: &FaultPlan| {
            p.faults
                .iter()
                .any(|f| f.kind == FaultKind::Outage && f.until_ms - f.from_ms >= 500)
        };
        let profile = FaultProfile::new(10_000)
            .target("api")
            .node("n")
            .link("l")
            .faults(6, 10)
            .duration_ms(100, 5_000);
        let mut rng = SimRng::new(4);
        let mut shrunk_some = 0;
        for _ in 0..50 {
            let plan = FaultPlan::generate(&mut rng, &profile);
            if !fails(&plan) {
                continue;
            }
            let s = shrink_plan(&plan, fails, 10_000);
            assert_eq!(s.plan.faults.len(), 1, "{}", s.plan.to_json());
            let f = &s.plan.faults[0];
            assert_eq!(f.kind, FaultKind::Outage);
            let len = f.until_ms - f.from_ms;
            assert!(
                (500..1_000).contains(&len),
                "shortened to just enough: {len}"
            );
            shrunk_some += 1;
        }
        assert!(shrunk_some > 3);
    }

    #[test]
    fn respects_the_run_budget() {
        let plan = FaultPlan::generate(
            &mut SimRng::new(1),
            &FaultProfile::new(1_000).target("a").faults(8, 8),
        );
        let s = shrink_plan(&plan, |p| !p.faults.is_empty(), 5);
        assert_eq!(s.runs, 5);
    }
}
