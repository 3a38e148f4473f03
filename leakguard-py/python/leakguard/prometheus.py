"""leakguard's metrics in an application's own ``prometheus_client`` registry.

>>> from prometheus_client import REGISTRY                      # doctest: +SKIP
>>> from leakguard.prometheus import LeakguardCollector          # doctest: +SKIP
>>> REGISTRY.register(LeakguardCollector())                      # doctest: +SKIP

The collector yields what the guard's ``GET /metrics`` serves (``leakguard_*`` families:
allocator bytes, limit, usage ratio, growth rate, OOM ETA, caches, handles, …), except the
``process_*`` families: ``prometheus_client``'s own ``ProcessCollector`` (registered by default)
exports those, and one registry cannot hold a name twice. Pass ``include_process=True`` for a
registry without ``ProcessCollector``. It adds the Python side: gc pause time and collections
(``leakguard_python_gc_*``, next to ``prometheus_client``'s ``python_gc_*``, which has no
pauses) and tracemalloc's traced bytes when it runs.

Nothing is collected while the guard does not run (``leakguard.start()``); the families appear
once it does. ``prometheus_client`` is needed only by this module.

**Several worker processes** (gunicorn): with prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set for the master and every worker), the gunicorn hooks make each
worker write its families to ``leakguard_<pid>_<worker>.prom`` in that directory every
sampling interval (and remove it when the worker exits; the hooks' ``child_exit`` removes the
file of a worker that died). The collector, in whichever worker answers the scrape, then yields
the families of every live worker, each sample with a ``worker`` label (the worker's slot,
``0`` … workers-1, which its successor reuses): the scraping worker's numbers are read at the
scrape, the others' are at most one interval old. Files of processes that no longer exist are
skipped. ``multiprocess_dir`` overrides the variable.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from leakguard import _guard

__all__ = ["LeakguardCollector", "WorkerExport"]

#: The files of the workers' families in the multiprocess directory.
_FILE = re.compile(r"^leakguard_(\d+)_([A-Za-z0-9_.-]{1,64})\.prom$")
#: At most this many worker files are read per scrape (a bound on a scrape's work).
MAX_WORKERS = 1024


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_file(directory: "os.PathLike[str] | str", pid: int, worker: str) -> Path:
    """The file where the worker process ``pid`` writes its families."""
    return Path(directory) / f"leakguard_{pid}_{worker}.prom"


class LeakguardCollector(Collector):
    """A ``prometheus_client`` collector of the running guard's metrics (see the module)."""

    def __init__(self, include_process: bool = False, multiprocess_dir: Optional[str] = None) -> None:
        """``multiprocess_dir``: the directory of the workers' files (default
        ``PROMETHEUS_MULTIPROC_DIR``); ``""`` collects this process only."""
        self.include_process = include_process
        self.multiprocess_dir = multiprocess_dir

    def collect(self) -> Iterator[Metric]:
        """This process's families, or in multiprocess mode every live worker's."""
        directory = self.multiprocess_dir
        if directory is None:
            directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            yield from self._collect_workers(directory)
        else:
            yield from self._collect_local()

    def _collect_workers(self, directory: str) -> Iterator[Metric]:
        """Every live worker's families, merged by name, with a ``worker`` label."""
        texts: List[Tuple[str, str]] = []
        me = os.getpid()
        mine = _worker_label()
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            names = []
        for name in names[:MAX_WORKERS * 4]:
            m = _FILE.match(name)
            if m is None:
                continue
            pid, worker = int(m.group(1)), m.group(2)
            if pid == me or not _alive(pid) or len(texts) >= MAX_WORKERS:
                continue
            try:
                texts.append((worker, (Path(directory) / name).read_text()))
            except OSError:
                continue  # removed meanwhile: the worker has just exited
        merged: Dict[str, Metric] = {}
        sources: List[Tuple[str, Iterable[Metric]]] = [(mine, self._collect_local())]
        sources += [(w, text_string_to_metric_families(text)) for w, text in texts]
        for worker, families in sources:
            try:
                for family in families:
                    if not self.include_process and family.name.startswith("process_"):
                        continue
                    out = merged.get(family.name)
                    if out is None:
                        out = Metric(family.name, family.documentation, family.type, family.unit)
                        merged[family.name] = out
                    for s in family.samples:
                        labels = dict(s.labels, worker=worker)
                        out.samples.append(Sample(s.name, labels, s.value, s.timestamp, s.exemplar))
            except ValueError:
                continue  # a file cut short by a crash: that worker is left out of this scrape
        yield from merged.values()

    def _collect_local(self) -> Iterator[Metric]:
        """The guard's families, read from its exposition at each scrape, and the Python ones."""
        guard = _guard._guard
        if guard is None or not guard.running():
            return
        for family in text_string_to_metric_families(guard.metrics()):
            if not self.include_process and family.name.startswith("process_"):
                continue
            yield family
        gc_stats = _guard.gc_stats()
        if gc_stats is not None:
            pauses = CounterMetricFamily(
                "leakguard_python_gc_pause_seconds",
                "Time the Python process spent in cyclic garbage collections.",
            )
            pauses.add_metric([], gc_stats["pause_seconds_total"])
            yield pauses
            longest = GaugeMetricFamily(
                "leakguard_python_gc_pause_max_seconds",
                "The longest garbage collection pause since the guard started.",
            )
            longest.add_metric([], gc_stats["pause_seconds_max"])
            yield longest
            collections = CounterMetricFamily(
                "leakguard_python_gc_collections",
                "Garbage collections since the guard started, by generation.",
                labels=["generation"],
            )
            for generation, n in enumerate(gc_stats["collections"]):
                collections.add_metric([str(generation)], n)
            yield collections
        status = _guard.tracemalloc_status()
        if status is not None and status["tracing"]:
            traced = GaugeMetricFamily(
                "leakguard_python_tracemalloc_traced_bytes",
                "Bytes of Python allocations that tracemalloc traces now.",
            )
            traced.add_metric([], status["traced_bytes"])
            yield traced


def _worker_label() -> str:
    """This process's ``worker`` label: its gunicorn slot when the hooks gave it one, else its
    pid."""
    slot = os.environ.get("LEAKGUARD_WORKER")
    return slot if slot and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", slot) else str(os.getpid())


class WorkerExport:
    """Writes this worker's families (with ``process_*``) to its file in the multiprocess
    directory every ``interval`` seconds, on a daemon thread; ``stop()`` ends it and removes
    the file. The gunicorn hooks run one per worker when ``PROMETHEUS_MULTIPROC_DIR`` is set."""

    def __init__(self, directory: str, interval: float = 1.0) -> None:
        self.path = worker_file(directory, os.getpid(), _worker_label())
        self.interval = interval
        self._stop = threading.Event()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(LeakguardCollector(include_process=True, multiprocess_dir=""))
        self._thread = threading.Thread(target=self._run, name="leakguard-prometheus-export", daemon=True)

    def start(self) -> "WorkerExport":
        self.write()
        self._thread.start()
        return self

    def write(self) -> None:
        """Writes the file once (through a temporary file and a rename: readers see a whole
        file or the previous one)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(generate_latest(self._registry))
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except OSError:
                pass  # the directory went away: the next write tries again

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        remove_worker_files(self.path.parent, os.getpid())


def remove_worker_files(directory: "os.PathLike[str] | str", pid: int) -> None:
    """Removes the files of worker ``pid`` (the hooks' ``child_exit`` calls it in the master)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = _FILE.match(name.removesuffix(".tmp"))
        if m is not None and int(m.group(1)) == pid:
            try:
                os.unlink(Path(directory) / name)
            except OSError:
                pass
