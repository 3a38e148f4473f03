//! Time for a TTLCache: the times its timer gives ([`Time`], compared in Rust when they are
//! numbers) and the timer object itself ([`Timer`], cachetools' `_Timer`, which freezes the
//! time inside `with cache.timer`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyFloat, PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// A time from the cache's timer: a float when it is a float or a small int (compared in
/// Rust), else the Python object (compared with Python's `<`).
pub(super) enum Time {
    F(f64),
    Obj(Py<PyAny>),
}

impl Time {
    pub(super) fn from_obj(obj: &Bound<'_, PyAny>) -> Time {
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

    pub(super) fn to_obj<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Time::F(f) => PyFloat::new(py, *f).into_any(),
            Time::Obj(o) => o.bind(py).clone(),
        }
    }

    pub(super) fn clone_ref(&self, py: Python<'_>) -> Time {
        match self {
            Time::F(f) => Time::F(*f),
            Time::Obj(o) => Time::Obj(o.clone_ref(py)),
        }
    }
}

/// The time a lookup compares an entry's expiry with. `get` and the memoizing decorators'
/// lookup on a TTL cache on the monotonic clock read it only when the key is found (as
/// cachetools does): a miss then costs no clock read (~24 ns, as much as the rest of a miss).
/// Reading that clock runs no Python code, so it may happen under the cache's lock; any other
/// timer is read before the lookup.
#[derive(Clone, Copy)]
pub(super) enum When<'a> {
    /// An LRU cache: entries do not expire.
    Untimed,
    /// The time, already read.
    At(&'a Time),
    /// The timer (`time.monotonic`), to be read when an entry is found.
    Clock(&'a Timer),
}

impl<'a> When<'a> {
    /// `now` as read before the operation (`None` for an LRU cache).
    pub(super) fn read_before(now: Option<&'a Time>) -> When<'a> {
        match now {
            None => When::Untimed,
            Some(t) => When::At(t),
        }
    }

    /// Whether `expires` has passed (`Untimed`: never). The usual cases, float times (on the
    /// clock, with no `with cache.timer` open), are inline; the rest out of line.
    #[inline(always)]
    pub(super) fn passed(self, py: Python<'_>, expires: &Time) -> PyResult<bool> {
        match (self, expires) {
            (When::At(Time::F(now)), Time::F(e)) => Ok(!alive_f(*now, *e)),
            (When::Clock(timer), Time::F(e)) if timer.nesting.load(Relaxed) == 0 => {
                Ok(!alive_f(monotonic(), *e))
            }
            _ => self.passed_slow(py, expires),
        }
    }

    #[inline(never)]
    fn passed_slow(self, py: Python<'_>, expires: &Time) -> PyResult<bool> {
        match self {
            When::Untimed => Ok(false),
            When::At(now) => Ok(!alive(py, now, expires)?),
            When::Clock(timer) => Ok(!alive(py, &timer.now(py)?, expires)?),
        }
    }
}

/// `now < expires` for float times.
#[inline(always)]
fn alive_f(now: f64, expires: f64) -> bool {
    now < expires
}

/// `now < expires`, as cachetools compares.
#[inline(always)]
pub(super) fn alive(py: Python<'_>, now: &Time, expires: &Time) -> PyResult<bool> {
    match (now, expires) {
        (Time::F(n), Time::F(e)) => Ok(alive_f(*n, *e)),
        _ => alive_obj(py, now, expires),
    }
}

#[inline(never)]
fn alive_obj(py: Python<'_>, now: &Time, expires: &Time) -> PyResult<bool> {
    now.to_obj(py).lt(expires.to_obj(py))
}

/// CLOCK_MONOTONIC in seconds, what `time.monotonic()` returns on Linux.
#[inline(always)]
pub(super) fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

pub(super) fn time_monotonic(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
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
    pub(super) inner: Py<PyAny>,
    /// The wrapped timer is `time.monotonic`: read the clock in Rust.
    pub(super) monotonic: bool,
    pub(super) nesting: AtomicU32,
    pub(super) frozen: parking_lot::Mutex<Option<Py<PyAny>>>,
}

impl Timer {
    pub(super) fn wrap(py: Python<'_>, inner: Bound<'_, PyAny>) -> PyResult<Timer> {
        Ok(Timer {
            monotonic: inner.is(time_monotonic(py)?),
            inner: inner.unbind(),
            nesting: AtomicU32::new(0),
            frozen: parking_lot::Mutex::new(None),
        })
    }

    /// The time an operation uses: the frozen one inside ``with timer``, else the timer's.
    #[inline(always)]
    pub(super) fn now(&self, py: Python<'_>) -> PyResult<Time> {
        if self.monotonic && self.nesting.load(Relaxed) == 0 {
            return Ok(Time::F(monotonic()));
        }
        self.now_slow(py)
    }

    #[inline(never)]
    fn now_slow(&self, py: Python<'_>) -> PyResult<Time> {
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
    pub(super) fn freeze<'a>(&'a self, py: Python<'_>, now: &Time) -> Frozen<'a> {
        if self.nesting.fetch_add(1, Relaxed) == 0 {
            *self.frozen.lock() = Some(now.to_obj(py).unbind());
        }
        Frozen(self)
    }
}

pub(super) struct Frozen<'a>(&'a Timer);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.nesting.fetch_sub(1, Relaxed);
    }
}

#[pymethods]
impl Timer {
    #[new]
    pub(super) fn py_new(py: Python<'_>, timer: Bound<'_, PyAny>) -> PyResult<Timer> {
        Timer::wrap(py, timer)
    }

    pub(super) fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.nesting.load(Relaxed) > 0
            && let Some(t) = self.frozen.lock().as_ref()
        {
            return Ok(t.clone_ref(py));
        }
        Ok(self.inner.bind(py).call0()?.unbind())
    }

    pub(super) fn __enter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.nesting.load(Relaxed) == 0 {
            let t = self.inner.bind(py).call0()?.unbind();
            *self.frozen.lock() = Some(t);
        }
        self.nesting.fetch_add(1, Relaxed);
        self.__call__(py)
    }

    #[pyo3(signature = (*_exc))]
    pub(super) fn __exit__(&self, _exc: &Bound<'_, PyTuple>) {
        let _ = self
            .nesting
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    pub(super) fn __copy__(&self, py: Python<'_>) -> PyResult<Timer> {
        Timer::wrap(py, self.inner.bind(py).clone())
    }

    pub(super) fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        PyTuple::new(
            py,
            [
                slf.get_type().into_any(),
                PyTuple::new(py, [slf.get().inner.bind(py)])?.into_any(),
            ],
        )
    }

    pub(super) fn __getattr__<'py>(
        &self,
        py: Python<'py>,
        name: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.inner.bind(py).getattr(name)
    }

    pub(super) fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.inner)?;
        if let Some(frozen) = self.frozen.try_lock()
            && let Some(t) = frozen.as_ref()
        {
            visit.call(t)?;
        }
        Ok(())
    }
}
