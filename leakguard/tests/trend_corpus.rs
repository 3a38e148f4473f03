//! The detector against the labelled synthetic corpus: every shape, many seeds, randomized
//! parameters and noise. No false positives, no misses, and detection delays bounded.
#![allow(clippy::unwrap_used)]

use leakguard::trend::synth::{Series, Shape, deriv_rule_fires_at, generate};
use leakguard::trend::{MB_PER_HOUR, TrendConfig, TrendDetector};

/// Replays a series through a fresh detector; the time the leak was first flagged.
fn first_flag(series: &Series) -> Option<f64> {
    let mut d = TrendDetector::new(TrendConfig::default());
    for &(t, v) in &series.samples {
        if d.observe(t, v) && d.verdict().leak {
            return Some(t);
        }
    }
    None
}

fn corpus(seeds: u64, step: f64) -> Vec<Series> {
    let mut out = Vec::new();
    for shape in Shape::ALL {
        for seed in 0..seeds {
            let hours = 8.0 + (seed % 9) as f64; // 8 to 16 h
            out.push(generate(shape, seed, step, hours * 3600.0));
        }
    }
    out
}

#[test]
fn corpus_has_no_false_positives_and_no_misses() {
    let mut failures = Vec::new();
    let mut delays = Vec::new();
    let mut rule_delays = Vec::new();
    for s in corpus(
        std::env::var("TREND_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40),
        15.0,
    ) {
        let flagged = first_flag(&s);
        match (s.leak, flagged) {
            (false, Some(t)) => failures.push(format!(
                "false positive: {:?} seed {} at {:.1} h",
                s.shape,
                s.seed,
                t / 3600.0
            )),
            (true, None) => failures.push(format!(
                "missed: {:?} seed {} rate {:.1} MB/h",
                s.shape,
                s.seed,
                s.leak_rate.unwrap() / MB_PER_HOUR
            )),
            (true, Some(t)) => {
                let start = s.leak_start.unwrap();
                if t < start {
                    failures.push(format!(
                        "flagged before the leak began: {:?} seed {}",
                        s.shape, s.seed
                    ));
                }
                delays.push((t - start) / 60.0);
                if let Some(r) = deriv_rule_fires_at(&s.samples, 3600.0, 10.0 * MB_PER_HOUR, 900.0)
                {
                    rule_delays.push((r - start) / 60.0);
                }
            }
            (false, None) => {}
        }
    }
    delays.sort_by(f64::total_cmp);
    rule_delays.sort_by(f64::total_cmp);
    eprintln!(
        "leakguard delay (min): median {:.0}, worst {:.0}; deriv rule median {:.0} over {} fired",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        rule_delays
            .get(rule_delays.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        rule_delays.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        delays[delays.len() / 2] < 75.0,
        "median delay {:.0} min",
        delays[delays.len() / 2]
    );
}

/// The guard samples every second: the same verdicts at that cadence (fewer seeds: 28 800
/// samples a series).
#[test]
fn one_second_sampling_gives_the_same_verdicts() {
    for shape in Shape::ALL {
        for seed in 1000..1004 {
            let s = generate(shape, seed, 1.0, 8.0 * 3600.0);
            let flagged = first_flag(&s);
            assert_eq!(
                flagged.is_some(),
                s.leak,
                "{shape:?} seed {seed}: flagged at {flagged:?}"
            );
        }
    }
}
