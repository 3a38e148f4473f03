//! Graceful restart in place, end to end: the demo as a child process, real load over real
//! sockets, a leak that crosses the restart threshold.
#![allow(clippy::unwrap_used)]

use leakguard_tests::{
    Demo, KeepAlive, Running, example_binary, free_port, get, request, request_with, wait_until_ok,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The demo with a 128 MiB limit, no background leak, an hour of minimum uptime and a 1 s drain
/// delay, answering. Nothing restarts it on its own: the tests' leaks reach the limit, which
/// overrides the minimum uptime (the tests check the reason), and an operator's request is not
/// held back by it; a short minimum uptime would let the start-up's growth, projected, restart
/// it before the test's own step.
fn start(extra: &[(&str, &str)]) -> Demo {
    let mut env = vec![
        ("LEAKGUARD_MIN_UPTIME", "1h"),
        ("DEMO_LIMIT", "128MiB"),
        ("DEMO_LEAK_KIB_PER_SEC", "0"),
        ("DEMO_DRAIN_DELAY", "1s"),
    ];
    env.extend_from_slice(extra);
    Demo::start(&env)
}

/// Waits until `count` has grown by `by` (answers the load got), panicking with the demo's
/// output after 30 s.
fn wait_for_answers(demo: &Demo, count: &AtomicU64, by: u64) {
    let target = count.load(Ordering::SeqCst) + by;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "the load got {} answers, waiting for {target}:\n{}",
            count.load(Ordering::SeqCst),
            demo.run.text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn restart_in_place_under_load_drops_no_request() {
    let mut demo = start(&[]);
    let pid = demo.run.pid();
    let baseline = demo.report()["memory"]["resident_bytes"].as_u64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let worst = Arc::new(Mutex::new(Duration::ZERO));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failures, worst) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
            Arc::clone(&worst),
        );
        let addr = demo.service;
        clients.push(std::thread::spawn(move || {
            // Two clients keep their connections alive, two open a fresh one per request.
            let mut keep = KeepAlive::new(addr);
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let result = if i % 2 == 0 {
                    keep.get("/").map(|(s, _)| s)
                } else {
                    request("GET", addr, "/").map(|r| r.status)
                };
                let took = t.elapsed();
                match result {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(s) => failures.lock().unwrap().push(format!("status {s}")),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                let mut w = worst.lock().unwrap();
                *w = (*w).max(took);
            }
        }));
    }
    // Readiness as a load balancer sees it.
    let readiness = Arc::new(Mutex::new(Vec::<u16>::new()));
    let poller = {
        let (stop, readiness, addr) = (Arc::clone(&stop), Arc::clone(&readiness), demo.endpoint);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(r) = request("GET", addr, "/readyz") {
                    let mut seen = readiness.lock().unwrap();
                    if seen.last() != Some(&r.status) {
                        seen.push(r.status);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The load is running on every client, and the balancer saw the service ready.
    wait_for_answers(&demo, &ok, 50);
    let deadline = Instant::now() + Duration::from_secs(30);
    while readiness.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no readiness answer");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Leak past the restart threshold (95% of 128 MiB) at once.
    assert_eq!(get(demo.service, "/leak?kib=131072").status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = request("GET", demo.endpoint, "/debug/leakguard")
            && r.status == 200
        {
            let v = r.json();
            if v["restart"]["restarts_total"] == 1 && v["ready"] == true {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no restart:\n{}",
            demo.run.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The load goes on against the new image, and the balancer sees it ready again.
    wait_for_answers(&demo, &ok, 50);
    let deadline = Instant::now() + Duration::from_secs(30);
    while readiness.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "readiness as seen by a balancer: {:?}",
            readiness.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    poller.join().unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "only {} answers",
        ok.load(Ordering::SeqCst)
    );
    assert!(demo.run.is_running());
    assert_eq!(demo.run.pid(), pid);
    let out = demo.run.text();
    assert!(
        out.contains(&format!("re-executing in place (restart #1, pid {pid})")),
        "{out}"
    );
    assert!(out.contains(&format!(
        "running after graceful restart #1 in place (pid {pid})"
    )));
    let after = demo.report();
    let rss = after["memory"]["resident_bytes"].as_u64().unwrap();
    assert!(
        rss < baseline + (24 << 20),
        "rss {rss} vs baseline {baseline}"
    );
    assert_eq!(after["state"], "normal");
    let seen = readiness.lock().unwrap().clone();
    assert_eq!(seen, vec![200, 503, 200], "readiness as seen by a balancer");
    let metrics = get(demo.endpoint, "/metrics").text();
    assert!(
        metrics.contains("\nleakguard_restarts_total 1\n"),
        "{metrics}"
    );
    let reason = after["restart"]["last_reason"].as_str().unwrap().to_owned();
    // The leak is one step past the limit itself: reaching the limit restarts at once, without
    // waiting for the restart threshold's consecutive samples.
    assert!(reason.contains("reached the 128.0 MiB limit"), "{reason}");
    // The handover variables are gone from what the service's own children see.
    let env = get(demo.service, "/child_env").text();
    assert!(env.contains("DEMO_LIMIT=128MiB"), "{env}");
    for var in [
        "LISTEN_FDS=",
        "LISTEN_PID=",
        "LISTEN_FDNAMES=",
        "LEAKGUARD_RESTART_STATE=",
    ] {
        assert!(!env.contains(var), "{var} leaked to a child:\n{env}");
    }
    eprintln!(
        "restart under load: {} answers, worst latency {:?}",
        ok.load(Ordering::SeqCst),
        worst.lock().unwrap()
    );
}

#[test]
fn exit_action_exits_with_the_code() {
    let mut demo = start(&[("LEAKGUARD_RESTART_ACTION", "exit:7")]);
    assert_eq!(get(demo.service, "/leak?kib=131072").status, 200);
    assert_eq!(
        demo.run.wait_status(Duration::from_secs(30)),
        (Some(7), None)
    );
    assert!(demo.run.text().contains("exiting with code 7"));
}

#[test]
fn signal_action_sends_sigterm() {
    let mut demo = start(&[("LEAKGUARD_RESTART_ACTION", "signal:TERM")]);
    assert_eq!(get(demo.service, "/leak?kib=131072").status, 200);
    assert_eq!(
        demo.run.wait_status(Duration::from_secs(30)),
        (None, Some(15))
    );
}

#[test]
fn operator_restart_needs_the_token_and_one_runs_at_a_time() {
    let demo = start(&[
        ("LEAKGUARD_TOKEN", "s3cret"),
        ("LEAKGUARD_RESTART_ACTION", "none"),
    ]);
    let post = |headers: &[(&str, &str)]| {
        request_with("POST", demo.endpoint, "/debug/leakguard/restart", headers).unwrap()
    };
    assert_eq!(post(&[]).status, 401);
    assert_eq!(post(&[("Authorization", "Bearer wrong")]).status, 401);
    let first = post(&[("Authorization", "Bearer s3cret")]);
    assert_eq!(first.status, 202, "{}", first.text());
    let second = post(&[("Authorization", "Bearer s3cret")]);
    assert_eq!(second.status, 409);
    assert!(second.text().contains("already under way"));
    assert_eq!(get(demo.endpoint, "/readyz").status, 503);
    demo.run.wait_for_output(
        "restart action is none: nothing restarted",
        Duration::from_secs(20),
    );
    assert_eq!(get(demo.endpoint, "/readyz").status, 200);
    // Purge: also token-only.
    assert_eq!(
        request_with("POST", demo.endpoint, "/debug/leakguard/purge", &[])
            .unwrap()
            .status,
        401
    );
    let purged = request_with(
        "POST",
        demo.endpoint,
        "/debug/leakguard/purge",
        &[("Authorization", "Bearer s3cret")],
    )
    .unwrap();
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json()["purged"], true);
}

#[test]
fn without_a_token_mutating_endpoints_refuse() {
    let demo = start(&[]);
    let r = request("POST", demo.endpoint, "/debug/leakguard/restart").unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("LEAKGUARD_TOKEN"));
    assert!(get(demo.endpoint, "/readyz").status == 200);
}

#[test]
fn restarts_are_rate_limited_across_re_execs() {
    let demo = start(&[("LEAKGUARD_TOKEN", "t")]);
    let auth = [("Authorization", "Bearer t")];
    for n in 1..=3u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = request_with("POST", demo.endpoint, "/debug/leakguard/restart", &auth)
                && r.status == 202
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "restart {n} refused:\n{}",
                demo.run.text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        demo.run.wait_for_output(
            &format!("running after graceful restart #{n} in place"),
            Duration::from_secs(30),
        );
    }
    assert!(wait_until_ok(
        demo.endpoint,
        "/readyz",
        Duration::from_secs(10)
    ));
    let fourth = request_with("POST", demo.endpoint, "/debug/leakguard/restart", &auth).unwrap();
    assert_eq!(fourth.status, 409, "{}", fourth.text());
    assert!(fourth.text().contains("3 restart(s) in the last hour"));
}

#[test]
fn a_failing_exec_falls_back_to_exit_with_a_clear_message() {
    // A copy of the demo that stops being executable while it runs.
    let dir = std::env::temp_dir().join(format!("leakguard-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("leaky_service");
    std::fs::copy(example_binary("leaky_service"), &copy).unwrap();
    let service: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut run = Running::start(
        &copy,
        &[
            ("DEMO_ADDR", service.to_string()),
            ("LEAKGUARD_ADDR", endpoint.to_string()),
            ("LEAKGUARD_TOKEN", "t".to_owned()),
            ("DEMO_LEAK_KIB_PER_SEC", "0".to_owned()),
            ("DEMO_DRAIN_DELAY", "100ms".to_owned()),
        ],
    );
    assert!(
        wait_until_ok(endpoint, "/healthz", Duration::from_secs(60)),
        "{}",
        run.text()
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = request_with(
        "POST",
        endpoint,
        "/debug/leakguard/restart",
        &[("Authorization", "Bearer t")],
    )
    .unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(run.wait_status(Duration::from_secs(30)), (Some(1), None));
    let out = run.text();
    assert!(
        out.contains("re-exec failed") && out.contains("exiting with code 1"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn caches_shrink_under_pressure_before_a_restart() {
    let demo = start(&[("LEAKGUARD_RESTART_ACTION", "none")]);
    let pages_weight = |d: &Demo| {
        d.report()["caches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "pages")
            .cloned()
            .unwrap_or_default()
    };
    // Let the page cache fill a little (64 KiB every 40 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    while pages_weight(&demo)["weight_bytes"].as_u64().unwrap_or(0) < 4 << 20 {
        assert!(Instant::now() < deadline, "the page cache did not fill");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(demo.service, "/leak?kib=131072").status, 200);
    demo.run.wait_for_output(
        "memory pressure: caches shrunk to 50%",
        Duration::from_secs(30),
    );
    let pages = pages_weight(&demo);
    assert!(
        pages["evictions"]["pressure"].as_u64().unwrap_or(0) > 0,
        "{pages}"
    );
}
