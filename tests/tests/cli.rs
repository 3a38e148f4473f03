//! The `leakguard` command against a real running guard (the README's demo) and against a
//! scripted endpoint on a real socket: `top --once`, the live `top` and Ctrl-C, `report` in
//! its three formats, the bearer token.
#![allow(clippy::unwrap_used)]

use leakguard_tests::cli::{leakguard_binary, run_leakguard};
use leakguard_tests::{Demo, Running, get};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo with its background leak off and no restart action, answering.
fn start_demo() -> (Running, SocketAddr, SocketAddr) {
    let demo = Demo::start(&[
        ("DEMO_LEAK_KIB_PER_SEC", "0"),
        ("LEAKGUARD_RESTART_ACTION", "none"),
    ]);
    (demo.run, demo.service, demo.endpoint)
}

fn ok_stdout(args: &[&str]) -> String {
    let out = run_leakguard(args, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
    String::from_utf8(out.stdout).unwrap()
}

fn wait_for_state(endpoint: SocketAddr, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(endpoint, "/debug/leakguard").json()["state"] != state {
        assert!(Instant::now() < deadline, "state never became {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn top_and_report_render_a_running_guard() {
    leakguard_binary();
    let (demo, _service, endpoint) = start_demo();
    let url = format!("http://{endpoint}");

    let frame = ok_stdout(&["top", &url, "--once"]);
    assert!(
        !frame.contains('\x1b'),
        "--once has no control codes: {frame:?}"
    );
    assert!(frame.contains(&format!("at http://{endpoint}")), "{frame}");
    assert!(
        frame.contains("state    NORMAL   ready yes   restarts 0"),
        "{frame}"
    );
    assert!(frame.contains(" / 256.0 MiB ("), "{frame}");
    assert!(
        frame.contains(
            "warn 204.8 MiB   critical 230.4 MiB   restart 243.2 MiB   (limit from builder)"
        ),
        "{frame}"
    );
    assert!(frame.contains("live (jemalloc)"), "{frame}");
    assert!(
        frame.contains("leak     not yet judged: warming up"),
        "{frame}"
    );
    assert!(frame.contains("every 100 ms"), "{frame}");
    assert!(
        frame.contains("memory limit 256.0 MiB (from builder)"),
        "{frame}"
    );
    // The process figures in the frame are the report's. The demo's runtime starts and ends
    // blocking threads as it serves, so the count may move a little between the two fetches.
    let report = get(endpoint, "/debug/leakguard").json();
    let threads = report["process"]["threads"].as_u64().unwrap();
    let shown: u64 = frame
        .split("threads ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no thread count in the frame: {frame}"));
    assert!(
        shown >= 1 && shown.abs_diff(threads) <= 4,
        "frame shows {shown} threads, the report {threads}: {frame}"
    );

    // json: the report as fetched.
    let json: serde_json::Value = serde_json::from_str(&ok_stdout(&[
        "report",
        &format!("{url}/debug/leakguard"),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["limit"]["bytes"], 256u64 << 20);
    assert_eq!(json["allocator"]["kind"], "jemalloc");
    assert_eq!(json["state"], "normal");
    assert_eq!(json["endpoint"], endpoint.to_string());

    // text: sections with real values.
    let text = ok_stdout(&["report", &url]);
    for needle in [
        &format!("leakguard report from http://{endpoint}/debug/leakguard") as &str,
        "\nState\n  memory state     normal (ready: yes)",
        "  restarts         0 performed, none in progress",
        "\nLimit\n  limit            256.0 MiB (from builder)",
        "  thresholds       warn 204.8 MiB (80.0%), critical 230.4 MiB (90.0%), restart 243.2 MiB (95.0%)",
        "\nLeak detector\n  verdict          not yet judged: warming up",
        "\nAllocator\n  kind             jemalloc (jemalloc linked: yes)",
        "  statistics       allocated ",
        "  fds              ",
        "\nSampler\n  sampling         every 100 ms; ",
        &format!("  endpoint         {endpoint}"),
        "\nEvents (",
        "started",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    // incident: the runbook's update, for a normal guard.
    let incident = ok_stdout(&["report", &url, "--format", "incident"]);
    assert!(
        incident.starts_with("📊 MEMORY LEAK UPDATE\n"),
        "{incident}"
    );
    assert!(
        incident.contains("Status: MONITORING, memory state normal"),
        "{incident}"
    );
    assert!(incident.contains(" (limit: 256.0 MiB, "), "{incident}");
    assert!(
        incident.contains("Growth Rate: unknown yet (the leak detector is warming up)"),
        "{incident}"
    );
    assert!(
        incident.contains("Root Cause: not known yet: the leak detector is warming up"),
        "{incident}"
    );
    assert!(
        incident.contains("Action: none needed: monitoring"),
        "{incident}"
    );
    assert!(
        incident.contains("0 graceful restarts performed so far"),
        "{incident}"
    );
    drop(demo);
}

#[test]
fn incident_update_follows_the_guard_into_warn() {
    leakguard_binary();
    let (demo, service, endpoint) = start_demo();
    let url = format!("http://{endpoint}");
    // 210 MiB at once: over 80% of the 256 MiB limit, under 90%.
    assert_eq!(get(service, "/leak?kib=215040").status, 200);
    wait_for_state(endpoint, "warn");

    let incident = ok_stdout(&["report", &url, "--format", "incident"]);
    assert!(
        incident.contains("Status: INVESTIGATING, memory state warn"),
        "{incident}"
    );
    let report = get(endpoint, "/debug/leakguard").json();
    let ratio = report["memory"]["usage_ratio"].as_f64().unwrap();
    assert!((0.8..0.9).contains(&ratio), "{ratio}");
    // The percentage printed is the report's (within the moment between the two fetches).
    let pct: f64 = incident
        .split("(limit: 256.0 MiB, ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((pct - ratio * 100.0).abs() < 2.0, "{pct} vs {ratio}");
    assert!(
        incident.contains("Action: investigating: capture a heap profile"),
        "{incident}"
    );

    let frame = ok_stdout(&["top", &url, "--once"]);
    assert!(frame.contains("state    WARN"), "{frame}");
    assert!(frame.contains("memory state normal -> warn"), "{frame}");
    let text = ok_stdout(&["report", &url]);
    assert!(
        text.contains("memory state     warn (ready: yes)"),
        "{text}"
    );
    drop(demo);
}

#[test]
fn live_top_refreshes_until_ctrl_c() {
    let (demo, _service, endpoint) = start_demo();
    let mut child = Command::new(leakguard_binary())
        .args(["top", &format!("http://{endpoint}"), "--interval", "200ms"])
        .env_remove("LEAKGUARD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Not a terminal: frames are plain text, one after the other.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut frames = 0;
    while frames < 3 {
        let line = lines.next().unwrap().unwrap();
        assert!(!line.contains('\x1b'), "{line:?}");
        if line.starts_with("leakguard") {
            frames += 1;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "top did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "Ctrl-C is a clean exit");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.is_empty(), "{err}");
    drop(demo);
}

/// A one-shot HTTP server on a real socket: answers each connection with `answer` and hands
/// back the requests it read.
fn scripted_endpoint(answers: Vec<String>) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            requests.push(head);
            stream.write_all(answer.as_bytes()).unwrap();
        }
        requests
    });
    (addr, handle)
}

#[test]
fn token_is_sent_and_refusals_are_explained() {
    let body = r#"{"version":"9.9.9","state":"critical","ready":true,"memory":{"resident_bytes":241172480},"limit":{"bytes":268435456,"source":"cgroup"},"restart":{"restarts_total":2,"in_progress":false},"leak":{"suspected":false,"warming_up":false,"reason":"no sustained growth"},"caches":[{"name":"sessions","entries":3}]}"#;
    // Chunked, as hyper may send it.
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        10,
        &body[..10],
        body.len() - 10,
        &body[10..]
    );
    let refused = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (addr, server) = scripted_endpoint(vec![chunked, refused.into()]);
    let url = format!("http://{addr}/");

    let out = run_leakguard(
        &["report", &url, "--format", "incident"],
        &[("LEAKGUARD_TOKEN", "s3cret")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Status: MITIGATING, memory state critical"),
        "{text}"
    );
    assert!(
        text.contains("Current Usage: 230.0 MiB (limit: 256.0 MiB, 89.8%)"),
        "{text}"
    );
    assert!(
        text.contains("Action: mitigating: purge allocator memory"),
        "{text}"
    );
    assert!(
        text.contains("2 graceful restarts performed so far"),
        "{text}"
    );

    let out = run_leakguard(&["report", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("answered 401: the guard wants a token: set LEAKGUARD_TOKEN"),
        "{err}"
    );

    let requests = server.join().unwrap();
    assert!(
        requests[0].starts_with("GET /debug/leakguard HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("Authorization: Bearer s3cret\r\n"),
        "{}",
        requests[0]
    );
    assert!(!requests[1].contains("Authorization"), "{}", requests[1]);
}

#[test]
fn text_report_shows_sections_it_does_not_know() {
    let body = r#"{"version":"9.9.9","state":"normal","caches":[{"name":"sessions","entries":3}]}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (addr, server) = scripted_endpoint(vec![answer]);
    let out = run_leakguard(&["report", &format!("http://{addr}")], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("\nCaches\n  [0].entries      3\n  [0].name         sessions\n"),
        "{text}"
    );
    server.join().unwrap();
}
