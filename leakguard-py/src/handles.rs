//! Handle tracking for Python: `track` (a context manager and decorator), the native half of
//! `tracked`, kind configuration and the handles report.
//!
//! Handles go through the core's registry (`leakguard::handles`), so Python kinds appear
//! with the Rust ones in the report and on `/metrics`. A sampled open (the kind's
//! `sample_every`) records its creation site from the Python stack, given to the core as
//! text through `HandleKind::track_with_site`; an unsampled open does not look at the
//! stack at all.

use leakguard::handles::{self as core, HandleGuard, HandleKind, KindConfig, SiteFrames};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// Kind names remembered by the name → kind cache; more are looked up each time.
const KIND_CACHE_CAPACITY: usize = 1024;

/// A kind of handle. ``HandleKind("db_conn")`` registers the kind (once; later calls give
/// the same kind). Keep one to skip the name lookup of ``track("db_conn")``.
#[pyclass(name = "HandleKind", module = "leakguard", frozen)]
pub(crate) struct PyHandleKind {
    kind: HandleKind,
}

#[pymethods]
impl PyHandleKind {
    #[new]
    fn new(py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<Py<Self>> {
        resolve_name(py, name)
    }

    /// The kind's name (``"other"`` when the capacity of 256 named kinds was reached).
    #[getter]
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Handles of this kind open now.
    #[getter]
    fn open(&self) -> u64 {
        self.kind.open()
    }

    /// A context manager (and decorator) that counts one handle of this kind as open.
    fn track(&self) -> Track {
        Track::of(self.kind)
    }

    fn __repr__(&self) -> String {
        format!("leakguard.HandleKind({:?})", self.kind.name())
    }
}

/// The cache from kind names (str objects) to their `HandleKind` objects.
fn kind_cache(py: Python<'_>) -> &Bound<'_, PyDict> {
    static CACHE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    CACHE.get_or_init(py, || PyDict::new(py).unbind()).bind(py)
}

/// The `HandleKind` object of `name`, registering the kind on first use.
fn resolve_name(py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<Py<PyHandleKind>> {
    let cache = kind_cache(py);
    if let Some(hit) = cache.get_item(name)? {
        return Ok(hit.cast_into::<PyHandleKind>()?.unbind());
    }
    let text = name.to_cow()?;
    if text.is_empty() {
        return Err(PyValueError::new_err(
            "a handle kind needs a name, such as \"db_conn\"; got an empty string",
        ));
    }
    let kind = Py::new(
        py,
        PyHandleKind {
            kind: core::kind(&text),
        },
    )?;
    if cache.len() < KIND_CACHE_CAPACITY {
        cache.set_item(name, kind.clone_ref(py))?;
    }
    Ok(kind)
}

/// The core kind named by `kind`: a str or a `HandleKind`.
fn resolve(py: Python<'_>, kind: &Bound<'_, PyAny>) -> PyResult<HandleKind> {
    if let Ok(name) = kind.cast::<PyString>() {
        return Ok(resolve_name(py, name)?.get().kind);
    }
    if let Ok(k) = kind.cast::<PyHandleKind>() {
        return Ok(k.get().kind);
    }
    Err(PyTypeError::new_err(format!(
        "a handle kind is a str or a leakguard.HandleKind, not {}",
        kind.get_type().name()?
    )))
}

/// Whether a module name is leakguard's own (its frames are left out of creation sites).
fn is_leakguard_module(name: &str) -> bool {
    name == "leakguard" || name.starts_with("leakguard.")
}

/// What a sampled open needs of a code object: its names, and whether it is leakguard's.
struct CodeInfo {
    /// Holds the code object, so that its address (the key) is not reused while cached.
    _code: Py<PyAny>,
    function: String,
    file: String,
    own: bool,
}

/// Code objects seen by sampled opens, by address; at most this many are cached (the rest are
/// read each time).
const CODE_CACHE_CAPACITY: usize = 4096;

/// The code-object cache. The lock is held only to look up or insert an entry, never while
/// Python runs: reading a frame's attributes allocates, which can run the garbage collector
/// (and any `__del__`, which may open a handle on this thread) or let another thread take
/// the GIL and open a sampled handle; either would wait on the lock forever.
fn code_cache() -> MutexGuard<'static, HashMap<usize, Arc<CodeInfo>>> {
    static CODES: OnceLock<Mutex<HashMap<usize, Arc<CodeInfo>>>> = OnceLock::new();
    CODES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The cached names of `code`, read (with no lock held) and cached when not there yet.
fn cached_code_info(frame: &Bound<'_, PyAny>, code: Bound<'_, PyAny>) -> PyResult<Arc<CodeInfo>> {
    let key = code.as_ptr() as usize;
    let hit = code_cache().get(&key).map(Arc::clone);
    if let Some(info) = hit {
        return Ok(info);
    }
    let info = Arc::new(code_info(frame, code)?);
    let mut codes = code_cache();
    if codes.len() < CODE_CACHE_CAPACITY {
        // Another thread may have inserted it meanwhile: keep the first, drop ours below,
        // after the lock is released (dropping it releases a reference to the code object).
        let cached = Arc::clone(codes.entry(key).or_insert_with(|| Arc::clone(&info)));
        drop(codes);
        return Ok(cached);
    }
    drop(codes);
    Ok(info)
}

fn code_info(frame: &Bound<'_, PyAny>, code: Bound<'_, PyAny>) -> PyResult<CodeInfo> {
    let function = code
        .getattr("co_qualname")
        .or_else(|_| code.getattr("co_name"))?
        .extract::<String>()?;
    let file = code.getattr("co_filename")?.extract::<String>()?;
    let module = frame.getattr("f_globals")?.get_item("__name__").ok();
    let own = module
        .and_then(|m| m.extract::<String>().ok())
        .is_some_and(|m| is_leakguard_module(&m));
    Ok(CodeInfo {
        _code: code.unbind(),
        function,
        file,
        own,
    })
}

/// Fills `site` from the calling Python stack, innermost first, leakguard's own frames (the
/// `track` decorator's wrapper, `tracked`, the pytest plugin's measuring loop) left out.
/// Errors (an odd frame object) end the walk: the site keeps what it has. The names of a code
/// object are read once and cached, so a walk mostly reads line numbers.
fn python_site(py: Python<'_>, site: &mut SiteFrames<'_>) {
    static GETFRAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let mut walk = || -> PyResult<()> {
        let getframe = GETFRAME.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("sys")?.getattr("_getframe")?.unbind())
        })?;
        let mut frame = getframe.bind(py).call1((0,))?;
        while !frame.is_none() {
            let back = frame.getattr("f_back")?;
            let code = frame.getattr("f_code")?;
            let info = cached_code_info(&frame, code)?;
            if !info.own {
                let line = frame
                    .getattr("f_lineno")?
                    .extract::<Option<u32>>()?
                    .unwrap_or(0);
                if !site.push(&info.function, &info.file, line) {
                    break;
                }
            }
            frame = back;
        }
        Ok(())
    };
    // A failed walk leaves the site shorter; it never fails the open.
    let _ = walk();
}

