//! The Python classes: `_CacheCore` (under `_CacheBase`, see `slots`, and `leakguard.LRUCache`),
//! `_TTLCacheCore` (under `_TTLCacheBase` and `leakguard.TTLCache`), the TTL cache's `_Timer`,
//! and the module functions through which the package reaches the guard's cache registry.

use super::copy;
use super::ops::{Garbage, hooks_of, key_error};
use super::stats::{Config, Shared, Stats, TtlConfig, bump};
use super::structure::{Core, KeyHash, List};
use super::time::{Time, Timer, When, time_monotonic};
use super::{CONTAINS, DELITEM, EXPLICIT, GETITEM, MISSING, PyLock, SETITEM};
use leakguard::cache::{EvictionCause, ExternalCache, Registration, register_external};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// What [`CacheBase::lookup`] found.
pub(super) enum Lookup {
    Hit(Py<PyAny>),
    Miss,
    /// The class overrides `__getitem__` or `__missing__`: read through `c[k]`.
    Generic,
}

/// Native base of ``leakguard.LRUCache``: the mapping, its lock, its registration.
#[pyclass(subclass, frozen, module = "leakguard._leakguard", name = "_CacheCore")]
pub(crate) struct CacheBase {
    pub(super) shared: Arc<Shared>,
    pub(super) registration: parking_lot::Mutex<Option<Registration>>,
}

/// Native base of ``leakguard.TTLCache``: adds ``ttl``, ``timer`` and ``expire``.
#[pyclass(extends = CacheBase, subclass, frozen, module = "leakguard._leakguard", name = "_TTLCacheCore")]
pub(crate) struct TtlCacheBase;

/// The `key` and `default` of `get(key, default=None)`, from its arguments as a tuple and a
/// dict.
pub(super) fn get_args<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let n = args.len();
    let mut key = if n >= 1 {
        Some(args.get_item(0)?)
    } else {
        None
    };
    let mut default = if n >= 2 {
        Some(args.get_item(1)?)
    } else {
        None
    };
    if n > 2 {
        return Err(PyTypeError::new_err(format!(
            "get() takes from 1 to 2 positional arguments but {n} were given"
        )));
    }
    if let Some(kwargs) = kwargs {
        for (name, value) in kwargs.iter() {
            let slot = match name.extract::<String>()?.as_str() {
                "key" => &mut key,
                "default" => &mut default,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "get() got an unexpected keyword argument {}",
                        name.repr()?
                    )));
                }
            };
            if slot.is_some() {
                return Err(PyTypeError::new_err(format!(
                    "get() got multiple values for argument {}",
                    name.repr()?
                )));
            }
            *slot = Some(value);
        }
    }
    match key {
        Some(key) => Ok((key, default)),
        None => Err(PyTypeError::new_err(
            "get() missing 1 required positional argument: 'key'",
        )),
    }
}

fn new_base() -> CacheBase {
    CacheBase {
        shared: Arc::new(Shared {
            config: OnceLock::new(),
            core: PyLock::new(Core::new()),
            stats: Stats::default(),
        }),
        registration: parking_lot::Mutex::new(None),
    }
}

#[pymethods]
impl CacheBase {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> CacheBase {
        new_base()
    }

