//! Python bindings of leakguard: the `leakguard._leakguard` extension module, the native half
//! of the `leakguard` Python package (the Python half lives in `python/leakguard/`, with the
//! `_leakguard.pyi` stubs and `py.typed`).
//!
//! Five parts, each a module:
//!
//! - this file: the process's sampler (`sample`, `allocator_status`), `parse_size`, and the
//!   mapping of the core's errors to `LeakguardError` and `ConfigError`;
//! - `guard`: the core's guard run from Python, with Python callbacks (routes, report
//!   sections, purge hooks, the restart) called from its thread only when asked;
//! - `cache`: `LRUCache` and `TTLCache` with cachetools' semantics, implemented here rather
//!   than wrapped (their own structure, lock and timer), registered with the core's cache
//!   registry so the guard reports and shrinks them;
//! - `handles`: handle tracking, through the core's handle registry, with creation sites
//!   taken from the Python stack;
//! - `fork`: a forked child's parking table made anew (no waiter of the parent's in it).
//!
//! Whatever may wait or lock runs with the GIL released.
//!
//! The core is built without its default features: jemalloc must never be loaded into a
//! Python process (CPython allocates through glibc malloc and its own pymalloc), so the
//! allocator numbers come from glibc `mallinfo2`.
#![deny(missing_docs)]

mod cache;
mod fork;
mod handles;

use leakguard::allocator::AllocatorChoice;
use leakguard::{Sampler, SystemClock};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use std::sync::{Mutex, OnceLock, PoisonError};

mod guard;

create_exception!(
    leakguard,
    LeakguardError,
    PyException,
    "Base class of every error raised by leakguard."
);

/// Docstring of `leakguard.ConfigError`.
const CONFIG_ERROR_DOC: &str = "A configuration value (an argument or a LEAKGUARD_* environment \
variable) could not be understood. The message names the setting and the value.\n\n\
Also a ValueError, so ``except ValueError`` catches it like any other bad value.";

/// `leakguard.ConfigError(LeakguardError, ValueError)`.
///
/// `create_exception!` takes a single base, so this one type is made by calling `type()` with
/// both bases, once per interpreter, and kept like the types that `create_exception!` makes.
fn config_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CONFIG_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(
                py,
                [
                    py.get_type::<LeakguardError>(),
                    py.get_type::<PyValueError>(),
                ],
            )?;
            let namespace = PyDict::new(py);
            namespace.set_item("__module__", "leakguard")?;
            namespace.set_item("__doc__", CONFIG_ERROR_DOC)?;
            let ty = py
                .get_type::<PyType>()
                .call1(("ConfigError", bases, namespace))?
                .cast_into::<PyType>()?;
            Ok::<_, PyErr>(ty.unbind())
        })
        .map(|ty| ty.bind(py))
}

/// The result of a core call on its way to Python: `ToPyResult(core_call).into()` turns a
/// [`leakguard::Error`] into the matching Python exception, with the core's message.
struct ToPyResult<T>(leakguard::Result<T>);

impl<T> From<ToPyResult<T>> for PyResult<T> {
    fn from(result: ToPyResult<T>) -> Self {
        result.0.map_err(to_py_err)
    }
}

fn to_py_err(err: leakguard::Error) -> PyErr {
    let message = err.to_string();
    match err {
        leakguard::Error::Config { .. } => Python::attach(|py| match config_error(py) {
            Ok(ty) => PyErr::from_type(ty.clone(), message),
            Err(e) => e,
        }),
        _ => LeakguardError::new_err(message),
    }
}

/// What the module keeps between calls: one sampler (its readers keep open state and count
/// samples), and the clock it reads.
struct State {
    sampler: Sampler,
    clock: SystemClock,
}

/// The module's sampler, made on first use. Only ever locked with the GIL released.
fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        Mutex::new(State {
            sampler: Sampler::new(AllocatorChoice::Glibc),
            clock: SystemClock::new(),
        })
    })
}

