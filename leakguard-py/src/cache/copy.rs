//! Copying and pickling a cache: `copy.copy` gives a cache sharing the keys and values, with
//! the same orders and registration name; pickling carries the entries in iteration order,
//! the LRU order as positions, and the configuration.

use super::NIL;
use super::classes::CacheBase;
use super::stats::{Config, TtlConfig};
use super::structure::{Core, List, Node, UNLINKED, mix};
use super::time::{Time, Timer};
use hashbrown::HashTable;
use leakguard::cache::{ExternalCache, register_external};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PyTuple};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub(super) fn copy<'py>(slf: &Bound<'py, CacheBase>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let this = slf.get();
    let cfg = this.cfg()?;
    let ty = slf.get_type();
    let copy = ty.call_method1("__new__", (&ty,))?;
    if let (Ok(src), Ok(dst)) = (slf.getattr("__dict__"), copy.getattr("__dict__")) {
        dst.call_method1("update", (src,))?;
    }
    let copy_base = copy.cast::<CacheBase>()?;
    let target = copy_base.get();
    let ttl = match &cfg.ttl {
        Some(t) => Some(TtlConfig {
            ttl_f: t.ttl_f,
            ttl_obj: t.ttl_obj.clone_ref(py),
            timer: Py::new(py, Timer::wrap(py, t.timer.get().inner.bind(py).clone())?)?,
        }),
        None => None,
    };
    let new_cfg = Config {
        maxsize: cfg.maxsize,
        maxsize_obj: cfg.maxsize_obj.clone_ref(py),
        getsizeof: cfg.getsizeof.as_ref().map(|g| g.clone_ref(py)),
        ttl,
        hooks: cfg.hooks,
        int_sizes: AtomicU32::new(cfg.int_sizes.load(Relaxed)),
    };
    {
        let core = this.shared.core.lock(py)?;
        let mut dst = target.shared.core.lock(py)?;
        *dst = clone_core(py, &core);
        target.shared.publish(&dst);
    }
    if target.shared.config.set(new_cfg).is_err() {
        return Err(PyRuntimeError::new_err("the copy is initialized already"));
    }
    if let Some(name) = this
        .registration
        .lock()
        .as_ref()
        .map(|r| r.name().to_owned())
    {
        let shared: Arc<dyn ExternalCache> = target.shared.clone();
        *target.registration.lock() = register_external(&name, Arc::downgrade(&shared));
    }
    Ok(copy)
}

pub(super) fn reduce<'py>(slf: &Bound<'py, CacheBase>) -> PyResult<Bound<'py, PyTuple>> {
    let py = slf.py();
    let this = slf.get();
    let cfg = this.cfg()?;
    let newobj = py.import("copyreg")?.getattr("__newobj__")?;
    let items = PyList::empty(py);
    let lru = PyList::empty(py);
    {
        let core = this.shared.core.lock(py)?;
        let mut position = std::collections::HashMap::with_capacity(core.len);
        for (pos, (i, n)) in ord_indexed(&core).enumerate() {
            position.insert(i, pos);
            let expires = match &n.expires {
                Some(t) => t.to_obj(py),
                None => py.None().into_bound(py),
            };
            let size = if cfg.getsizeof.is_some() {
                PyFloat::new(py, n.size).into_any()
            } else {
                py.None().into_bound(py)
            };
            items.append(PyTuple::new(
                py,
                [
                    n.key.bind(py).clone(),
                    n.value.bind(py).clone(),
                    size,
                    expires,
                ],
            )?)?;
        }
        let mut i = core.lru.head;
        while i != NIL {
            lru.append(position.get(&i).copied().unwrap_or(0))?;
            i = core.node(i).lru.next;
        }
    }
    let state = PyDict::new(py);
    state.set_item("maxsize", cfg.maxsize_obj.bind(py))?;
    state.set_item("getsizeof", cfg.getsizeof.as_ref().map(|g| g.bind(py)))?;
    if let Some(t) = &cfg.ttl {
        state.set_item("ttl", t.ttl_obj.bind(py))?;
        state.set_item("timer", t.timer.get().inner.bind(py))?;
    }
    state.set_item("name", this.leakguard_name())?;
    state.set_item("items", items)?;
    state.set_item("lru", lru)?;
    state.set_item("int_sizes", cfg.int_sizes.load(Relaxed) == 1)?;
    let dict = slf.getattr("__dict__").ok();
    let dict = match dict {
        Some(d) if d.len()? > 0 => {
            let d = d.call_method0("copy")?;
            // The getsizeof that cachetools keeps as an attribute travels in the state.
            let _ = d.del_item("getsizeof");
            d
        }
        _ => py.None().into_bound(py),
    };
    PyTuple::new(
        py,
        [
            newobj,
            PyTuple::new(py, [slf.get_type()])?.into_any(),
            PyTuple::new(py, [dict, state.into_any()])?.into_any(),
        ],
    )
}