    /// Sets the cache up; called once by ``LRUCache.__init__``/``TTLCache.__init__``.
    #[pyo3(signature = (maxsize, getsizeof, ttl, timer, name))]
    pub(super) fn _lg_init(
        slf: &Bound<'_, CacheBase>,
        maxsize: &Bound<'_, PyAny>,
        getsizeof: Option<&Bound<'_, PyAny>>,
        ttl: Option<&Bound<'_, PyAny>>,
        timer: Option<&Bound<'_, PyAny>>,
        name: Option<&str>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.shared.config.get().is_some() {
            return Err(PyRuntimeError::new_err("the cache is initialized already"));
        }
        let max: f64 = maxsize
            .extract()
            .map_err(|_| PyTypeError::new_err("maxsize must be a number"))?;
        if max.is_nan() || max < 0.0 {
            return Err(PyValueError::new_err("maxsize must be non-negative"));
        }
        let is_ttl = slf.is_instance_of::<TtlCacheBase>();
        let ttl = match (is_ttl, ttl) {
            (true, Some(ttl)) => {
                let timer = match timer {
                    Some(t) => t.clone(),
                    None => time_monotonic(py)?.clone(),
                };
                let ttl_f = if ttl.is_instance_of::<PyFloat>() || ttl.is_instance_of::<PyInt>() {
                    ttl.extract::<f64>().ok()
                } else {
                    None
                };
                Some(TtlConfig {
                    ttl_f,
                    ttl_obj: ttl.clone().unbind(),
                    timer: Py::new(py, Timer::wrap(py, timer)?)?,
                })
            }
            (true, None) => return Err(PyTypeError::new_err("a TTLCache needs a ttl")),
            (false, _) => None,
        };
        let base = super::slots::base(py, is_ttl)?;
        let cfg = Config {
            maxsize: max,
            maxsize_obj: maxsize.clone().unbind(),
            getsizeof: getsizeof.map(|g| g.clone().unbind()),
            ttl,
            hooks: hooks_of(slf, &base)?,
            int_sizes: AtomicU32::new(1),
        };
        if this.shared.config.set(cfg).is_err() {
            return Err(PyRuntimeError::new_err("the cache is initialized already"));
        }
        if let Some(name) = name {
            let shared: Arc<dyn ExternalCache> = this.shared.clone();
            *this.registration.lock() = register_external(name, Arc::downgrade(&shared));
        }
        Ok(())
    }

