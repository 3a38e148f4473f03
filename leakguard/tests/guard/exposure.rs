//! The endpoint listens on loopback unless told otherwise, and says loudly — through
//! `tracing`, at WARN, and in the event log — when it is told to listen beyond loopback
//! without a token.
#![allow(clippy::unwrap_used)]

use leakguard::{Config, EventKind, Guard, parse_addr};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts a guard on `addr` (with `token`) while a `tracing` subscriber captures what it
/// logs; returns the log and whether the guard recorded an `Exposed` event.
fn start_and_capture(addr: &str, token: Option<&str>) -> (String, bool) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let guard = tracing::subscriber::with_default(subscriber, || {
        let mut b = Guard::builder()
            .addr(addr)
            .ignore_env()
            .background(false)
            .record_metrics(false)
            .limit(1 << 40);
        if let Some(t) = token {
            b = b.token(t);
        }
        b.start().unwrap()
    });
    assert!(
        guard.endpoint_addr().is_some(),
        "the endpoint did not start"
    );
    let exposed = guard.events().iter().any(|e| e.kind == EventKind::Exposed);
    guard.stop();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (log, exposed)
}

#[test]
fn the_default_and_short_addresses_are_loopback() {
    let default = Config::default().addr.unwrap();
    assert!(default.ip().is_loopback(), "{default}");
    for short in ["6464", ":6464"] {
        let addr = parse_addr("LEAKGUARD_ADDR", short).unwrap().unwrap();
        assert!(addr.ip().is_loopback(), "{short} -> {addr}");
    }
}

#[test]
fn a_bind_beyond_loopback_without_a_token_logs_a_warning() {
    let (log, exposed) = start_and_capture("0.0.0.0:0", None);
    let line = log
        .lines()
        .find(|l| l.contains("beyond loopback"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("LEAKGUARD_TOKEN"), "{line}");
    // The address actually bound, with its port.
    assert!(
        line.contains("0.0.0.0:") && !line.contains("0.0.0.0:0 "),
        "{line}"
    );
    assert!(exposed);
}

#[test]
fn no_warning_with_a_token_or_on_loopback() {
    for (addr, token) in [("0.0.0.0:0", Some("t0ken")), ("127.0.0.1:0", None)] {
        let (log, exposed) = start_and_capture(addr, token);
        // The capture works: the start is logged.
        assert!(log.contains("started"), "{log}");
        assert!(!log.contains("beyond loopback"), "{addr}: {log}");
        assert!(!exposed, "{addr}");
    }
}
