//! `leakguard analyze --prometheus URL --query PROMQL`, the fleet scan, run as the real binary
//! against a real Prometheus server: its TSDB backfilled with `promtool tsdb
//! create-blocks-from openmetrics` (eight hours of four series: two leaks, a flat one and a
//! saw-tooth), the server started on a free loopback port. Then the errors: a bad query, a
//! port nobody listens on, a server that answers 500.
//!
//! `prometheus` and `promtool` are found on PATH (`make test` extracts both from Debian's
//! prometheus package into .venv/bin); without them the test fails and says so.
#![allow(clippy::unwrap_used)]

use leakguard_tests::cli::run_leakguard;
use leakguard_tests::{free_port, wait_until_ok};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MB: f64 = 1e6;
/// Seconds between the backfilled samples.
const SCRAPE: u64 = 60;
/// Hours of backfilled samples.
const HOURS: u64 = 8;

/// `name` on PATH, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: this test runs a real Prometheus server. `make test` puts \
                 prometheus and promtool (from Debian's prometheus package) into .venv/bin and \
                 that first on PATH; or install Prometheus"
            )
        })
}

/// The four series at `t` seconds after the start, as (labels, bytes).
fn fleet_at(t: f64) -> [(&'static str, f64); 4] {
    let hours = t / 3600.0;
    // A saw-tooth: 80 MB allocated over 10 minutes, then collected, around a flat floor.
    let tooth = (t % 600.0) / 600.0 * 80.0 * MB;
    // Deterministic jitter of a few MB, different for each series.
    let jitter = |k: f64| ((t / 60.0 * k).sin() * 3.0 * MB).round();
    [
        (
            r#"instance="api-1:9100",job="api""#,
            400.0 * MB + 300.0 * MB * hours + jitter(1.3),
        ),
        (
            r#"instance="api-2:9100",job="api""#,
            350.0 * MB + jitter(0.7),
        ),
        (
            r#"instance="api-3:9100",job="api""#,
            500.0 * MB + 60.0 * MB * hours + jitter(2.1),
        ),
        (
            r#"instance="worker-1:9100",job="worker""#,
            600.0 * MB + tooth + jitter(1.7),
        ),
    ]
}

/// A Prometheus server on a loopback port, over a TSDB backfilled with the fleet's series
/// from `start` to `end`; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(start: u64, end: u64) -> Self {
        let (prometheus, promtool) = (tool("prometheus"), tool("promtool"));
        let dir = tempfile::tempdir().unwrap();
        let mut om = String::from("# HELP mem_bytes Resident memory.\n# TYPE mem_bytes gauge\n");
        for t in (start..=end).step_by(SCRAPE as usize) {
            for (labels, v) in fleet_at((t - start) as f64) {
                om.push_str(&format!("mem_bytes{{{labels}}} {v} {t}\n"));
            }
        }
        // Another metric: a series with a four-hour gap, and one with a single sample.
        om.push_str("# HELP other_bytes Resident memory.\n# TYPE other_bytes gauge\n");
        for t in (start..=end).step_by(SCRAPE as usize) {
            if t <= start + 7200 || t >= end - 7200 {
                om.push_str(&format!(
                    "other_bytes{{instance=\"gappy\"}} 100000000 {t}\n"
                ));
            }
            if t == start + 3600 {
                om.push_str(&format!("other_bytes{{instance=\"lonely\"}} 5000000 {t}\n"));
            }
        }
        om.push_str("# EOF\n");
        let om_path = dir.path().join("fleet.om");
        std::fs::write(&om_path, om).unwrap();
        let tsdb = dir.path().join("tsdb");
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om_path)
            .arg(&tsdb)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool backfill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=10y")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("prometheus.err")).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            addr,
            log,
            _dir: dir,
        };
        let ready = wait_until_ok(addr, "/-/ready", Duration::from_secs(30));
        if !ready {
            let exited = server.child.try_wait().unwrap();
            panic!(
                "Prometheus did not become ready on {addr} (exit: {exited:?}): {}",
                server.logs()
            );
        }
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("prometheus.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Exit code 2, nothing on stdout, one line on stderr holding `needle`.
fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("leakguard: analyze: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

fn instance(v: &Value) -> &str {
    v["labels"]["instance"].as_str().unwrap()
}

#[test]
fn fleet_scan_against_a_real_prometheus() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Eight hours that ended ten minutes ago, on the minute.
    let end = now / SCRAPE * SCRAPE - 600;
    let start = end - HOURS * 3600;
    let prom = Prometheus::start(start, end);
    let url = prom.url();
    let (s, e) = (start.to_string(), end.to_string());
    let fleet = ["analyze", "--prometheus", &url, "--query", "mem_bytes"];
    let with = |extra: &[&str]| {
        let mut args = fleet.to_vec();
        args.extend_from_slice(extra);
        run_leakguard(&args, &[])
    };

    // Text, at the default step for 8 h (15 s): leaks first, the nearest OOM first.
    let text = ok(
        &with(&["--start", &s, "--end", &e, "--limit", "4GiB"]),
        "text",
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "title, header, 4 rows, summary: {text}");
    assert!(
        lines[0].starts_with(&format!("{url}: mem_bytes from ")),
        "{text}"
    );
    assert!(lines[0].contains("step 15 s (1 request)"), "{text}");
    assert!(lines[1].starts_with("LEAK "), "{text}");
    assert!(
        lines[1].contains("OOM ETA") && lines[1].contains("SERIES"),
        "{text}"
    );
    assert!(lines[2].starts_with("critical "), "{text}");
    assert!(lines[2].contains(r#"instance="api-1:9100""#), "{text}");
    assert!(lines[3].starts_with("warning "), "{text}");
    assert!(lines[3].contains(r#"instance="api-3:9100""#), "{text}");
    // The flat series and the saw-tooth are not leaks (a saw-tooth's drops are not restarts).
    for row in &lines[4..6] {
        assert!(row.starts_with("no "), "{text}");
        assert!(row.contains("mem_bytes{instance="), "{text}");
    }
    assert_eq!(lines[6], "2 of 4 series show a leak.", "{text}");

    // JSON at the scrape interval: one analysis per series, with its labels.
    let out = with(&[
        "--start", &s, "--end", &e, "--step", "1m", "--json", "--limit", "4GiB",
    ]);
    let json: Value = serde_json::from_str(&ok(&out, "json")).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 4, "{json}");
    let order: Vec<&str> = all.iter().map(instance).collect();
    assert_eq!(&order[..2], ["api-1:9100", "api-3:9100"], "{json}");
    let points = HOURS * 3600 / SCRAPE + 1;
    for a in all {
        assert_eq!(a["labels"]["__name__"], "mem_bytes", "{a}");
        assert!(a["labels"]["job"].is_string(), "{a}");
        assert_eq!(a["format"], "prometheus");
        assert_eq!(a["samples"], points, "{a}");
        assert_eq!(a["first_time"], start as f64);
        assert_eq!(a["last_time"], end as f64);
        assert_eq!(a["step_seconds"], 60.0);
        assert_eq!(a["limit_bytes"], 4u64 << 30);
        for field in [
            "leak",
            "severity",
            "detected_at",
            "slope_mb_per_hour",
            "reason",
        ] {
            assert!(a.get(field).is_some(), "{field} missing: {a}");
        }
        let leak = a["leak"].as_bool().unwrap();
        assert_eq!(
            leak,
            matches!(instance(a), "api-1:9100" | "api-3:9100"),
            "{a}"
        );
        assert_eq!(a["oom_eta_seconds"].is_number(), leak, "{a}");
    }
    let eta = |i: usize| all[i]["oom_eta_seconds"].as_f64().unwrap();
    assert!(eta(0) < eta(1), "{json}");
    let rate = all[0]["slope_mb_per_hour"].as_f64().unwrap();
    assert!(
        (250.0..350.0).contains(&rate),
        "api-1 grows 300 MB/h: {rate}"
    );

    // 8 h at 1 s is 28,801 points per series: three requests (Prometheus takes 11,000 at
    // most), stitched without a gap or a repeated time, with the same verdicts.
    let out = with(&["--start", &s, "--end", &e, "--step", "1s", "--json"]);
    let fine: Value = serde_json::from_str(&ok(&out, "1 s step")).unwrap();
    let fine = fine.as_array().unwrap();
    assert_eq!(fine.len(), 4);
    for a in fine {
        assert_eq!(a["samples"], HOURS * 3600 + 1, "{a}");
        assert_eq!(a["first_time"], start as f64);
        assert_eq!(a["last_time"], end as f64);
        assert_eq!(a["gaps"], 0, "{a}");
    }
    let leaks = |v: &[Value]| {
        let mut l: Vec<String> = v
            .iter()
            .filter(|a| a["leak"] == true)
            .map(|a| instance(a).to_owned())
            .collect();
        l.sort();
        l
    };
    assert_eq!(leaks(fine), leaks(all));
    let text = ok(
        &with(&["--start", &s, "--end", &e, "--step", "1s"]),
        "1 s text",
    );
    assert!(text.contains("step 1 s (3 requests)"), "{text}");

    // The default range, the last 24 hours, holds the whole backfill.
    let text = ok(&with(&[]), "default range");
    assert!(text.contains("step 15 s (1 request)"), "{text}");
    assert!(
        text.ends_with("2 of 4 series show a leak. Give --limit for the OOM ETA.\n"),
        "{text}"
    );

    // A query that matches nothing, and bad PromQL with Prometheus' own error quoted.
    fails_with(
        &run_leakguard(
            &["analyze", "--prometheus", &url, "--query", "no_such_metric"],
            &[],
        ),
        "matched no series",
    );
    fails_with(
        &run_leakguard(
            &["analyze", "--prometheus", &url, "--query", "mem_bytes{job="],
            &[],
        ),
        "answered 400 (bad_data)",
    );
    // At a step of 10 min, a gap of 4 h is counted, not refused; a series with one sample in
    // the range is skipped with a warning.
    let out = run_leakguard(
        &[
            "analyze",
            "--prometheus",
            &url,
            "--query",
            "other_bytes",
            "--start",
            &s,
            "--end",
            &e,
            "--step",
            "10m",
            "--json",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.trim_end(),
        r#"leakguard: warning: analyze: other_bytes{instance="lonely"}: skipped: only one sample (values[0] of other_bytes{instance="lonely"}): a series over time is needed (a verdict needs from 6 minutes of samples, near the limit, to about 50 minutes)"#
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["labels"]["instance"], "gappy");
    assert_eq!(json[0]["gaps"], 1, "{json}");

    // RFC 3339 times give the same range as Unix seconds.
    let out = with(&["--start", &rfc3339(start), "--end", &rfc3339(end), "--json"]);
    let json: Value = serde_json::from_str(&ok(&out, "rfc 3339")).unwrap();
    assert_eq!(json[0]["first_time"], start as f64);
    assert_eq!(json[0]["last_time"], end as f64);
    drop(prom);
}

/// Unix seconds as RFC 3339 with an offset of +02:00, computed independently of leakguard.
fn rfc3339(t: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", t + 7200),
            "+%Y-%m-%dT%H:%M:%S+02:00",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn unreachable_server_and_server_errors_exit_2() {
    // Nobody listens on a port that was free a moment ago.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    fails_with(
        &run_leakguard(&["analyze", "--prometheus", &url, "--query", "up"], &[]),
        "cannot connect",
    );
    // A server that answers every request with a 500 and a plain-text body.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = "storage unavailable\nsecond line\n";
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let url = format!("http://{addr}");
    fails_with(
        &run_leakguard(
            &["analyze", "--prometheus", &url, "--query", "up", "--json"],
            &[],
        ),
        "/api/v1/query_range answered 500: storage unavailable",
    );
    // Bad arguments are usage errors before any request.
    fails_with(
        &run_leakguard(&["analyze", "--prometheus", &url], &[]),
        "needs --query",
    );
    fails_with(
        &run_leakguard(&["analyze", "--prometheus=", "--query", "up"], &[]),
        "--prometheus needs Prometheus' URL",
    );
    fails_with(
        &run_leakguard(&["analyze", "--prometheus", &url, "file.csv"], &[]),
        "not a FILE",
    );
    fails_with(
        &run_leakguard(
            &[
                "analyze",
                "--prometheus",
                &url,
                "--query",
                "up",
                "--start",
                "yesterday",
            ],
            &[],
        ),
        "--start \"yesterday\"",
    );
}
