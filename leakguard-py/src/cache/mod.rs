//! The native core of `leakguard.LRUCache` and `leakguard.TTLCache`: drop-in replacements for
//! cachetools' classes, with cachetools' semantics, an internal lock, and registration with
//! the guard's cache registry (report, `/metrics`, shrinking under memory pressure).
//!
//! # Structure
//!
//! Entries live in a slab (`Vec<Option<Node>>` with a free list) and are indexed by a
//! `hashbrown::HashTable<u32>` keyed by the Python hash of the key, computed once per
//! operation and kept in the node. Two intrusive doubly linked lists run through the nodes:
//! the exact LRU order (what `popitem` evicts) and the iteration order (cachetools iterates
//! its data dict, insertion order, for an LRUCache, and its expiry links, set order, for a
//! TTLCache).
//!
//! # Locking and the GIL
//!
//! Every operation takes the cache's [`PyLock`]. Keys' `__eq__` runs under it (a lookup must
//! compare keys); nothing else does: `__hash__`, `getsizeof`, the timer and overridden methods
//! run before or after, and the objects an operation removes are released after the lock.
//! A Python thread that finds the lock taken waits for it with the GIL released (so the holder,
//! which may be inside a key's `__eq__`, can go on); the same thread coming back (a key's
//! `__eq__` using the cache) gets a RuntimeError instead of a deadlock. The guard's thread
//! reads the statistics from atomics (no lock), and shrinks or expires with a bounded wait for
//! the lock; the objects it removes are dropped without the GIL, which pyo3 turns into
//! deferred decrements applied by the next thread that enters Python through pyo3 (any
//! operation on a cache does).

//!
//! # Files
//!
//! - `lock`: the cache's lock ([`PyLock`]), with no Python in it, tested with plain threads;
//! - `time`: the timer of a TTLCache and the times it gives;
//! - `structure`: the entries, their index and their two orders ([`Core`]);
//! - `stats`: configuration, counters and what the guard's registry sees ([`Shared`]);
//! - `ops`: the operations under the lock, shared by the Python methods;
//! - `copy`: copying and pickling;
//! - `fastcall`: `get`, declared with the vectorcall convention (the stable ABI's methods
//!   otherwise receive a tuple);
//! - `slots`: `c[k]`, `c[k] = v` and `del c[k]` as C slots of `_CacheBase` and `_TTLCacheBase`,
//!   made with `PyType_FromSpecWithBases` as subclasses of pyo3's classes (pyo3 enters every
//!   slot through its trampoline, which costs as much as a hit);
//! - `memoize`: the wrapper that `leakguard.cached` makes of a function (without a lock or a
//!   condition), called through a C slot: the key, the lookup and the count in native code;
//! - `classes`: pyo3's classes `_CacheCore`, `_TTLCacheCore` (the data and every other method)
//!   and the module's functions.

mod classes;
mod copy;
mod fastcall;
mod lock;
mod memoize;
mod ops;
mod slots;
mod stats;
mod structure;
mod time;

pub(crate) use classes::register;

use leakguard::cache::EvictionCause;
use lock::{PyLock, PyLockGuard, Reentered};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::time::Duration;

/// No node.
const NIL: u32 = u32::MAX;
/// How long the guard's thread waits for a cache's lock before it leaves the cache alone.
const GUARD_LOCK_WAIT: Duration = Duration::from_millis(20);

// Methods a subclass may override that the cache's own operations call, as cachetools'
// classes do (`self.popitem()` from `__setitem__`, `self.__missing__(key)`, ...).
const GETITEM: u32 = 1;
const SETITEM: u32 = 1 << 1;
const DELITEM: u32 = 1 << 2;
const CONTAINS: u32 = 1 << 3;
const MISSING: u32 = 1 << 4;
const POPITEM: u32 = 1 << 5;
const EXPIRE: u32 = 1 << 6;
const HOOKS: [(u32, &str); 7] = [
    (GETITEM, "__getitem__"),
    (SETITEM, "__setitem__"),
    (DELITEM, "__delitem__"),
    (CONTAINS, "__contains__"),
    (MISSING, "__missing__"),
    (POPITEM, "popitem"),
    (EXPIRE, "expire"),
];

// Eviction causes, as the core names them (its one list, `EvictionCause::ALL`).
const CAPACITY: EvictionCause = EvictionCause::Capacity;
const EXPIRED: EvictionCause = EvictionCause::Expired;
const EXPLICIT: EvictionCause = EvictionCause::Explicit;
const REPLACED: EvictionCause = EvictionCause::Replaced;
const PRESSURE: EvictionCause = EvictionCause::Pressure;

impl<T> PyLock<T> {
    /// Locks from a thread attached to Python: waits with the GIL released (so that the
    /// holder, which may be inside a key's `__eq__`, can go on); a RuntimeError when this
    /// thread holds the lock already.
    #[inline]
    fn lock(&self, py: Python<'_>) -> PyResult<PyLockGuard<'_, T>> {
        // The uncontended case, every operation's, without the waiting machinery.
        match self.try_lock() {
            Some(guard) => Ok(guard),
            None => self.lock_contended(py),
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self, py: Python<'_>) -> PyResult<PyLockGuard<'_, T>> {
        self.lock_waiting(|acquire| py.detach(acquire))
            .map_err(|Reentered| {
                PyRuntimeError::new_err(
                    "cache used again from within one of its own operations (a key's __eq__ \
                     or a finalizer using the same cache)",
                )
            })
    }
}
