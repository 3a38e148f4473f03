//! `leakguard analyze FILE`: replays a recorded series through the online detector.

use super::args::{self, Spec};
use super::fmt::{iso, mb_per_hour, span};
use super::input::{self, Format, Series, Timing};
use super::{CliError, print};
use crate::trend::{Severity, TrendConfig, TrendDetector, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

const SPECS: &[Spec] = &[
    Spec {
        name: "--limit",
        value: true,
    },
    Spec {
        name: "--json",
        value: false,
    },
    Spec {
        name: "--series",
        value: true,
    },
    Spec {
        name: "--allow-gaps",
        value: false,
    },
];

/// What the replay of one series found; the `--json` output.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Analysis {
    /// The input's format: `csv` or `prometheus`.
    pub format: &'static str,
    /// The series' labels (Prometheus), or null (CSV).
    pub labels: Option<BTreeMap<String, String>>,
    /// Whether the detector suspects a leak at the end of the series.
    pub leak: bool,
    /// How serious: none, slow, warning, critical.
    pub severity: Severity,
    /// Unix seconds of the sample at which the detector first flagged the leak, or null.
    pub detected_at: Option<f64>,
    /// `detected_at` as an ISO-8601 UTC time.
    pub detected_at_utc: Option<String>,
    /// Seconds from the first sample to `detected_at`.
    pub detected_after_seconds: Option<f64>,
    /// When a flagged leak was cleared again, if it was and is not flagged at the end.
    pub cleared_at: Option<f64>,
    /// The floor's growth at the end, bytes per hour (null until there is enough data).
    pub slope_bytes_per_hour: Option<f64>,
    /// The same in MB (10⁶ bytes) per hour, the runbooks' unit.
    pub slope_mb_per_hour: Option<f64>,
    /// Share of pairwise slopes that are positive.
    pub confidence: f64,
    /// The horizon of the verdict, seconds.
    pub horizon_seconds: Option<f64>,
    /// Seconds from the last sample until the limit at this rate (leak and `--limit`), or null.
    pub oom_eta_seconds: Option<f64>,
    /// The `--limit`, bytes.
    pub limit_bytes: Option<u64>,
    /// The last value, bytes.
    pub last_bytes: u64,
    /// Samples replayed.
    pub samples: usize,
    /// Unix seconds of the first sample.
    pub first_time: f64,
    /// Unix seconds of the last sample.
    pub last_time: f64,
    /// Median step between samples, seconds.
    pub step_seconds: f64,
    /// The detector's window, seconds: max(120, 4 × step).
    pub window_seconds: f64,
    /// Gaps longer than 10 steps (only with `--allow-gaps`).
    pub gaps: usize,
    /// Whether the series was too short for a verdict.
    pub warming_up: bool,
    /// The detector's reason, one sentence.
    pub reason: String,
}

/// The `--json` output for an input with several series.
#[derive(Debug, Serialize)]
struct Several<'a> {
    leak: bool,
    leaking_series: usize,
    series: &'a [Analysis],
}

/// The detector's settings for a series sampled every `step` seconds: the defaults, with the
/// window at least four steps wide.
pub(crate) fn config_for_step(step: f64) -> TrendConfig {
    let mut config = TrendConfig::default();
    let window = config.window.as_secs_f64().max(4.0 * step);
    config.window = Duration::from_secs_f64(window);
    config
}

/// Replays `samples` (in time order) through a detector with `config`.
pub(crate) fn replay(
    samples: &[(f64, u64)],
    config: TrendConfig,
    limit: Option<u64>,
) -> (Verdict, Option<f64>, Option<f64>, Option<f64>) {
    let mut d = TrendDetector::new(config);
    let mut detected_at = None;
    let mut cleared_at = None;
    for &(t, v) in samples {
        if d.observe(t, v) {
            if d.verdict().leak {
                detected_at.get_or_insert(t);
                cleared_at = None;
            } else {
                cleared_at = Some(t);
            }
        }
    }
    let last = samples.last().map_or(0, |s| s.1);
    let eta = limit.and_then(|l| d.oom_eta(last, l));
    (d.verdict().clone(), detected_at, cleared_at, eta)
}

