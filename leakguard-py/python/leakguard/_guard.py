"""The guard of a Python process: ``start()``, ``stop()``, ``report()`` and the Python section.

The Rust guard samples the process on its own thread and serves the debug endpoint; it takes
the GIL only to call back into Python when a Python answer is asked for:

* the ``python`` section of the report (``gc`` counts, collections and pause durations measured
  through ``gc.callbacks``, tracemalloc's status);
* ``GET /debug/python/objects?limit=50``: live objects by type (walks ``gc.get_objects()``);
* ``GET /debug/python/tracemalloc?limit=20``: the source lines whose allocations grew most since
  the baseline snapshot (taken once the warm-up is over), when tracemalloc runs;
* ``POST /debug/leakguard/purge``: ``gc.collect()`` runs before glibc's ``malloc_trim(0)``.

glibc's ``mallinfo2`` (the report's ``allocator`` section) does not see CPython's small-object
allocator (pymalloc), which takes its arenas from the OS directly: the Python section and
tracemalloc are where Python objects show.
"""

from __future__ import annotations

import atexit
import collections
import gc
import json
import logging
import os
import socket
import threading
import time
import tracemalloc as _tracemalloc
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import parse_qs

from leakguard import _leakguard
from leakguard._leakguard import LeakguardError

Size = Union[int, str]
Seconds = Union[int, float, str]
Fraction = Union[float, str]
RestartAction = Union[str, Callable[[str], Any]]

#: How many recent gc pauses the report lists.
RECENT_PAUSES = 16
#: At most this many types / lines in the on-demand answers, whatever ``limit`` asks.
MAX_LIMIT = 500

PYMALLOC_NOTE = (
    "glibc mallinfo2 (the allocator section) does not see CPython's pymalloc arenas, where "
    "objects of up to 512 bytes live; they show in resident memory, in gc counts and in "
    "tracemalloc"
)


class _GcTotals(NamedTuple):
    """The numbers of ``GcStats`` at one moment; replaced whole, never changed in place."""

    collections: Tuple[int, int, int]
    collected: int
    uncollectable: int
    pause_seconds_total: float
    pause_seconds_max: float
    recent: Tuple[Dict[str, Any], ...]


class GcStats:
    """Collections and pause durations of the cyclic garbage collector, via ``gc.callbacks``.

    The callback does constant work per collection and keeps a bounded list of recent pauses.

    No lock: any allocation can start a collection whose callback runs on the same thread,
    in the middle of a reader (a lock held by the reader would then never be released). The
    callback is the only writer and never runs twice at once (collections do not nest or
    overlap: CPython runs them under its ``collecting`` flag and the GIL), so it builds new
    totals and publishes them with one attribute store; a reader takes ``self._totals`` once
    and sees one consistent set, old or new.
    """

    def __init__(self) -> None:
        self._started: Optional[float] = None
        self._totals = _GcTotals((0, 0, 0), 0, 0, 0.0, 0.0, ())

    def callback(self, phase: str, info: Dict[str, int]) -> None:
        """The ``gc.callbacks`` entry: times each collection from start to stop."""
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        started, self._started = self._started, None
        pause = now - started if started is not None else 0.0
        generation = int(info.get("generation", 0))
        collected = int(info.get("collected", 0))
        old = self._totals
        counts = list(old.collections)
        if 0 <= generation < 3:
            counts[generation] += 1
        entry = {
            "at": time.time(),
            "generation": generation,
            "seconds": pause,
            "collected": collected,
        }
        self._totals = _GcTotals(
            (counts[0], counts[1], counts[2]),
            old.collected + collected,
            old.uncollectable + int(info.get("uncollectable", 0)),
            old.pause_seconds_total + pause,
            max(old.pause_seconds_max, pause),
            (old.recent + (entry,))[-RECENT_PAUSES:],
        )

    def install(self) -> None:
        """Adds the callback to ``gc.callbacks`` (once)."""
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)

    def remove(self) -> None:
        """Takes the callback out of ``gc.callbacks``."""
        while self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def as_dict(self) -> Dict[str, Any]:
        """The numbers, with the interpreter's own counts and thresholds."""
        totals = self._totals
        return {
            "enabled": gc.isenabled(),
            "counts": list(gc.get_count()),
            "thresholds": list(gc.get_threshold()),
            "collections": list(totals.collections),
            "collected": totals.collected,
            "uncollectable": totals.uncollectable,
            "garbage": len(gc.garbage),
            "pause_seconds_total": totals.pause_seconds_total,
            "pause_seconds_max": totals.pause_seconds_max,
            "recent_pauses": [dict(p) for p in totals.recent],
        }


