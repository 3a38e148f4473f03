"""Does leakguard's thread take the GIL to sample, or to answer a ``/metrics`` scrape?

Run with the venv's interpreter, against a release build of the extension (see
``gunicorn_overhead.py``):

    .venv/bin/python benches/python/gil_hold.py

The guard runs in this process (sampling every 100 ms, the endpoint on loopback). The main
thread then holds the GIL for ``HOLD`` seconds without ever releasing it (one C call: sorting
a few million ints, in which CPython neither runs bytecode nor drops the GIL), while a child
process scrapes ``/metrics`` every 50 ms and times each answer. A scrape that needed the GIL
would wait for the whole hold; one that does not answers in about a millisecond. The samples
taken during the hold are counted too (``leakguard_samples_total`` before and after). As a
positive control, the report (``GET /debug/leakguard``, whose ``python`` section is Python code)
is fetched during a second hold and must wait for it: that shows the method sees a GIL wait.

Exit status 1 when a scrape or a sample waited for the GIL, or the control did not.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import urllib.request

import leakguard

HOLD = 1.5
# Scrapes `url` every 50 ms for `seconds`; prints each answer's latency in ms, one per line.
SCRAPER = """
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter()
    urllib.request.urlopen(url, timeout=30).read()
    print(f"{(time.perf_counter() - t) * 1e3:.3f}", flush=True)
    time.sleep(0.05)
"""


def samples(addr: str) -> int:
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    m = re.search(r"^leakguard_samples_total(?:\{[^}]*\})? (\d+)", text, re.MULTILINE)
    if m is None:
        sys.exit("no leakguard_samples_total in /metrics")
    return int(m.group(1))


def hold_gil(values: list[int]) -> float:
    """Holds the GIL for one sort; returns how long it took, seconds."""
    t = time.perf_counter()
    sorted(values)
    return time.perf_counter() - t


def during_hold(url: str, values: list[int]) -> tuple[list[float], float]:
    """Latencies (ms) of the scrapes that a child made while this thread held the GIL, and
    the hold's duration."""
    child = subprocess.Popen(
        [sys.executable, "-c", SCRAPER, url, str(HOLD + 1.0)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    child.stdout.readline()  # ready
    time.sleep(0.3)  # a few scrapes before the hold, to warm the child's connection path
    held = hold_gil(values)
    out, _ = child.communicate(timeout=60)
    return [float(x) for x in out.split()], held


def main() -> int:
    leakguard.start(addr="127.0.0.1:0", interval="100ms", limit="1GiB", read_env=False)
    addr = leakguard.endpoint_addr()
    assert addr is not None
    # A sort of this many shuffled ints takes about HOLD seconds here.
    n = 500_000
    values = list(range(n))
    random.Random(1).shuffle(values)
    while hold_gil(values) < HOLD:
        n *= 2
        values = list(range(n))
        random.Random(1).shuffle(values)

    before = samples(addr)
    t0 = time.monotonic()
    metrics, held = during_hold(f"http://{addr}/metrics", values)
    during = samples(addr) - before
    elapsed = time.monotonic() - t0
    report, held2 = during_hold(f"http://{addr}/debug/leakguard", values)
    leakguard.stop()

    worst_metrics = max(metrics)
    worst_report = max(report)
    print(json.dumps({
        "gil_held_seconds": [round(held, 3), round(held2, 3)],
        "metrics_scrapes": len(metrics),
        "metrics_latency_ms_max": worst_metrics,
        "metrics_latency_ms_median": sorted(metrics)[len(metrics) // 2],
        "samples_during_first_hold_window": during,
        "window_seconds": round(elapsed, 3),
        "report_latency_ms_max (control, needs the GIL)": worst_report,
    }, indent=1))
    ok = True
    if worst_metrics > held * 1e3 / 2:
        print(f"FAIL: a /metrics scrape waited {worst_metrics:.0f} ms while the GIL was held "
              f"{held * 1e3:.0f} ms")
        ok = False
    # 100 ms interval: a sampler that waited for the GIL would take at most ~1-2 in the window.
    if during < int(elapsed / 0.1) // 2:
        print(f"FAIL: {during} samples in {elapsed:.1f} s at a 100 ms interval")
        ok = False
    if worst_report < held2 * 1e3 / 4:
        print("FAIL (the control): the report did not wait for the GIL; the method sees nothing")
        ok = False
    if ok:
        print(f"PASS: no scrape of /metrics nor sample waited for the GIL held by the "
              f"application ({len(metrics)} scrapes, worst {worst_metrics:.1f} ms; {during} "
              f"samples); the report's python section did ({worst_report:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
