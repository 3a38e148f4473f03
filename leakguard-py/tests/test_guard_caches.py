"""Named Python caches under a running guard: in ``leakguard.report()`` and on the guard's
``/metrics`` over real HTTP, with their live counters, and gone once the cache is."""

from __future__ import annotations

import gc
import urllib.request
from typing import Any, Dict, Iterator, Optional

import pytest

import leakguard


@pytest.fixture
def endpoint() -> Iterator[str]:
    leakguard.start(addr="127.0.0.1:0", restart_action="none", read_env=False)
    try:
        addr = leakguard.endpoint_addr()
        assert addr is not None
        yield f"http://{addr}"
    finally:
        leakguard.stop()


def cache_in_report(name: str) -> Optional[Dict[str, Any]]:
    found = [c for c in leakguard.report()["caches"] if c["name"] == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def scrape(base: str) -> Dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        assert r.status == 200
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def test_a_named_cache_shows_in_the_report_and_on_metrics(endpoint: str) -> None:
    cache: leakguard.LRUCache[int, bytes] = leakguard.LRUCache(
        10, getsizeof=len, name="pytest-guarded"
    )
    for k in range(6):
        cache[k] = b"x" * k
    cache[5]
    cache.get(0)

    r = cache_in_report("pytest-guarded")
    assert r is not None
    assert (r["kind"], r["entries"], r["capacity"]) == ("lru", 2, 10)
    assert (r["hits"], r["misses"], r["inserts"]) == (1, 1, 6)
    assert r["weight_bytes"] == 4 + 5

    m = scrape(endpoint)
    assert m['leakguard_cache_entries{cache="pytest-guarded"}'] == 2
    assert m['leakguard_cache_hits_total{cache="pytest-guarded"}'] == 1
    assert m['leakguard_cache_misses_total{cache="pytest-guarded"}'] == 1
    assert m['leakguard_cache_inserts_total{cache="pytest-guarded"}'] == 6
    assert m['leakguard_cache_evictions_total{cache="pytest-guarded",cause="capacity"}'] >= 1

    cache[5]
    assert scrape(endpoint)['leakguard_cache_hits_total{cache="pytest-guarded"}'] == 2

    del cache
    gc.collect()
    assert cache_in_report("pytest-guarded") is None
    assert not any('cache="pytest-guarded"' in s for s in scrape(endpoint))