fn analyze(series: &Series, timing: Timing, limit: Option<u64>, format: Format) -> Analysis {
    let config = config_for_step(timing.step);
    let window = config.window.as_secs_f64();
    let (verdict, detected_at, cleared_at, oom_eta_seconds) =
        replay(&series.samples, config, limit);
    let first_time = series.samples.first().map_or(0.0, |s| s.0);
    let (last_time, last_bytes) = series.samples.last().copied().unwrap_or((0.0, 0));
    let slope = verdict.slope_bytes_per_second;
    Analysis {
        format: format.as_str(),
        labels: (format == Format::Prometheus).then(|| series.labels.clone()),
        leak: verdict.leak,
        severity: verdict.severity,
        detected_at,
        detected_at_utc: detected_at.map(iso),
        detected_after_seconds: detected_at.map(|t| t - first_time),
        cleared_at: if verdict.leak { None } else { cleared_at },
        slope_bytes_per_hour: slope.map(|s| s * 3600.0),
        slope_mb_per_hour: slope.map(|s| s / crate::trend::MB_PER_HOUR),
        confidence: verdict.confidence,
        horizon_seconds: verdict.horizon_seconds,
        oom_eta_seconds,
        limit_bytes: limit,
        last_bytes,
        samples: series.samples.len(),
        first_time,
        last_time,
        step_seconds: timing.step,
        window_seconds: window,
        gaps: timing.gaps,
        warming_up: verdict.warming_up,
        reason: verdict.reason,
    }
}

/// `leakguard analyze`.
pub(crate) fn command(rest: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    let parsed = args::parse("analyze", rest, SPECS)?;
    if parsed.help {
        return print(out, super::ANALYZE_HELP);
    }
    let file = args::one_positional("analyze", &parsed, "FILE (or - for stdin)")?;
    let limit = parsed
        .value("--limit")
        .map(|v| crate::parse_size("--limit", v))
        .transpose()
        .map_err(|e| CliError::usage(format!("analyze: {e}")))?;
    let mut filters = Vec::new();
    for f in parsed.values("--series") {
        match f.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                filters.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
            }
            _ => {
                return Err(CliError::usage(format!(
                    "analyze: --series {f:?}: expected LABEL=VALUE, e.g. --series instance=api-1:9100"
                )));
            }
        }
    }
    let allow_gaps = parsed.flag("--allow-gaps");
    let name = if file == "-" { "<stdin>" } else { file };
    let context = |e: CliError| CliError {
        message: format!("analyze: {name}: {}", e.message),
        ..e
    };

    let input = if file == "-" {
        input::read(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| CliError::io(format!("analyze: cannot open {file}: {e}")))?;
        input::read(f)
    }
    .map_err(context)?;

    let mut chosen: Vec<&Series> = input.series.iter().collect();
    if !filters.is_empty() {
        if input.format == Format::Csv {
            return Err(CliError::usage(
                "analyze: --series applies to Prometheus answers; a CSV holds one series",
            ));
        }
        chosen.retain(|s| {
            filters
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == v))
        });
        if chosen.is_empty() {
            let names: Vec<String> = input.series.iter().take(5).map(Series::name).collect();
            let more = input.series.len().saturating_sub(5);
            return Err(context(CliError::input(format!(
                "no series matches {}; the answer has {}{}",
                parsed.values("--series").join(" "),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ))));
        }
    }

    let mut results = Vec::with_capacity(chosen.len());
    for series in &chosen {
        let timing = series.check(allow_gaps).map_err(context)?;
        if timing.gaps > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "leakguard: warning: analyze: {name}: {}{} gap(s) longer than {} x the median step of {} (the longest {}); analyzed anyway (--allow-gaps)",
                if chosen.len() > 1 || input.format == Format::Prometheus {
                    format!("{}: ", series.name())
                } else {
                    String::new()
                },
                timing.gaps,
                input::GAP_STEPS,
                span(timing.step),
                span(timing.longest_gap)
            );
        }
        results.push(analyze(series, timing, limit, input.format));
    }

    let text = if parsed.flag("--json") {
        let json = match results.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            all => serde_json::to_string_pretty(&Several {
                leak: all.iter().any(|a| a.leak),
                leaking_series: all.iter().filter(|a| a.leak).count(),
                series: all,
            }),
        }
        .map_err(|e| CliError::io(format!("analyze: cannot render JSON: {e}")))?;
        json + "\n"
    } else {
        let mut text = String::new();
        for (series, a) in chosen.iter().zip(&results) {
            if !text.is_empty() {
                text.push('\n');
            }
            let title = match input.format {
                Format::Csv => name.to_owned(),
                Format::Prometheus => format!("{name}: {}", series.name()),
            };
            text.push_str(&render(&title, a));
        }
        if results.len() > 1 {
            let leaking = results.iter().filter(|a| a.leak).count();
            text.push_str(&format!(
                "\n{leaking} of {} series {} a leak.\n",
                results.len(),
                if leaking == 1 { "shows" } else { "show" }
            ));
        }
        text
    };
    print(out, &text)
}