    // The garbage collector sees the keys and values, so that reference cycles through a cache
    // (a value that refers to its cache, a getsizeof closure over it) are collected as with
    // cachetools' dicts. A cache whose lock is held at that moment (an operation of another
    // thread waiting for the GIL, the guard shrinking it) is not traversed this time: its
    // objects then count as referenced from outside and survive until a later collection.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(cfg) = self.shared.config.get() {
            visit.call(&cfg.maxsize_obj)?;
            if let Some(g) = &cfg.getsizeof {
                visit.call(g)?;
            }
            if let Some(t) = &cfg.ttl {
                visit.call(&t.ttl_obj)?;
                visit.call(&t.timer)?;
            }
        }
        if let Some(core) = self.shared.core.try_lock() {
            for n in core.slots.iter().flatten() {
                visit.call(&n.key)?;
                visit.call(&n.value)?;
                if let Some(Time::Obj(o)) = &n.expires {
                    visit.call(o)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let garbage = self.shared.core.try_lock().map(|mut core| {
            let n = core.len as u64;
            let slots = core.take_all();
            self.shared.stats.evicted(EXPLICIT, n);
            self.shared.publish(&core);
            slots
        });
        drop(garbage);
    }

    /// The name under which the cache is registered with the guard, or None.
    #[getter]
    pub(super) fn leakguard_name(&self) -> Option<String> {
        self.registration
            .lock()
            .as_ref()
            .map(|r| r.name().to_owned())
    }

    /// The cache's counters: ``hits``, ``misses``, ``inserts`` and ``evictions`` by cause.
    fn leakguard_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.shared.report();
        let d = PyDict::new(py);
        d.set_item("hits", r.hits)?;
        d.set_item("misses", r.misses)?;
        d.set_item("inserts", r.inserts)?;
        let ev = PyDict::new(py);
        for cause in EvictionCause::ALL {
            ev.set_item(cause.as_str(), r.evictions.get(cause))?;
        }
        d.set_item("evictions", ev)?;
        Ok(d)
    }

    /// Evicts least recently used entries until ``currsize`` is at most ``fraction`` of what
    /// it was, as the guard does under memory pressure; returns the number evicted.
    fn leakguard_shrink(&self, py: Python<'_>, fraction: f64) -> u64 {
        py.detach(|| self.shared.shrink(fraction).entries_evicted)
    }

    pub(super) fn __getitem__(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        CacheBase::getitem(slf, key)
    }

    pub(super) fn __setitem__(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        CacheBase::set_item(slf, key, value)
    }

    pub(super) fn __delitem__(slf: &Bound<'_, CacheBase>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(py, cfg)?;
        match this.remove_impl(py, key, now.as_ref(), EXPLICIT)? {
            None | Some((_, true)) => Err(key_error(key)),
            Some((_, false)) => Ok(()),
        }
    }

    fn __contains__(slf: &Bound<'_, CacheBase>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(py, cfg)?;
        this.contains_impl(py, key, now.as_ref())
    }

    /// Raises KeyError; subclasses override it to compute missing values.
    fn __missing__(&self, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(key_error(key))
    }

    fn __len__(slf: &Bound<'_, CacheBase>) -> PyResult<usize> {
        slf.get().len_impl(slf)
    }

    fn __iter__<'py>(slf: &Bound<'py, CacheBase>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(py, cfg)?;
        let keys = PyList::empty(py);
        {
            let core = this.shared.core.lock(py)?;
            for n in core.ord_iter() {
                if !Self::expired(py, n, now.as_ref())? {
                    keys.append(n.key.bind(py))?;
                }
            }
        }
        Ok(keys.try_iter()?.into_any())
    }

    fn __repr__(slf: &Bound<'_, CacheBase>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        if let Some(now) = this.now(py, cfg)? {
            let _frozen = cfg.ttl.as_ref().map(|t| t.timer.get().freeze(py, &now));
            this.expire_hook(slf, cfg, &now)?;
        }
        let data = PyDict::new(py);
        let items: Vec<(Py<PyAny>, Py<PyAny>)> = {
            let core = this.shared.core.lock(py)?;
            core.ord_iter()
                .map(|n| (n.key.clone_ref(py), n.value.clone_ref(py)))
                .collect()
        };
        for (k, v) in items {
            data.set_item(k, v)?;
        }
        Ok(format!(
            "{}({}, maxsize={}, currsize={})",
            slf.get_type().name()?,
            data.repr()?,
            cfg.maxsize_obj.bind(py).repr()?,
            Self::currsize(slf)?.bind(py).repr()?,
        ))
    }

    /// The maximum size of the cache.
    #[getter]
    fn maxsize(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.cfg()?.maxsize_obj.clone_ref(py))
    }

    /// The current size of the cache.
    #[getter]
    fn currsize(slf: &Bound<'_, CacheBase>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        if let Some(now) = this.now(py, cfg)? {
            let _frozen = cfg.ttl.as_ref().map(|t| t.timer.get().freeze(py, &now));
            this.expire_hook(slf, cfg, &now)?;
        }
        let (len, size) = {
            let core = this.shared.core.lock(py)?;
            (core.len, core.currsize)
        };
        if cfg.getsizeof.is_none() {
            return Ok(len.into_pyobject(py)?.into_any().unbind());
        }
        if cfg.int_sizes.load(Relaxed) == 1 && size.abs() < 9.007_199_254_740_992e15 {
            return Ok((size as i64).into_pyobject(py)?.into_any().unbind());
        }
        Ok(PyFloat::new(py, size).into_any().unbind())
    }

    #[pyo3(signature = (key, *default))]
    fn pop(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        default: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        if default.len() > 1 {
            return Err(PyTypeError::new_err(format!(
                "pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        let now = this.now(py, cfg)?;
        let _frozen = match (&cfg.ttl, &now) {
            (Some(t), Some(now)) => Some(t.timer.get().freeze(py, now)),
            _ => None,
        };
        let absent = || match default.get_item(0) {
            Ok(d) => Ok(d.unbind()),
            Err(_) => Err(key_error(key)),
        };
        if cfg.hooks & (CONTAINS | GETITEM | DELITEM) != 0 {
            if this.contains_hook(slf, cfg, key, now.as_ref())? {
                let value = slf.as_any().get_item(key)?;
                slf.as_any().del_item(key)?;
                return Ok(value.unbind());
            }
            return absent();
        }
        // cachetools' pop: an expired entry is not `in` the cache, so it stays.
        if !this.contains_impl(py, key, now.as_ref())? {
            return absent();
        }
        match this.remove_impl(py, key, now.as_ref(), EXPLICIT)? {
            Some((node, _)) => {
                bump(&this.stats().hits, 1);
                Ok(node.value.clone_ref(py))
            }
            None => absent(),
        }
    }

    #[pyo3(signature = (key, default = None))]
    fn setdefault(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        default: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(py, cfg)?;
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        let _frozen = match (&cfg.ttl, &now) {
            (Some(t), Some(now)) => Some(t.timer.get().freeze(py, now)),
            _ => None,
        };
        if cfg.hooks & (CONTAINS | GETITEM | SETITEM) != 0 {
            if this.contains_hook(slf, cfg, key, now.as_ref())? {
                return Ok(slf.as_any().get_item(key)?.unbind());
            }
            slf.as_any().set_item(key, &default)?;
            return Ok(default.unbind());
        }
        if let Some(v) = this.get_impl(py, cfg, key, When::read_before(now.as_ref()))? {
            return Ok(v);
        }
        this.setitem(slf, cfg, key, &default, now)?;
        Ok(default.unbind())
    }

    /// Removes and returns the ``(key, value)`` pair least recently used (for a TTLCache:
    /// that has not expired). Raises KeyError when the cache is empty.
    fn popitem<'py>(slf: &Bound<'py, CacheBase>) -> PyResult<Bound<'py, PyTuple>> {
        slf.get().popitem_impl(slf, EXPLICIT)
    }

    /// Removes every entry.
    fn clear(slf: &Bound<'_, CacheBase>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.cfg()?;
        let garbage = {
            let mut core = this.shared.core.lock(py)?;
            let n = core.len as u64;
            let slots = core.take_all();
            this.stats().evicted(EXPLICIT, n);
            this.shared.publish(&core);
            slots
        };
        drop(garbage);
        Ok(())
    }

    fn __copy__<'py>(slf: &Bound<'py, CacheBase>) -> PyResult<Bound<'py, PyAny>> {
        copy::copy(slf)
    }

    fn __reduce_ex__<'py>(
        slf: &Bound<'py, CacheBase>,
        _protocol: i32,
    ) -> PyResult<Bound<'py, PyTuple>> {
        copy::reduce(slf)
    }

    fn __setstate__(slf: &Bound<'_, CacheBase>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
        copy::set_state(slf, state)
    }
}

