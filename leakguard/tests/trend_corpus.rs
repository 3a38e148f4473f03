//! The detector against the labelled corpus: the generator's tidy shapes (the first corpus,
//! without a limit), the production shapes (long warm-ups, deploy ramps, daily cycles,
//! restarts, leaks that recur in every lifetime, fast leaks near the limit, a leak on top of a
//! daily cycle) with the series' limit, the same series sampled irregularly, and recordings of
//! real processes labelled by hand (`tests/fixtures/corpus/`). No false alarms, no misses, and
//! detection delays bounded.
#![allow(clippy::unwrap_used)]

use leakguard::trend::synth::{Series, Shape, deriv_rule_fires_at, generate};
use leakguard::trend::{MB_PER_HOUR, TrendConfig, TrendDetector};

/// Replays samples through a fresh detector (with `limit`, if given); the time the leak was
/// first flagged.
fn first_flag(samples: &[(f64, u64)], config: TrendConfig) -> Option<f64> {
    let mut d = TrendDetector::new(config);
    for &(t, v) in samples {
        if d.observe(t, v) && d.verdict().leak {
            if std::env::var_os("TREND_VERBOSE").is_some() {
                eprintln!("flag at {:.2} h: {}", t / 3600.0, d.verdict().reason);
            }
            return Some(t);
        }
    }
    None
}

fn with_limit(limit: Option<u64>) -> TrendConfig {
    TrendConfig {
        limit,
        ..TrendConfig::default()
    }
}