class Tracemalloc:
    """tracemalloc mode: tracing with ``frames`` frames, a baseline snapshot after the warm-up,
    and on demand the lines that grew most since then."""

    def __init__(self, frames: Optional[int], warmup: float) -> None:
        self.frames = frames
        self.warmup = warmup
        self.started_here = False
        self.baseline: Optional[_tracemalloc.Snapshot] = None
        self.baseline_at: Optional[float] = None
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Starts tracing (unless it runs already) and schedules the baseline."""
        if self.frames is None:
            return
        if not _tracemalloc.is_tracing():
            _tracemalloc.start(self.frames)
            self.started_here = True
        self._timer = threading.Timer(self.warmup, self.take_baseline)
        self._timer.daemon = True
        self._timer.name = "leakguard-tracemalloc-baseline"
        self._timer.start()

    def stop(self) -> None:
        """Cancels the baseline timer and stops tracing if it was started here."""
        if self._timer is not None:
            self._timer.cancel()
        if self.started_here and _tracemalloc.is_tracing():
            _tracemalloc.stop()
        self.started_here = False
        self.baseline = None

    def take_baseline(self) -> None:
        """Takes (or replaces) the baseline snapshot."""
        if not _tracemalloc.is_tracing():
            return
        snapshot = _filtered(_tracemalloc.take_snapshot())
        with self._lock:
            self.baseline = snapshot
            self.baseline_at = time.time()

    def status(self) -> Dict[str, Any]:
        """Tracing or not, frames, traced and peak bytes, when the baseline was taken."""
        tracing = _tracemalloc.is_tracing()
        current, peak = _tracemalloc.get_traced_memory() if tracing else (0, 0)
        return {
            "tracing": tracing,
            "frames": _tracemalloc.get_traceback_limit() if tracing else self.frames,
            "traced_bytes": current,
            "peak_bytes": peak,
            "overhead_bytes": _tracemalloc.get_tracemalloc_memory() if tracing else 0,
            "baseline_at": self.baseline_at,
            "warmup_seconds": self.warmup if self.frames is not None else None,
        }

    def top(self, limit: int) -> Dict[str, Any]:
        """The ``limit`` lines whose allocations grew most since the baseline (or the largest
        lines, while there is no baseline yet)."""
        if not _tracemalloc.is_tracing():
            return {
                "tracing": False,
                "error": "tracemalloc is off: start leakguard with tracemalloc=N (frames)",
                "top": [],
            }
        now = _filtered(_tracemalloc.take_snapshot())
        with self._lock:
            baseline = self.baseline
        if baseline is None:
            rows = [
                {
                    "file": s.traceback[0].filename,
                    "line": s.traceback[0].lineno,
                    "size_bytes": s.size,
                    "count": s.count,
                    "size_diff_bytes": None,
                    "count_diff": None,
                }
                for s in now.statistics("lineno")[:limit]
            ]
        else:
            # compare_to sorts by the size of the change either way: lines that shrank are
            # left out, they are not growing.
            grown = [d for d in now.compare_to(baseline, "lineno") if d.size_diff > 0]
            rows = [
                {
                    "file": d.traceback[0].filename,
                    "line": d.traceback[0].lineno,
                    "size_bytes": d.size,
                    "count": d.count,
                    "size_diff_bytes": d.size_diff,
                    "count_diff": d.count_diff,
                }
                for d in grown[:limit]
            ]
        return {
            "tracing": True,
            "baseline_at": self.baseline_at,
            "compared_to": "baseline" if baseline is not None else "nothing yet (largest lines)",
            "top": rows,
        }


def _filtered(snapshot: _tracemalloc.Snapshot) -> _tracemalloc.Snapshot:
    """Leaves out tracemalloc's own allocations and the import machinery."""
    return snapshot.filter_traces(
        (
            _tracemalloc.Filter(False, _tracemalloc.__file__),
            _tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            _tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            _tracemalloc.Filter(False, "<unknown>"),
        )
    )


