//! Security of the debug endpoint, checked on the README's demo over real HTTP: who may call
//! what, the warning for an endpoint exposed beyond loopback, and hostile paths and queries.
//! (Transport limits — header size and count, body size, connections, timeouts — are checked
//! against the real server in `leakguard/tests/http_transport.rs`.)
#![allow(clippy::unwrap_used)]

use leakguard_tests::{Running, example_binary, free_port, request, request_with, wait_until_ok};
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "s3cret-token-for-the-tests";

fn start(bind: &str, extra: &[(&str, &str)]) -> (Running, SocketAddr) {
    let port = free_port();
    let endpoint: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut env = vec![
        ("DEMO_ADDR", format!("127.0.0.1:{}", free_port())),
        ("DEMO_LEAK_KIB_PER_SEC", "0".to_owned()),
        ("LEAKGUARD_ADDR", format!("{bind}:{port}")),
        ("LEAKGUARD_INTERVAL", "100ms".to_owned()),
        // A restart that gets through only reports: the test never loses its demo.
        ("LEAKGUARD_RESTART_ACTION", "none".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let run = Running::start(&example_binary("leaky_service"), &env);
    assert!(
        wait_until_ok(endpoint, "/readyz", Duration::from_secs(60)),
        "{}",
        run.text()
    );
    (run, endpoint)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn an_endpoint_beyond_loopback_without_a_token_is_warned_about_loudly() {
    let (run, _) = start("0.0.0.0", &[]);
    run.wait_for_output("beyond loopback", Duration::from_secs(10));
    let log = run.text();
    let line = log.lines().find(|l| l.contains("beyond loopback")).unwrap();
    // The demo prints the guard's events (`on_event`) as `[event  warn] message`.
    assert!(line.contains("warn]"), "{line}");
    assert!(line.contains("LEAKGUARD_TOKEN"), "{line}");
    assert!(line.contains("0.0.0.0:"), "{line}");

    // With a token, or on loopback, there is nothing to warn about.
    for (bind, extra) in [
        ("0.0.0.0", &[("LEAKGUARD_TOKEN", TOKEN)][..]),
        ("127.0.0.1", &[][..]),
    ] {
        let (run, endpoint) = start(bind, extra);
        // The report's events are complete once it answers: the warning comes at start.
        let report = request_with(
            "GET",
            endpoint,
            "/debug/leakguard",
            &[("Authorization", &bearer(TOKEN))],
        )
        .unwrap()
        .json();
        let events = report["events"].to_string();
        assert!(events.contains("leakguard"), "{events}");
        assert!(!events.contains("beyond loopback"), "{events}");
        assert!(!run.text().contains("beyond loopback"), "{}", run.text());
    }
}

#[test]
fn mutating_endpoints_need_the_exact_token() {
    let (_run, endpoint) = start("127.0.0.1", &[("LEAKGUARD_TOKEN", TOKEN)]);
    let wrong_same_length: String = TOKEN.chars().rev().collect();
    let refused = [
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some(TOKEN.to_owned()),
        Some(bearer(&wrong_same_length)),
        Some(bearer(&TOKEN[..TOKEN.len() - 1])),
        Some(bearer(&format!("{TOKEN}x"))),
        Some(format!("Basic {TOKEN}")),
    ];
    for path in ["/debug/leakguard/purge", "/debug/leakguard/restart"] {
        for auth in &refused {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let r = request_with("POST", endpoint, path, &headers).unwrap();
            assert_eq!(r.status, 401, "POST {path} with {auth:?}: {}", r.text());
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"leakguard\"")
            );
            assert!(r.json()["error"].as_str().unwrap().contains("Bearer"));
        }
    }
    // Nothing was restarted by the refused requests; reads stay open without LEAKGUARD_AUTH.
    assert_eq!(request("GET", endpoint, "/readyz").unwrap().status, 200);
    assert_eq!(
        request("GET", endpoint, "/debug/leakguard").unwrap().status,
        200
    );
    let purged = request_with(
        "POST",
        endpoint,
        "/debug/leakguard/purge",
        &[("Authorization", &bearer(TOKEN))],
    )
    .unwrap();
    assert_eq!(purged.status, 200, "{}", purged.text());
}

#[test]
fn auth_all_protects_everything_but_the_probes() {
    let (_run, endpoint) = start(
        "127.0.0.1",
        &[("LEAKGUARD_TOKEN", TOKEN), ("LEAKGUARD_AUTH", "all")],
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            request("GET", endpoint, path).unwrap().status,
            200,
            "{path}"
        );
    }
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/debug/leakguard"),
        ("GET", "/debug/leakguard/"),
        ("GET", "/nothing-here"),
        ("HEAD", "/metrics"),
        ("POST", "/debug/leakguard/purge"),
        ("POST", "/debug/leakguard/restart"),
    ] {
        let r = request(method, endpoint, path).unwrap();
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        let r = request_with(method, endpoint, path, &[("Authorization", "Bearer nope")]).unwrap();
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
    }
    let ok = |path: &str| {
        request_with("GET", endpoint, path, &[("Authorization", &bearer(TOKEN))]).unwrap()
    };
    assert_eq!(ok("/metrics").status, 200);
    assert_eq!(ok("/debug/leakguard").status, 200);
    assert_eq!(ok("/nothing-here").status, 404);
}

