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

use hashbrown::HashTable;
use leakguard::cache::{
    CacheKind, CacheReport, CacheShrink, CapacityUnit, EvictionCounts, ExternalCache, Registration,
    register_external,
};
use parking_lot::RawMutex;
use parking_lot::lock_api::{self, RawMutex as _, RawMutexTimed as _};
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// No node.
const NIL: u32 = u32::MAX;
/// How long the guard's thread waits for a cache's lock before it leaves the cache alone.
const GUARD_LOCK_WAIT: Duration = Duration::from_millis(20);
/// Bookkeeping bytes per entry for the shallow estimate (node, table slot, and the key and
/// value objects' headers are not counted: they belong to the application).
const ENTRY_BYTES: u64 = (std::mem::size_of::<Option<Node>>() + 8) as u64;

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

// Eviction causes, indexes into `Stats::evictions` (the core's order).
const CAPACITY: usize = 0;
const EXPIRED: usize = 1;
const EXPLICIT: usize = 2;
const REPLACED: usize = 3;
const PRESSURE: usize = 4;

// ---------------------------------------------------------------------------------------
// The lock

thread_local! {
    static THREAD_TAG: u8 = const { 0 };
}

/// A cheap identifier of the current thread (the address of a thread-local).
fn thread_tag() -> usize {
    THREAD_TAG.with(|t| std::ptr::from_ref(t) as usize)
}

/// A mutex that a Python thread waits for with the GIL released, and that tells a thread
/// coming back into it from the holder's own Python callback.
struct PyLock<T> {
    raw: RawMutex,
    owner: AtomicUsize,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, which exists while `raw` is held, so one
// thread at a time; `T: Send` lets that thread be any thread.
unsafe impl<T: Send> Sync for PyLock<T> {}

struct PyLockGuard<'a, T> {
    lock: &'a PyLock<T>,
    /// Not Send (a raw pointer is not).
    _not_send: PhantomData<*const ()>,
}

// A PyLockGuard must not be Send: the lock is unlocked by the thread that locked it (`owner`
// tells that thread; the raw lock is unlocked with `GuardNoSend`). This fails to compile when
// the guard is Send: the call below is then ambiguous between the two impls.
const _: fn() = || {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    struct IsSend;
    impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}
    <PyLockGuard<'static, ()> as AmbiguousIfSend<_>>::some_item();
};

impl<T> PyLock<T> {
    fn new(data: T) -> Self {
        Self {
            raw: RawMutex::INIT,
            owner: AtomicUsize::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// Locks from a thread attached to Python.
    fn lock(&self, py: Python<'_>) -> PyResult<PyLockGuard<'_, T>> {
        let me = thread_tag();
        // The guard state is a stateless marker, which the unlock makes anew.
        if self.raw.try_lock().is_none() {
            if self.owner.load(Relaxed) == me {
                return Err(PyRuntimeError::new_err(
                    "cache used again from within one of its own operations (a key's __eq__ \
                     or a finalizer using the same cache)",
                ));
            }
            let raw = &self.raw;
            // Waited for with the GIL released. The closure runs on this thread; the
            // stateless guard state is not carried out of it (it is not Send).
            py.detach(|| {
                let _ = raw.lock();
            });
        }
        self.owner.store(me, Relaxed);
        Ok(PyLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// Locks if the lock is free, without waiting.
    fn try_lock(&self) -> Option<PyLockGuard<'_, T>> {
        self.raw.try_lock()?;
        self.owner.store(thread_tag(), Relaxed);
        Some(PyLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// Locks from any thread, waiting at most `wait`.
    fn lock_for(&self, wait: Duration) -> Option<PyLockGuard<'_, T>> {
        self.raw.try_lock_for(wait)?;
        self.owner.store(thread_tag(), Relaxed);
        Some(PyLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }
}

impl<T> Deref for PyLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists while the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for PyLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists while the lock is held, and is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for PyLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Relaxed);
        // SAFETY: the guard was made when this thread took the lock.
        unsafe { self.lock.raw.unlock(lock_api::GuardNoSend::new()) };
    }
}

// ---------------------------------------------------------------------------------------
// Time

/// A time from the cache's timer: a float when it is a float or a small int (compared in
/// Rust), else the Python object (compared with Python's `<`).
enum Time {
    F(f64),
    Obj(Py<PyAny>),
}

impl Time {
    fn from_obj(obj: &Bound<'_, PyAny>) -> Time {
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            return Time::F(f.value());
        }
        if obj.is_exact_instance_of::<PyInt>()
            && let Ok(i) = obj.extract::<i64>()
            && i.unsigned_abs() <= 1 << 53
        {
            return Time::F(i as f64);
        }
        Time::Obj(obj.clone().unbind())
    }

    fn to_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Time::F(f) => PyFloat::new(py, *f).into_any(),
            Time::Obj(o) => o.bind(py).clone(),
        }
    }

