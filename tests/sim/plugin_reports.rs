//! Plug-ins get the whole report: a plug-in holding a built-in pattern's reference
//! under another name shows, seed by seed, the built-in's metric readings and run
//! report (notes, figures, lanes, series), and a sweep of it through the command
//! writes the built-in's histograms into `summary.json` and `index.html`.

use crate::support::assert_plugin_reports_as_reference;
use faultline::breaker::pattern::BreakerPattern;
use faultline::breaker::world::{SmsKnobs, SmsWorld};
use faultline::bus::core::Bus;
use faultline::bus::pattern::BusPattern;
use faultline::bus::world::{BusKnobs, BusWorld};
use faultline::cqrs::pattern::CqrsPattern;
use faultline::cqrs::world::{CqrsKnobs, CqrsWorld};
use faultline::harness::{Pattern, Plugin};
use faultline::queue::pattern::QueuePattern;
use faultline::queue::world::{QueueKnobs, QueueWorld};
use faultline::saga::Orchestrator;
use faultline::saga::checkout::SagaKnobs;
use faultline::saga::choreographed::pattern::ChoreoPattern;
use faultline::saga::choreographed::world::ChoreoWorld;
use faultline::saga::orchestrated::pattern::SagaPattern;
use faultline::saga::orchestrated::world::SagaWorld;
use faultline::saga::twopc::core::Coordinator;
use faultline::saga::twopc::pattern::TwoPcPattern;
use faultline::saga::twopc::world::{TwoPcWorld, config_of};
use std::ops::Range;

/// Seeds per pattern whose runs and views are compared.
const SEEDS: Range<u64> = 0..6;

/// The breaker's reference guard as a plug-in (not held to the reference's settings:
/// `breaker.conformance` is the reference's own check).
fn breaker() -> Plugin<BreakerPattern, SmsWorld<faultline::breaker::guard::Guard>> {
    Plugin::new(BreakerPattern, "ref-breaker", |k: &SmsKnobs| {
        SmsWorld::new(k.clone(), k.reference_guard()?)
    })
}

/// The reference bus itself, where the built-in runs it inside the mutant wrapper.
fn bus() -> Plugin<BusPattern, BusWorld<Bus<u64>>> {
    Plugin::new(BusPattern, "ref-bus", |k: &BusKnobs| {
        Ok::<_, faultline::config::ConfigError>(BusWorld::new(k.clone(), k.reference_bus()?))
    })
}

fn saga() -> Plugin<SagaPattern, SagaWorld<Orchestrator>> {
    Plugin::new(SagaPattern, "ref-saga", |k: &SagaKnobs| {
        SagaWorld::with_coordinator(k.clone(), Orchestrator::new(k.config()?))
    })
}

fn choreo() -> Plugin<ChoreoPattern, ChoreoWorld<Bus<u64>>> {
    Plugin::new(ChoreoPattern, "ref-saga-choreo", |k: &SagaKnobs| {
        ChoreoWorld::with_bus(k.clone(), |config| Ok(Bus::new(config)))
    })
}

fn twopc() -> Plugin<TwoPcPattern, TwoPcWorld<Coordinator>> {
    Plugin::new(TwoPcPattern, "ref-twopc", |k: &SagaKnobs| {
        TwoPcWorld::with_coordinator(k.clone(), Coordinator::new(config_of(k)?))
    })
}

fn queue() -> Plugin<QueuePattern, QueueWorld<faultline::queue::core::Queue>> {
    Plugin::new(QueuePattern, "ref-queue", |k: &QueueKnobs| {
        QueueWorld::new(k.clone(), k.reference_queue()?)
    })
}

fn cqrs() -> Plugin<CqrsPattern, CqrsWorld<faultline::cqrs::contract::Inventory>> {
    Plugin::new(CqrsPattern, "ref-cqrs", |k: &CqrsKnobs| {
        Ok::<_, faultline::config::ConfigError>(CqrsWorld::new(k.clone(), k.reference()?))
    })
}