def objects_by_type(limit: int) -> Dict[str, Any]:
    """Objects that the garbage collector tracks, counted by type, most numerous first."""
    counts: Dict[str, int] = collections.Counter()
    objects = gc.get_objects()
    for obj in objects:
        cls = type(obj)
        counts[f"{cls.__module__}.{cls.__qualname__}"] += 1
    total = len(objects)
    del objects
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return {
        "tracked_objects": total,
        "types": len(counts),
        "top": [{"type": name, "count": n} for name, n in top],
        "note": "objects the cyclic gc tracks (containers, instances); ints, strs and other "
        "atomic objects are not tracked and do not appear",
    }


def _limit(query: str, default: int) -> int:
    values = parse_qs(query).get("limit")
    if not values:
        return default
    n = int(values[-1])  # ValueError: answered as 400 below
    if n < 1:
        raise ValueError("limit must be >= 1")
    return min(n, MAX_LIMIT)


class _PythonLayer:
    """What the Python side adds to one guard: gc stats, tracemalloc, routes, section, hook."""

    def __init__(self, tracemalloc_frames: Optional[int], warmup: float) -> None:
        self.gc = GcStats()
        self.tracemalloc = Tracemalloc(tracemalloc_frames, warmup)

    def section(self) -> str:
        return json.dumps(
            {
                "gc": self.gc.as_dict(),
                "tracemalloc": self.tracemalloc.status(),
                "pid": os.getpid(),
                "threads": threading.active_count(),
                "note": PYMALLOC_NOTE,
            }
        )

    def purge(self) -> str:
        started = time.perf_counter()
        unreachable = gc.collect()
        return json.dumps(
            {"gc_collected": unreachable, "gc_seconds": time.perf_counter() - started}
        )

    def objects_route(self, method: str, path: str, query: str) -> Tuple[int, str, str]:
        return _answer(lambda: objects_by_type(_limit(query, 50)))

    def tracemalloc_route(self, method: str, path: str, query: str) -> Tuple[int, str, str]:
        return _answer(lambda: self.tracemalloc.top(_limit(query, 20)))

    def routes(self) -> List[Tuple[str, List[str], Callable[[str, str, str], Tuple[int, str, str]]]]:
        return [
            ("/debug/python/objects", ["GET", "HEAD"], self.objects_route),
            ("/debug/python/tracemalloc", ["GET", "HEAD"], self.tracemalloc_route),
        ]


def _answer(make: Callable[[], Dict[str, Any]]) -> Tuple[int, str, str]:
    try:
        return 200, "json", json.dumps(make())
    except ValueError as e:
        return 400, "json", json.dumps({"error": f"bad query: {e}", "status": 400})


_lock = threading.Lock()
_guard: Optional[_leakguard.Guard] = None
_layer: Optional[_PythonLayer] = None
#: Who started the running guard when it was not the application: "the gunicorn hooks".
_owner: Optional[str] = None
#: Whether the application's ignored start() was logged already (once per process).
_said_ignored = False

#: The guard's events (threshold changes, leak verdicts, restarts, ...) and the hooks' notes.
log = logging.getLogger("leakguard")
_LEVELS = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def _log_event(level: str, kind: str, message: str) -> None:
    """The guard's event callback (on the guard's thread): one record on logger ``leakguard``,
    with the event's kind as ``record.leakguard_kind``."""
    log.log(_LEVELS.get(level, logging.WARNING), "%s", message, extra={"leakguard_kind": kind})