/// Seeds per shape: `TREND_SEEDS`, else `default`.
fn seeds(default: u64) -> u64 {
    std::env::var("TREND_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeds per shape for the long series: [`seeds`], but by default half of `default` (at least
/// one: every shape stays covered) in a debug build, which replays several times slower. The
/// benchmark (`benches/benches/detector.rs`) runs 100 seeds of every shape.
fn long_seeds(default: u64) -> u64 {
    seeds(if cfg!(debug_assertions) {
        (default / 2).max(1)
    } else {
        default
    })
}

/// Scores one series: a failure message, or the delay in minutes for a caught leak.
fn score(s: &Series, flagged: Option<f64>, what: &str) -> Result<Option<f64>, String> {
    match (s.leak, flagged) {
        (false, Some(t)) => Err(format!(
            "false alarm{what}: {:?} seed {} at {:.1} h",
            s.shape,
            s.seed,
            t / 3600.0
        )),
        (true, None) => Err(format!(
            "missed{what}: {:?} seed {} rate {:.1} MB/h",
            s.shape,
            s.seed,
            s.leak_rate.unwrap() / MB_PER_HOUR
        )),
        (true, Some(t)) => {
            let start = s.leak_start.unwrap();
            if t < start {
                Err(format!(
                    "flagged before the leak began{what}: {:?} seed {} at {:.1} h",
                    s.shape,
                    s.seed,
                    t / 3600.0
                ))
            } else {
                Ok(Some((t - start) / 60.0))
            }
        }
        (false, None) => Ok(None),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[test]
fn tidy_corpus_has_no_false_positives_and_no_misses() {
    let mut failures = Vec::new();
    let mut delays = Vec::new();
    let mut rule_delays = Vec::new();
    for shape in Shape::TIDY {
        for seed in 0..seeds(4) {
            let s = generate(shape, seed, 15.0, shape.corpus_duration(seed));
            match score(&s, first_flag(&s.samples, TrendConfig::default()), "") {
                Err(e) => failures.push(e),
                Ok(Some(d)) => {
                    delays.push(d);
                    if let Some(r) =
                        deriv_rule_fires_at(&s.samples, 3600.0, 10.0 * MB_PER_HOUR, 900.0)
                    {
                        rule_delays.push((r - s.leak_start.unwrap()) / 60.0);
                    }
                }
                Ok(None) => {}
            }
        }
    }
    let (m, r) = (median(&mut delays), median(&mut rule_delays));
    eprintln!("tidy corpus: leakguard median delay {m:.0} min; deriv rule {r:.0} min");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(m <= r, "median delay {m:.0} min, the rule's {r:.0} min");
}

/// Jitter of up to ±40% of the step, one sample in ten missing, and an hour without samples
/// (not while a leak is being confirmed: a gap there delays the verdict by its length).
fn irregular(s: &Series, seed: u64) -> Vec<(f64, u64)> {
    let samples = &s.samples;
    let mut rng = leakguard::trend::synth::Rng::new(seed ^ 0x5EED);
    let end = samples.last().map_or(0.0, |s| s.0);
    let mut gap = rng.range(0.2, 0.8) * end;
    if let Some(start) = s.leak_start {
        gap = if start >= 2.0 * 3600.0 {
            rng.range(0.5 * 3600.0, start - 1.5 * 3600.0)
        } else {
            start + 3.0 * 3600.0
        };
    }
    let mut out = Vec::with_capacity(samples.len());
    for (i, &(t, v)) in samples.iter().enumerate() {
        if (gap..gap + 3600.0).contains(&t) || (i > 0 && rng.unit() < 0.1) {
            continue;
        }
        let j = if i == 0 { 0.0 } else { rng.range(-6.0, 6.0) };
        out.push((t + j, v));
    }
    out
}

#[test]
fn production_corpus_has_no_false_alarms_no_misses_and_bounded_delays() {
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for shape in Shape::ALL {
        let mut delays = Vec::new();
        for seed in 0..long_seeds(2) {
            let s = generate(shape, seed, 15.0, shape.corpus_duration(seed));
            let flag = first_flag(&s.samples, with_limit(Some(s.limit)));
            match score(&s, flag, "") {
                Err(e) => failures.push(e),
                Ok(Some(d)) => {
                    if shape == Shape::FastLeak && d > 15.0 {
                        failures.push(format!(
                            "FastLeak seed {seed}: flagged after {d:.0} min (the limit is under an hour away)"
                        ));
                    }
                    delays.push(d);
                }
                Ok(None) => {}
            }
            // The same series sampled irregularly: the same verdict.
            if seed > 0 && seed % 4 != 0 {
                continue;
            }
            let rough = irregular(&s, seed);
            let again = first_flag(&rough, with_limit(Some(s.limit)));
            if let Err(e) = score(&s, again, " (irregular sampling)") {
                failures.push(e);
            }
        }
        if !delays.is_empty() {
            let worst = delays.iter().copied().fold(0.0, f64::max);
            report.push(format!(
                "{shape:?}: median {:.0} min, worst {worst:.0} min",
                median(&mut delays)
            ));
            if worst > 240.0 {
                failures.push(format!("{shape:?}: worst delay {worst:.0} min"));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The guard samples every second: the same verdicts at that cadence (a few seeds: 28 800
/// samples a series; one in a debug build).
#[test]
fn one_second_sampling_gives_the_same_verdicts() {
    for shape in Shape::TIDY {
        for seed in 1000..1000 + long_seeds(2) {
            let s = generate(shape, seed, 1.0, 8.0 * 3600.0);
            let flagged = first_flag(&s.samples, TrendConfig::default());
            assert_eq!(
                flagged.is_some(),
                s.leak,
                "{shape:?} seed {seed}: flagged at {flagged:?}"
            );
        }
    }
}

/// Reads a recording: `unix_seconds,bytes` lines after the header.
fn recording(name: &str) -> Vec<(f64, u64)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/corpus")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("unix_seconds"))
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// The recordings of real processes, labelled by hand in `labels.csv`: replayed as `leakguard
/// analyze` replays them (windows of at least four steps, the recording's limit).
#[test]
fn recordings_of_real_processes_get_their_labels() {
    let labels = recording_labels();
    assert!(labels.len() >= 6, "{labels:?}");
    let mut failures = Vec::new();
    for (name, leak_start, limit) in &labels {
        let samples = recording(name);
        assert!(samples.len() > 100, "{name}: {} samples", samples.len());
        let step = samples[1].0 - samples[0].0;
        let config = TrendConfig {
            limit: *limit,
            window: std::time::Duration::from_secs_f64((4.0 * step).max(120.0)),
            ..TrendConfig::default()
        };
        let flagged = first_flag(&samples, config);
        let t0 = samples[0].0;
        match (leak_start, flagged) {
            (None, Some(t)) => {
                failures.push(format!("{name}: false alarm {:.1} h in", (t - t0) / 3600.0))
            }
            (Some(_), None) => failures.push(format!("{name}: leak missed")),
            (Some(start), Some(t)) if t < *start => failures.push(format!(
                "{name}: flagged {:.1} h in, before the leak began",
                (t - t0) / 3600.0
            )),
            (Some(start), Some(t)) => {
                eprintln!(
                    "{name}: leak flagged {:.0} min after it began",
                    (t - start) / 60.0
                );
            }
            (None, None) => eprintln!("{name}: no leak, none flagged"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `labels.csv`: file, leak start (Unix seconds, empty for no leak), limit (bytes, empty when
/// unknown), description.
fn recording_labels() -> Vec<(String, Option<f64>, Option<u64>)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/labels.csv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(4, ',');
            let name = f.next().unwrap().to_owned();
            let start = f.next().unwrap();
            let limit = f.next().unwrap();
            (
                name,
                (!start.is_empty()).then(|| start.parse().unwrap()),
                (!limit.is_empty()).then(|| limit.parse().unwrap()),
            )
        })
        .collect()
}
