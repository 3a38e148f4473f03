//! The guard in Python: `leakguard._leakguard.Guard`, started by `start_guard(...)`, and
//! `listener(...)` for the sockets that a re-exec hands over.
//!
//! The Rust guard runs as it does in a Rust service: its sampler thread and its endpoint never
//! take the GIL, except to call the Python callbacks given at start (extra routes, report
//! sections, purge hooks, the restart callback), and those only when asked. Every method that
//! waits or locks runs with the GIL released.

use super::{LeakguardError, ToPyResult, json_to_py};
use leakguard::endpoint::{self, EndpointRequest, EndpointResponse};
use leakguard::restart::RestartPolicy;
use leakguard::{Guard, RestartAction};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyString};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A running guard. Made by ``start_guard``; ``leakguard.start()`` keeps the one of the process.
#[pyclass(module = "leakguard._leakguard", name = "Guard", frozen)]
struct PyGuard {
    guard: Mutex<Option<Guard>>,
    /// The process that started the guard. A child made by `fork()` has a copy of the guard
    /// but none of its threads: there it is never stopped nor dropped (joining threads that do
    /// not exist would wait forever), only forgotten.
    pid: u32,
}

impl PyGuard {
    /// Whether this is a forked copy of a guard started by another process.
    fn forked(&self) -> bool {
        self.pid != std::process::id()
    }

    /// Runs `f` on the running guard with the GIL released; raises when it was stopped.
    fn with<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Guard) -> T + Send) -> PyResult<T> {
        py.detach(|| {
            let guard = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
            guard.as_ref().map(f)
        })
        .ok_or_else(|| LeakguardError::new_err("the guard was stopped"))
    }
}

#[pymethods]
impl PyGuard {
    /// The report as a dict (what ``GET /debug/leakguard`` serves).
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = self.with(py, |g| serde_json::to_value(g.report()))?;
        let value = json.map_err(|e| LeakguardError::new_err(format!("cannot serialize: {e}")))?;
        json_to_py(py, &value)
    }

    /// The Prometheus text exposition (what ``GET /metrics`` serves).
    fn metrics(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, Guard::render_metrics)
    }

    /// Takes one sample now, evaluates the thresholds, and returns the sample as a dict.
    fn tick<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = self.with(py, |g| serde_json::to_value(g.tick()))?;
        let value = json.map_err(|e| LeakguardError::new_err(format!("cannot serialize: {e}")))?;
        json_to_py(py, &value)
    }

    /// The threshold state: ``"normal"``, ``"warn"``, ``"critical"`` or ``"restart"``.
    fn state(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |g| g.state().to_string())
    }

    /// Whether ``/readyz`` answers 200.
    fn is_ready(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, Guard::is_ready)
    }

    /// Whether a graceful restart is under way.
    fn is_restarting(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, Guard::is_restarting)
    }

    /// ``"host:port"`` of the debug endpoint, or None when it does not run.
    fn endpoint_addr(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.with(py, |g| g.endpoint_addr().map(|a| a.to_string()))
    }

    /// Starts a graceful restart now; raises LeakguardError when it is refused.
    fn restart_now(&self, py: Python<'_>, reason: &str) -> PyResult<()> {
        self.with(py, |g| g.request_restart(reason))?
            .map_err(|e| LeakguardError::new_err(e.to_string()))
    }

    /// Stops the sampler thread and the endpoint and waits for them; a second call does nothing.
    fn stop(&self, py: Python<'_>) {
        if self.forked() {
            // Its threads and endpoint belong to the parent: nothing here to stop. try_lock:
            // a parent's thread may have held the lock when the process forked.
            if let Ok(mut guard) = self.guard.try_lock() {
                std::mem::forget(guard.take());
            }
            return;
        }
        py.detach(|| {
            let taken = self
                .guard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(guard) = taken {
                guard.stop();
            }
        });
    }

    /// Whether the guard runs (False after ``stop()``).
    fn running(&self, py: Python<'_>) -> bool {
        py.detach(|| {
            self.guard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        })
    }
}

