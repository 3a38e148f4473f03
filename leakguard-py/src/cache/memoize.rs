//! The wrapper that `leakguard.cached` makes of a function when it is given neither a lock nor
//! a condition (a leakguard cache needs neither): `_CachedCore` holds the function, the cache,
//! the key function and the hit and miss counts; `_CachedBase` (made here with
//! `PyType_FromSpecWithBases`, as `slots` makes the caches' bases) adds the call as a C slot,
//! and `leakguard._memoize` derives the wrapper's Python class from it (`functools`
//! attributes, binding as a method, copying, pickling, `cache_clear`, `cache_info`).
//!
//! A call does what cachetools' `_BasicMixin`/`_InfoMixin` do, in the same order: the key
//! (`hashkey` and `typedkey` built here, the arguments' tuple itself when there are no
//! keywords, as `hashkey` returns it; any other key function called), the lookup (a
//! leakguard cache read directly, without raising KeyError on a miss, unless its class
//! overrides `__getitem__` or `__missing__`; any other mapping through `cache[key]`, a
//! KeyError meaning a miss), the count, and on a miss the function's call and
//! `cache[key] = value` (a ValueError, "value too large", is ignored). The function's
//! exceptions propagate and nothing is stored. The slot is entered as the caches' slots are
//! (see `slots`): no Python frame, no pyo3 trampoline.

use super::classes::{CacheBase, Lookup};
use super::slots::{finish, settle};
use super::stats::bump;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};
use std::os::raw::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The key functions built natively; any other is called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// Called as given.
    Other,
    /// `leakguard.keys.hashkey`.
    Hash,
    /// `leakguard.keys.typedkey`.
    Typed,
}

/// Native core of the wrapper of a function memoized without a lock or a condition.
#[pyclass(
    subclass,
    frozen,
    module = "leakguard._leakguard",
    name = "_CachedCore"
)]
pub(crate) struct CachedCore {
    func: Py<PyAny>,
    cache: Py<PyAny>,
    /// `cache` when it is a leakguard cache, read directly.
    native: Option<Py<CacheBase>>,
    key: Py<PyAny>,
    kind: KeyKind,
    /// The mark between positional and keyword arguments in a key (`keys._KWMARK[0]`).
    kwmark: Py<PyAny>,
    info: bool,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[pymethods]
impl CachedCore {
    /// `kind` is 1 when `key` is `hashkey`, 2 when it is `typedkey` (built natively, with
    /// `kwmark` between positional and keyword arguments), else 0; with `info` the calls are
    /// counted.
    #[new]
    #[pyo3(signature = (func, cache, key, kind, info, kwmark))]
    fn new(
        func: &Bound<'_, PyAny>,
        cache: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        kind: u8,
        info: bool,
        kwmark: &Bound<'_, PyAny>,
    ) -> CachedCore {
        let kind = match kind {
            1 => KeyKind::Hash,
            2 => KeyKind::Typed,
            _ => KeyKind::Other,
        };
        CachedCore {
            func: func.clone().unbind(),
            cache: cache.clone().unbind(),
            native: cache.cast::<CacheBase>().ok().map(|c| c.clone().unbind()),
            key: key.clone().unbind(),
            kind,
            kwmark: kwmark.clone().unbind(),
            info,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)?;
        visit.call(&self.cache)?;
        // A reference of its own to the cache: the collector counts each.
        if let Some(native) = &self.native {
            visit.call(native)?;
        }
        visit.call(&self.key)?;
        visit.call(&self.kwmark)
    }

    /// The cache the results are kept in.
    #[getter]
    fn cache(&self, py: Python<'_>) -> Py<PyAny> {
        self.cache.clone_ref(py)
    }

    /// The function that makes a key of the arguments.
    #[getter]
    fn cache_key(&self, py: Python<'_>) -> Py<PyAny> {
        self.key.clone_ref(py)
    }

