//! `leakguard analyze`, run as a real child process on generated fixtures and on bad input.
//!
//! The fixtures under `tests/fixtures/cli/` come from `leakguard::trend::synth` (see
//! `regenerate_fixtures`, ignored: run it with `--ignored` to write them again):
//! - `leak_linear.csv`: `Linear`, seed 1, a sample every 15 s for 8 h; a leak of
//!   37.25 MB/h from 377.5 s after the start;
//! - `flat_sawtooth.csv`: `SawtoothFlat`, seed 2, 15 s, 8 h; no leak;
//! - `two_series.json`: a Prometheus `query_range` answer with a sample every 60 s for 12 h:
//!   `instance="api-1"` is `Staircase`, seed 1 (a leak of 73.34 MB/h in bursts, from 549.4 s),
//!   `instance="api-2"` is `SawtoothFlat`, seed 2 (no leak).
//!
//! Times start at 1 700 000 000 (2023-11-14T22:13:20Z).
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used)]

use leakguard::trend::MB_PER_HOUR;
use leakguard::trend::synth::{Shape, generate};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const ORIGIN: f64 = 1_700_000_000.0;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cli")
        .join(name)
}

/// Runs `leakguard` with `args`, feeding `stdin`.
fn leakguard(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leakguard"))
        .args(args)
        .env_remove("LEAKGUARD_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that fails early may not read all of its input.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn analyze_json(args: &[&str]) -> Value {
    let mut all = vec!["analyze", "--json"];
    all.extend_from_slice(args);
    let out = leakguard(&all, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn csv_leak_is_flagged_with_its_rate_and_detection_time() {
    let path = fixture("leak_linear.csv");
    let v = analyze_json(&[path.to_str().unwrap(), "--limit", "2GiB"]);
    assert_eq!(v["leak"], true, "{v}");
    assert_eq!(v["format"], "csv");
    assert_eq!(v["samples"], 8 * 240 + 1);
    assert_eq!(v["step_seconds"], 15.0);
    assert_eq!(v["window_seconds"], 120.0);
    assert_eq!(v["first_time"], ORIGIN);
    assert_eq!(v["last_time"], ORIGIN + 8.0 * 3600.0);
    // The leak starts 377.5 s in; the detector needs its 10 min warm-up, 50 min of rising
    // floor (under 50 MB/h, the limit many hours away) and five confirmations (one per 2-minute
    // window): it must flag within 75 minutes, never before the start.
    let detected = v["detected_at"].as_f64().unwrap();
    assert!(
        (ORIGIN + 377.5..ORIGIN + 4500.0).contains(&detected),
        "detected at +{} s",
        detected - ORIGIN
    );
    assert_eq!(
        v["detected_after_seconds"].as_f64().unwrap(),
        detected - ORIGIN
    );
    // 37.25 MB/h generated.
    let rate = v["slope_bytes_per_hour"].as_f64().unwrap() / 1e6;
    assert!((33.5..41.0).contains(&rate), "slope {rate} MB/h");
    assert_eq!(v["severity"], "slow");
    // OOM ETA from the last value against 2 GiB at the detected rate.
    let last = v["last_bytes"].as_f64().unwrap();
    let eta = v["oom_eta_seconds"].as_f64().unwrap();
    let want =
        ((2u64 << 30) as f64 - last) / (v["slope_bytes_per_hour"].as_f64().unwrap() / 3600.0);
    assert!((eta - want).abs() < 1.0, "eta {eta} want {want}");
    assert!(v["reason"].as_str().unwrap().contains("MB/h"));
    assert!(v["confidence"].as_f64().unwrap() > 0.75);
    // The reasons, one phrase each; not urgent (the limit is days away); one lifetime.
    let reasons = v["reasons"].as_array().unwrap();
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("the memory floor rose"),
        "{reasons:?}"
    );
    assert_eq!(v["urgent"], false);
    assert_eq!(v["lifetimes"], 1);
}

/// A leak that reaches the limit within the hour is urgent: flagged within 15 minutes of its
/// start, and the reasons say when the limit comes.
#[test]
fn a_leak_near_the_limit_is_urgent_and_says_when() {
    let mut text = String::from("unix_seconds,bytes\n");
    // Flat at 500 MB for an hour, then 2 GB/h; the limit is 1.5 GB (30 minutes of growth).
    for i in 0..=(90 * 4) {
        let t = f64::from(i) * 15.0;
        let v = 500e6 + f64::from(i % 5) * 1e5 + 2000e6 * ((t - 3600.0).max(0.0) / 3600.0);
        if v >= 1.5e9 {
            break;
        }
        text.push_str(&format!("{},{}\n", ORIGIN + t, v as u64));
    }
    let dir = std::env::temp_dir().join(format!("leakguard-urgent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("urgent.csv");
    std::fs::write(&path, text).unwrap();
    let v = analyze_json(&[path.to_str().unwrap(), "--limit", "1.5GB"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(v["leak"], true, "{v}");
    assert_eq!(v["urgent"], true, "{v}");
    let after = v["detected_at"].as_f64().unwrap() - (ORIGIN + 3600.0);
    assert!(
        (0.0..=900.0).contains(&after),
        "flagged {after} s after the start"
    );
    let first = v["reasons"][0].as_str().unwrap();
    assert!(first.starts_with("urgent: limit in"), "{first}");
}

#[test]
fn csv_flat_sawtooth_is_not_a_leak() {
    let path = fixture("flat_sawtooth.csv");
    let v = analyze_json(&[path.to_str().unwrap(), "--limit", "4G"]);
    assert_eq!(v["leak"], false, "{v}");
    assert_eq!(v["detected_at"], Value::Null);
    assert_eq!(v["oom_eta_seconds"], Value::Null);
    assert_eq!(v["severity"], "none");
    assert_eq!(v["warming_up"], false);
    let rate = v["slope_bytes_per_hour"].as_f64().unwrap() / 1e6;
    assert!(rate.abs() < 10.0, "{rate}");
}

#[test]
fn text_verdict_says_leak_rate_time_and_eta() {
    let path = fixture("leak_linear.csv");
    let out = leakguard(&["analyze", path.to_str().unwrap(), "--limit", "2GiB"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "1921 samples every 15 s (median), 2023-11-14T22:13:20Z to 2023-11-15T06:13:20Z (8 h)"
        ),
        "{text}"
    );
    assert!(text.contains("leak:        YES, severity slow"), "{text}");
    assert!(text.contains("detected:    2023-11-14T2"), "{text}");
    assert!(text.contains(" after the start"), "{text}");
    assert!(text.contains("OOM ETA:"), "{text}");
    assert!(text.contains(" of 2.0 GiB), at 2023-11-15T"), "{text}");
    assert!(stderr(&out).is_empty());

    let flat = fixture("flat_sawtooth.csv");
    let text = stdout(&leakguard(&["analyze", flat.to_str().unwrap()], b""));
    assert!(text.contains("leak:        no"), "{text}");
    assert!(text.contains("detected:    never"), "{text}");
    assert!(
        text.contains("OOM ETA:     unknown: give --limit"),
        "{text}"
    );
}

#[test]
fn prometheus_answer_with_two_series_analyzes_each() {
    let path = fixture("two_series.json");
    let v = analyze_json(&[path.to_str().unwrap()]);
    assert_eq!(v["leak"], true, "{v}");
    assert_eq!(v["leaking_series"], 1);
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0]["labels"]["instance"], "api-1");
    assert_eq!(series[0]["leak"], true);
    assert_eq!(series[1]["labels"]["instance"], "api-2");
    assert_eq!(series[1]["leak"], false);
    assert_eq!(series[1]["detected_at"], Value::Null);
    // 60 s scrapes: the window is four steps.
    assert_eq!(series[0]["step_seconds"], 60.0);
    assert_eq!(series[0]["window_seconds"], 240.0);

    let text = stdout(&leakguard(&["analyze", path.to_str().unwrap()], b""));
    assert!(
        text.contains("process_resident_memory_bytes{instance=\"api-1\",job=\"api\"}"),
        "{text}"
    );
    assert!(text.contains("1 of 2 series shows a leak."), "{text}");
}

#[test]
fn prometheus_series_selected_by_label() {
    let path = fixture("two_series.json");
    let v = analyze_json(&[path.to_str().unwrap(), "--series", "instance=api-1"]);
    assert_eq!(v["format"], "prometheus");
    assert_eq!(v["labels"]["instance"], "api-1");
    assert_eq!(v["leak"], true);
    // The staircase leak of 73.34 MB/h starts 549.4 s in.
    let detected = v["detected_at"].as_f64().unwrap();
    assert!(
        (ORIGIN + 549.4..ORIGIN + 2.0 * 3600.0).contains(&detected),
        "detected at +{} s",
        detected - ORIGIN
    );
    let rate = v["slope_bytes_per_hour"].as_f64().unwrap() / 1e6;
    assert!((66.0..81.0).contains(&rate), "slope {rate} MB/h");
    assert_eq!(v["severity"], "warning");

    let v = analyze_json(&[path.to_str().unwrap(), "--series=instance=api-2"]);
    assert_eq!(v["leak"], false);
    assert_eq!(v["detected_at"], Value::Null);

    let out = leakguard(
        &["analyze", path.to_str().unwrap(), "--series", "instance=db"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no series matches instance=db"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let csv = std::fs::read(fixture("leak_linear.csv")).unwrap();
    let out = leakguard(&["analyze", "-", "--json"], &csv);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leak"], true);
}

#[test]
fn a_short_series_is_not_enough_data() {
    let mut csv = String::from("unix_seconds,bytes\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "{},{}\n",
            1_700_000_000 + i * 15,
            100_000_000 + i * 1_000_000
        ));
    }
    let out = leakguard(&["analyze", "-"], csv.as_bytes());
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("unknown: not enough data (the series spans 15 min;"),
        "{}",
        stdout(&out)
    );
    let out = leakguard(&["analyze", "-", "--json"], csv.as_bytes());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["leak"].clone(), v["warming_up"].clone()),
        (Value::Bool(false), Value::Bool(true))
    );
    assert_eq!(v["detected_at"], Value::Null);
}

/// Every bad input: exit 2 and exactly one line on stderr that says what is wrong.
#[test]
fn bad_input_is_one_line_and_exit_2() {
    let mut gap = String::new();
    for i in 0..40 {
        gap.push_str(&format!("{},100\n", 1_700_000_000 + i * 15));
    }
    gap.push_str("1700009000,100\n");
    let many_seconds = "1700000000000,1\n1700000015000,1\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty file", String::new(), "the input is empty"),
        ("blank lines only", "\n\n  \n".into(), "only blank lines"),
        ("header only", "unix_seconds,bytes\n".into(), "only a header"),
        ("non-numeric time", "100,1\nsoon,2\n".into(), "line 2: time \"soon\" is not a number"),
        ("non-numeric value", "100,1\n115,lots\n".into(), "line 2: value \"lots\" is not a number"),
        ("three columns", "100,1,2\n".into(), "line 1: expected two columns"),
        ("unsorted", "100,1\n115,1\n130,1\n120,1\n".into(), "line 4: time 120 is earlier than 130 on line 3"),
        ("duplicate", "100,1\n115,1\n115,2\n".into(), "line 3: duplicate time 115 (also on line 2)"),
        ("gap", gap, "line 41: gap of 2 h 20 min after line 40"),
        ("NaN", "100,1\n115,NaN\n".into(), "line 2: value NaN is not a number (NaN)"),
        ("negative", "100,1\n115,-4\n".into(), "line 2: value -4 is negative"),
        ("infinite", "100,1\n115,inf\n".into(), "line 2: value inf is infinite"),
        ("milliseconds", many_seconds.into(), "times look like milliseconds"),
        ("one sample", "100,1\n".into(), "only one sample (line 1)"),
        ("binary", "100,1\n\u{0}\u{1}\u{2},\u{3}\n".into(), "line 2: time"),
        (
            "prometheus error",
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\""}"#.into(),
            "Prometheus answered an error (bad_data): invalid parameter \"query\"",
        ),
        (
            "no series",
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
            "the answer has no series",
        ),
        (
            "instant query",
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"5"]}]}}"#.into(),
            "instant-query answer",
        ),
        (
            "NaN in prometheus",
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"a"},"values":[[1700000000,"5"],[1700000015,"NaN"]]}]}}"#.into(),
            "at time 1700000015: value \"NaN\" is not a number (NaN) at line 1 column",
        ),
        (
            "unsorted prometheus",
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"a"},"values":[[1700000015,"5"],[1700000000,"5"]]}]}}"#.into(),
            "values[1] of {job=\"a\"}: time 1700000000 is earlier than 1700000015 on values[0]",
        ),
        ("truncated JSON", r#"{"status":"success","data":{"res"#.into(), "not valid JSON"),
        ("a line too long", format!("100,{}\n", "9".repeat(5000)), "line 1: longer than 1024 bytes"),
    ];
    for (what, input, needle) in cases {
        let out = leakguard(&["analyze", "-"], input.as_bytes());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err:?}");
        assert!(
            err.starts_with("leakguard: analyze: <stdin>: "),
            "{what}: {err}"
        );
        assert!(err.contains(needle), "{what}: {err}");
        assert!(stdout(&out).is_empty(), "{what}");
    }
}

