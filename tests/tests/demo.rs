//! The README's demo, run as a child process and checked over real HTTP.
#![allow(clippy::unwrap_used)]

use leakguard_tests::{Demo, Running, example_binary, free_port, get, request, wait_until_ok};
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn demo_serves_the_endpoints_over_http() {
    let demo = Demo::spawn(&[("DEMO_LEAK_KIB_PER_SEC", "0")]);
    assert!(
        wait_until_ok(demo.endpoint, "/healthz", Duration::from_secs(60)),
        "{}",
        demo.run.text()
    );
    assert!(wait_until_ok(demo.service, "/", Duration::from_secs(10)));

    assert_eq!(get(demo.endpoint, "/readyz").status, 200);

    let metrics = get(demo.endpoint, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
    assert!(
        text.contains("leakguard_memory_limit_bytes 268435456"),
        "{text}"
    );

    let report = get(demo.endpoint, "/debug/leakguard").json();
    // The demo makes jemalloc its global allocator; leakguard must see that.
    assert_eq!(report["allocator"]["kind"], "jemalloc", "{report}");
    assert_eq!(report["limit"]["bytes"], 256u64 << 20);
    assert_eq!(report["limit"]["source"], "builder");
    assert_eq!(report["state"], "normal");
    assert_eq!(report["sampler"]["interval_seconds"], 0.1);
    let heap_before = report["memory"]["heap_bytes"].as_u64().unwrap();

    // Leak 16 MiB on demand: the live heap in the report grows by at least that.
    let leaked = get(demo.service, "/leak?kib=16384");
    assert_eq!(leaked.status, 200, "{}", leaked.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let heap = get(demo.endpoint, "/debug/leakguard").json()["memory"]["heap_bytes"]
            .as_u64()
            .unwrap();
        if heap >= heap_before + (16 << 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "heap {heap} never grew by 16 MiB from {heap_before}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let missing = get(demo.endpoint, "/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.json()["status"], 404);
    let wrong = request("POST", demo.endpoint, "/metrics").unwrap();
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));

    // The status line is printed.
    demo.run
        .wait_for_output("state normal", Duration::from_secs(20));
}

#[test]
fn demo_leak_raises_the_state_to_restart_and_reports_it() {
    // A 64 MiB limit and an 8 MiB/s leak: warn, critical and restart within seconds.
    let demo = Demo::spawn(&[("DEMO_LIMIT", "64MiB"), ("DEMO_LEAK_KIB_PER_SEC", "8192")]);
    for step in ["normal -> warn", "warn -> critical", "critical -> restart"] {
        demo.run
            .wait_for_output(&format!("memory state {step}"), Duration::from_secs(60));
    }
    let report = get(demo.endpoint, "/debug/leakguard").json();
    assert_eq!(report["state"], "restart", "{report}");
    assert!(report["memory"]["usage_ratio"].as_f64().unwrap() >= 0.95);
    let kinds: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "threshold_raised").count(),
        3,
        "{kinds:?}"
    );
    let metrics = get(demo.endpoint, "/metrics").text();
    assert!(metrics.contains("leakguard_threshold_state 3"), "{metrics}");
    // The unattended demo stops leaking at 110% of its limit.
    demo.run
        .wait_for_output("background leak paused", Duration::from_secs(30));
}

#[test]
fn bad_configuration_is_refused_with_the_variable_named() {
    let mut demo = Demo::spawn(&[("LEAKGUARD_LIMIT", "lots")]);
    assert_eq!(demo.run.wait_exit(Duration::from_secs(60)), Some(2));
    let out = demo.run.text();
    assert!(
        out.contains("LEAKGUARD_LIMIT") && out.contains("\"lots\""),
        "{out}"
    );
}

#[test]
fn a_taken_endpoint_port_leaves_the_service_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let service: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let run = Running::start(
        &example_binary("leaky_service"),
        &[
            ("DEMO_ADDR", service.to_string()),
            ("LEAKGUARD_ADDR", taken_addr.to_string()),
            ("DEMO_LEAK_KIB_PER_SEC", "0".to_owned()),
        ],
    );
    assert!(
        wait_until_ok(service, "/", Duration::from_secs(60)),
        "{}",
        run.text()
    );
    run.wait_for_output("the debug endpoint is off", Duration::from_secs(10));
    assert!(
        run.text().contains(&taken_addr.to_string()),
        "{}",
        run.text()
    );
}

#[test]
fn endpoint_can_be_switched_off() {
    let demo = Demo::spawn(&[("LEAKGUARD_ADDR", "off"), ("DEMO_LEAK_KIB_PER_SEC", "0")]);
    assert!(wait_until_ok(demo.service, "/", Duration::from_secs(60)));
    demo.run
        .wait_for_output("endpoint off", Duration::from_secs(10));
    assert!(request("GET", demo.endpoint, "/healthz").is_err());
}

#[test]
fn leaked_connections_show_in_the_report_with_their_site() {
    let demo = Demo::spawn(&[("DEMO_LEAK_KIB_PER_SEC", "0")]);
    assert!(wait_until_ok(
        demo.endpoint,
        "/healthz",
        Duration::from_secs(60)
    ));
    assert!(wait_until_ok(demo.service, "/", Duration::from_secs(10)));
    let r = get(demo.service, "/leak_conn?n=5");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = get(demo.endpoint, "/debug/leakguard").json();
    let kinds = report["handles"]["kinds"].as_array().unwrap();
    let upstream = kinds
        .iter()
        .find(|k| k["kind"] == "upstream_conn")
        .unwrap_or_else(|| panic!("no upstream_conn in {kinds:?}"));
    assert_eq!(upstream["open"], 5, "{upstream}");
    let sites = upstream["sites"].to_string();
    assert!(sites.contains("open_upstream_conn"), "{sites}");
    // The service's own accepted connections are tracked too (the 5 leaked ones among them,
    // once its accept loop has taken them from the backlog).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report = get(demo.endpoint, "/debug/leakguard").json();
        let open = report["handles"]["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == "http_conn")
            .map_or(0, |k| k["open"].as_u64().unwrap());
        if open >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "http_conn open {open}, expected at least 5"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = get(demo.endpoint, "/metrics").text();
    assert!(
        metrics.contains("leakguard_handles_open{kind=\"upstream_conn\"} 5"),
        "{metrics}"
    );
}
