//! The guard's routes with any method, path, query and `Authorization` header: every answer
//! has a valid status; a JSON answer is valid JSON; nothing mutating runs without the token.
#![no_main]

use leakguard::endpoint::{EndpointRequest, JSON};
use leakguard::{Guard, RestartAction};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const TOKEN: &str = "fuzz-token-0123456789";

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        Guard::builder()
            .no_endpoint()
            .ignore_env()
            .background(false)
            .record_metrics(false)
            .limit(1 << 40)
            .token(TOKEN)
            // A restart the fuzzer asks for only reports.
            .restart_action(RestartAction::None)
            .start()
            .expect("the guard starts")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or("/");
    let mut request = EndpointRequest::new(method, target);
    request.authorization = parts.next().map(str::to_owned);
    let answer = guard().handle(&request);
    assert!(
        (100..600).contains(&answer.status),
        "{request:?} -> {}",
        answer.status
    );
    if answer.content_type == JSON {
        serde_json::from_slice::<serde_json::Value>(&answer.body)
            .unwrap_or_else(|e| panic!("{request:?}: invalid JSON ({e})"));
    }
    let authorized = request
        .authorization
        .as_deref()
        .is_some_and(|a| a.strip_prefix("Bearer ").is_some_and(|t| t.trim() == TOKEN));
    if request.method == "POST" && !authorized {
        assert!(
            answer.status == 401 || answer.status == 404 || answer.status == 405,
            "{request:?} without the token -> {}",
            answer.status
        );
    }
});