def start(
    limit: Optional[Size] = None,
    addr: Optional[str] = None,
    interval: Optional[Seconds] = None,
    restart: Optional[Fraction] = None,
    tracemalloc: Optional[int] = None,
    *,
    warn: Optional[Fraction] = None,
    critical: Optional[Fraction] = None,
    restart_action: Optional[RestartAction] = None,
    min_uptime: Optional[Seconds] = None,
    token: Optional[str] = None,
    drain_delay: Optional[Seconds] = None,
    drain_timeout: Optional[Seconds] = None,
    max_restarts_per_hour: Optional[int] = None,
    warmup: float = 60.0,
    read_env: bool = True,
) -> None:
    """Start the guard of this process (one per process).

    The arguments mirror the Rust builder and the ``LEAKGUARD_*`` environment variables, which
    override them (as in Rust) unless ``read_env`` is False:

    * ``limit``: the memory limit, bytes or a size such as ``"512MiB"`` (``LEAKGUARD_LIMIT``;
      default the cgroup's);
    * ``addr``: the debug endpoint, ``"127.0.0.1:6464"`` (the default) or ``"off"``
      (``LEAKGUARD_ADDR``);
    * ``interval``: seconds between samples or ``"250ms"`` (``LEAKGUARD_INTERVAL``, 1 s);
    * ``warn``, ``critical``, ``restart``: the thresholds as fractions of the limit (0.80,
      0.90, 0.95; ``LEAKGUARD_WARN`` …);
    * ``restart_action``: ``"reexec"`` (the default), ``"exit[:code]"``, ``"signal[:NAME]"``,
      ``"none"`` (``LEAKGUARD_RESTART_ACTION``), or a callable ``f(reason)`` called after the
      drain (on a thread of leakguard's); ``min_uptime`` (``LEAKGUARD_MIN_UPTIME``, 60 s);
    * ``token`` for the mutating endpoints (``LEAKGUARD_TOKEN``); ``drain_delay`` (5 s),
      ``drain_timeout`` (30 s), ``max_restarts_per_hour`` (3);
    * ``tracemalloc``: trace Python allocations with this many frames, take the baseline
      snapshot after ``warmup`` seconds, and serve ``/debug/python/tracemalloc``.

    Events (threshold changes, leak verdicts, restarts) are logged on the ``logging`` logger
    ``leakguard`` (info, warning, error as the event's level says).

    In a gunicorn worker whose guard the hooks of ``leakguard.gunicorn`` started, the hooks'
    guard wins: this call does nothing and says so once in the log (its arguments are not
    applied; the worker's guard takes its settings from the ``LEAKGUARD_*`` variables).

    Raises:
        ConfigError: a setting (argument or variable) cannot be understood; nothing starts.
        LeakguardError: the guard runs already (call ``stop()`` first).
    """
    global _guard, _layer, _said_ignored
    if tracemalloc is not None and (isinstance(tracemalloc, bool) or tracemalloc < 1):
        raise ValueError(f"tracemalloc must be a number of frames >= 1, not {tracemalloc!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 seconds, not {warmup!r}")
    with _lock:
        if _guard is not None and _guard.running():
            if _owner is not None:
                if not _said_ignored:
                    _said_ignored = True
                    log.warning(
                        "leakguard.start() ignored in process %s: %s run its guard already; "
                        "it takes its settings from the LEAKGUARD_* variables",
                        os.getpid(),
                        _owner,
                    )
                return
            raise LeakguardError("leakguard runs already in this process: call stop() first")
        layer = _PythonLayer(tracemalloc, warmup)
        action: Optional[str] = None
        on_restart: Optional[Callable[[str], Any]] = None
        if callable(restart_action):
            on_restart = restart_action
        else:
            action = restart_action
        guard = _leakguard.start_guard(
            limit=limit,
            addr=addr,
            interval=interval,
            warn=warn,
            critical=critical,
            restart=restart,
            restart_action=action,
            on_restart=on_restart,
            min_uptime=min_uptime,
            token=token,
            drain_delay=drain_delay,
            drain_timeout=drain_timeout,
            max_restarts_per_hour=max_restarts_per_hour,
            read_env=read_env,
            routes=layer.routes(),
            report_sections=[("python", layer.section)],
            purge_hooks=[("python", layer.purge)],
            on_event=_log_event,
        )
        layer.gc.install()
        layer.tracemalloc.start()
        _guard, _layer = guard, layer


