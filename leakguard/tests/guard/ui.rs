//! The page's endpoints through the guard's routes: `GET /debug/leakguard/history` over hours of
//! a leaking floor (a procfs fixture tree whose `statm` the test rewrites before each tick,
//! driven by a manual clock), and `GET /debug/leakguard/ui`.
#![allow(clippy::unwrap_used)]

use super::fixture::{START, fixture_guard, set_rss};
use leakguard::endpoint::EndpointRequest;
use leakguard::{Guard, ManualClock};
use serde_json::Value;
use std::time::Duration;

const LIMIT: u64 = 2_000_000_000;

fn get(guard: &Guard, path: &str) -> (u16, Value) {
    let r = guard.handle(&EndpointRequest::new("GET", path));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    (r.status, body)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn history_carries_the_floor_trend_and_the_projection_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(START);
    let guard = fixture_guard(root, &clock, LIMIT);

    // Three hours of a floor growing 60 MB/h under a 40 MB saw-tooth, sampled every 15 s.
    let step = 15.0;
    let mut t = 0.0;
    while t < 3.0 * 3600.0 {
        set_rss(
            root,
            300e6 + 60e6 * t / 3600.0 + 40e6 * ((t % 180.0) / 180.0),
        );
        clock.advance(Duration::from_secs_f64(step));
        t += step;
        guard.tick();
    }
    let report = guard.report();
    assert!(report.leak.suspected, "{}", report.leak.reason);

    let (status, h) = get(&guard, "/debug/leakguard/history");
    assert_eq!(status, 200, "{h}");
    let fine = h["fine"]["points"].as_array().unwrap();
    let coarse = h["coarse"]["points"].as_array().unwrap();
    assert_eq!(f(&h["fine"]["resolution_seconds"]), 1.0);
    assert_eq!(f(&h["coarse"]["resolution_seconds"]), 60.0);
    // One sample per 15 s: every sample is its own 1 s bucket, 600 of them at most; and one
    // 1 min bucket per minute.
    assert_eq!(fine.len(), 600);
    assert!((179..=181).contains(&coarse.len()), "{}", coarse.len());
    let newest = fine.last().unwrap();
    assert_eq!(f(&newest["t"]), START + t);
    assert_eq!(
        newest["rss"].as_u64(),
        report.memory.resident_bytes,
        "the newest point is the report's sample"
    );

    assert_eq!(h["limit"]["bytes"].as_u64(), Some(LIMIT));
    assert_eq!(
        h["limit"]["warn_bytes"].as_u64(),
        report.limit.as_ref().map(|l| l.warn_bytes)
    );
    assert_eq!(
        h["limit"]["restart_bytes"].as_u64(),
        report.limit.as_ref().map(|l| l.restart_bytes)
    );

    let trend = &h["trend"];
    assert_eq!(trend["suspected"], Value::Bool(true));
    assert_eq!(trend["severity"], "warning");
    let slope = f(&trend["slope_bytes_per_second"]);
    assert_eq!(Some(slope), report.leak.growth_bytes_per_second);
    // The floor's line ends at the newest point, at the floor (the saw-tooth's bottom), not in
    // the middle of the saw-tooth, and rises at the detector's slope.
    let line = trend["line"].as_array().unwrap();
    let (a, b) = (&line[0], &line[1]);
    assert_eq!(f(&b["t"]), START + t);
    let floor_now = 300e6 + 60e6 * t / 3600.0;
    assert!(
        (f(&b["bytes"]) - floor_now).abs() < 5e6,
        "line ends at {} , floor {floor_now}",
        f(&b["bytes"])
    );
    let line_slope = (f(&b["bytes"]) - f(&a["bytes"])) / (f(&b["t"]) - f(&a["t"]));
    assert!((line_slope - slope).abs() < 1e-6 * slope.abs().max(1.0));
    let horizon = f(&trend["horizon_seconds"]);
    assert!(f(&b["t"]) - f(&a["t"]) <= horizon + 60.0);
    // The projection goes from the resident size now to the limit at the report's OOM ETA.
    let projection = trend["projection"].as_array().unwrap();
    assert_eq!(f(&projection[0]["t"]), START + t);
    assert_eq!(
        Some(f(&projection[0]["bytes"]) as u64),
        report.memory.resident_bytes
    );
    assert_eq!(f(&projection[1]["bytes"]), LIMIT as f64);
    let eta = report.leak.oom_eta_seconds.unwrap();
    assert!((f(&trend["oom_eta_seconds"]) - eta).abs() < 1e-6);
    assert!((f(&trend["oom_at"]) - (START + t + eta)).abs() < 1e-3);

    // One tier at a time.
    let (status, only_fine) = get(&guard, "/debug/leakguard/history?tier=fine");
    assert_eq!(status, 200);
    assert_eq!(only_fine["fine"]["points"].as_array().unwrap().len(), 600);
    assert!(only_fine["coarse"].is_null());
    let (_, only_coarse) = get(&guard, "/debug/leakguard/history?tier=coarse");
    assert!(only_coarse["fine"].is_null());
    assert_eq!(
        only_coarse["coarse"]["points"].as_array().unwrap().len(),
        coarse.len()
    );
    // The trend does not depend on the tier asked for.
    assert_eq!(only_coarse["trend"], h["trend"]);
}