/// Opens a handle of `kind`; a sampled open records its Python creation site.
fn open(py: Python<'_>, kind: HandleKind) -> HandleGuard {
    kind.track_with_site(|site| python_site(py, site))
}

/// ``with leakguard.track("db_conn"):`` counts one handle of the kind as open inside the
/// block; ``@leakguard.track("job")`` does the same around every call of the function.
// A freelist: `with track(..)` makes one object per block, and reusing freed ones saves the
// allocation.
#[pyclass(name = "track", module = "leakguard", freelist = 64)]
pub(crate) struct Track {
    kind: HandleKind,
    /// The handle of the current `with` block; `more` holds those of nested re-entries.
    open: Option<HandleGuard>,
    more: Vec<HandleGuard>,
}

impl Track {
    fn of(kind: HandleKind) -> Self {
        Self {
            kind,
            open: None,
            more: Vec::new(),
        }
    }
}

#[pymethods]
impl Track {
    #[new]
    fn new(py: Python<'_>, kind: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Self::of(resolve(py, kind)?))
    }

    /// The kind's name.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    fn __enter__<'py>(mut slf: PyRefMut<'py, Self>, py: Python<'py>) -> PyRefMut<'py, Self> {
        let guard = open(py, slf.kind);
        if slf.open.is_none() {
            slf.open = Some(guard);
        } else {
            slf.more.push(guard);
        }
        slf
    }

    #[pyo3(signature = (exc_type=None, exc_value=None, traceback=None))]
    fn __exit__(
        &mut self,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc_value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) {
        let _ = (exc_type, exc_value, traceback);
        if self.more.pop().is_none() {
            self.open = None;
        }
    }

    /// Decorates ``func``: every call of it counts as an open handle while it runs (for a
    /// coroutine function, while the coroutine runs; for a generator function, until the
    /// generator is exhausted or closed).
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        func: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        static DECORATE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let decorate = DECORATE.get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("leakguard._handles")?
                    .getattr("_decorate")?
                    .unbind(),
            )
        })?;
        let kind = Py::new(py, PyHandleKind { kind: self.kind })?;
        decorate.bind(py).call1((kind, func))
    }

    fn __repr__(&self) -> String {
        format!("leakguard.track({:?})", self.kind.name())
    }
}