impl Drop for PyGuard {
    fn drop(&mut self) {
        if self.forked() {
            let guard = self
                .guard
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            std::mem::forget(guard);
        }
    }
}

/// A core result as a Python one.
fn core<T>(result: leakguard::Result<T>) -> PyResult<T> {
    ToPyResult(result).into()
}

/// A size: an int of bytes or a string such as ``"512MiB"``.
fn size_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(s) = value.cast::<PyString>() {
        return ToPyResult(leakguard::parse_size(name, &s.to_cow()?)).into();
    }
    if value.is_instance_of::<PyInt>() {
        return value
            .extract::<u64>()
            .map_err(|_| PyValueError::new_err(format!("{name} must be a size >= 0 in bytes")));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be an int of bytes or a string such as \"512MiB\""
    )))
}

/// A duration: seconds as int or float, or a string such as ``"250ms"``.
fn duration_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if let Ok(s) = value.cast::<PyString>() {
        return ToPyResult(leakguard::parse_duration(name, &s.to_cow()?)).into();
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        let seconds: f64 = value.extract()?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| {
            PyValueError::new_err(format!(
                "{name} must be a finite number of seconds >= 0, not {seconds}"
            ))
        });
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be seconds (int or float) or a string such as \"250ms\""
    )))
}

/// A fraction: a float in (0, 1] or a string such as ``"95%"``.
fn fraction_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let text = if let Ok(s) = value.cast::<PyString>() {
        s.to_cow()?.into_owned()
    } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        value.extract::<f64>()?.to_string()
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a fraction such as 0.95 or \"95%\""
        )));
    };
    ToPyResult(leakguard::parse_fraction(name, &text)).into()
}

/// Reports a Python exception raised inside a callback that Rust called, the way Python reports
/// exceptions it cannot raise (``sys.unraisablehook``).
fn report_unraisable(py: Python<'_>, err: PyErr, what: &Bound<'_, PyAny>) {
    err.write_unraisable(py, Some(what));
}

/// The token in force once the guard started (`None` inside: no token set).
type TokenCell = Arc<std::sync::OnceLock<Option<String>>>;

/// `None` when `req` carries `Authorization: Bearer <the token>`; else the refusal. Python
/// routes run Python code with the GIL held (a heap walk pauses the whole service), so every
/// one of them needs the token, GET included: without it, anyone who reaches the port could
/// pause the service by looping one.
fn python_route_refusal(req: &EndpointRequest, token: &TokenCell) -> Option<EndpointResponse> {
    let Some(expected) = token.get() else {
        return Some(EndpointResponse::error(503, "the guard is starting"));
    };
    let Some(expected) = expected else {
        return Some(EndpointResponse::error(
            403,
            "the Python routes need the token: set LEAKGUARD_TOKEN (or token=) and send it as `Authorization: Bearer <token>`",
        ));
    };
    let given = req
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim);
    let matches = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        return None;
    }
    let mut refused =
        EndpointResponse::error(401, "a valid `Authorization: Bearer <token>` is required");
    refused
        .headers
        .push(("WWW-Authenticate", "Bearer realm=\"leakguard\"".to_owned()));
    Some(refused)
}

/// A Python route handler: `handler(method, path, query) -> (status, content_type, body)`,
/// with `content_type` ``"json"`` or ``"text"`` and `body` a str. Needs the token (see
/// [`python_route_refusal`]).
fn route_handler(
    handler: Py<PyAny>,
    token: TokenCell,
) -> impl Fn(&EndpointRequest) -> EndpointResponse {
    move |req| {
        if let Some(refused) = python_route_refusal(req, &token) {
            return refused;
        }
        Python::attach(|py| {
            let answer = handler
                .bind(py)
                .call1((req.method.as_str(), req.path.as_str(), req.query.as_str()))
                .and_then(|r| r.extract::<(u16, String, String)>());
            match answer {
                Ok((status, kind, body)) => {
                    let content_type = if kind == "json" {
                        endpoint::JSON
                    } else {
                        endpoint::TEXT
                    };
                    EndpointResponse::new(status, content_type, body)
                }
                Err(e) => EndpointResponse::error(500, &format!("the Python handler raised: {e}")),
            }
        })
    }
}