#[test]
fn history_before_any_verdict_has_points_but_no_trend() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let guard = fixture_guard(dir.path(), &clock, LIMIT);
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        guard.tick();
    }
    let (status, h) = get(&guard, "/debug/leakguard/history");
    assert_eq!(status, 200);
    // The sample taken at start and one a second since.
    assert_eq!(h["fine"]["points"].as_array().unwrap().len(), 6);
    assert_eq!(h["trend"]["warming_up"], Value::Bool(true));
    assert!(h["trend"]["line"].is_null());
    assert!(h["trend"]["projection"].is_null());
    assert!(h["trend"]["oom_at"].is_null());
}

#[test]
fn history_refuses_a_bad_query_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let guard = fixture_guard(dir.path(), &clock, LIMIT);
    let (status, body) = get(&guard, "/debug/leakguard/history?tier=weekly");
    assert_eq!(status, 400);
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("bad tier `weekly`"), "{message}");
    assert!(message.contains("tier=fine"), "{message}");
    let (status, body) = get(&guard, "/debug/leakguard/history?since=0");
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown query parameter `since`")
    );
    let r = guard.handle(&EndpointRequest::new("POST", "/debug/leakguard/history"));
    assert_eq!(r.status, 405);
}

#[test]
fn the_page_is_served_as_html_with_a_strict_policy_and_reflects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let guard = fixture_guard(dir.path(), &clock, LIMIT);
    let plain = guard.handle(&EndpointRequest::new("GET", "/debug/leakguard/ui"));
    assert_eq!(plain.status, 200);
    assert_eq!(plain.content_type, "text/html; charset=utf-8");
    let body = String::from_utf8(plain.body.clone()).unwrap();
    assert!(body.starts_with("<!doctype html>"));
    assert!(body.contains("id=\"chart\""));
    let header = |name: &str| {
        plain
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let csp = header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header("X-Content-Type-Options").as_deref(), Some("nosniff"));

    let mut hostile = EndpointRequest::new(
        "GET",
        "/debug/leakguard/ui?q=%3Cscript%3Ealert(1)%3C/script%3E&<b>x</b>",
    );
    hostile.authorization = Some("Bearer <script>alert(2)</script>".into());
    let answered = guard.handle(&hostile);
    assert_eq!(answered.status, 200);
    assert_eq!(
        answered.body, plain.body,
        "the page is the same whatever is asked"
    );

    let head = guard.handle(&EndpointRequest::new("HEAD", "/debug/leakguard/ui"));
    assert_eq!(head.status, 200);
}