    fn clone_ref(&self, py: Python<'_>) -> Time {
        match self {
            Time::F(f) => Time::F(*f),
            Time::Obj(o) => Time::Obj(o.clone_ref(py)),
        }
    }
}

/// `now < expires`, as cachetools compares.
fn alive(py: Python<'_>, now: &Time, expires: &Time) -> PyResult<bool> {
    match (now, expires) {
        (Time::F(n), Time::F(e)) => Ok(n < e),
        _ => now.to_obj(py).lt(expires.to_obj(py)),
    }
}

/// CLOCK_MONOTONIC in seconds, what `time.monotonic()` returns on Linux.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn time_monotonic(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static MONOTONIC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MONOTONIC
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("time")?.getattr("monotonic")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// The timer of a TTLCache, as cachetools wraps it: calling it gives the time; used as a
/// context manager (``with cache.timer as time:``) it freezes the time for the operations
/// inside, nesting; other attributes are the wrapped timer's.
#[pyclass(frozen, module = "leakguard._leakguard", name = "_Timer")]
pub(crate) struct Timer {
    inner: Py<PyAny>,
    /// The wrapped timer is `time.monotonic`: read the clock in Rust.
    monotonic: bool,
    nesting: AtomicU32,
    frozen: parking_lot::Mutex<Option<Py<PyAny>>>,
}

impl Timer {
    fn wrap(py: Python<'_>, inner: Bound<'_, PyAny>) -> PyResult<Timer> {
        Ok(Timer {
            monotonic: inner.is(time_monotonic(py)?),
            inner: inner.unbind(),
            nesting: AtomicU32::new(0),
            frozen: parking_lot::Mutex::new(None),
        })
    }

    /// The time an operation uses: the frozen one inside ``with timer``, else the timer's.
    fn now(&self, py: Python<'_>) -> PyResult<Time> {
        if self.nesting.load(Relaxed) > 0
            && let Some(t) = self.frozen.lock().as_ref()
        {
            return Ok(Time::from_obj(t.bind(py)));
        }
        if self.monotonic {
            return Ok(Time::F(monotonic()));
        }
        Ok(Time::from_obj(&self.inner.bind(py).call0()?))
    }

    /// Freezes `now` for the Python calls an operation makes (what ``with self.timer`` does
    /// in cachetools); undone when the returned guard drops.
    fn freeze<'a>(&'a self, py: Python<'_>, now: &Time) -> Frozen<'a> {
        if self.nesting.fetch_add(1, Relaxed) == 0 {
            *self.frozen.lock() = Some(now.to_obj(py).unbind());
        }
        Frozen(self)
    }
}

struct Frozen<'a>(&'a Timer);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.nesting.fetch_sub(1, Relaxed);
    }
}

