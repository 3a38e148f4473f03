"""Guard overhead on a Python request loop, and tracemalloc mode's cost.

Run with the venv's interpreter, against a release build of the extension:

    .venv/bin/maturin build --release --manifest-path leakguard-py/Cargo.toml \
        --interpreter .venv/bin/python --out target/wheels-release
    .venv/bin/pip install --force-reinstall --no-deps target/wheels-release/leakguard_oom-*.whl
    .venv/bin/python benches/python/guard_overhead.py

A "request" is a small WSGI-style handler (parse a JSON body, build a few objects, render a
JSON answer). Each configuration runs ROUNDS rounds of ROUND_SECONDS, interleaved (A B C D A B
C D …) so that a noisy neighbour hurts every configuration alike; the medians of the rounds'
throughputs are compared with the guard-off median.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Tuple

import leakguard

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
ROUND_SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0

BODY = json.dumps({"user": 42, "items": [{"sku": f"A{i}", "qty": i} for i in range(20)]}).encode()


def handle(environ: Dict[str, Any]) -> bytes:
    """One request: decode, validate, compute, render."""
    payload = json.loads(environ["body"])
    items = [item for item in payload["items"] if item["qty"] > 0]
    total = sum(item["qty"] * 3 for item in items)
    answer = {"user": payload["user"], "count": len(items), "total": total, "path": environ["PATH_INFO"]}
    return json.dumps(answer).encode()


def round_throughput(seconds: float) -> float:
    """Requests per second over one round."""
    environ = {"PATH_INFO": "/orders", "body": BODY}
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            handle(environ)
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


Config = Tuple[str, Callable[[], None]]


def off() -> None:
    pass


def sampler(interval: float) -> Callable[[], None]:
    def go() -> None:
        leakguard.start(addr="off", interval=interval, limit="8GiB", read_env=False)

    return go


def sampler_tracemalloc(frames: int) -> Callable[[], None]:
    def go() -> None:
        leakguard.start(addr="off", interval=1.0, limit="8GiB", tracemalloc=frames, warmup=0.0, read_env=False)

    return go


def tracemalloc_alone() -> None:
    tracemalloc.start(1)


CONFIGS: List[Config] = [
    ("guard off", off),
    ("guard on, sampler every 1 s (default)", sampler(1.0)),
    ("guard on, sampler every 100 ms", sampler(0.1)),
    ("guard on + tracemalloc, 1 frame", sampler_tracemalloc(1)),
    ("guard on + tracemalloc, 16 frames", sampler_tracemalloc(16)),
    ("no guard, tracemalloc alone, 1 frame (for reference)", tracemalloc_alone),
]


def main() -> None:
    results: Dict[str, List[float]] = {name: [] for name, _ in CONFIGS}
    sampler_us: Dict[str, List[float]] = {name: [] for name, _ in CONFIGS}
    round_throughput(0.5)  # warm-up
    for _ in range(ROUNDS):
        for name, setup in CONFIGS:
            setup()
            gc.collect()
            try:
                results[name].append(round_throughput(ROUND_SECONDS))
                if leakguard.running():
                    sampler_us[name].append(leakguard.report()["sampler"]["last_duration_us"])
            finally:
                leakguard.stop()
                if tracemalloc.is_tracing():
                    tracemalloc.stop()
    base = statistics.median(results["guard off"])
    print(f"python {sys.version.split()[0]}, leakguard {leakguard.__version__}, "
          f"{ROUNDS} rounds x {ROUND_SECONDS:.1f} s per configuration, interleaved")
    print("| configuration | median req/s | min–max req/s | ratio to guard off | one sample, median µs |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in CONFIGS:
        xs = results[name]
        med = statistics.median(xs)
        us = f"{statistics.median(sampler_us[name]):,.0f}" if sampler_us[name] else "–"
        print(f"| {name} | {med:,.0f} | {min(xs):,.0f}–{max(xs):,.0f} | {med / base:.3f} | {us} |")


if __name__ == "__main__":
    main()