/// Runs `f` on the module's state without the GIL, and returns what it serialized.
fn with_state(
    py: Python<'_>,
    f: impl FnOnce(&mut State) -> serde_json::Result<serde_json::Value> + Send,
) -> PyResult<serde_json::Value> {
    py.detach(|| {
        // A panic inside the core (surfaced to Python as PanicException) must not make every
        // later call fail: the state stays usable.
        let mut state = state().lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    })
    .map_err(|e| LeakguardError::new_err(format!("cannot serialize: {e}")))
}

/// Converts a JSON value to the plain Python objects `json.loads` would give.
fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObjectExt;
    use serde_json::Value;
    match value {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)
            } else if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)
            }
        }
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            Ok(dict.into_any())
        }
    }
}

/// Takes one memory sample of this process and returns it as a dict.
///
/// Keys: ``unix_seconds``, ``process`` (``resident_bytes``, ``virtual_bytes``, ``threads``,
/// ``open_fds``, …), ``allocator`` (glibc ``mallinfo2``: ``allocated``, ``mapped``, ``free``;
/// None when unavailable), ``cgroup`` (the memory limit that applies, or None),
/// ``duration_us`` and ``errors`` (sources that failed this time). The GIL is released while
/// the sample is taken.
#[pyfunction]
fn sample(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let value = with_state(py, |state| {
        // A sample asked for is fresh: the allocator's cadence is for the guard's own ticks.
        state.sampler.refresh_allocator();
        let sample = state.sampler.sample(&state.clock);
        serde_json::to_value(&sample)
    })?;
    json_to_py(py, &value)
}

/// What leakguard found out about the allocator, as a dict: ``kind`` (``"glibc"`` in a
/// Python process), ``jemalloc_linked`` (always False here) and ``note`` (or None).
#[pyfunction]
fn allocator_status(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let value = with_state(py, |state| {
        serde_json::to_value(state.sampler.allocator_status())
    })?;
    json_to_py(py, &value)
}

/// Parses a memory size as operators write it: ``"512MiB"``, ``"2G"``, ``"3584m"``,
/// ``"500MB"``, ``"1.5GiB"`` or a number of bytes. Returns bytes.
///
/// ``name`` is the setting being parsed; it appears in the error. Raises ConfigError (also a
/// ValueError) when the value cannot be understood.
#[pyfunction]
#[pyo3(signature = (value, name = "size"))]
fn parse_size(value: &str, name: &str) -> PyResult<u64> {
    ToPyResult(leakguard::parse_size(name, value)).into()
}

/// leakguard's native core. Use the ``leakguard`` package rather than this module.
#[pymodule]
fn _leakguard(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    fork::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LeakguardError", py.get_type::<LeakguardError>())?;
    m.add("ConfigError", config_error(py)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(allocator_status, m)?)?;
    m.add_function(wrap_pyfunction!(parse_size, m)?)?;
    guard::register(m)?;
    cache::register(m)?;
    handles::register(m)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_become_config_error_and_value_error() {
        Python::initialize();
        Python::attach(|py| {
            let err = parse_size("lots", "LEAKGUARD_LIMIT").unwrap_err();
            assert!(err.is_instance(py, config_error(py).unwrap()));
            assert!(err.is_instance_of::<LeakguardError>(py));
            assert!(err.is_instance_of::<PyValueError>(py));
            let message = err.value(py).str().unwrap().to_string();
            assert!(message.contains("LEAKGUARD_LIMIT"), "{message}");
            assert!(message.contains("\"lots\""), "{message}");
        });
    }

    #[test]
    fn other_core_errors_become_leakguard_error() {
        Python::initialize();
        Python::attach(|py| {
            let err = to_py_err(leakguard::Error::Allocator("mallinfo2 failed".into()));
            assert!(err.is_instance_of::<LeakguardError>(py));
            assert!(!err.is_instance_of::<PyValueError>(py));
        });
    }

    #[test]
    fn json_becomes_plain_python_objects() {
        Python::initialize();
        Python::attach(|py| {
            let value = serde_json::json!({"a": [1, -2, 2.5, null, true, "x"], "big": u64::MAX});
            let obj = json_to_py(py, &value).unwrap();
            let repr = obj.repr().unwrap().to_string();
            assert_eq!(
                repr,
                "{'a': [1, -2, 2.5, None, True, 'x'], 'big': 18446744073709551615}"
            );
        });
    }
}
