//! Where a route is answered: the endpoint's one route table ([`ROUTES`]: path, methods, who
//! may call it, the answer), which also lists the routes in the 404, and the authorisation
//! beside it.

use super::Inner;
use super::metrics::families;
use super::snapshot::View;
use crate::endpoint::{self, EndpointRequest, EndpointResponse, Routes};
use crate::error::Error;
use crate::event::{EventKind, Level};
use crate::report::Report;
use crate::units::format_bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;

type Answer = fn(&Arc<Inner>, &EndpointRequest) -> EndpointResponse;

const GET: &[&str] = &["GET", "HEAD"];
const POST: &[&str] = &["POST"];

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: the probes, and the page (static, no data: its own requests carry the token).
    Open,
    /// The token only with `LEAKGUARD_AUTH=all`.
    Read,
    /// Always the token: routes that change something or show what the service holds.
    Token,
    /// As [`Access::Token`], refused with the header that makes `go tool pprof` print why.
    Profile,
}

/// One built-in route.
struct Route {
    path: &'static str,
    /// Another spelling answered the same way (not listed in the 404).
    alias: Option<&'static str>,
    methods: &'static [&'static str],
    access: Access,
    answer: Answer,
}

/// The built-in routes, in the order the 404 lists them.
const ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        alias: None,
        methods: GET,
        access: Access::Open,
        answer: |_, _| EndpointResponse::new(200, endpoint::TEXT, "ok\n"),
    },
    Route {
        path: "/readyz",
        alias: None,
        methods: GET,
        access: Access::Open,
        answer: |inner, _| {
            if inner.ready.load(Ordering::SeqCst) {
                EndpointResponse::new(200, endpoint::TEXT, "ready\n")
            } else {
                EndpointResponse::new(503, endpoint::TEXT, "not ready: restarting\n")
            }
        },
    },
    Route {
        path: "/metrics",
        alias: None,
        methods: GET,
        access: Access::Read,
        answer: |inner, _| {
            let text = crate::exposition::render(&families(&inner.snapshot(View::Metrics)));
            EndpointResponse::new(200, endpoint::PROMETHEUS_TEXT, text)
        },
    },
    Route {
        path: "/debug/leakguard",
        alias: Some("/debug/leakguard/"),
        methods: GET,
        access: Access::Read,
        answer: |inner, _| {
            let report = Report::from_snapshot(inner.snapshot(View::Report));
            EndpointResponse::new(200, endpoint::JSON, report.to_json())
        },
    },
    Route {
        path: "/debug/leakguard/ui",
        alias: None,
        methods: GET,
        access: Access::Open,
        answer: |_, _| crate::ui::page(),
    },
    Route {
        path: "/debug/leakguard/history",
        alias: None,
        methods: GET,
        access: Access::Read,
        answer: |inner, req| inner.history(req),
    },
    Route {
        path: "/debug/pprof/heap",
        alias: None,
        methods: GET,
        access: Access::Profile,
        answer: |inner, req| inner.serve_heap_profile(req),
    },
    Route {
        path: "/debug/leakguard/purge",
        alias: None,
        methods: POST,
        access: Access::Token,
        answer: |inner, _| inner.purge(),
    },
    Route {
        path: "/debug/leakguard/restart",
        alias: None,
        methods: POST,
        access: Access::Token,
        answer: |inner, _| match Arc::clone(inner).begin_restart("requested by an operator".into())
        {
            Ok(()) => EndpointResponse::new(
                202,
                endpoint::JSON,
                serde_json::json!({
                    "status": "restarting",
                    "drain_delay_seconds": inner.policy.drain_delay.as_secs_f64(),
                    "action": inner.config.restart_action.to_string(),
                })
                .to_string(),
            ),
            Err(why) => EndpointResponse::error(409, &Error::RestartRefused(why).to_string()),
        },
    },
    Route {
        path: "/debug/leakguard/dump",
        alias: None,
        methods: POST,
        access: Access::Token,
        answer: |inner, _| inner.dump_endpoint(),
    },
];

/// The 404's list of the built-in routes, from [`ROUTES`].
fn not_found() -> EndpointResponse {
    let listed: Vec<String> = ROUTES
        .iter()
        .map(|r| {
            if r.methods == GET {
                r.path.to_owned()
            } else {
                format!("{} {}", r.methods.join(", "), r.path)
            }
        })
        .collect();
    EndpointResponse::error(
        404,
        &format!("not found: the endpoints are {}", listed.join(", ")),
    )
}

/// The 405 for a method a route does not take, with `Allow`.
fn method_not_allowed(req: &EndpointRequest, allowed: &[&str]) -> EndpointResponse {
    let allowed = allowed.join(", ");
    let mut r = EndpointResponse::error(
        405,
        &format!("method {} not allowed; use {allowed}", req.method),
    );
    r.headers.push(("Allow", allowed));
    r
}

