"""Instructions per call of a memoized function (valgrind's callgrind): ``leakguard.cached``
against ``functools.lru_cache``, cachebox's ``cached`` and cachetools' ``cached``.

For each decorator and kind of call, a child Python calls the decorated function over ``n``
keys under callgrind twice (``n`` = 20,000 and 60,000); the difference over 40,000 is the
cost of one call, setup excluded. The loop alone (``loop``) is measured the same way and
subtracted, so a figure is the call of the wrapper and what it does: build the key, look it
up, and on a miss call the function and store its result. Caches of 1,024 entries, int keys.

Calls: ``hit`` (``f(k)``, the key cached), ``hit kw`` (``f(k, scale=2)``), ``miss`` (a key
never seen: the function runs, its result is stored and the least recently used entry goes),
``mix`` (the keys of gunicorn_overhead.py's requests, skewed over 2,048: ~72% hits, so a
figure per request; the cache warmed with keys 0..1,023 first).

Usage: python benches/python/cached_instructions.py [--variants ...] [--calls ...]
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List

from cache_instructions import callgrind_instructions

CHILD = r"""
import functools, random, sys
variant, call, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZE = 1024

def price(sku, scale=1):
    return sku * scale

def decorate():
    if variant == "functools.lru_cache":
        return functools.lru_cache(maxsize=SIZE)(price)
    if variant.startswith("leakguard"):
        import leakguard
        name = "orders" if "named" in variant else None
        info = "info" in variant
        key = leakguard.typedkey if "typed" in variant else leakguard.hashkey
        return leakguard.cached(leakguard.LRUCache(SIZE, name=name), key=key, info=info)(price)
    if variant == "cachebox":
        import cachebox
        return cachebox.cached(cachebox.LRUCache(SIZE))(price)
    if variant == "cachetools":
        import cachetools
        return cachetools.cached(cachetools.LRUCache(SIZE))(price)
    raise SystemExit(f"unknown variant {variant}")

def main():
    f = decorate()
    keys = [(i * 7919) % SIZE for i in range(n)]
    other = [k + 10**9 for k in range(n)]
    # gunicorn_overhead.py's requests: a skewed key out of 2,048 (~72% hits in 1,024 entries).
    rng = random.Random(42)
    skewed = [int(2048 * rng.random() ** 3) for _ in range(n)]
    for k in range(SIZE):
        f(k)
        f(k, scale=2)
    if call == "loop":
        for k in keys: pass
    elif call == "hit":
        for k in keys: f(k)
    elif call == "hit kw":
        for k in keys: f(k, scale=2)
    elif call == "miss":
        for k in other: f(k)
    elif call == "mix":
        for k in skewed: f(k)
main()
"""

VARIANTS = [
    "functools.lru_cache",
    "leakguard named",
    "leakguard",
    "leakguard named info",
    "leakguard named typed",
    "cachebox",
    "cachetools",
]
CALLS = ["hit", "hit kw", "miss", "mix"]


def instructions(variant: str, call: str, n: int) -> int:
    return callgrind_instructions(CHILD, variant, call, str(n))


def per_call(variant: str, call: str) -> float:
    return (instructions(variant, call, 60_000) - instructions(variant, call, 20_000)) / 40_000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--calls", nargs="+", default=CALLS, choices=CALLS)
    args = parser.parse_args()
    table: Dict[str, Dict[str, float]] = {}
    for variant in args.variants:
        loop = per_call(variant, "loop")
        table[variant] = {c: per_call(variant, c) - loop for c in args.calls}
        print(f"{variant}: " + ", ".join(f"{c} {v:.0f}" for c, v in table[variant].items()),
              file=sys.stderr, flush=True)
    calls: List[str] = args.calls
    print("| decorator | " + " | ".join(f"{c} (instructions per call)" for c in calls) + " |")
    print("| --- | " + " | ".join("---:" for _ in calls) + " |")
    for variant, row in table.items():
        print(f"| `{variant}` | " + " | ".join(f"{row[c]:.0f}" for c in calls) + " |")


if __name__ == "__main__":
    main()
