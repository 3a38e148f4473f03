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
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from leakguard import _guard

__all__ = ["LeakguardCollector"]


class LeakguardCollector(Collector):
    """A ``prometheus_client`` collector of the running guard's metrics (see the module)."""

    def __init__(self, include_process: bool = False) -> None:
        self.include_process = include_process

    def collect(self) -> Iterator[Metric]:
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