#[pymethods]
impl Timer {
    #[new]
    fn py_new(py: Python<'_>, timer: Bound<'_, PyAny>) -> PyResult<Timer> {
        Timer::wrap(py, timer)
    }

    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.nesting.load(Relaxed) > 0
            && let Some(t) = self.frozen.lock().as_ref()
        {
            return Ok(t.clone_ref(py));
        }
        Ok(self.inner.bind(py).call0()?.unbind())
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.nesting.load(Relaxed) == 0 {
            let t = self.inner.bind(py).call0()?.unbind();
            *self.frozen.lock() = Some(t);
        }
        self.nesting.fetch_add(1, Relaxed);
        self.__call__(py)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) {
        let _ = self
            .nesting
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    fn __copy__(&self, py: Python<'_>) -> PyResult<Timer> {
        Timer::wrap(py, self.inner.bind(py).clone())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        PyTuple::new(
            py,
            [
                slf.get_type().into_any(),
                PyTuple::new(py, [slf.get().inner.bind(py)])?.into_any(),
            ],
        )
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        self.inner.bind(py).getattr(name)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.inner)?;
        if let Some(frozen) = self.frozen.try_lock()
            && let Some(t) = frozen.as_ref()
        {
            visit.call(t)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The structure

struct Node {
    key: Py<PyAny>,
    value: Py<PyAny>,
    hash: isize,
    size: f64,
    expires: Option<Time>,
    lru: Link,
    ord: Link,
}

#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// Spreads a Python hash (small ints hash to themselves) over the 64 bits hashbrown uses.
fn mix(hash: isize) -> u64 {
    let x = (hash as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 32)
}

struct Core {
    slots: Vec<Option<Node>>,
    free: Vec<u32>,
    table: HashTable<u32>,
    lru: Ends,
    ord: Ends,
    len: usize,
    currsize: f64,
}

/// Which list of a node.
#[derive(Clone, Copy)]
enum List {
    Lru,
    Ord,
}

impl Core {
    fn new() -> Self {
        Core {
            slots: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            lru: EMPTY,
            ord: EMPTY,
            len: 0,
            currsize: 0.0,
        }
    }

    fn node(&self, i: u32) -> &Node {
        match &self.slots[i as usize] {
            Some(n) => n,
            None => unreachable!("a linked slot is occupied"),
        }
    }

    fn node_mut(&mut self, i: u32) -> &mut Node {
        match &mut self.slots[i as usize] {
            Some(n) => n,
            None => unreachable!("a linked slot is occupied"),
        }
    }

    fn link(&mut self, i: u32, list: List) -> &mut Link {
        let n = self.node_mut(i);
        match list {
            List::Lru => &mut n.lru,
            List::Ord => &mut n.ord,
        }
    }

    fn ends(&mut self, list: List) -> &mut Ends {
        match list {
            List::Lru => &mut self.lru,
            List::Ord => &mut self.ord,
        }
    }

    fn unlink(&mut self, i: u32, list: List) {
        let Link { prev, next } = *self.link(i, list);
        if prev == NIL {
            self.ends(list).head = next;
        } else {
            self.link(prev, list).next = next;
        }
        if next == NIL {
            self.ends(list).tail = prev;
        } else {
            self.link(next, list).prev = prev;
        }
        *self.link(i, list) = UNLINKED;
    }

    fn push_back(&mut self, i: u32, list: List) {
        let tail = self.ends(list).tail;
        *self.link(i, list) = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.ends(list).head = i;
        } else {
            self.link(tail, list).next = i;
        }
        self.ends(list).tail = i;
    }

    fn move_back(&mut self, i: u32, list: List) {
        if self.ends(list).tail != i {
            self.unlink(i, list);
            self.push_back(i, list);
        }
    }

    /// The node of `key`, comparing keys as a dict does (identity, then `==`).
    fn find(&self, py: Python<'_>, key: &Bound<'_, PyAny>, hash: isize) -> PyResult<Option<u32>> {
        let mut err = None;
        let slots = &self.slots;
        let found = self.table.find(mix(hash), |&i| {
            if err.is_some() {
                return false;
            }
            let Some(n) = &slots[i as usize] else {
                return false;
            };
            if n.hash != hash {
                return false;
            }
            if n.key.as_ptr() == key.as_ptr() {
                return true;
            }
            // SAFETY: both pointers are live objects (the node's key is owned by the node, `key`
            // is borrowed for the call) and this thread is attached to the interpreter.
            match unsafe {
                pyo3::ffi::PyObject_RichCompareBool(n.key.as_ptr(), key.as_ptr(), pyo3::ffi::Py_EQ)
            } {
                1 => true,
                0 => false,
                _ => {
                    err = Some(PyErr::fetch(py));
                    false
                }
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(found.copied()),
        }
    }

    fn insert(&mut self, node: Node) -> u32 {
        let hash = node.hash;
        let size = node.size;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(node);
                i
            }
            None => {
                self.slots.push(Some(node));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table
            .insert_unique(mix(hash), i, |&j| match &slots[j as usize] {
                Some(n) => mix(n.hash),
                None => 0,
            });
        self.push_back(i, List::Lru);
        self.push_back(i, List::Ord);
        self.len += 1;
        self.currsize += size;
        i
    }

    fn remove(&mut self, i: u32) -> Node {
        self.unlink(i, List::Lru);
        self.unlink(i, List::Ord);
        let hash = self.node(i).hash;
        if let Ok(entry) = self.table.find_entry(mix(hash), |&j| j == i) {
            entry.remove();
        }
        let node = self.slots[i as usize].take();
        self.free.push(i);
        self.len -= 1;
        let Some(node) = node else {
            unreachable!("a linked slot is occupied")
        };
        self.currsize -= node.size;
        if self.len == 0 {
            // No rounding left over from float sizes, and the slab given back.
            self.currsize = 0.0;
            if self.slots.len() > 64 {
                self.slots = Vec::new();
                self.free = Vec::new();
                self.table = HashTable::new();
            }
        }
        node
    }

    fn take_all(&mut self) -> Vec<Option<Node>> {
        let slots = std::mem::take(&mut self.slots);
        *self = Core::new();
        slots
    }

    /// Keys in iteration order.
    fn ord_iter(&self) -> impl Iterator<Item = &Node> + '_ {
        let mut i = self.ord.head;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let n = self.node(i);
            i = n.ord.next;
            Some(n)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Configuration and statistics

struct TtlConfig {
    ttl_f: Option<f64>,
    ttl_obj: Py<PyAny>,
    timer: Py<Timer>,
}

struct Config {
    maxsize: f64,
    maxsize_obj: Py<PyAny>,
    getsizeof: Option<Py<PyAny>>,
    ttl: Option<TtlConfig>,
    /// The hooks (`GETITEM`, ...) that the instance's class overrides.
    hooks: u32,
    /// Sizes so far were all ints: `currsize` is an int.
    int_sizes: AtomicU32,
}

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: [AtomicU64; 5],
    entries: AtomicU64,
    currsize: AtomicU64,
}

/// Adds to a counter only ever written under the cache's lock (a plain load and store).
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// What a cache object shares with the registry.
pub(crate) struct Shared {
    config: OnceLock<Config>,
    core: PyLock<Core>,
    stats: Stats,
}

impl Shared {
    fn publish(&self, core: &Core) {
        self.stats.entries.store(core.len as u64, Relaxed);
        self.stats.currsize.store(core.currsize.to_bits(), Relaxed);
    }

    /// Removes up to `budget` entries that expired by now (monotonic timers only: the
    /// guard's thread cannot call a Python timer). Returns what it removed, to be dropped
    /// after the lock.
    fn reclaim(&self, budget: usize) -> Vec<Node> {
        let Some(cfg) = self.config.get() else {
            return Vec::new();
        };
        let Some(ttl) = &cfg.ttl else {
            return Vec::new();
        };
        // SAFETY-free check of the timer's kind: `monotonic` never changes; while a
        // `with cache.timer` block freezes the time, leave expiry to the cache's own calls.
        let timer = ttl.timer.get();
        if !timer.monotonic || timer.nesting.load(Relaxed) > 0 {
            return Vec::new();
        }
        let Some(mut core) = self.core.lock_for(Duration::ZERO) else {
            return Vec::new();
        };
        let now = monotonic();
        let mut out = Vec::new();
        while out.len() < budget {
            let head = core.ord.head;
            if head == NIL {
                break;
            }
            match core.node(head).expires {
                Some(Time::F(e)) if now >= e => out.push(core.remove(head)),
                _ => break,
            }
        }
        bump(&self.stats.evictions[EXPIRED], out.len() as u64);
        self.publish(&core);
        out
    }
}

impl ExternalCache for Shared {
    fn report(&self) -> CacheReport {
        let cfg = self.config.get();
        let s = &self.stats;
        let entries = s.entries.load(Relaxed);
        let currsize = f64::from_bits(s.currsize.load(Relaxed));
        let sized = cfg.is_some_and(|c| c.getsizeof.is_some());
        let (hits, misses) = (s.hits.load(Relaxed), s.misses.load(Relaxed));
        let lookups = hits + misses;
        CacheReport {
            name: String::new(),
            kind: if cfg.is_some_and(|c| c.ttl.is_some()) {
                CacheKind::Ttl
            } else {
                CacheKind::Lru
            },
            entries,
            weight: if sized { currsize as u64 } else { entries },
            capacity: cfg.map_or(0, |c| c.maxsize as u64),
            capacity_unit: if sized {
                CapacityUnit::Weight
            } else {
                CapacityUnit::Entries
            },
            weight_bytes: if sized {
                currsize as u64
            } else {
                entries.saturating_mul(ENTRY_BYTES)
            },
            weight_bytes_estimated: !sized,
            hits,
            misses,
            hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
            inserts: s.inserts.load(Relaxed),
            evictions: EvictionCounts {
                capacity: s.evictions[CAPACITY].load(Relaxed),
                expired: s.evictions[EXPIRED].load(Relaxed),
                explicit: s.evictions[EXPLICIT].load(Relaxed),
                replaced: s.evictions[REPLACED].load(Relaxed),
                pressure: s.evictions[PRESSURE].load(Relaxed),
            },
            ttl_seconds: cfg.and_then(|c| c.ttl.as_ref()).and_then(|t| t.ttl_f),
            time_to_idle_seconds: None,
            listener_panics: 0,
        }
    }

    fn shrink(&self, fraction: f64) -> CacheShrink {
        let fraction = if fraction.is_nan() {
            1.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let sized = self.config.get().is_some_and(|c| c.getsizeof.is_some());
        let mut evicted = Vec::new();
        if let Some(mut core) = self.core.lock_for(GUARD_LOCK_WAIT) {
            let target = core.currsize * fraction;
            while core.len > 0 && core.currsize > target {
                let head = core.lru.head;
                evicted.push(core.remove(head));
            }
            bump(&self.stats.evictions[PRESSURE], evicted.len() as u64);
            self.publish(&core);
        }
        let entries = evicted.len() as u64;
        let weight: f64 = evicted.iter().map(|n| n.size).sum();
        // Dropped after the lock: without the GIL (the guard's thread) pyo3 defers the
        // decrements to the next thread that enters Python through it.
        drop(evicted);
        CacheShrink {
            name: String::new(),
            entries_evicted: entries,
            weight_evicted: weight as u64,
            bytes_evicted: if sized {
                weight as u64
            } else {
                entries.saturating_mul(ENTRY_BYTES)
            },
        }
    }

    fn maintain(&self, budget: usize) {
        drop(self.reclaim(budget));
    }
}

// ---------------------------------------------------------------------------------------
// The Python classes

/// Native base of ``leakguard.LRUCache``: the mapping, its lock, its registration.
#[pyclass(subclass, frozen, module = "leakguard._leakguard", name = "_CacheBase")]
pub(crate) struct CacheBase {
    shared: Arc<Shared>,
    registration: parking_lot::Mutex<Option<Registration>>,
}

/// Native base of ``leakguard.TTLCache``: adds ``ttl``, ``timer`` and ``expire``.
#[pyclass(extends = CacheBase, subclass, frozen, module = "leakguard._leakguard", name = "_TTLCacheBase")]
pub(crate) struct TtlCacheBase;

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

fn key_error(key: &Bound<'_, PyAny>) -> PyErr {
    PyKeyError::new_err(key.clone().unbind())
}

/// The objects an operation removed, dropped after its lock is released.
#[derive(Default)]
struct Garbage {
    nodes: Vec<Node>,
    /// The value a write replaced.
    old: Option<Py<PyAny>>,
}

impl Garbage {
    fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// A size as `getsizeof` gives it: its value and whether it is an int.
fn size_of(py: Python<'_>, cfg: &Config, value: &Bound<'_, PyAny>) -> PyResult<f64> {
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
    fn cfg(&self) -> PyResult<&Config> {
        self.shared.config.get().ok_or_else(|| {
            PyTypeError::new_err("the cache is not initialized: its __init__ was not called")
        })
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The time of an operation of a TTL cache, `None` for an LRU cache.
    fn now(&self, py: Python<'_>, cfg: &Config) -> PyResult<Option<Time>> {
        match &cfg.ttl {
            None => Ok(None),
            Some(t) => t.timer.get().now(py).map(Some),
        }
    }

    fn expired(py: Python<'_>, node: &Node, now: Option<&Time>) -> PyResult<bool> {
        match (now, &node.expires) {
            (Some(now), Some(e)) => Ok(!alive(py, now, e)?),
            _ => Ok(false),
        }
    }

    /// Removes the entries expired at `now` (front of the expiry list) into `out`.
    fn expire_locked(
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
        bump(
            &self.stats().evictions[EXPIRED],
            (out.len() - before) as u64,
        );
        result
    }

    /// `self.expire(now)` as cachetools calls it from other operations: the overriding
    /// method when the class has one, else the entries go without building the list.
    fn expire_hook(&self, slf: &Bound<'_, CacheBase>, cfg: &Config, now: &Time) -> PyResult<()> {
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
        drop(garbage);
        result
    }

    fn get_impl(
        &self,
        py: Python<'_>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        now: Option<&Time>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let hash = key.hash()?;
        let mut core = self.shared.core.lock(py)?;
        match core.find(py, key, hash)? {
            Some(i) => {
                if Self::expired(py, core.node(i), now)? {
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
    fn set_impl(
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
        let hash = key.hash()?;
        let mut core = self.shared.core.lock(py)?;
        if let Some(now) = expire_at {
            self.expire_locked(py, &mut core, now, garbage)?;
        }
        let mut existing = core.find(py, key, hash)?;
        let mut diff = existing.map_or(size, |i| size - core.node(i).size);
        let evicted_before = garbage.len();
        while core.currsize + diff > cfg.maxsize && core.len > 0 {
            let head = core.lru.head;
            if Some(head) == existing {
                existing = None;
                diff = size;
            }
            garbage.push(core.remove(head));
        }
        bump(
            &self.stats().evictions[CAPACITY],
            (garbage.len() - evicted_before) as u64,
        );
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
                bump(&self.stats().evictions[REPLACED], 1);
                garbage.old = Some(old);
            }
            None => {
                core.insert(Node {
                    key: key.clone().unbind(),
                    value: value.clone().unbind(),
                    hash,
                    size,
                    expires,
                    lru: UNLINKED,
                    ord: UNLINKED,
                });
            }
        }
        bump(&self.stats().inserts, 1);
        self.shared.publish(&core);
        Ok(())
    }

    /// `Cache.__setitem__` for a class that overrides `popitem` or `__delitem__`: evicts by
    /// calling `self.popitem()` as cachetools does, then stores.
    #[allow(clippy::too_many_arguments)] // the parts of one write, passed on as they are
    fn set_with_hooks(
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
        let hash = key.hash()?;
        loop {
            let need = {
                let core = self.shared.core.lock(py)?;
                let diff = match core.find(py, key, hash)? {
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

    fn setitem(
        &self,
        slf: &Bound<'_, CacheBase>,
        cfg: &Config,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        now: Option<Time>,
    ) -> PyResult<()> {
        let py = slf.py();
        let size = size_of(py, cfg, value)?;
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
        drop(garbage);
        result
    }

    /// Removes `key`; returns its value, or `None` when absent. For a TTL cache the entry
    /// is removed even when expired, and `expired` says so.
    fn remove_impl(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        now: Option<&Time>,
        cause: usize,
    ) -> PyResult<Option<(Node, bool)>> {
        let hash = key.hash()?;
        let mut core = self.shared.core.lock(py)?;
        let Some(i) = core.find(py, key, hash)? else {
            return Ok(None);
        };
        let expired = Self::expired(py, core.node(i), now)?;
        let node = core.remove(i);
        bump(&self.stats().evictions[cause], 1);
        self.shared.publish(&core);
        Ok(Some((node, expired)))
    }

    /// `key in self` as the cache's own methods see it: the override when there is one.
    fn contains_hook(
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

    fn contains_impl(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        now: Option<&Time>,
    ) -> PyResult<bool> {
        let hash = key.hash()?;
        let core = self.shared.core.lock(py)?;
        match core.find(py, key, hash)? {
            Some(i) => Ok(!Self::expired(py, core.node(i), now)?),
            None => Ok(false),
        }
    }

    fn len_impl(&self, slf: &Bound<'_, CacheBase>) -> PyResult<usize> {
        let py = slf.py();
        let cfg = self.cfg()?;
        if let Some(now) = self.now(py, cfg)? {
            let _frozen = cfg.ttl.as_ref().map(|t| t.timer.get().freeze(py, &now));
            self.expire_hook(slf, cfg, &now)?;
        }
        Ok(self.shared.core.lock(py)?.len)
    }

    /// Pops the least recently used entry (after the expired ones, for a TTL cache).
    fn popitem_impl<'py>(
        &self,
        slf: &Bound<'py, CacheBase>,
        cause: usize,
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
            bump(&self.stats().evictions[cause], 1);
            self.shared.publish(&core);
            node
        };
        PyTuple::new(py, [node.key, node.value])
    }
}

fn hooks_of(slf: &Bound<'_, CacheBase>, base: &Bound<'_, PyType>) -> PyResult<u32> {
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

#[pymethods]
impl CacheBase {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> CacheBase {
        new_base()
    }

    /// Sets the cache up; called once by ``LRUCache.__init__``/``TTLCache.__init__``.
    #[pyo3(signature = (maxsize, getsizeof, ttl, timer, name))]
    fn _lg_init(
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
        let base = if is_ttl {
            py.get_type::<TtlCacheBase>()
        } else {
            py.get_type::<CacheBase>()
        };
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
            bump(&self.shared.stats.evictions[EXPLICIT], n);
            self.shared.publish(&core);
            slots
        });
        drop(garbage);
    }

    /// The name under which the cache is registered with the guard, or None.
    #[getter]
    fn leakguard_name(&self) -> Option<String> {
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
        ev.set_item("capacity", r.evictions.capacity)?;
        ev.set_item("expired", r.evictions.expired)?;
        ev.set_item("explicit", r.evictions.explicit)?;
        ev.set_item("replaced", r.evictions.replaced)?;
        ev.set_item("pressure", r.evictions.pressure)?;
        d.set_item("evictions", ev)?;
        Ok(d)
    }

    /// Evicts least recently used entries until ``currsize`` is at most ``fraction`` of what
    /// it was, as the guard does under memory pressure; returns the number evicted.
    fn leakguard_shrink(&self, py: Python<'_>, fraction: f64) -> u64 {
        py.detach(|| self.shared.shrink(fraction).entries_evicted)
    }

    fn __getitem__(slf: &Bound<'_, CacheBase>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(py, cfg)?;
        if let Some(v) = this.get_impl(py, cfg, key, now.as_ref())? {
            return Ok(v);
        }
        if let (Some(now), Some(ttl)) = (&now, &cfg.ttl) {
            // cachetools moves an expired entry to the LRU end before calling __missing__.
            let hash = key.hash()?;
            let mut core = this.shared.core.lock(py)?;
            if let Some(i) = core.find(py, key, hash)? {
                core.move_back(i, List::Lru);
            }
            drop(core);
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

    fn __setitem__(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(slf.py(), cfg)?;
        this.setitem(slf, cfg, key, value, now)
    }

    fn __delitem__(slf: &Bound<'_, CacheBase>, key: &Bound<'_, PyAny>) -> PyResult<()> {
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

    #[pyo3(signature = (key, default = None))]
    fn get(
        slf: &Bound<'_, CacheBase>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let cfg = this.cfg()?;
        let now = this.now(py, cfg)?;
        let default = || default.unwrap_or_else(|| py.None());
        if cfg.hooks & (CONTAINS | GETITEM) != 0 {
            let _frozen = match (&cfg.ttl, &now) {
                (Some(t), Some(now)) => Some(t.timer.get().freeze(py, now)),
                _ => None,
            };
            if this.contains_hook(slf, cfg, key, now.as_ref())? {
                return Ok(slf.as_any().get_item(key)?.unbind());
            }
            return Ok(default());
        }
        Ok(this
            .get_impl(py, cfg, key, now.as_ref())?
            .unwrap_or_else(default))
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
        if let Some(v) = this.get_impl(py, cfg, key, now.as_ref())? {
            return Ok(v);
        }
        let now = now.as_ref().map(|t| t.clone_ref(py));
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
            bump(&this.stats().evictions[EXPLICIT], n);
            this.shared.publish(&core);
            slots
        };
        drop(garbage);
        Ok(())
    }

    fn __copy__<'py>(slf: &Bound<'py, CacheBase>) -> PyResult<Bound<'py, PyAny>> {
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

    fn __reduce_ex__<'py>(
        slf: &Bound<'py, CacheBase>,
        _protocol: i32,
    ) -> PyResult<Bound<'py, PyTuple>> {
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

    fn __setstate__(slf: &Bound<'_, CacheBase>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
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
        Self::_lg_init(
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
        for n in garbage.nodes {
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
    m.add_class::<TtlCacheBase>()?;
    m.add_class::<Timer>()?;
    m.add_function(wrap_pyfunction!(_cache_report, m)?)?;
    m.add_function(wrap_pyfunction!(_shrink_caches, m)?)?;
    m.add_function(wrap_pyfunction!(_maintain_caches, m)?)?;
    Ok(())
}