#[test]
fn a_breaker_plugin_reports_as_the_breaker() {
    assert_plugin_reports_as_reference(&BreakerPattern, &breaker(), SEEDS);
}

#[test]
fn a_bus_plugin_reports_as_the_bus() {
    assert_plugin_reports_as_reference(&BusPattern, &bus(), SEEDS);
}

#[test]
fn a_saga_plugin_reports_as_the_saga() {
    assert_plugin_reports_as_reference(&SagaPattern, &saga(), SEEDS);
}

#[test]
fn a_choreographed_saga_plugin_reports_as_the_choreographed_saga() {
    assert_plugin_reports_as_reference(&ChoreoPattern, &choreo(), SEEDS);
}

#[test]
fn a_twopc_plugin_reports_as_twopc() {
    assert_plugin_reports_as_reference(&TwoPcPattern, &twopc(), SEEDS);
}

#[test]
fn a_queue_plugin_reports_as_the_queue() {
    assert_plugin_reports_as_reference(&QueuePattern, &queue(), SEEDS);
}

#[test]
fn a_cqrs_plugin_reports_as_cqrs() {
    assert_plugin_reports_as_reference(&CqrsPattern, &cqrs(), SEEDS);
}

/// The "Distributions across seeds" part of `pattern`'s section of a sweep's index page.
fn distributions<'a>(html: &'a str, pattern: &str) -> &'a str {
    let open = format!("<section id=\"pattern-{pattern}\">");
    let section = &html[html.find(&open).unwrap_or_else(|| panic!("no {open}"))..];
    let section = &section[..section.find("</section>").expect("the section ends")];
    let from = section
        .find("<h3>Distributions across seeds</h3>")
        .unwrap_or_else(|| panic!("{pattern}'s section has no histograms"));
    let until = section.find("<h3>Coverage</h3>").expect("coverage follows");
    &section[from..until]
}

#[test]
fn a_sweep_of_plugins_writes_the_built_ins_histograms() {
    let dir = std::env::temp_dir().join(format!("faultline-plugin-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (b, u, s, c, t, q, e) = (breaker(), bus(), saga(), choreo(), twopc(), queue(), cqrs());
    let plugins: [&dyn Pattern; 7] = [&b, &u, &s, &c, &t, &q, &e];
    let mut patterns: Vec<&dyn Pattern> = faultline::registry::patterns();
    patterns.extend(plugins);
    let mut args = vec!["/bin/my-faultline".to_string(), "sweep".to_string()];
    for p in plugins {
        args.push(p.name().trim_start_matches("ref-").to_string());
        args.push(p.name().to_string());
    }
    let out = dir.to_str().unwrap().to_string();
    args.extend(["--seeds", "0..6", "--jobs", "2", "--out", &out].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        format!("{:?}", faultline::cli::run(&patterns, &args)),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let swept = summary["patterns"].as_array().unwrap();
    let histograms = |name: &str| {
        swept
            .iter()
            .find(|p| p["pattern"] == name)
            .unwrap_or_else(|| panic!("{name} swept"))["histograms"]
            .clone()
    };
    for p in plugins {
        let (mine, built_in) = (p.name(), p.name().trim_start_matches("ref-"));
        let theirs = histograms(built_in);
        let hists = theirs.as_array().unwrap();
        let metrics = faultline::registry::find(built_in).unwrap().metrics().len();
        assert_eq!(hists.len(), metrics, "{built_in}: one per metric");
        assert!(
            hists
                .iter()
                .any(|h| h["sketch"]["count"].as_u64().unwrap() > 0),
            "{built_in} has values"
        );
        assert_eq!(histograms(mine), theirs, "{mine}: {built_in}'s histograms");
        assert_eq!(
            distributions(&html, mine),
            distributions(&html, built_in),
            "{mine}: {built_in}'s histograms on the page"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