impl CacheBase {
    /// `c[k] = v` (the slot in `slots`, and `_CacheCore.__setitem__`).
    #[inline(always)]
    pub(super) fn set_item(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(slf.py(), cfg)?;
        this.setitem(slf, cfg, key, value, now)
    }

    /// `c[k]` (the slot in `slots`, and `_CacheCore.__getitem__`).
    #[inline(always)]
    pub(super) fn getitem(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        // The time is read before the lookup, not only on a hit as `get` does: a miss raises
        // KeyError, which costs far more than the clock, and read first the clock's latency
        // overlaps the lookup (a TTLCache hit was 4% slower with the clock read after it).
        let now = this.now(py, cfg)?;
        if let Some(v) = this.get_impl(py, cfg, key, When::read_before(now.as_ref()))? {
            return Ok(v);
        }
        if let (Some(now), Some(ttl)) = (&now, &cfg.ttl) {
            this.touch_expired(py, key)?;
            if cfg.hooks & MISSING != 0 {
                let _frozen = ttl.timer.get().freeze(py, now);
                return Ok(slf.call_method1("__missing__", (key,))?.unbind());
            }
            return Err(key_error(key));
        }
        if cfg.hooks & MISSING != 0 {
            return Ok(slf.call_method1("__missing__", (key,))?.unbind());
        }
        Err(key_error(key))
    }

    /// `c[k]` as the memoizing decorator's wrapper reads it (see `memoize`): the value, or
    /// None when the key is absent, without the KeyError; `Generic` when the class overrides
    /// `__getitem__` or `__missing__` (the wrapper then goes through `c[k]`).
    #[inline(always)]
    pub(super) fn lookup(slf: &Bound<'_, CacheBase>, key: &Bound<'_, PyAny>) -> PyResult<Lookup> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        if cfg.hooks & (GETITEM | MISSING) != 0 {
            return Ok(Lookup::Generic);
        }
        if let Some(v) = this.get_timed(py, cfg, key)? {
            return Ok(Lookup::Hit(v));
        }
        if cfg.ttl.is_some() {
            this.touch_expired(py, key)?;
        }
        Ok(Lookup::Miss)
    }

    /// What `c[k]` does to an expired entry before raising KeyError (or calling
    /// `__missing__`), as cachetools does: moves it to the LRU end.
    #[inline(never)]
    fn touch_expired(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let kh = KeyHash::of(key)?;
        let mut core = self.shared.core.lock(py)?;
        if let Some(i) = core.find(py, key, kh)? {
            core.move_back(i, List::Lru);
        }
        Ok(())
    }

    /// `get(key, default=None)` (declared to Python in `fastcall`, with the vectorcall
    /// convention).
    #[inline(always)]
    pub(super) fn get_value(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        default: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let default = || default.map_or_else(|| py.None(), Bound::unbind);
        if cfg.hooks & (CONTAINS | GETITEM) != 0 {
            let now = this.now(py, cfg)?;
            let _frozen = match (&cfg.ttl, &now) {
                (Some(t), Some(now)) => Some(t.timer.get().freeze(py, now)),
                _ => None,
            };
            if this.contains_hook(slf, cfg, key, now.as_ref())? {
                return Ok(slf.as_any().get_item(key)?.unbind());
            }
            return Ok(default());
        }
        Ok(this.get_timed(py, cfg, key)?.unwrap_or_else(default))
    }
}