/// A Python JSON provider: `f() -> str` (a JSON document).
fn json_provider(f: Py<PyAny>) -> impl Fn() -> serde_json::Value {
    move || {
        let text = Python::attach(|py| {
            f.bind(py)
                .call0()
                .and_then(|r| r.extract::<String>())
                .map_err(|e| e.to_string())
        });
        match text {
            Ok(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| serde_json::json!({ "error": format!("not JSON: {e}") })),
            Err(e) => serde_json::json!({ "error": format!("raised: {e}") }),
        }
    }
}

/// Starts a guard. The ``LEAKGUARD_*`` environment variables override the arguments unless
/// ``read_env`` is False, as in Rust. Raises ConfigError on a bad setting.
///
/// ``routes``: ``(path, methods, handler)`` with ``handler(method, path, query) ->
/// (status, "json" | "text", body)``. ``report_sections`` and ``purge_hooks``: ``(name, f)``
/// with ``f() -> str`` (JSON). ``on_restart(reason)`` replaces the restart action.
/// ``on_event(level, kind, message)`` is called for every event (``level``: ``"info"``,
/// ``"warn"`` or ``"error"``; ``kind`` as the report spells it). Every
/// callback is called from a Rust thread, with the GIL taken for the call only.
#[pyfunction]
#[pyo3(signature = (
    *,
    limit = None,
    addr = None,
    interval = None,
    warn = None,
    critical = None,
    restart = None,
    restart_action = None,
    on_restart = None,
    on_event = None,
    min_uptime = None,
    token = None,
    drain_delay = None,
    drain_timeout = None,
    max_restarts_per_hour = None,
    read_env = true,
    routes = Vec::new(),
    report_sections = Vec::new(),
    purge_hooks = Vec::new(),
))]
#[allow(clippy::too_many_arguments)]
fn start_guard(
    py: Python<'_>,
    limit: Option<Bound<'_, PyAny>>,
    addr: Option<&str>,
    interval: Option<Bound<'_, PyAny>>,
    warn: Option<Bound<'_, PyAny>>,
    critical: Option<Bound<'_, PyAny>>,
    restart: Option<Bound<'_, PyAny>>,
    restart_action: Option<&str>,
    on_restart: Option<Py<PyAny>>,
    on_event: Option<Py<PyAny>>,
    min_uptime: Option<Bound<'_, PyAny>>,
    token: Option<String>,
    drain_delay: Option<Bound<'_, PyAny>>,
    drain_timeout: Option<Bound<'_, PyAny>>,
    max_restarts_per_hour: Option<u32>,
    read_env: bool,
    routes: Vec<(String, Vec<String>, Py<PyAny>)>,
    report_sections: Vec<(String, Py<PyAny>)>,
    purge_hooks: Vec<(String, Py<PyAny>)>,
) -> PyResult<PyGuard> {
    let mut b = Guard::builder();
    if !read_env {
        b = b.ignore_env();
    }
    if let Some(v) = &limit {
        b = b.limit(size_arg("limit", v)?);
    }
    if let Some(a) = addr {
        match core(leakguard::parse_addr("addr", a))? {
            Some(parsed) => b = b.addr(&parsed.to_string()),
            None => b = b.no_endpoint(),
        }
    }
    if let Some(v) = &interval {
        b = b.interval(duration_arg("interval", v)?);
    }
    if let Some(v) = &warn {
        b = b.warn(fraction_arg("warn", v)?);
    }
    if let Some(v) = &critical {
        b = b.critical(fraction_arg("critical", v)?);
    }
    if let Some(v) = &restart {
        b = b.restart(fraction_arg("restart", v)?);
    }
    if let Some(v) = &min_uptime {
        b = b.min_uptime(duration_arg("min_uptime", v)?);
    }
    if let Some(t) = token {
        b = b.token(t);
    }
    let mut policy = RestartPolicy::default();
    if let Some(v) = &drain_delay {
        policy.drain_delay = duration_arg("drain_delay", v)?;
    }
    if let Some(v) = &drain_timeout {
        policy.drain_timeout = duration_arg("drain_timeout", v)?;
    }
    if let Some(n) = max_restarts_per_hour {
        policy.max_per_hour = n;
    }
    b = b.restart_policy(policy);
    if let Some(action) = restart_action {
        b = b.restart_action(core(RestartAction::parse("restart_action", action))?);
    }
    if let Some(cb) = on_restart {
        b = b.on_restart(move |reason| {
            Python::attach(|py| {
                let f = cb.bind(py);
                if let Err(e) = f.call1((reason,)) {
                    report_unraisable(py, e, f);
                }
            });
        });
    }
    if let Some(cb) = on_event {
        b = b.on_event(move |event| {
            // The kind as the report spells it (snake_case).
            let kind = serde_json::to_value(event.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Python::attach(|py| {
                let f = cb.bind(py);
                if let Err(e) = f.call1((event.level.as_str(), kind, event.message.as_str())) {
                    report_unraisable(py, e, f);
                }
            });
        });
    }
    // The `exit` action runs the interpreter's exit handlers first, as `sys.exit` would.
    b = b.before_exit(|| {
        Python::attach(|py| {
            let ran = py
                .import("atexit")
                .and_then(|atexit| atexit.call_method0("_run_exitfuncs"));
            if let Err(e) = ran {
                e.print(py);
            }
            // Python's own buffered streams, before the process ends.
            for stream in ["stdout", "stderr"] {
                if let Ok(s) = py.import("sys").and_then(|sys| sys.getattr(stream)) {
                    let _ = s.call_method0("flush");
                }
            }
        });
    });
    let token_cell: TokenCell = Arc::default();
    for (path, methods, handler) in routes {
        let methods: Vec<&'static str> = methods
            .iter()
            .map(|m| match m.to_ascii_uppercase().as_str() {
                "GET" => Ok("GET"),
                "HEAD" => Ok("HEAD"),
                "POST" => Ok("POST"),
                "PUT" => Ok("PUT"),
                "DELETE" => Ok("DELETE"),
                other => Err(PyValueError::new_err(format!(
                    "route {path}: unsupported method {other:?}"
                ))),
            })
            .collect::<PyResult<_>>()?;
        b = b.route(
            &path,
            &methods,
            route_handler(handler, Arc::clone(&token_cell)),
        );
    }
    for (name, f) in report_sections {
        b = b.report_section(&name, json_provider(f));
    }
    for (name, f) in purge_hooks {
        b = b.on_purge(&name, json_provider(f));
    }
    // Starting takes a first sample and binds the endpoint: without the GIL.
    let guard = core(py.detach(move || b.start()))?;
    let _ = token_cell.set(guard.config().token.clone());
    Ok(PyGuard {
        guard: Mutex::new(Some(guard)),
        pid: std::process::id(),
    })
}

/// A listening TCP socket that survives a re-exec restart: the inherited one after a re-exec
/// (``LISTEN_FDS``), else a new one bound to ``addr``; kept for the next handover under
/// ``name``. Returns its file descriptor, which the caller owns.
#[pyfunction]
fn listener(py: Python<'_>, name: &str, addr: &str) -> PyResult<i32> {
    use std::os::fd::IntoRawFd;
    let owned = name.to_owned();
    let addr = addr.to_owned();
    let l = core(py.detach(move || leakguard::listener(&owned, addr.as_str())))?;
    // Python's socket objects expect a blocking descriptor (their timeout says otherwise).
    l.set_nonblocking(false)
        .map_err(|e| LeakguardError::new_err(format!("listener {name:?}: {e}")))?;
    Ok(l.into_raw_fd())
}

/// Adds the guard's classes and functions to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyGuard>()?;
    m.add_function(wrap_pyfunction!(start_guard, m)?)?;
    m.add_function(wrap_pyfunction!(listener, m)?)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pyo3::IntoPyObjectExt;

    #[test]
    fn sizes_durations_and_fractions_take_numbers_and_operator_spellings() {
        Python::initialize();
        Python::attach(|py| {
            let any = |v: &dyn Fn(Python<'_>) -> PyResult<Bound<'_, PyAny>>| v(py).unwrap();
            assert_eq!(
                size_arg("limit", &any(&|py| "512MiB".into_bound_py_any(py))).unwrap(),
                512 << 20
            );
            assert_eq!(
                size_arg("limit", &any(&|py| 4096u64.into_bound_py_any(py))).unwrap(),
                4096
            );
            assert!(size_arg("limit", &any(&|py| (-1i64).into_bound_py_any(py))).is_err());
            assert!(size_arg("limit", &any(&|py| 1.5f64.into_bound_py_any(py))).is_err());
            assert_eq!(
                duration_arg("interval", &any(&|py| "250ms".into_bound_py_any(py))).unwrap(),
                Duration::from_millis(250)
            );
            assert_eq!(
                duration_arg("interval", &any(&|py| 0.5f64.into_bound_py_any(py))).unwrap(),
                Duration::from_millis(500)
            );
            assert!(duration_arg("interval", &any(&|py| (-1.0f64).into_bound_py_any(py))).is_err());
            assert!(duration_arg("interval", &any(&|py| f64::NAN.into_bound_py_any(py))).is_err());
            assert_eq!(
                fraction_arg("restart", &any(&|py| "95%".into_bound_py_any(py))).unwrap(),
                0.95
            );
            assert_eq!(
                fraction_arg("restart", &any(&|py| 0.9f64.into_bound_py_any(py))).unwrap(),
                0.9
            );
            let err =
                fraction_arg("restart", &any(&|py| 2.0f64.into_bound_py_any(py))).unwrap_err();
            assert!(err.value(py).str().unwrap().to_string().contains("restart"));
        });
    }

    #[test]
    fn a_python_route_handler_answers_and_its_exception_becomes_a_500() {
        Python::initialize();
        let (ok, raising) = Python::attach(|py| {
            let ns = pyo3::types::PyDict::new(py);
            py.run(
                c"def ok(m, p, q): return (201, 'json', '{\"q\": \"%s\"}' % q)\ndef bad(m, p, q): raise RuntimeError('nope')\n",
                Some(&ns),
                None,
            )
            .unwrap();
            (
                ns.get_item("ok").unwrap().unwrap().unbind(),
                ns.get_item("bad").unwrap().unwrap().unbind(),
            )
        });
        let token: TokenCell = Arc::default();
        token.set(Some("s3cret".to_owned())).unwrap();
        // Called from a thread without the GIL, as the endpoint's thread would.
        let r = std::thread::spawn(move || {
            let mut req = EndpointRequest::new("GET", "/x?limit=3");
            let ok = route_handler(ok, Arc::clone(&token));
            let raising = route_handler(raising, Arc::clone(&token));
            // GET included, the token is needed: Python routes hold the GIL.
            let refused = (ok(&req).status, raising(&req).status);
            req.authorization = Some("Bearer wrong!".to_owned());
            let wrong = ok(&req).status;
            req.authorization = Some("Bearer s3cret".to_owned());
            assert_eq!((refused, wrong), ((401, 401), 401));
            (ok(&req), raising(&req))
        })
        .join()
        .unwrap();
        assert_eq!(r.0.status, 201);
        assert_eq!(r.0.content_type, endpoint::JSON);
        assert_eq!(String::from_utf8(r.0.body).unwrap(), "{\"q\": \"limit=3\"}");
        assert_eq!(r.1.status, 500);
        assert!(String::from_utf8(r.1.body).unwrap().contains("nope"));
    }
}