/// One open handle, closed by ``close()`` (what ``leakguard.tracked`` calls when the
/// object is collected).
#[pyclass(name = "Handle", module = "leakguard")]
pub(crate) struct Handle {
    kind: HandleKind,
    guard: Option<HandleGuard>,
}

#[pymethods]
impl Handle {
    /// The kind's name.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether the handle was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.guard.is_none()
    }

    /// Closes the handle; closing it again does nothing.
    fn close(&mut self) {
        self.guard = None;
    }

    fn __repr__(&self) -> String {
        let state = if self.guard.is_some() {
            "open"
        } else {
            "closed"
        };
        format!("<leakguard.Handle {:?} {state}>", self.kind.name())
    }
}

/// Opens a handle of ``kind`` (a str or a HandleKind) and returns it; it counts as open
/// until its ``close()`` is called. A sampled open records its Python creation site.
#[pyfunction]
fn open_handle(py: Python<'_>, kind: &Bound<'_, PyAny>) -> PyResult<Handle> {
    let kind = resolve(py, kind)?;
    Ok(Handle {
        kind,
        guard: Some(open(py, kind)),
    })
}

/// Sets the limits and sampling of the kind ``name`` and returns it. ``max_open``: warn when
/// more are open; ``max_age``: warn when one is open longer (seconds); ``sample_every``:
/// record the creation site of one open in this many (0: never, 1: all; None: the default
/// of 128).
#[pyfunction]
#[pyo3(signature = (name, *, max_open=None, max_age=None, sample_every=None))]
fn configure_handles(
    py: Python<'_>,
    name: &str,
    max_open: Option<u64>,
    max_age: Option<f64>,
    sample_every: Option<u32>,
) -> PyResult<Py<PyHandleKind>> {
    if name.is_empty() {
        return Err(PyValueError::new_err(
            "a handle kind needs a name, such as \"db_conn\"; got an empty string",
        ));
    }
    let mut config = KindConfig::new();
    config.max_open = max_open;
    config.sample_every = sample_every;
    if let Some(age) = max_age {
        let age = Duration::try_from_secs_f64(age).map_err(|_| {
            PyValueError::new_err(format!(
                "max_age is a number of seconds, at least 0; got {age}"
            ))
        })?;
        config.max_age = Some(age);
    }
    let kind: leakguard::Result<HandleKind> = core::configure(name, config);
    let kind = PyResult::from(crate::ToPyResult(kind))?;
    Py::new(py, PyHandleKind { kind })
}

/// Marks the existing kind ``name`` as suspect (every open records its creation site) or
/// back to its configured sampling. Returns whether the kind exists.
/// Sets the capture budget: a kind sampled at the default rate records about this many
/// creation sites a second at most, sampling less often while its opens come faster (each
/// sampled handle then stands for more opens). 0: no budget.
#[pyfunction]
fn set_capture_budget(per_second: u32) {
    core::set_capture_budget(per_second);
}

/// The capture budget in force (creation sites a second per kind; 0: none).
#[pyfunction]
fn capture_budget() -> u32 {
    core::capture_budget()
}

#[pyfunction]
fn set_suspect(name: &str, suspect: bool) -> bool {
    core::set_suspect(name, suspect)
}

/// Handles open now, by kind: ``[(kind, open), ...]``. Cheap: no housekeeping, no ``/proc``.
#[pyfunction]
fn open_by_kind(py: Python<'_>) -> Vec<(String, u64)> {
    py.detach(core::open_by_kind)
}

/// The ``handles`` section of the report (every kind's counts, ages, limits and creation
/// sites; open fds, threads and TCP sockets from ``/proc``), as JSON text. The GIL is
/// released while it is gathered.
#[pyfunction]
fn handles_report_json(py: Python<'_>) -> PyResult<String> {
    py.detach(|| serde_json::to_string(&core::report()))
        .map_err(|e| crate::LeakguardError::new_err(format!("cannot serialize: {e}")))
}

/// Adds the handle classes and functions to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHandleKind>()?;
    m.add_class::<Track>()?;
    m.add_class::<Handle>()?;
    m.add_function(wrap_pyfunction!(open_handle, m)?)?;
    m.add_function(wrap_pyfunction!(configure_handles, m)?)?;
    m.add_function(wrap_pyfunction!(set_suspect, m)?)?;
    m.add_function(wrap_pyfunction!(set_capture_budget, m)?)?;
    m.add_function(wrap_pyfunction!(capture_budget, m)?)?;
    m.add_function(wrap_pyfunction!(open_by_kind, m)?)?;
    m.add_function(wrap_pyfunction!(handles_report_json, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leakguard_modules_are_recognized() {
        assert!(is_leakguard_module("leakguard"));
        assert!(is_leakguard_module("leakguard._handles"));
        assert!(!is_leakguard_module("leakguardian"));
        assert!(!is_leakguard_module("app.leakguard"));
    }
}
