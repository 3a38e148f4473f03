//! The operations of a cache under its lock, shared by the Python methods: lookups, the
//! write with its evictions, removals, expiry, and the calls to a subclass's overrides that
//! cachetools' classes make (`self.popitem()`, `self.expire()`, ...).

use super::classes::CacheBase;
use super::stats::{Config, Stats, bump};
use super::structure::{Core, KeyHash, List, Node};
use super::time::{Time, When, alive};
use super::{CAPACITY, CONTAINS, DELITEM, EXPIRE, EXPIRED, HOOKS, NIL, POPITEM, REPLACED};
use leakguard::cache::EvictionCause;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyTuple, PyType};
use std::sync::atomic::Ordering::Relaxed;

pub(super) fn key_error(key: &Bound<'_, PyAny>) -> PyErr {
    PyKeyError::new_err(key.clone().unbind())
}

/// The objects an operation removed, dropped after its lock is released. The first node
/// is kept inline: a write that evicts one entry (a full cache's usual write) allocates
/// nothing for it.
#[derive(Default)]
pub(super) struct Garbage {
    first: Option<Node>,
    rest: Vec<Node>,
    /// The value a write replaced.
    pub(super) old: Option<Py<PyAny>>,
}

impl Garbage {
    pub(super) fn new() -> Self {
        Self::default()
    }

    #[inline(always)]
    pub(super) fn push(&mut self, node: Node) {
        if self.first.is_none() {
            self.first = Some(node);
        } else {
            self.rest.push(node);
        }
    }

    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// The nodes, in the order they were removed.
    pub(super) fn into_nodes(self) -> impl Iterator<Item = Node> {
        self.first.into_iter().chain(self.rest)
    }

    /// Drops what the operation removed, after its lock; the thread is attached.
    #[inline(always)]
    pub(super) fn release(self, py: Python<'_>) {
        if let Some(old) = self.old {
            drop(old.into_bound(py));
        }
        let Some(first) = self.first else {
            // The common write, which evicts nothing: no iterator to drop.
            return;
        };
        first.release(py);
        if self.rest.is_empty() {
            return;
        }
        for node in self.rest {
            node.release(py);
        }
    }
}

/// A size as `getsizeof` gives it: its value and whether it is an int.
pub(super) fn size_of(py: Python<'_>, cfg: &Config, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let Some(getsizeof) = &cfg.getsizeof else {
        if cfg.maxsize < 1.0 {
            return Err(PyValueError::new_err("value too large"));
        }
        return Ok(1.0);
    };
    let size = getsizeof.bind(py).call1((value,))?;
    let f: f64 = size.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "getsizeof must return a number, not {}",
            size.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    if f > cfg.maxsize {
        return Err(PyValueError::new_err("value too large"));
    }
    if f < 0.0 {
        return Err(PyValueError::new_err("value size must be non-negative"));
    }
    if !size.is_instance_of::<PyInt>() {
        cfg.int_sizes.store(0, Relaxed);
    }
    Ok(f)
}

impl CacheBase {
    pub(super) fn cfg(&self) -> PyResult<&Config> {
        self.shared.config.get().ok_or_else(|| {
            PyTypeError::new_err("the cache is not initialized: its __init__ was not called")
        })
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The time of an operation of a TTL cache, `None` for an LRU cache.
    #[inline(always)]
    pub(super) fn now(&self, py: Python<'_>, cfg: &Config) -> PyResult<Option<Time>> {
        match &cfg.ttl {
            None => Ok(None),
            Some(t) => t.timer.get().now(py).map(Some),
        }
    }

    /// `get_impl` at the cache's time: none for an LRU cache, the clock read only when the
    /// key is found for a TTL cache on `time.monotonic` (see [`When`]), any other timer read
    /// before the lookup.
    #[inline(always)]
    pub(super) fn get_timed(
        &self,
        py: Python<'_>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        match &cfg.ttl {
            None => self.get_impl(py, cfg, key, When::Untimed),
            Some(t) if t.timer.get().monotonic => {
                self.get_impl(py, cfg, key, When::Clock(t.timer.get()))
            }
            Some(_) => self.get_at_timer(py, cfg, key),
        }
    }

    #[inline(never)]
    fn get_at_timer(
        &self,
        py: Python<'_>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let now = self.now(py, cfg)?;
        self.get_impl(py, cfg, key, When::read_before(now.as_ref()))
    }

