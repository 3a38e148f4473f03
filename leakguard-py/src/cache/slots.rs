//! `c[k]`, `c[k] = v` and `del c[k]` as C functions of the classes the package subclasses.
//!
//! pyo3 enters every slot through its trampoline, whose bookkeeping (a thread-local count
//! read through `__tls_get_addr` in a shared library, the deferred reference pool) costs as
//! much as a cache hit. The classes that `leakguard.LRUCache` and `leakguard.TTLCache`
//! derive from, `_CacheBase` and `_TTLCacheBase`, are therefore made here, with
//! `PyType_FromSpecWithBases` (stable ABI), as subclasses of pyo3's classes (`_CacheCore`,
//! `_TTLCacheCore`, which hold the data and every other method) that add nothing but the
//! mapping slots: CPython copies them into the Python subclasses and calls them directly.
//! They are entered as `get` is (see `fastcall`): the thread is attached (CPython is
//! calling), a panic becomes a Python exception, and what pyo3 defers is applied at the
//! next call into one of its wrappers.

use super::classes::{CacheBase, TtlCacheBase};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};
use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The result of a slot, or `err` with the exception it raised set on the thread. The
/// exception is set inside the unwinding guard, so that what crosses it is one word.
#[inline(always)]
pub(super) fn settle<T>(py: Python<'_>, result: PyResult<T>, err: T) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            e.restore(py);
            err
        }
    }
}

/// The slot's value, or `err` after a panic (set as a RuntimeError).
#[inline(always)]
pub(super) fn finish<T>(py: Python<'_>, outcome: std::thread::Result<T>, err: T) -> T {
    match outcome {
        Ok(value) => value,
        Err(_) => {
            PyRuntimeError::new_err("leakguard: internal error (panic) in a cache").restore(py);
            err
        }
    }
}

/// `mp_subscript`: `c[k]`.
unsafe extern "C" fn subscript(
    slf: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a slot from a thread attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython calls the slot with live objects borrowed for the call, `slf` an
        // instance of the class that has the slot (a subclass of `_CacheCore`), or its wrapper
        // descriptor after checking that.
        let (slf, key) = unsafe {
            (
                Borrowed::from_ptr(py, slf).cast_unchecked::<CacheBase>(),
                Borrowed::from_ptr(py, key),
            )
        };
        settle(
            py,
            CacheBase::getitem(&slf, &key).map(Py::into_ptr),
            std::ptr::null_mut(),
        )
    }));
    finish(py, outcome, std::ptr::null_mut())
}

/// `mp_ass_subscript`: `c[k] = v`, and `del c[k]` when `value` is NULL.
unsafe extern "C" fn ass_subscript(
    slf: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) -> c_int {
    // SAFETY: as in `subscript`.
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `subscript`; `value` is live or NULL.
        let (slf, key) = unsafe {
            (
                Borrowed::from_ptr(py, slf).cast_unchecked::<CacheBase>(),
                Borrowed::from_ptr(py, key),
            )
        };
        let result = if value.is_null() {
            CacheBase::__delitem__(&slf, &key)
        } else {
            // SAFETY: `value` is a live object borrowed for the call.
            let value = unsafe { Borrowed::from_ptr(py, value) };
            CacheBase::set_item(&slf, &key, &value)
        };
        settle(py, result.map(|()| 0), -1)
    }));
    finish(py, outcome, -1)
}

/// A class named `name` deriving from `bases` with the mapping slots above.
fn make<'py>(
    py: Python<'py>,
    name: &'static std::ffi::CStr,
    bases: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyType>> {
    let mut slots = [
        ffi::PyType_Slot {
            slot: ffi::Py_mp_subscript,
            pfunc: subscript as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_mp_ass_subscript,
            pfunc: ass_subscript as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: std::ptr::null_mut(),
        },
    ];
    let mut spec = ffi::PyType_Spec {
        // `name` is static: CPython may keep pointing into it.
        name: name.as_ptr(),
        // The instance layout is the base's (basicsize 0: inherited), GC included.
        basicsize: 0,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_BASETYPE) as std::os::raw::c_uint,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: `spec` and `slots` are valid for the call (CPython copies what it keeps but
    // the name), `bases` is a live tuple of types.
    let ty = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpecWithBases(&mut spec, bases.as_ptr()))?
    };
    Ok(ty.cast_into::<PyType>()?)
}

/// Adds `_CacheBase` and `_TTLCacheBase` (the second deriving from the first too, so that a
/// TTLCache is an instance of `_CacheBase` as the stubs say).
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let (lru, ttl) = BASES.get_or_try_init(py, || {
        let core = py.get_type::<CacheBase>();
        let lru = make(
            py,
            c"leakguard._leakguard._CacheBase",
            &PyTuple::new(py, [&core])?,
        )?;
        let ttl_core = py.get_type::<TtlCacheBase>();
        let ttl = make(
            py,
            c"leakguard._leakguard._TTLCacheBase",
            &PyTuple::new(py, [&ttl_core, &lru])?,
        )?;
        Ok::<_, PyErr>((lru.unbind(), ttl.unbind()))
    })?;
    m.add("_CacheBase", lru.bind(py))?;
    m.add("_TTLCacheBase", ttl.bind(py))?;
    Ok(())
}

/// `_CacheBase` and `_TTLCacheBase`, against which a subclass's overrides are told.
static BASES: PyOnceLock<(Py<PyType>, Py<PyType>)> = PyOnceLock::new();

/// The class a subclass's overrides are compared with: `_TTLCacheBase` or `_CacheBase`.
pub(super) fn base(py: Python<'_>, ttl: bool) -> PyResult<Bound<'_, PyType>> {
    let (lru, t) = BASES
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("the cache classes are not registered"))?;
    Ok(if ttl { t } else { lru }.bind(py).clone())
}