#[pymethods]
impl TtlCacheBase {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyClassInitializer<TtlCacheBase> {
        PyClassInitializer::from(new_base()).add_subclass(TtlCacheBase)
    }

    /// The time-to-live value of the cache's items.
    #[getter]
    fn ttl(slf: &Bound<'_, TtlCacheBase>) -> PyResult<Py<PyAny>> {
        let base = slf.as_super();
        let cfg = base.get().cfg()?;
        match &cfg.ttl {
            Some(t) => Ok(t.ttl_obj.clone_ref(slf.py())),
            None => Err(PyTypeError::new_err("not a TTL cache")),
        }
    }

    /// The timer function used by the cache.
    #[getter]
    fn timer(slf: &Bound<'_, TtlCacheBase>) -> PyResult<Py<Timer>> {
        let base = slf.as_super();
        let cfg = base.get().cfg()?;
        match &cfg.ttl {
            Some(t) => Ok(t.timer.clone_ref(slf.py())),
            None => Err(PyTypeError::new_err("not a TTL cache")),
        }
    }

    /// Removes expired items from the cache and returns the expired ``(key, value)`` pairs.
    #[pyo3(signature = (time = None))]
    fn expire<'py>(
        slf: &Bound<'py, TtlCacheBase>,
        time: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let base = slf.as_super();
        let this = base.get();
        let cfg = this.cfg()?;
        let now = match time {
            Some(t) if !t.is_none() => Time::from_obj(t),
            _ => match this.now(py, cfg)? {
                Some(now) => now,
                None => return Err(PyTypeError::new_err("not a TTL cache")),
            },
        };
        let mut garbage = Garbage::new();
        let result = {
            let mut core = this.shared.core.lock(py)?;
            let r = this.expire_locked(py, &mut core, &now, &mut garbage);
            this.shared.publish(&core);
            r
        };
        let out = PyList::empty(py);
        for n in garbage.into_nodes() {
            out.append(PyTuple::new(py, [n.key, n.value])?)?;
        }
        result.map(|()| out)
    }
}

/// Every cache registered with the guard (Rust and Python ones), as the report shows them:
/// a list of dicts sorted by name. The GIL is released while the caches are read.
#[pyfunction]
fn _cache_report(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let value = py
        .detach(|| serde_json::to_value(leakguard::cache::report()))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot serialize: {e}")))?;
    crate::json_to_py(py, &value)
}

/// Shrinks every registered cache to ``fraction`` of its size, as the guard does under
/// memory pressure (from this thread, with the GIL released); returns the entries evicted.
#[pyfunction]
fn _shrink_caches(py: Python<'_>, fraction: f64) -> u64 {
    py.detach(|| leakguard::cache::shrink_all(fraction).entries_evicted)
}

/// Reclaims expired entries of every registered cache, as the guard's tick does (with the
/// GIL released).
#[pyfunction]
fn _maintain_caches(py: Python<'_>) {
    py.detach(leakguard::cache::maintain_all);
}

/// Registers the cache classes in the extension module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CacheBase>()?;
    super::fastcall::install(&m.py().get_type::<CacheBase>())?;
    m.add_class::<TtlCacheBase>()?;
    super::slots::register(m)?;
    super::memoize::register(m)?;
    m.add_class::<Timer>()?;
    m.add_function(wrap_pyfunction!(_cache_report, m)?)?;
    m.add_function(wrap_pyfunction!(_shrink_caches, m)?)?;
    m.add_function(wrap_pyfunction!(_maintain_caches, m)?)?;
    Ok(())
}