def stop() -> None:
    """Stop the guard: its thread and endpoint end, tracemalloc (if leakguard started it)
    stops, the gc callback is removed. Does nothing when the guard does not run."""
    global _guard, _layer, _owner
    with _lock:
        guard, layer = _guard, _layer
        _guard, _layer, _owner = None, None, None
    if guard is not None:
        guard.stop()
    if layer is not None:
        layer.gc.remove()
        layer.tracemalloc.stop()


def running() -> bool:
    """Whether the guard runs in this process."""
    guard = _guard
    return guard is not None and guard.running()


def _current() -> _leakguard.Guard:
    guard = _guard
    if guard is None:
        raise LeakguardError("leakguard is not running: call leakguard.start() first")
    return guard


def report() -> Dict[str, Any]:
    """The report as a dict: what ``GET /debug/leakguard`` serves, with the ``python`` section.

    Raises:
        LeakguardError: the guard does not run.
    """
    return _current().report()


def metrics() -> str:
    """The Prometheus text exposition of the guard (what ``GET /metrics`` serves)."""
    return _current().metrics()


def endpoint_addr() -> Optional[str]:
    """``"host:port"`` of the debug endpoint, or None when it is off or could not bind."""
    return _current().endpoint_addr()


def restart_now(reason: str = "requested by the application") -> None:
    """Start a graceful restart now (readiness off, drain, then the restart action).

    Raises:
        LeakguardError: refused (one is under way, or the per-hour limit is reached).
    """
    _current().restart_now(reason)


def gc_stats() -> Optional[Dict[str, Any]]:
    """The gc numbers of the ``python`` section, or None when the guard does not run."""
    layer = _layer
    return layer.gc.as_dict() if layer is not None else None


def tracemalloc_status() -> Optional[Dict[str, Any]]:
    """tracemalloc's status as the report shows it, or None when the guard does not run."""
    layer = _layer
    return layer.tracemalloc.status() if layer is not None else None


# A forked child has a copy of the parent's guard object but none of its threads: the copy is
# let go (the extension forgets it, in a process other than the one that started it, without
# stopping or joining anything) and the child may start its own.
def _forget_after_fork() -> None:
    global _guard, _layer, _owner, _said_ignored
    if _layer is not None:
        _layer.gc.remove()
    _guard, _layer, _owner, _said_ignored = None, None, None, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

# Stop the Rust threads before the interpreter finalizes: a callback into Python must never
# meet a finalizing interpreter.
atexit.register(stop)


def listener(name: str, addr: str) -> "socket.socket":
    """A listening TCP socket that survives a ``reexec`` restart.

    After a re-exec the socket is the one inherited from the previous image (``LISTEN_FDS``),
    so connections that arrived meanwhile wait in its backlog and none is refused; otherwise a
    new socket bound to ``addr`` (``"127.0.0.1:8080"``). Either way it is kept under ``name``
    for the next handover. For single-process servers (``wsgiref``, ``http.server``, an asyncio
    server given ``sock=``); under gunicorn the master owns the sockets.

    Raises:
        LeakguardError: the address cannot be bound.
        ConfigError: the name is empty, has ``:``, or more than 64 are kept.
    """
    fd = _leakguard.listener(name, addr)
    return socket.socket(fileno=fd)
