//! Extension points of the guard, for an embedding layer (such as the Python bindings) that has
//! data of its own to show: extra endpoint routes, extra sections of the report, and hooks that
//! run before the allocator is purged.
//!
//! All three are set on the [`GuardBuilder`](crate::GuardBuilder) and are called only when asked
//! for (a request to the route, a report, a purge), on the thread that asks. A callback that
//! panics is caught: the route answers 500, the section and the hook report the panic, and the
//! guard goes on.
//!
//! ```
//! use leakguard::Guard;
//! use leakguard::endpoint::{EndpointRequest, EndpointResponse, JSON};
//!
//! let guard = Guard::builder()
//!     .ignore_env()
//!     .no_endpoint()
//!     .background(false)
//!     .route("/debug/app/queue", &["GET"], |_req| {
//!         EndpointResponse::new(200, JSON, r#"{"depth":3}"#)
//!     })
//!     .report_section("app", || serde_json::json!({ "queue_depth": 3 }))
//!     .on_purge("app", || serde_json::json!({ "dropped_buffers": 2 }))
//!     .start()?;
//! assert_eq!(guard.handle(&EndpointRequest::new("GET", "/debug/app/queue")).status, 200);
//! assert_eq!(guard.report().extensions["app"]["queue_depth"], 3);
//! # Ok::<(), leakguard::Error>(())
//! ```

use crate::endpoint::{EndpointRequest, EndpointResponse};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Answers requests to an extra route (see [`GuardBuilder::route`](crate::GuardBuilder::route)).
pub type RouteHandler = Arc<dyn Fn(&EndpointRequest) -> EndpointResponse + Send + Sync>;

/// Produces a JSON value on demand: an extra report section
/// ([`GuardBuilder::report_section`](crate::GuardBuilder::report_section)) or the outcome of a
/// purge hook ([`GuardBuilder::on_purge`](crate::GuardBuilder::on_purge)).
pub type JsonProvider = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Most extra routes, sections and purge hooks of each kind a guard takes (the builder's
/// `start` refuses more): they are set in code, not by requests, but stay bounded all the same.
pub const MAX_EXTENSIONS: usize = 32;

/// Paths the guard answers itself; an extra route may not take them, nor anything below
/// `/debug/leakguard/`.
const BUILT_IN_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/debug/leakguard",
    "/debug/pprof/heap",
];

use crate::report::REPORT_KEYS;

/// One extra route.
#[derive(Clone)]
pub(crate) struct Route {
    pub path: String,
    pub methods: Vec<&'static str>,
    pub handler: RouteHandler,
}

/// The extensions a guard was built with.
#[derive(Clone, Default)]
pub(crate) struct Extensions {
    pub routes: Vec<Route>,
    pub sections: Vec<(String, JsonProvider)>,
    pub purge_hooks: Vec<(String, JsonProvider)>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.path).collect::<Vec<_>>(),
            )
            .field(
                "sections",
                &self.sections.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .field(
                "purge_hooks",
                &self.purge_hooks.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Extensions {
    /// Checks what the builder collected: paths, names, counts.
    pub fn validate(&self) -> Result<()> {
        for kind in [
            ("route", self.routes.len()),
            ("report section", self.sections.len()),
            ("purge hook", self.purge_hooks.len()),
        ] {
            if kind.1 > MAX_EXTENSIONS {
                return Err(Error::config(
                    kind.0,
                    &kind.1.to_string(),
                    format!("at most {MAX_EXTENSIONS} may be added"),
                ));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let path = route.path.as_str();
            if !path.starts_with('/') || path.contains('?') || path.contains(char::is_whitespace) {
                return Err(Error::config(
                    "route",
                    path,
                    "a path starts with / and has no query string or spaces",
                ));
            }
            if BUILT_IN_PATHS.contains(&path.trim_end_matches('/'))
                || path.starts_with("/debug/leakguard/")
            {
                return Err(Error::config(
                    "route",
                    path,
                    "the guard answers this path itself",
                ));
            }
            if self.routes[..i].iter().any(|r| r.path == route.path) {
                return Err(Error::config("route", path, "added twice"));
            }
            if route.methods.is_empty() {
                return Err(Error::config("route", path, "no method is allowed"));
            }
        }
        for (what, list) in [
            ("report section", &self.sections),
            ("purge hook", &self.purge_hooks),
        ] {
            for (i, (name, _)) in list.iter().enumerate() {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(Error::config(
                        what,
                        name,
                        "a name is non-empty ASCII letters, digits, _ or -",
                    ));
                }
                if what == "report section" && REPORT_KEYS.contains(&name.as_str()) {
                    return Err(Error::config(
                        what,
                        name,
                        "the report has a section of that name already",
                    ));
                }
                if list[..i].iter().any(|(n, _)| n == name) {
                    return Err(Error::config(what, name, "added twice"));
                }
            }
        }
        Ok(())
    }

    /// The extra route for `path`, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path)
    }

    /// Runs a route's handler; a panic becomes a 500.
    pub fn answer(route: &Route, req: &EndpointRequest) -> EndpointResponse {
        match catch_unwind(AssertUnwindSafe(|| (route.handler)(req))) {
            Ok(response) => response,
            Err(payload) => EndpointResponse::error(
                500,
                &format!(
                    "the handler of {} panicked: {}",
                    route.path,
                    crate::panics::panic_message(&*payload)
                ),
            ),
        }
    }

    /// The extra report sections, each computed now.
    pub fn sections(&self) -> BTreeMap<String, serde_json::Value> {
        call_all(&self.sections)
    }

    /// Runs the purge hooks in order and collects what they said.
    pub fn purge(&self) -> BTreeMap<String, serde_json::Value> {
        call_all(&self.purge_hooks)
    }
}

/// Calls every provider; a panic becomes `{"error": "panicked: …"}` under its name.
fn call_all(list: &[(String, JsonProvider)]) -> BTreeMap<String, serde_json::Value> {
    list.iter()
        .map(|(name, f)| {
            let value = catch_unwind(AssertUnwindSafe(|| f())).unwrap_or_else(|payload| {
                serde_json::json!({
                    "error": format!("panicked: {}", crate::panics::panic_message(&*payload))
                })
            });
            (name.clone(), value)
        })
        .collect()
}
