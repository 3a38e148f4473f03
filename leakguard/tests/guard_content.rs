//! The endpoint's content, asked through `Guard::handle` as a service's own router would.
#![allow(clippy::unwrap_used)]

use leakguard::Guard;
use leakguard::endpoint::EndpointRequest;

fn guard() -> Guard {
    Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .record_metrics(false)
        .limit(64 << 30)
        .start()
        .unwrap()
}

fn get(g: &Guard, path: &str) -> (u16, String, String) {
    let r = g.handle(&EndpointRequest::new("GET", path));
    (
        r.status,
        r.content_type.to_owned(),
        String::from_utf8(r.body).unwrap(),
    )
}

#[test]
fn health_and_readiness() {
    let g = guard();
    assert_eq!(get(&g, "/healthz").0, 200);
    assert_eq!(get(&g, "/readyz").0, 200);
    assert!(g.is_ready());
}

#[test]
fn unknown_paths_get_a_json_404_and_wrong_methods_a_405() {
    let g = guard();
    let (status, ctype, body) = get(&g, "/nope?x=<script>");
    assert_eq!(status, 404);
    assert_eq!(ctype, "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], 404);
    assert_eq!(
        v["error"],
        "not found: the endpoints are /healthz, /readyz, /metrics, /debug/leakguard, \
         /debug/leakguard/ui, /debug/leakguard/history, /debug/pprof/heap, \
         POST /debug/leakguard/purge, POST /debug/leakguard/restart, POST /debug/leakguard/dump"
    );
    assert!(!body.contains("<script>"));
    // Every route the 404 lists is answered (none of them with a 404).
    for listed in v["error"].as_str().unwrap()["not found: the endpoints are ".len()..].split(", ")
    {
        let (method, path) = listed.split_once(' ').unwrap_or(("GET", listed));
        let r = g.handle(&EndpointRequest::new(method, path));
        assert_ne!(r.status, 404, "{listed}");
    }

    let r = g.handle(&EndpointRequest::new("DELETE", "/metrics"));
    assert_eq!(r.status, 405);
    assert_eq!(r.headers, vec![("Allow", "GET, HEAD".to_owned())]);
}

#[test]
fn report_has_every_section_with_real_numbers() {
    let g = guard();
    let (status, ctype, body) = get(&g, "/debug/leakguard");
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in [
        "version",
        "generated_at",
        "uptime_seconds",
        "state",
        "ready",
        "memory",
        "limit",
        "thresholds",
        "allocator",
        "process",
        "cgroup",
        "sampler",
        "restart",
        "events",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {body}");
    }
    assert_eq!(v["state"], "normal");
    assert_eq!(v["limit"]["bytes"], 64u64 << 30);
    assert_eq!(
        v["limit"]["warn_bytes"],
        ((64u64 << 30) as f64 * 0.8).floor() as u64
    );
    assert!(v["memory"]["resident_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(v["process"]["threads"].as_u64().unwrap() >= 1);
    assert!(v["process"]["open_fds"].as_u64().unwrap() >= 3);
    // The test binary uses the system allocator while jemalloc is linked: said plainly.
    assert_eq!(v["allocator"]["kind"], "glibc");
    assert!(
        v["allocator"]["note"]
            .as_str()
            .unwrap()
            .contains("global allocator")
    );
    assert!(v["allocator"]["stats"]["allocated"].as_u64().unwrap() > 0);
    assert_eq!(v["events"][0]["kind"], "started");
}

#[test]
fn metrics_carry_the_contract_names() {
    let g = guard();
    let (status, ctype, text) = get(&g, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
        "leakguard_memory_limit_bytes",
        "leakguard_memory_usage_ratio",
        "leakguard_threshold_state",
        "leakguard_restarts_total",
        "leakguard_allocator_bytes{kind=\"allocated\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from\n{text}"
        );
    }
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1_048_576.0);
}

/// A refused heap profile is a JSON error like every other, with the header that makes
/// `go tool pprof` print it.
#[test]
fn a_refused_heap_profile_is_a_json_error() {
    let g = guard();
    let r = g.handle(&EndpointRequest::new("GET", "/debug/pprof/heap"));
    assert_eq!(r.status, 403);
    assert_eq!(r.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], 403);
    assert!(
        v["error"].as_str().unwrap().contains("LEAKGUARD_TOKEN"),
        "{v}"
    );
    assert!(r.headers.contains(&("X-Go-Pprof", "1".to_owned())));

    let with_token = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .record_metrics(false)
        .limit(64 << 30)
        .token("s3cret")
        .start()
        .unwrap();
    let mut wrong = EndpointRequest::new("GET", "/debug/pprof/heap");
    wrong.authorization = Some("Bearer nope".to_owned());
    let r = with_token.handle(&wrong);
    assert_eq!(r.status, 401);
    assert_eq!(r.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], 401);
}
