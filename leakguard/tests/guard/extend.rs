//! The guard's extension points: extra routes, report sections and purge hooks, asked through
//! `Guard::handle` and over the built-in server's real HTTP.
#![allow(clippy::unwrap_used)]

use leakguard::endpoint::{EndpointRequest, EndpointResponse, JSON, TEXT};
use leakguard::{Error, Guard, GuardBuilder};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn builder() -> GuardBuilder {
    Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .record_metrics(false)
        .limit(64 << 30)
}

fn ask(g: &Guard, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = EndpointRequest::new(method, path);
    req.authorization = token.map(|t| format!("Bearer {t}"));
    let r = g.handle(&req);
    (r.status, String::from_utf8(r.body).unwrap())
}

#[test]
fn an_extra_route_answers_with_its_query_and_is_called_only_when_asked() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let g = builder()
        .route("/debug/app/echo", &["GET"], move |req| {
            counted.fetch_add(1, Ordering::SeqCst);
            EndpointResponse::new(200, TEXT, format!("query={}", req.query))
        })
        .start()
        .unwrap();
    g.tick();
    let _ = g.report();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        ask(&g, "GET", "/debug/app/echo?limit=20", None),
        (200, "query=limit=20".to_owned())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Wrong method: 405 with Allow, the handler not called.
    let r = g.handle(&EndpointRequest::new("DELETE", "/debug/app/echo"));
    assert_eq!(r.status, 405);
    assert!(r.headers.iter().any(|(k, v)| *k == "Allow" && v == "GET"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Other paths are still 404.
    assert_eq!(ask(&g, "GET", "/debug/app/other", None).0, 404);
}

#[test]
fn a_mutating_extra_route_needs_the_token() {
    let g = builder()
        .token("s3cret")
        .route("/debug/app/flush", &["POST"], |_| {
            EndpointResponse::new(200, JSON, "{\"flushed\":true}")
        })
        .start()
        .unwrap();
    assert_eq!(ask(&g, "POST", "/debug/app/flush", None).0, 401);
    assert_eq!(ask(&g, "POST", "/debug/app/flush", Some("wrong")).0, 401);
    assert_eq!(ask(&g, "POST", "/debug/app/flush", Some("s3cret")).0, 200);
}

#[test]
fn a_panicking_route_answers_500_and_the_guard_goes_on() {
    let g = builder()
        .route("/debug/app/boom", &["GET"], |_| panic!("kaboom"))
        .start()
        .unwrap();
    let (status, body) = ask(&g, "GET", "/debug/app/boom", None);
    assert_eq!(status, 500);
    assert!(body.contains("kaboom"), "{body}");
    assert_eq!(ask(&g, "GET", "/healthz", None).0, 200);
}

#[test]
fn report_sections_are_top_level_keys_made_per_report() {
    let n = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&n);
    let g = builder()
        .report_section(
            "app",
            move || serde_json::json!({ "calls": counted.fetch_add(1, Ordering::SeqCst) + 1 }),
        )
        .report_section("broken", || panic!("no data"))
        .start()
        .unwrap();
    // /metrics does not make the sections.
    assert_eq!(ask(&g, "GET", "/metrics", None).0, 200);
    assert_eq!(n.load(Ordering::SeqCst), 0);
    let (status, body) = ask(&g, "GET", "/debug/leakguard", None);
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["app"]["calls"], 1);
    assert!(
        json["broken"]["error"]
            .as_str()
            .unwrap()
            .contains("no data")
    );
    assert!(json["memory"]["resident_bytes"].as_u64().unwrap() > 0);
    assert_eq!(g.report().extensions["app"]["calls"], 2);
}

#[test]
fn purge_hooks_run_before_the_purge_and_their_answers_are_returned() {
    let g = builder()
        .token("t")
        .on_purge("app", || serde_json::json!({ "collected": 7 }))
        .start()
        .unwrap();
    let (status, body) = ask(&g, "POST", "/debug/leakguard/purge", Some("t"));
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["hooks"]["app"]["collected"], 7);
    assert_eq!(json["purged"], true);
}

fn config_error(b: GuardBuilder) -> String {
    match b.start() {
        Err(e @ Error::Config { .. }) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn bad_extensions_are_refused_at_start_naming_them() {
    let ok = |_: &EndpointRequest| EndpointResponse::new(200, TEXT, "");
    assert!(config_error(builder().route("/metrics", &["GET"], ok)).contains("/metrics"));
    assert!(
        config_error(builder().route("/debug/leakguard/x", &["GET"], ok))
            .contains("/debug/leakguard/x")
    );
    assert!(config_error(builder().route("no-slash", &["GET"], ok)).contains("no-slash"));
    assert!(
        config_error(
            builder()
                .route("/a", &["GET"], ok)
                .route("/a", &["GET"], ok)
        )
        .contains("twice")
    );
    assert!(config_error(builder().route("/a", &[], ok)).contains("method"));
    assert!(
        config_error(builder().report_section("memory", || serde_json::Value::Null))
            .contains("memory")
    );
    assert!(
        config_error(builder().on_purge("bad name", || serde_json::Value::Null))
            .contains("bad name")
    );
    let mut many = builder();
    for i in 0..=leakguard::extensions::MAX_EXTENSIONS {
        many = many.report_section(&format!("s{i}"), || serde_json::Value::Null);
    }
    assert!(config_error(many).contains("at most"));
}

#[test]
fn extra_routes_are_served_over_real_http() {
    let g = Guard::builder()
        .ignore_env()
        .addr("127.0.0.1:0")
        .background(false)
        .record_metrics(false)
        .limit(64 << 30)
        .route("/debug/app/hello", &["GET"], |req| {
            EndpointResponse::new(200, TEXT, format!("hello {}", req.query))
        })
        .start()
        .unwrap();
    let addr = g.endpoint_addr().unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /debug/app/hello?x=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello x=1"), "{response}");
}