/// The verdict for humans.
pub(crate) fn render(title: &str, a: &Analysis) -> String {
    let mut s = format!(
        "{title}: {} samples every {} (median), {} to {} ({})\n",
        a.samples,
        span(a.step_seconds),
        iso(a.first_time),
        iso(a.last_time),
        span(a.last_time - a.first_time)
    );
    let row = |s: &mut String, k: &str, v: String| s.push_str(&format!("  {k:<12} {v}\n"));
    if a.warming_up {
        let config = config_for_step(a.step_seconds);
        let needed = config.warmup + config.min_span;
        let longest = config.horizons.iter().max().copied().unwrap_or_default();
        // The detector judges a horizon from 8 windows; coarser steps never give it that.
        if a.last_time - a.first_time >= 2.0 * needed.as_secs_f64()
            && a.window_seconds * 8.0 > longest.as_secs_f64()
        {
            row(
                &mut s,
                "leak:",
                format!(
                    "unknown: the sampling step of {} is too coarse (windows of {}; the detector needs 8 windows within {}): use a step of {} or less",
                    span(a.step_seconds),
                    span(a.window_seconds),
                    span(longest.as_secs_f64()),
                    span(longest.as_secs_f64() / 32.0),
                ),
            );
            return s;
        }
        row(
            &mut s,
            "leak:",
            format!(
                "unknown: not enough data (the series spans {}; a verdict needs about {} of samples: {} warm-up and {} of windows of {})",
                span(a.last_time - a.first_time),
                span(needed.as_secs_f64() + a.window_seconds),
                span(config.warmup.as_secs_f64()),
                span(config.min_span.as_secs_f64()),
                span(a.window_seconds),
            ),
        );
        return s;
    }
    row(
        &mut s,
        "leak:",
        if a.leak {
            format!("YES, severity {}", severity_word(a.severity))
        } else {
            "no".into()
        },
    );
    if let Some(rate) = a.slope_bytes_per_hour {
        row(
            &mut s,
            "growth:",
            format!(
                "{} (memory floor{}), confidence {:.0}%",
                mb_per_hour(rate / 3600.0),
                a.horizon_seconds
                    .map(|h| format!(", over the last {}", span(h)))
                    .unwrap_or_default(),
                a.confidence * 100.0
            ),
        );
    }
    let detected = match (a.detected_at, a.cleared_at) {
        (Some(t), None) => format!("{}, {} after the start", iso(t), span(t - a.first_time)),
        (Some(t), Some(c)) => format!(
            "{} ({} after the start), cleared again at {}",
            iso(t),
            span(t - a.first_time),
            iso(c)
        ),
        (None, _) => "never".into(),
    };
    row(&mut s, "detected:", detected);
    let eta = match (a.oom_eta_seconds, a.limit_bytes) {
        (Some(eta), Some(limit)) if eta <= 0.0 => format!(
            "already over the limit ({} of {})",
            crate::format_bytes(a.last_bytes),
            crate::format_bytes(limit)
        ),
        (Some(eta), Some(limit)) => format!(
            "{} after the last sample ({} of {}), at {}",
            span(eta),
            crate::format_bytes(a.last_bytes),
            crate::format_bytes(limit),
            iso(a.last_time + eta),
        ),
        (None, Some(_)) if !a.leak => "none: no leak".into(),
        (None, Some(_)) => "none: the floor does not grow".into(),
        (_, None) => format!(
            "unknown: give --limit (last value {})",
            crate::format_bytes(a.last_bytes)
        ),
    };
    row(&mut s, "OOM ETA:", eta);
    row(&mut s, "reason:", a.reason.clone());
    s
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::None => "none",
        Severity::Slow => "slow (above the normal 10 MB/h)",
        Severity::Warning => "warning (50 MB/h or more)",
        Severity::Critical => "critical (100 MB/h or more)",
    }
}

/// The analysis of one series of a fleet scan (`analyze --prometheus`): what `analyze` gives a
/// series of a Prometheus answer, with its labels.
pub(crate) fn analyze_prometheus(series: &Series, timing: Timing, limit: Option<u64>) -> Analysis {
    analyze(series, timing, limit, Format::Prometheus)
}

/// Reads `bytes` as `analyze` reads a file, then checks, replays and renders every series as
/// `analyze` does, with and without gaps allowed (the `fuzzing` feature's entry point).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_input(bytes: &[u8]) {
    let Ok(input) = input::read(bytes) else {
        return;
    };
    for series in &input.series {
        let _ = series.name();
        for allow_gaps in [false, true] {
            if let Ok(timing) = series.check(allow_gaps) {
                let a = analyze(series, timing, Some(1 << 30), input.format);
                let _ = render("fuzz", &a);
                let _ = serde_json::to_string(&a);
            }
        }
    }
}