pub(super) fn set_state(slf: &Bound<'_, CacheBase>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let dict = state.get_item(0)?;
    let st = state.get_item(1)?;
    let st = st.cast::<PyDict>()?;
    let item = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        st.get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("cache state without {k:?}")))
    };
    let getsizeof = item("getsizeof")?;
    let getsizeof = (!getsizeof.is_none()).then_some(getsizeof);
    if let Some(g) = &getsizeof {
        slf.setattr("getsizeof", g)?;
    }
    if !dict.is_none() {
        slf.getattr("__dict__")?.call_method1("update", (&dict,))?;
    }
    let ttl = st.get_item("ttl")?;
    let timer = st.get_item("timer")?;
    let name = item("name")?.extract::<Option<String>>()?;
    CacheBase::_lg_init(
        slf,
        &item("maxsize")?,
        getsizeof.as_ref(),
        ttl.as_ref(),
        timer.as_ref(),
        name.as_deref(),
    )?;
    let cfg = this.cfg()?;
    cfg.int_sizes
        .store(u32::from(item("int_sizes")?.is_truthy()?), Relaxed);
    let items = item("items")?;
    let items = items.cast::<PyList>()?;
    let mut indexes = Vec::with_capacity(items.len());
    {
        let mut core = this.shared.core.lock(py)?;
        for it in items.iter() {
            let t = it.cast::<PyTuple>()?;
            let key = t.get_item(0)?;
            let size = t.get_item(2)?;
            let expires = t.get_item(3)?;
            let node = Node {
                hash: key.hash()?,
                key: key.unbind(),
                value: t.get_item(1)?.unbind(),
                size: if size.is_none() { 1.0 } else { size.extract()? },
                expires: (cfg.ttl.is_some() && !expires.is_none())
                    .then(|| Time::from_obj(&expires)),
                lru: UNLINKED,
                ord: UNLINKED,
                small_int: false,
            };
            indexes.push(core.insert(node));
        }
        for pos in item("lru")?.cast::<PyList>()?.iter() {
            let pos: usize = pos.extract()?;
            if let Some(&i) = indexes.get(pos) {
                core.move_back(i, List::Lru);
            }
        }
        this.shared.publish(&core);
    }
    if let Some(now) = this.now(py, cfg)? {
        this.expire_hook(slf, cfg, &now)?;
    }
    Ok(())
}

fn ord_indexed(core: &Core) -> impl Iterator<Item = (u32, &Node)> + '_ {
    let mut i = core.ord.head;
    std::iter::from_fn(move || {
        if i == NIL {
            return None;
        }
        let at = i;
        let n = core.node(i);
        i = n.ord.next;
        Some((at, n))
    })
}

/// A copy of the structure sharing the keys and values (a shallow copy), same orders.
fn clone_core(py: Python<'_>, src: &Core) -> Core {
    let slots = src
        .slots
        .iter()
        .map(|s| {
            s.as_ref().map(|n| Node {
                key: n.key.clone_ref(py),
                value: n.value.clone_ref(py),
                hash: n.hash,
                size: n.size,
                expires: n.expires.as_ref().map(|t| t.clone_ref(py)),
                lru: n.lru,
                ord: n.ord,
                small_int: n.small_int,
            })
        })
        .collect();
    let mut table = HashTable::with_capacity(src.len);
    for &i in src.table.iter() {
        let h = src.node(i).hash;
        table.insert_unique(mix(h), i, |&j| mix(src.node(j).hash));
    }
    Core {
        slots,
        free: src.free.clone(),
        table,
        lru: src.lru,
        ord: src.ord,
        len: src.len,
        currsize: src.currsize,
    }
}