#[test]
fn auth_all_without_a_token_refuses_all_but_the_probes() {
    let (_run, endpoint) = start("127.0.0.1", &[("LEAKGUARD_AUTH", "all")]);
    assert_eq!(request("GET", endpoint, "/healthz").unwrap().status, 200);
    let r = request("GET", endpoint, "/metrics").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("LEAKGUARD_TOKEN"));
}

#[test]
fn hostile_paths_queries_and_methods_are_never_reflected_as_markup() {
    let (_run, endpoint) = start("127.0.0.1", &[]);
    let script = "<script>alert(1)</script>";
    let cases = [
        ("GET", "/%3Cscript%3Ealert(1)%3C/script%3E".to_owned()),
        ("GET", "/debug/leakguard/%22%3E%3Cimg%20src=x%3E".to_owned()),
        (
            "GET",
            "/nope?q=%3Cscript%3Ealert(1)%3C/script%3E&x=%22%27".to_owned(),
        ),
        ("GET", "/debug/leakguard?<b>=</b>".to_owned()),
        ("GET", "/metrics?\"><svg/onload=alert(1)>".to_owned()),
        ("PUT", format!("/metrics?{script}")),
        ("DELETE", "/debug/leakguard/purge?\"".to_owned()),
        ("OPTIONS", "/healthz".to_owned()),
        (
            "GET",
            "/debug/leakguard/history?tier=%3Cscript%3Ealert(1)%3C/script%3E".to_owned(),
        ),
        ("GET", "/debug/pprof/heap?base=%3Cimg%20src=x%3E".to_owned()),
    ];
    for (method, target) in &cases {
        let Ok(r) = request(method, endpoint, target) else {
            // hyper may refuse a target it cannot parse by closing: nothing is reflected.
            continue;
        };
        let ctx = format!("{method} {target} -> {}: {}", r.status, r.text());
        let ct = r.header("content-type").unwrap_or_default().to_owned();
        assert!(!ct.contains("html"), "{ctx}");
        for needle in ["<script", "<img", "<svg", "<b>"] {
            assert!(!r.text().contains(needle), "{ctx}");
        }
        if r.status == 400 && r.body.is_empty() {
            // hyper refused a target it cannot parse, before any route: nothing to sniff.
            continue;
        }
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{ctx}");
        if target.starts_with("/debug/pprof/") {
            // The header that makes `go tool pprof` print the message.
            assert_eq!(r.header("x-go-pprof"), Some("1"), "{ctx}");
        }
        if r.status >= 400 && !r.body.is_empty() {
            assert_eq!(ct, "application/json", "{ctx}");
            let json = r.json();
            assert_eq!(json["status"], r.status, "{ctx}");
            assert!(json["error"].is_string(), "{ctx}");
        }
    }
    // The one HTML answer, the operator's page, is static: a query changes nothing in it.
    let plain = request("GET", endpoint, "/debug/leakguard/ui").unwrap();
    assert_eq!(plain.status, 200);
    assert!(
        plain
            .header("content-type")
            .unwrap_or_default()
            .contains("text/html")
    );
    let hostile = request(
        "GET",
        endpoint,
        "/debug/leakguard/ui?x=%3Cscript%3Ealert(1)%3C/script%3E&%22%3E%3Cimg%20src=x%3E",
    )
    .unwrap();
    assert_eq!(hostile.status, 200);
    assert_eq!(
        hostile.body, plain.body,
        "the page does not depend on the query"
    );
    assert!(!hostile.text().contains("alert(1)"));
    // The endpoint is still there.
    assert_eq!(request("GET", endpoint, "/healthz").unwrap().status, 200);
}