#[test]
fn gaps_can_be_allowed_with_a_warning() {
    let mut csv = String::new();
    for i in 0..40 {
        csv.push_str(&format!("{},100\n", 1_700_000_000 + i * 15));
    }
    csv.push_str("1700009000,100\n1700009015,100\n");
    let out = leakguard(&["analyze", "-", "--allow-gaps", "--json"], csv.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning: analyze: <stdin>: 1 gap(s) longer than 10 x the median step of 15 s (the longest 2 h 20 min)"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gaps"], 1);
}

#[test]
fn usage_errors_exit_2_and_io_errors_exit_1() {
    for (args, needle) in [
        (vec![], "missing subcommand"),
        (vec!["nope"], "unknown subcommand \"nope\""),
        (vec!["analyze"], "analyze: missing FILE"),
        (vec!["analyze", "a", "b"], "unexpected argument \"b\""),
        (
            vec!["analyze", "-", "--limit", "lots"],
            "invalid value \"lots\" for --limit",
        ),
        (vec!["analyze", "-", "--limit"], "--limit needs a value"),
        (
            vec!["analyze", "-", "--frobnicate"],
            "unknown option --frobnicate",
        ),
        (
            vec!["analyze", "-", "--series", "nolabel"],
            "expected LABEL=VALUE",
        ),
        (
            vec!["report", "http://127.0.0.1:1", "--format", "yaml"],
            "use text, json or incident",
        ),
        (vec!["top", "https://127.0.0.1:1"], "https is not supported"),
        (
            vec!["top", "http://127.0.0.1:1", "--interval", "0s"],
            "at least 100ms",
        ),
        (vec!["help", "frob"], "no help for \"frob\""),
    ] {
        let out = leakguard(&args, b"100,1\n");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let out = leakguard(&["analyze", "/nonexistent/memory.csv"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open /nonexistent/memory.csv"));
    let out = leakguard(&["report", "http://127.0.0.1:1"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[test]
fn help_and_version() {
    let out = leakguard(&["--help"], b"");
    assert!(out.status.success());
    for needle in [
        "leakguard analyze FILE",
        "leakguard top URL",
        "leakguard report URL",
    ] {
        assert!(stdout(&out).contains(needle), "{needle}");
    }
    let out = leakguard(&["help", "analyze"], b"");
    assert!(stdout(&out).contains("--allow-gaps"));
    let out = leakguard(&["report", "--help"], b"");
    assert!(stdout(&out).contains("incident"));
    let out = leakguard(&["--version"], b"");
    assert_eq!(
        stdout(&out),
        format!("leakguard {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Writes the fixtures again (they are committed; see the module docs).
#[test]
#[ignore = "writes the fixtures; run by hand"]
fn regenerate_fixtures() {
    let csv = |shape: Shape, seed: u64, name: &str| {
        let s = generate(shape, seed, 15.0, 8.0 * 3600.0);
        let mut text = format!(
            "# leakguard::trend::synth::generate({shape:?}, seed {seed}, step 15 s, 8 h){}\nunix_seconds,bytes\n",
            match (s.leak_start, s.leak_rate) {
                (Some(start), Some(rate)) => format!(
                    ": a leak of {:.2} MB/h from {:.1} s after the start",
                    rate / MB_PER_HOUR,
                    start
                ),
                _ => ": no leak".into(),
            }
        );
        for (t, v) in &s.samples {
            text.push_str(&format!("{},{v}\n", ORIGIN + t));
        }
        std::fs::write(fixture(name), text).unwrap();
    };
    csv(Shape::Linear, 1, "leak_linear.csv");
    csv(Shape::SawtoothFlat, 2, "flat_sawtooth.csv");

    let series = |shape: Shape, seed: u64, instance: &str| {
        let s = generate(shape, seed, 60.0, 12.0 * 3600.0);
        let values: Vec<Value> = s
            .samples
            .iter()
            .map(|(t, v)| serde_json::json!([(ORIGIN + t) as u64, v.to_string()]))
            .collect();
        serde_json::json!({
            "metric": {"__name__": "process_resident_memory_bytes", "job": "api", "instance": instance},
            "values": values,
        })
    };
    let answer = serde_json::json!({
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [series(Shape::Staircase, 1, "api-1"), series(Shape::SawtoothFlat, 2, "api-2")],
        }
    });
    std::fs::write(fixture("two_series.json"), answer.to_string() + "\n").unwrap();
}
