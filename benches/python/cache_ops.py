"""Cache operations: leakguard's LRUCache/TTLCache against cachetools' and functools.lru_cache.

Side by side in one run, interleaved (each round measures every contender once, in turn),
median over the rounds, in nanoseconds per operation. Each measurement is a Python loop over
keys (``for k in keys: c[k]``), so the loop's own cost, measured as ``loop only``, is part
of every figure; the ratios are of the raw figures.

leakguard's caches take their internal lock on every operation; cachetools' take none
(they are not thread-safe). Build leakguard in release mode first (``maturin build
--release`` and install the wheel, or ``maturin develop --release``).

Usage: python benches/python/cache_ops.py [--rounds 15] [--n 200000] [--json]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import cachetools

import leakguard

SIZE = 1000


def _loop_only(keys: List[int]) -> Callable[[], None]:
    def run() -> None:
        for k in keys:
            pass

    return run


def _get_hit(cache: Any, keys: List[int]) -> Callable[[], None]:
    for k in range(SIZE):
        cache[k] = k

    def run() -> None:
        c = cache
        for k in keys:
            c[k]

    return run


def _get_method(cache: Any, keys: List[int]) -> Callable[[], None]:
    for k in range(SIZE):
        cache[k] = k

    def run() -> None:
        get = cache.get
        for k in keys:
            get(k)

    return run


def _set_replace(cache: Any, keys: List[int]) -> Callable[[], None]:
    for k in range(SIZE):
        cache[k] = k

    def run() -> None:
        c = cache
        for k in keys:
            c[k] = k

    return run


def _set_evict(cache: Any, keys: List[int]) -> Callable[[], None]:
    # Keys never seen before: every set inserts and evicts the least recently used.
    counter = [10**9]

    def run() -> None:
        c = cache
        base = counter[0]
        for k in keys:
            c[base + k] = k
        counter[0] = base + len(keys) + 1

    for k in range(SIZE):
        cache[-k - 1] = k
    return run


def _lru_cache_hit(keys: List[int]) -> Callable[[], None]:
    @functools.lru_cache(maxsize=SIZE)
    def f(k: int) -> int:
        return k

    for k in range(SIZE):
        f(k)

    def run() -> None:
        for k in keys:
            f(k)

    return run


def _lru_cache_miss(keys: List[int]) -> Callable[[], None]:
    @functools.lru_cache(maxsize=SIZE)
    def f(k: int) -> int:
        return k

    counter = [10**9]

    def run() -> None:
        base = counter[0]
        for k in keys:
            f(base + k)
        counter[0] = base + len(keys) + 1

    return run


def contenders(keys: List[int]) -> Dict[str, Dict[str, Callable[[], None]]]:
    lg_lru = leakguard.LRUCache
    lg_ttl = leakguard.TTLCache
    ct_lru = cachetools.LRUCache
    ct_ttl = cachetools.TTLCache
    return {
        "loop only": {"-": _loop_only(keys)},
        "get hit (c[k])": {
            "leakguard.LRUCache": _get_hit(lg_lru(SIZE), keys),
            "cachetools.LRUCache": _get_hit(ct_lru(SIZE), keys),
            "leakguard.TTLCache": _get_hit(lg_ttl(SIZE, ttl=3600), keys),
            "cachetools.TTLCache": _get_hit(ct_ttl(SIZE, ttl=3600), keys),
            "functools.lru_cache (hit)": _lru_cache_hit(keys),
        },
        "get hit (c.get(k))": {
            "leakguard.LRUCache": _get_method(lg_lru(SIZE), keys),
            "cachetools.LRUCache": _get_method(ct_lru(SIZE), keys),
            "leakguard.TTLCache": _get_method(lg_ttl(SIZE, ttl=3600), keys),
            "cachetools.TTLCache": _get_method(ct_ttl(SIZE, ttl=3600), keys),
        },
        "set, key present (c[k] = v)": {
            "leakguard.LRUCache": _set_replace(lg_lru(SIZE), keys),
            "cachetools.LRUCache": _set_replace(ct_lru(SIZE), keys),
            "leakguard.TTLCache": _set_replace(lg_ttl(SIZE, ttl=3600), keys),
            "cachetools.TTLCache": _set_replace(ct_ttl(SIZE, ttl=3600), keys),
        },
        "set, new key, evicts (c[k] = v)": {
            "leakguard.LRUCache": _set_evict(lg_lru(SIZE), keys),
            "cachetools.LRUCache": _set_evict(ct_lru(SIZE), keys),
            "leakguard.TTLCache": _set_evict(lg_ttl(SIZE, ttl=3600), keys),
            "cachetools.TTLCache": _set_evict(ct_ttl(SIZE, ttl=3600), keys),
            "functools.lru_cache (miss)": _lru_cache_miss(keys),
        },
    }


def measure(rounds: int, n: int) -> Dict[str, Dict[str, Tuple[float, float]]]:
    # Keys cycle over the cache's 1000 entries in a scattered order.
    keys = [(i * 7919) % SIZE for i in range(n)]
    table = contenders(keys)
    samples: Dict[Tuple[str, str], List[float]] = {}
    gc.disable()
    try:
        for _ in range(rounds):
            for op, runs in table.items():
                for who, run in runs.items():
                    start = time.perf_counter_ns()
                    run()
                    elapsed = time.perf_counter_ns() - start
                    samples.setdefault((op, who), []).append(elapsed / n)
    finally:
        gc.enable()
    out: Dict[str, Dict[str, Tuple[float, float]]] = {}
    for (op, who), values in samples.items():
        out.setdefault(op, {})[who] = (statistics.median(values), min(values))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.rounds, args.n)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"Python {sys.version.split()[0]}, leakguard {leakguard.__version__}, "
        f"cachetools {cachetools.__version__}; {args.rounds} rounds of {args.n} operations "
        f"on caches of {SIZE} entries; ns/op, median and best; ratios: median (best)"
    )
    for op, row in results.items():
        print(f"\n{op}")
        for who, (med, best) in row.items():
            ratio = ""
            if who.startswith("cachetools."):
                mine = row.get(who.replace("cachetools.", "leakguard."))
                if mine:
                    ratio = (
                        f"   leakguard is {med / mine[0]:.2f}x ({best / mine[1]:.2f}x) faster"
                    )
            if who.startswith("functools.") and "leakguard.LRUCache" in row:
                mine = row["leakguard.LRUCache"]
                ratio = (
                    f"   leakguard.LRUCache time / this: {mine[0] / med:.2f} "
                    f"({mine[1] / best:.2f})"
                )
            print(f"  {who:30} {med:8.1f} {best:8.1f}{ratio}")


if __name__ == "__main__":
    main()