impl Inner {
    /// Answers one request: the route, then the token where `LEAKGUARD_AUTH=all` asks for it,
    /// then the method, then the token where the route asks for it, then the answer.
    pub(super) fn route(self: &Arc<Self>, req: &EndpointRequest) -> EndpointResponse {
        // `go tool pprof` sends the token as the password of a URL's Basic credentials.
        let converted =
            (req.path == "/debug/pprof/heap").then(|| crate::profile::basic_as_bearer(req));
        let req = converted.as_deref().unwrap_or(req);
        let path = req.path.as_str();
        let route = ROUTES
            .iter()
            .find(|r| r.path == path || r.alias == Some(path));
        if route.is_none_or(|r| r.access != Access::Open)
            && let Some(refused) = self.authorize(req, false)
        {
            return refused;
        }
        let Some(route) = route else {
            return match self.extensions.route(path) {
                Some(extra) => self.answer_extra(extra, req),
                None => not_found(),
            };
        };
        if !route.methods.contains(&req.method.as_str()) {
            return method_not_allowed(req, route.methods);
        }
        match route.access {
            Access::Open | Access::Read => {}
            Access::Token => {
                if let Some(refused) = self.authorize(req, true) {
                    return refused;
                }
            }
            Access::Profile => {
                if let Some(mut refused) = self.authorize(req, true) {
                    // JSON like every error; the header makes `go tool pprof` print the body.
                    refused.headers.push(("X-Go-Pprof", "1".to_owned()));
                    return refused;
                }
            }
        }
        (route.answer)(self, req)
    }

    /// Answers a request to an extra route: method, then authorization, then the handler.
    fn answer_extra(
        &self,
        route: &crate::extensions::Route,
        req: &EndpointRequest,
    ) -> EndpointResponse {
        if !route.methods.contains(&req.method.as_str()) {
            return method_not_allowed(req, &route.methods);
        }
        let mutating = !matches!(req.method.as_str(), "GET" | "HEAD");
        if let Some(refused) = self.authorize(req, mutating) {
            return refused;
        }
        crate::extensions::Extensions::answer(route, req)
    }

    /// `None` when the request may go on; else the refusal. Mutating endpoints need the
    /// token; with `LEAKGUARD_AUTH=all` every endpoint but the probes does.
    fn authorize(&self, req: &EndpointRequest, mutating: bool) -> Option<EndpointResponse> {
        if !mutating && !self.config.auth_all {
            return None;
        }
        let Some(token) = &self.config.token else {
            return Some(EndpointResponse::error(
                403,
                "this endpoint is off: set LEAKGUARD_TOKEN and send it as `Authorization: Bearer <token>`",
            ));
        };
        let given = req
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return None;
        }
        let mut r =
            EndpointResponse::error(401, "a valid `Authorization: Bearer <token>` is required");
        r.headers
            .push(("WWW-Authenticate", "Bearer realm=\"leakguard\"".to_owned()));
        Some(r)
    }

    /// `GET /debug/leakguard/history`: the bounded history and the detector's trend line.
    fn history(&self, req: &EndpointRequest) -> EndpointResponse {
        let tiers = match crate::ui::Tiers::parse(&req.query) {
            Ok(t) => t,
            Err(e) => return EndpointResponse::error(400, &e),
        };
        let (fine, coarse, window) = {
            let st = self.state.lock();
            (
                st.history.fine.points(),
                st.history.coarse.points(),
                st.trend.config().window,
            )
        };
        crate::ui::history(&self.snapshot(View::Core), tiers, fine, coarse, window)
    }

    /// Answers `GET /debug/pprof/heap[?base=baseline]`.
    fn serve_heap_profile(&self, req: &EndpointRequest) -> EndpointResponse {
        let (warmup, uptime) = {
            let st = self.state.lock();
            (
                st.trend.config().warmup.as_secs_f64(),
                self.clock
                    .monotonic()
                    .saturating_sub(self.started_mono)
                    .as_secs_f64(),
            )
        };
        self.profiles
            .serve(req, self.clock.unix_seconds(), Some(warmup - uptime))
    }

    fn dump_endpoint(&self) -> EndpointResponse {
        if self.config.dump_dir.is_none() {
            return EndpointResponse::error(
                409,
                "no dump directory: set LEAKGUARD_DUMP_DIR to a writable directory (or GuardBuilder::dump_dir) and restart the service",
            );
        }
        match self.dump_and_say("requested by an operator") {
            Ok(o) => EndpointResponse::new(
                200,
                endpoint::JSON,
                serde_json::to_string(&o).unwrap_or_else(|_| "{}".into()),
            ),
            Err(e) => EndpointResponse::error(500, &e.to_string()),
        }
    }

    /// Purges the allocator and says how much resident memory was given back.
    fn purge(&self) -> EndpointResponse {
        let rss = || {
            crate::process::ProcReader::new()
                .read(false)
                .map(|p| p.resident_bytes)
                .ok()
        };
        let hooks = self.extensions.purge();
        let before = rss();
        let result = self.sampler.lock().purge_allocator();
        let after = rss();
        match result {
            Ok(()) => {
                let released = match (before, after) {
                    (Some(b), Some(a)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                let message = format!(
                    "allocator purged: {} of resident memory given back",
                    format_bytes(released.unwrap_or(0))
                );
                self.emit(vec![self.event(Level::Info, EventKind::Allocator, message)]);
                EndpointResponse::new(
                    200,
                    endpoint::JSON,
                    serde_json::json!({
                        "purged": true,
                        "resident_before_bytes": before,
                        "resident_after_bytes": after,
                        "released_bytes": released,
                        "hooks": hooks,
                    })
                    .to_string(),
                )
            }
            Err(e) => EndpointResponse::error(501, &e.to_string()),
        }
    }
}

/// Compares secrets in time that depends only on their lengths (`subtle` keeps the optimizer
/// from turning the byte comparison into an early exit).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

pub(super) struct GuardRoutes(pub(super) Arc<Inner>);

impl Routes for GuardRoutes {
    fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
        self.0.route(request)
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_match_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!constant_time_eq(b"s3cret-token", b"S3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-toke"));
        assert!(!constant_time_eq(b"s3cret-token", b""));
    }
}