    #[inline(always)]
    pub(super) fn expired(py: Python<'_>, node: &Node, now: Option<&Time>) -> PyResult<bool> {
        match (now, &node.expires) {
            (Some(now), Some(e)) => Ok(!alive(py, now, e)?),
            _ => Ok(false),
        }
    }

    /// Removes the entries expired at `now` (front of the expiry list) into `out`.
    #[inline(always)]
    pub(super) fn expire_locked(
        &self,
        py: Python<'_>,
        core: &mut Core,
        now: &Time,
        out: &mut Garbage,
    ) -> PyResult<()> {
        // The common case, inline: the oldest entry (if any) has not expired.
        let head = core.ord.head;
        if head == NIL {
            return Ok(());
        }
        if let (Time::F(n), Some(Time::F(e))) = (now, &core.node(head).expires)
            && n < e
        {
            return Ok(());
        }
        self.expire_front(py, core, now, out)
    }

    #[inline(never)]
    fn expire_front(
        &self,
        py: Python<'_>,
        core: &mut Core,
        now: &Time,
        out: &mut Garbage,
    ) -> PyResult<()> {
        let before = out.len();
        let mut result = Ok(());
        loop {
            let head = core.ord.head;
            if head == NIL {
                break;
            }
            match Self::expired(py, core.node(head), Some(now)) {
                Ok(true) => out.push(core.remove(head)),
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.stats().evicted(EXPIRED, (out.len() - before) as u64);
        result
    }

    /// `self.expire(now)` as cachetools calls it from other operations: the overriding
    /// method when the class has one, else the entries go without building the list.
    pub(super) fn expire_hook(
        &self,
        slf: &Bound<'_, CacheBase>,
        cfg: &Config,
        now: &Time,
    ) -> PyResult<()> {
        let py = slf.py();
        let Some(ttl) = &cfg.ttl else { return Ok(()) };
        if cfg.hooks & EXPIRE != 0 {
            let _frozen = ttl.timer.get().freeze(py, now);
            slf.call_method1("expire", (now.to_obj(py),))?;
            return Ok(());
        }
        let mut garbage = Garbage::new();
        let result = {
            let mut core = self.shared.core.lock(py)?;
            let r = self.expire_locked(py, &mut core, now, &mut garbage);
            self.shared.publish(&core);
            r
        };
        garbage.release(py);
        result
    }

    /// The value of `key`, moved to the most recently used end, or `None` when it is absent
    /// or expired at `when` (counted as a hit or a miss).
    #[inline(always)]
    pub(super) fn get_impl(
        &self,
        py: Python<'_>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        when: When<'_>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let kh = KeyHash::of(key)?;
        let mut core = self.shared.core.lock(py)?;
        match core.find(py, key, kh)? {
            Some(i) => {
                // An LRU cache's node has no expiry: not even looked at.
                let expired = match (when, &core.node(i).expires) {
                    (When::Untimed, _) | (_, None) => false,
                    (when, Some(e)) => when.passed(py, e)?,
                };
                if expired {
                    bump(&self.stats().misses, 1);
                    return Ok(None);
                }
                core.move_back(i, List::Lru);
                bump(&self.stats().hits, 1);
                let _ = cfg;
                Ok(Some(core.node(i).value.clone_ref(py)))
            }
            None => {
                bump(&self.stats().misses, 1);
                Ok(None)
            }
        }
    }

    /// `Cache.__setitem__` with the eviction loop, for a class that does not override
    /// `popitem` or `__delitem__`: all under one lock.
    #[allow(clippy::too_many_arguments)] // the parts of one write, passed on as they are
    #[inline(always)]
    pub(super) fn set_impl(
        &self,
        py: Python<'_>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        size: f64,
        expires: Option<Time>,
        expire_at: Option<&Time>,
        garbage: &mut Garbage,
    ) -> PyResult<()> {
        let kh = KeyHash::of(key)?;
        let mut core = self.shared.core.lock(py)?;
        if let Some(now) = expire_at {
            self.expire_locked(py, &mut core, now, garbage)?;
        }
        let mut existing = core.find(py, key, kh)?;
        let mut diff = match existing {
            Some(i) => size - core.node(i).size,
            None => size,
        };
        if existing.is_none() && core.len > 1 && core.currsize + size > cfg.maxsize {
            let head = core.lru.head;
            if core.currsize - core.node(head).size + size <= cfg.maxsize {
                // A new key that evicts one entry, a full cache's usual write.
                let node = Node::new(key, value, kh, size, expires);
                self.store_over(&mut core, head, node, garbage);
                return Ok(());
            }
        }
        let evicted_before = garbage.len();
        while core.currsize + diff > cfg.maxsize && core.len > 0 {
            let head = core.lru.head;
            if Some(head) == existing {
                existing = None;
                diff = size;
            }
            garbage.push(core.remove(head));
        }
        let evicted = garbage.len() - evicted_before;
        if evicted > 0 {
            self.stats().evicted(CAPACITY, evicted as u64);
        }
        match existing {
            Some(i) => {
                let is_ttl = cfg.ttl.is_some();
                let n = core.node_mut(i);
                let old = std::mem::replace(&mut n.value, value.clone().unbind());
                let old_size = std::mem::replace(&mut n.size, size);
                if is_ttl {
                    n.expires = expires;
                }
                core.currsize += size - old_size;
                core.move_back(i, List::Lru);
                if is_ttl {
                    core.move_back(i, List::Ord);
                }
                self.stats().evicted(REPLACED, 1);
                // `old` is None here (one write per garbage): no drop call for it.
                if let Some(prev) = garbage.old.replace(old) {
                    drop(prev.into_bound(py));
                }
            }
            None => {
                core.insert(Node::new(key, value, kh, size, expires));
            }
        }
        bump(&self.stats().inserts, 1);
        self.shared.publish(&core);
        Ok(())
    }

    /// The rest of `set_impl` for a new entry that evicts exactly the least recently used
    /// one, `head`: it takes `head`'s slot (`Core::replace`). Out of line, so that the other
    /// writes do not carry it.
    #[inline(never)]
    fn store_over(&self, core: &mut Core, head: u32, node: Node, garbage: &mut Garbage) {
        garbage.push(core.replace(head, node));
        self.stats().evicted(CAPACITY, 1);
        bump(&self.stats().inserts, 1);
        self.shared.publish(core);
    }

    /// `Cache.__setitem__` for a class that overrides `popitem` or `__delitem__`: evicts by
    /// calling `self.popitem()` as cachetools does, then stores.
    #[allow(clippy::too_many_arguments)] // the parts of one write, passed on as they are
    pub(super) fn set_with_hooks(
        &self,
        slf: &Bound<'_, CacheBase>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        size: f64,
        expires: Option<Time>,
        garbage: &mut Garbage,
    ) -> PyResult<()> {
        let py = slf.py();
        let kh = KeyHash::of(key)?;
        loop {
            let need = {
                let core = self.shared.core.lock(py)?;
                let diff = match core.find(py, key, kh)? {
                    Some(i) => size - core.node(i).size,
                    None => size,
                };
                core.currsize + diff > cfg.maxsize && core.len > 0
            };
            if !need {
                break;
            }
            slf.call_method0("popitem")?;
        }
        // Nothing left to evict: `set_impl` stores without evicting.
        self.set_impl(py, cfg, key, value, size, expires, None, garbage)
    }

    #[inline(always)]
    pub(super) fn setitem(
        &self,
        slf: &Bound<'_, CacheBase>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        now: Option<Time>,
    ) -> PyResult<()> {
        let py = slf.py();
        // Without `getsizeof` every entry weighs 1 (checked against maxsize by `size_of`).
        let size = if cfg.getsizeof.is_none() && cfg.maxsize >= 1.0 {
            1.0
        } else {
            size_of(py, cfg, value)?
        };
        let mut garbage = Garbage::new();
        let result = match (&cfg.ttl, now) {
            (Some(ttl), Some(now)) => {
                let expires = match (&now, ttl.ttl_f) {
                    (Time::F(n), Some(t)) => Time::F(n + t),
                    _ => Time::from_obj(&now.to_obj(py).add(ttl.ttl_obj.bind(py))?),
                };
                if cfg.hooks & (POPITEM | DELITEM | EXPIRE) != 0 {
                    let _frozen = ttl.timer.get().freeze(py, &now);
                    self.expire_hook(slf, cfg, &now)?;
                    self.set_with_hooks(slf, cfg, key, value, size, Some(expires), &mut garbage)
                } else {
                    // Expired entries go first, under the same lock as the write.
                    self.set_impl(
                        py,
                        cfg,
                        key,
                        value,
                        size,
                        Some(expires),
                        Some(&now),
                        &mut garbage,
                    )
                }
            }
            _ => {
                if cfg.hooks & (POPITEM | DELITEM) != 0 {
                    self.set_with_hooks(slf, cfg, key, value, size, None, &mut garbage)
                } else {
                    self.set_impl(py, cfg, key, value, size, None, None, &mut garbage)
                }
            }
        };
        garbage.release(py);
        result
    }

    /// Removes `key`; returns its value, or `None` when absent. For a TTL cache the entry
    /// is removed even when expired, and `expired` says so.
    pub(super) fn remove_impl(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        now: Option<&Time>,
        cause: EvictionCause,
    ) -> PyResult<Option<(Node, bool)>> {
        let kh = KeyHash::of(key)?;
        let mut core = self.shared.core.lock(py)?;
        let Some(i) = core.find(py, key, kh)? else {
            return Ok(None);
        };
        let expired = Self::expired(py, core.node(i), now)?;
        let node = core.remove(i);
        self.stats().evicted(cause, 1);
        self.shared.publish(&core);
        Ok(Some((node, expired)))
    }

    /// `key in self` as the cache's own methods see it: the override when there is one.
    pub(super) fn contains_hook(
        &self,
        slf: &Bound<'_, CacheBase>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        now: Option<&Time>,
    ) -> PyResult<bool> {
        if cfg.hooks & CONTAINS != 0 {
            return slf.as_any().contains(key);
        }
        self.contains_impl(slf.py(), key, now)
    }

    pub(super) fn contains_impl(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        now: Option<&Time>,
    ) -> PyResult<bool> {
        let kh = KeyHash::of(key)?;
        let core = self.shared.core.lock(py)?;
        match core.find(py, key, kh)? {
            Some(i) => Ok(!Self::expired(py, core.node(i), now)?),
            None => Ok(false),
        }
    }

    pub(super) fn len_impl(&self, slf: &Bound<'_, CacheBase>) -> PyResult<usize> {
        let py = slf.py();
        let cfg = self.cfg()?;
        if let Some(now) = self.now(py, cfg)? {
            let _frozen = cfg.ttl.as_ref().map(|t| t.timer.get().freeze(py, &now));
            self.expire_hook(slf, cfg, &now)?;
        }
        Ok(self.shared.core.lock(py)?.len)
    }

    /// Pops the least recently used entry (after the expired ones, for a TTL cache).
    pub(super) fn popitem_impl<'py>(
        &self,
        slf: &Bound<'py, CacheBase>,
        cause: EvictionCause,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let cfg = self.cfg()?;
        let now = self.now(py, cfg)?;
        let _frozen = match (&cfg.ttl, &now) {
            (Some(t), Some(now)) => Some(t.timer.get().freeze(py, now)),
            _ => None,
        };
        if let Some(now) = &now {
            self.expire_hook(slf, cfg, now)?;
        }
        let empty = || {
            let name = slf
                .get_type()
                .name()
                .map_or_else(|_| "Cache".to_owned(), |n| n.to_string());
            let err = PyKeyError::new_err(format!("{name} is empty"));
            let _ = err.value(py).setattr("__suppress_context__", true);
            err
        };
        if cfg.hooks & DELITEM != 0 {
            // cachetools: `value = Cache.__getitem__(self, key); del self[key]`.
            let (key, value) = {
                let core = self.shared.core.lock(py)?;
                let head = core.lru.head;
                if head == NIL {
                    return Err(empty());
                }
                let n = core.node(head);
                (n.key.clone_ref(py), n.value.clone_ref(py))
            };
            slf.as_any().del_item(key.bind(py))?;
            return PyTuple::new(py, [key, value]);
        }
        let node = {
            let mut core = self.shared.core.lock(py)?;
            let head = core.lru.head;
            if head == NIL {
                return Err(empty());
            }
            let node = core.remove(head);
            self.stats().evicted(cause, 1);
            self.shared.publish(&core);
            node
        };
        PyTuple::new(py, [node.key, node.value])
    }
}

pub(super) fn hooks_of(slf: &Bound<'_, CacheBase>, base: &Bound<'_, PyType>) -> PyResult<u32> {
    let ty = slf.get_type();
    if ty.is(base) {
        return Ok(0);
    }
    let mut hooks = 0;
    for (bit, name) in HOOKS {
        let mine = ty.getattr(name).ok();
        let theirs = base.getattr(name).ok();
        let same = match (&mine, &theirs) {
            (Some(a), Some(b)) => a.is(b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            hooks |= bit;
        }
    }
    Ok(hooks)
}