    /// The calls answered from the cache and those that were not, as counted so far (with
    /// ``info``).
    fn _lg_counts(&self) -> (u64, u64) {
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Sets the counts back to 0.
    fn _lg_reset_counts(&self) {
        self.hits.store(0, Relaxed);
        self.misses.store(0, Relaxed);
    }
}

/// `args + (kwmark,) + tuple(sorted(kwargs.items()))` (hashkey), and for typedkey the types of
/// the keyword values then of the positional ones after it: `leakguard.keys`' keys.
fn build_key<'py>(
    this: &CachedCore,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = args.py();
    let typed = this.kind == KeyKind::Typed;
    let mut parts: Vec<Bound<'py, PyAny>> = Vec::with_capacity(args.len() * 2 + 4);
    parts.extend(args.iter());
    if let Some(kwargs) = kwargs {
        let items = kwargs.items();
        // SAFETY: `items` is a live list; the thread is attached.
        if unsafe { ffi::PyList_Sort(items.as_ptr()) } != 0 {
            return Err(PyErr::fetch(py));
        }
        parts.push(this.kwmark.bind(py).clone());
        let start = parts.len();
        parts.extend(items.iter());
        if typed {
            let values: Vec<Bound<'py, PyAny>> = parts[start..]
                .iter()
                .map(|item| item.cast::<PyTuple>().map_err(PyErr::from)?.get_item(1))
                .collect::<PyResult<_>>()?;
            parts.extend(values.iter().map(|v| v.get_type().into_any()));
        }
    }
    if typed {
        parts.extend(args.iter().map(|a| a.get_type().into_any()));
    }
    Ok(PyTuple::new(py, parts)?.into_any())
}

impl CachedCore {
    /// One call of the wrapper.
    #[inline(always)]
    fn call<'py>(
        slf: &Bound<'py, CachedCore>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        // `f(*args, **{})` has no keywords, as for `hashkey`.
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let key = match this.kind {
            KeyKind::Hash if kwargs.is_none() => args.clone().into_any(),
            KeyKind::Hash | KeyKind::Typed => build_key(this, args, kwargs)?,
            KeyKind::Other => call(this.key.bind(py), args, kwargs)?,
        };
        let found = match &this.native {
            Some(cache) => match CacheBase::lookup(cache.bind(py), &key)? {
                Lookup::Hit(v) => Some(v),
                Lookup::Miss => None,
                Lookup::Generic => get_item(this.cache.bind(py), &key)?,
            },
            None => get_item(this.cache.bind(py), &key)?,
        };
        if let Some(value) = found {
            if this.info {
                bump(&this.hits, 1);
            }
            return Ok(value);
        }
        this.missed(py, &key, args, kwargs)
    }

    #[inline(never)]
    fn missed<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        if self.info {
            bump(&self.misses, 1);
        }
        let value = call(self.func.bind(py), args, kwargs)?;
        if let Err(e) = self.cache.bind(py).set_item(key, &value)
            && !e.is_instance_of::<PyValueError>(py)
        {
            return Err(e); // a ValueError is "value too large": not stored
        }
        Ok(value.unbind())
    }
}

/// `f(*args, **kwargs)`.
#[inline(always)]
fn call<'py>(
    f: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = kwargs.map_or(std::ptr::null_mut(), |k| k.as_ptr());
    // SAFETY: live objects, `kwargs` a dict or NULL; the thread is attached.
    unsafe {
        Bound::from_owned_ptr_or_err(
            f.py(),
            ffi::PyObject_Call(f.as_ptr(), args.as_ptr(), kwargs),
        )
    }
}

/// `cache[key]`, None on a KeyError.
fn get_item(cache: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let py = cache.py();
    // SAFETY: live objects; the thread is attached.
    let value = unsafe { ffi::PyObject_GetItem(cache.as_ptr(), key.as_ptr()) };
    if !value.is_null() {
        // SAFETY: a new reference.
        return Ok(Some(unsafe { Bound::from_owned_ptr(py, value) }.unbind()));
    }
    // SAFETY: an exception is set; the thread is attached.
    if unsafe { ffi::PyErr_ExceptionMatches(ffi::PyExc_KeyError) } != 0 {
        // SAFETY: as above.
        unsafe { ffi::PyErr_Clear() };
        return Ok(None);
    }
    Err(PyErr::fetch(py))
}

/// `tp_call`: `wrapper(*args, **kwargs)`.
unsafe extern "C" fn tp_call(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a slot from a thread attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython calls `tp_call` with a live instance of the class that has the slot
        // (a subclass of `_CachedCore`), a tuple of the positional arguments and a dict of
        // the keyword ones or NULL, all borrowed for the call.
        let (slf, args, kwargs) = unsafe {
            (
                Borrowed::from_ptr(py, slf).cast_unchecked::<CachedCore>(),
                Borrowed::from_ptr(py, args).cast_unchecked::<PyTuple>(),
                (!kwargs.is_null())
                    .then(|| Borrowed::from_ptr(py, kwargs).cast_unchecked::<PyDict>()),
            )
        };
        settle(
            py,
            CachedCore::call(&slf, &args, kwargs.as_deref()).map(Py::into_ptr),
            std::ptr::null_mut(),
        )
    }));
    finish(py, outcome, std::ptr::null_mut())
}

static BASE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Adds `_CachedCore` and `_CachedBase` (its subclass with the call slot).
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<CachedCore>()?;
    let base = BASE.get_or_try_init(py, || {
        let core = py.get_type::<CachedCore>();
        let bases = PyTuple::new(py, [&core])?;
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_tp_call,
                pfunc: tp_call as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: std::ptr::null_mut(),
            },
        ];
        let mut spec = ffi::PyType_Spec {
            // Static: CPython may keep pointing into it.
            name: c"leakguard._leakguard._CachedBase".as_ptr(),
            // The instance layout is the base's (basicsize 0: inherited), GC included.
            basicsize: 0,
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_BASETYPE) as std::os::raw::c_uint,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: `spec` and `slots` are valid for the call (CPython copies what it keeps
        // but the name), `bases` is a live tuple of types.
        let ty = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyType_FromSpecWithBases(&mut spec, bases.as_ptr()),
            )?
        };
        Ok::<_, PyErr>(ty.cast_into::<PyType>()?.unbind())
    })?;
    m.add("_CachedBase", base.bind(py))?;
    Ok(())
}
