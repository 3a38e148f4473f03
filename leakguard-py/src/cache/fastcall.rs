//! `get(key, default=None)` with the vectorcall convention (`METH_FASTCALL | METH_KEYWORDS`).
//!
//! The wheel targets the stable ABI of CPython 3.9, where pyo3 declares methods with
//! `METH_VARARGS | METH_KEYWORDS`: every call of `cache.get(key)` then builds a tuple of its
//! arguments and parses it against the parameter names, which costs more than the lookup
//! itself. `get` is the method that is called at the rate of a dict lookup, so it is declared
//! here by hand as a method descriptor (`PyDescr_NewMethod`, part of the stable ABI) with the
//! fast-call flags, whose value and meaning are the same on every CPython from 3.8 (CPython
//! checks that `self` is an instance of the class before the call). Arguments arrive as a
//! C array: one or two positional ones are read directly; keywords (`default=...`) take the
//! general path. A panic becomes a Python exception.
//!
//! The call does not go through pyo3's entry wrapper: the thread is attached (CPython is
//! calling it), which `Python::assume_attached` states without the wrapper's bookkeeping
//! (`Python::attach` would cost as much as the lookup: pyo3 does not count this entry, so
//! it would take the GIL state API's path). What pyo3 defers without the count (the release
//! of a `Py` dropped here, e.g. a time object of a non-float timer) is applied at the next
//! call into any of pyo3's wrappers, as is whatever the guard's thread released.

use super::classes::{CacheBase, get_args};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// `METH_FASTCALL`: the same value on every CPython that has it (3.7 on).
const METH_FASTCALL: c_int = 0x0080;

/// The C signature of a `METH_FASTCALL | METH_KEYWORDS` method.
type FastWithKeywords = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

unsafe extern "C" fn get_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method from a thread attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython calls this with a live `self`, `nargs` live positional arguments
        // followed by one per name in `kwnames` (a tuple, or NULL), all borrowed for the call.
        unsafe { get_call(py, slf, args, nargs, kwnames) }
    }));
    let err = match outcome {
        Ok(Ok(value)) => return value.into_ptr(),
        Ok(Err(err)) => err,
        Err(_) => PyRuntimeError::new_err("leakguard: internal error (panic) in cache.get"),
    };
    err.restore(py);
    std::ptr::null_mut()
}

/// # Safety
///
/// As for a `METH_FASTCALL | METH_KEYWORDS` method: `slf` is live, `args` holds `nargs`
/// live positional arguments then one per name of `kwnames` (a tuple or NULL).
unsafe fn get_call(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Py<PyAny>> {
    // SAFETY: `slf` is a live object borrowed for the call (the caller's contract), an
    // instance of `_CacheCore`: CPython checks it before calling a method descriptor.
    let slf = unsafe { Borrowed::from_ptr(py, slf).cast_unchecked::<CacheBase>() };
    let slf = &*slf;
    let positional = usize::try_from(nargs).unwrap_or(0);
    // SAFETY: `args` holds `positional` live objects (the caller's contract).
    let arg = |i: usize| unsafe { Borrowed::from_ptr(py, *args.add(i)) };
    if kwnames.is_null() {
        match positional {
            1 => return CacheBase::get_value(slf, &arg(0), None),
            2 => return CacheBase::get_value(slf, &arg(0), Some(arg(1).to_owned())),
            _ => {}
        }
    }
    // Keywords or a wrong count: the general path, with its messages.
    let tuple = PyTuple::new(py, (0..positional).map(arg))?;
    let kwargs = if kwnames.is_null() {
        None
    } else {
        // SAFETY: `kwnames` is a live tuple of names (the caller's contract).
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) };
        let names = names.cast::<PyTuple>()?;
        let dict = PyDict::new(py);
        for (j, name) in names.iter().enumerate() {
            dict.set_item(name, arg(positional + j))?;
        }
        Some(dict)
    };
    let (key, default) = get_args(&tuple, kwargs.as_ref())?;
    CacheBase::get_value(slf, &key, default)
}

/// Replaces the class's `get` with the fast-call one.
pub(super) fn install(class: &Bound<'_, pyo3::types::PyType>) -> PyResult<()> {
    let py = class.py();
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: c"get".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            // SAFETY: CPython calls `ml_meth` with the signature its flags give
            // (`METH_FASTCALL | METH_KEYWORDS`: `get_fast`'s); the field's declared type only
            // carries the pointer.
            PyCFunctionWithKeywords: unsafe {
                std::mem::transmute::<FastWithKeywords, ffi::PyCFunctionWithKeywords>(get_fast)
            },
        },
        ml_flags: METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c"get($self, key, default=None)\n--\n\nThe value of key if it is in the cache, else default."
            .as_ptr(),
    }));
    // SAFETY: `class` is a live type object and `def` lives for the rest of the process.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyDescr_NewMethod(class.as_ptr().cast::<ffi::PyTypeObject>(), def),
        )?
    };
    class.setattr("get", descr)
}
