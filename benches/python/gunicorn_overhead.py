"""Overhead of leakguard on a WSGI app under gunicorn (hooks, named cache, endpoint scraped every
second) against the same app without leakguard, driven by wrk (Debian package ``wrk``).

Run with the venv's interpreter, against a release build of the extension:

    .venv/bin/maturin build --release --manifest-path leakguard-py/Cargo.toml \\
        --interpreter .venv/bin/python --out target/wheels-release
    .venv/bin/pip install --force-reinstall --no-deps target/wheels-release/leakguard_oom-*.whl
    .venv/bin/python benches/python/gunicorn_overhead.py --rounds 10 --seconds 4

Three gunicorn servers run side by side on loopback, two sync workers each:

* ``bare``: no leakguard at all; the handler memoizes through ``functools.lru_cache(1024)``;
* ``bare_again``: a second ``bare`` server, the control: its ratio to ``bare`` is what this
  machine's noise alone makes of two identical servers;
* ``guarded``: ``gunicorn.conf.py`` imports leakguard's hooks (a guard per worker, sampling
  every second, a debug endpoint per worker that this script scrapes at ``/metrics`` every
  second, as Prometheus would); the handler memoizes through
  ``leakguard.cached(leakguard.LRUCache(1024, name="orders"))``, a cache the guard reports.

A request decodes a JSON body, looks a price up in the cache (a skewed key out of 2,048, so
both hits and misses), and renders a JSON answer. In every round each server gets ``--seconds``
of wrk, in an order that rotates every round (round 0 warms all up and is not counted). Per
round, a server's throughput and its requests per CPU second (the CPU time of its master and
workers, from ``/proc``, which other processes' load moves much less than throughput) are
divided by ``bare``'s of the same round; the verdict is on the medians of those ratios, target
>= 0.98 for both. FAIL (exit 1) when a target is missed by more than the control's noise floor;
PASS when it is met and the noise floor is within the target's margin (0.02); INCONCLUSIVE
(exit 2) otherwise. It also prints the CPU time of leakguard's own threads in the guarded
workers (the sampler and the endpoint's), and how many garbage collections a request causes
there (each runs leakguard's ``gc.callbacks`` entry, the one piece of leakguard that runs
Python code, on the worker's thread).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

TARGET = 0.98
SERVERS = ("bare", "bare_again", "guarded")

APP = '''
import functools, json, os

BODY_KEYS = ("user", "sku")

def price(sku: int) -> int:
    # Some work worth caching.
    return sum((sku * k) % 97 for k in range(200))

if os.environ.get("BENCH_GUARDED") == "1":
    import leakguard
    lookup = leakguard.cached(leakguard.LRUCache(maxsize=1024, name="orders"))(price)
else:
    lookup = functools.lru_cache(maxsize=1024)(price)

def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    payload = json.loads(environ["wsgi.input"].read(length) or b"{}")
    sku = int(payload.get("sku", 0)) % 2048
    body = json.dumps({"user": payload.get("user"), "sku": sku, "price": lookup(sku)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''

GUARDED_CONF = """
from leakguard.gunicorn import child_exit, post_fork, pre_fork, worker_exit  # noqa: F401
"""

# wrk posts a JSON body with a skewed sku (a few popular ones, a long tail over 2,048), so the
# caches of 1,024 entries see both hits and misses.
WRK_SCRIPT = """
math.randomseed(42)
request = function()
  local sku = math.floor(2048 * math.random() ^ 3)
  local body = '{"user": 42, "sku": ' .. sku .. '}'
  return wrk.format("POST", "/orders", {["Content-Type"] = "application/json"}, body)
end
"""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free (the endpoints of worker slots 0 and 1)."""
    for _ in range(100):
        base = free_port()
        if base >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    sys.exit("no two consecutive free ports on 127.0.0.1")


def stat_cpu(path: str) -> Tuple[float, str]:
    """utime + stime (seconds) and the name of a ``/proc/.../stat`` file; (0, "") if gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return 0.0, ""
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    # After the name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, head.partition("(")[2]


def children(pid: int) -> List[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Server(NamedTuple):
    name: str
    process: "subprocess.Popen[bytes]"
    port: int
    log: Path
    workers: List[int]

    def cpu(self) -> Tuple[float, float]:
        """CPU seconds of the master and its workers, and of leakguard's threads in them."""
        total = stat_cpu(f"/proc/{self.process.pid}/stat")[0]
        ours = 0.0
        for w in self.workers:
            total += stat_cpu(f"/proc/{w}/stat")[0]
            try:
                tasks = os.listdir(f"/proc/{w}/task")
            except OSError:
                continue
            for t in tasks:
                cpu, name = stat_cpu(f"/proc/{w}/task/{t}/stat")
                if name.startswith("leakguard"):
                    ours += cpu
        return total, ours


def wait_http(url: str, server: "subprocess.Popen[bytes]", log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            sys.exit("gunicorn died:\n" + log.read_text())
        try:
            urllib.request.urlopen(url, data=b'{"sku": 1}', timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"no answer from {url}:\n" + log.read_text())
            time.sleep(0.1)


def start(tmp: Path, name: str, guarded: bool, endpoint_base: int) -> Server:
    d = tmp / name
    d.mkdir()
    (d / "app.py").write_text(APP)
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
            "--chdir", str(d), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKGUARD_")}
    env["BENCH_GUARDED"] = "1" if guarded else "0"
    if guarded:
        (d / "gunicorn.conf.py").write_text(GUARDED_CONF)
        args[3:3] = ["-c", str(d / "gunicorn.conf.py")]
        env["LEAKGUARD_ADDR"] = f"127.0.0.1:{endpoint_base}"
        env["LEAKGUARD_LIMIT"] = "1GiB"
    log = d / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args + ["app:app"], env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/orders", process, log)
    deadline = time.monotonic() + 60
    while len(children(process.pid)) < 2:
        if time.monotonic() > deadline:
            sys.exit(f"{name}: gunicorn did not start its two workers:\n" + log.read_text())
        time.sleep(0.1)
    return Server(name, process, port, log, children(process.pid))


class Wrk(NamedTuple):
    requests: int
    rate: float
    p99_ms: float


def millis(text: str) -> float:
    for suffix, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    raise ValueError(text)


def wrk(wrk_bin: str, script: Path, port: int, seconds: int, connections: int) -> Wrk:
    out = subprocess.run(
        [wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}/orders"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    if rate is None or count is None or p99 is None or "Non-2xx" in out or "Socket errors" in out:
        sys.exit("wrk reported errors or no rate:\n" + out)
    return Wrk(int(count.group(1)), float(rate.group(1)), millis(p99.group(1)))


class Run(NamedTuple):
    wrk: Wrk
    cpu_us: float  # the server's CPU microseconds per request
    ours_s: float  # CPU seconds of leakguard's threads
    elapsed_s: float


def measure(server: Server, wrk_bin: str, script: Path, seconds: int, connections: int) -> Run:
    cpu0, ours0 = server.cpu()
    started = time.monotonic()
    w = wrk(wrk_bin, script, server.port, seconds, connections)
    elapsed = time.monotonic() - started
    cpu1, ours1 = server.cpu()
    return Run(w, (cpu1 - cpu0) * 1e6 / max(w.requests, 1), ours1 - ours0, elapsed)


def gc_collections(endpoint_base: int) -> int:
    """Garbage collections so far in the guarded workers (the report's python section)."""
    total = 0
    for slot in (0, 1):
        url = f"http://127.0.0.1:{endpoint_base + slot}/debug/leakguard"
        report = json.loads(urllib.request.urlopen(url, timeout=5).read())
        total += sum(report["python"]["gc"]["collections"])
    return total


def spread(ratios: List[float]) -> float:
    """The control's noise floor: max(|median - 1|, IQR / 2) of its per-round ratios."""
    if len(ratios) < 2:
        return float("inf")
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return max(abs(statistics.median(ratios) - 1), (q3 - q1) / 2)


def word(value: float, noise: float) -> str:
    """FAIL when the target is missed by more than the noise floor; PASS when it is met and
    the noise floor is within the margin; INCONCLUSIVE otherwise."""
    miss = TARGET - value
    if miss > noise:
        return "FAIL"
    if miss <= 0 and noise <= 1 - TARGET:
        return "PASS"
    return "INCONCLUSIVE"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10, help="measured rounds (default 10)")
    ap.add_argument("--seconds", type=int, default=4, help="seconds per wrk run (default 4)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    opts = ap.parse_args()
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        sys.exit("wrk is not on PATH (Debian: apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="leakguard-gunicorn-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        endpoint_base = free_port_pair()
        servers = [start(tmp, name, name == "guarded", endpoint_base) for name in SERVERS]
        # The scraper: every second, /metrics of each guarded worker, as Prometheus would.
        stop = threading.Event()
        scrapes = [0, 0]  # ok, failed

        def scraper() -> None:
            while not stop.wait(1.0):
                for slot in (0, 1):
                    try:
                        urllib.request.urlopen(
                            f"http://127.0.0.1:{endpoint_base + slot}/metrics", timeout=5
                        ).read()
                        scrapes[0] += 1
                    except OSError:
                        scrapes[1] += 1

        t = threading.Thread(target=scraper, daemon=True)
        t.start()
        runs: Dict[str, List[Run]] = {s.name: [] for s in servers}
        gc_before: Optional[int] = None
        try:
            for r in range(opts.rounds + 1):
                if r == 1:
                    gc_before = gc_collections(endpoint_base)
                order = servers[r % len(servers):] + servers[: r % len(servers)]
                for server in order:
                    run = measure(server, wrk_bin, script, opts.seconds, opts.connections)
                    if r > 0:  # round 0 warms all up
                        runs[server.name].append(run)
                print(f"round {r}: " + ", ".join(
                    f"{s.name} {runs[s.name][-1].wrk.rate:.0f} req/s {runs[s.name][-1].cpu_us:.0f} µs CPU/req"
                    for s in servers) if r > 0 else "round 0 (warm-up) done", flush=True)
            gc_after = gc_collections(endpoint_base)
            # The guard really ran: the cache is reported by a worker's endpoint.
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{endpoint_base}/metrics", timeout=5).read().decode()
            if 'leakguard_cache_hits_total{cache="orders"}' not in metrics:
                sys.exit("the guarded workers do not report the named cache:\n" + metrics[:2000])
        finally:
            stop.set()
            for s in servers:
                s.process.terminate()
            for s in servers:
                s.process.wait(timeout=60)

    bare = runs["bare"]

    def ratios(name: str, f: Callable[[Run], float]) -> List[float]:
        return [f(x) / f(b) for x, b in zip(runs[name], bare)]

    def rate(x: Run) -> float:
        return x.wrk.rate

    def per_cpu_second(x: Run) -> float:
        return 1 / x.cpu_us

    def show(values: List[float]) -> str:
        q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return f"{med:.3f} ({q1:.3f}–{q3:.3f})"

    print()
    print("| server | req/s (median) | p99 ms (median) | throughput / bare (median, IQR) | CPU µs per "
          "request (median) | requests per CPU second / bare (median, IQR) | leakguard's threads, "
          "CPU ms per second (all rounds) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in servers:
        rs = runs[s.name]
        print(f"| `{s.name}` | {statistics.median(x.wrk.rate for x in rs):.0f} | "
              f"{statistics.median(x.wrk.p99_ms for x in rs):.2f} | {show(ratios(s.name, rate))} | "
              f"{statistics.median(x.cpu_us for x in rs):.0f} | {show(ratios(s.name, per_cpu_second))} | "
              f"{sum(x.ours_s for x in rs) * 1e3 / sum(x.elapsed_s for x in rs):.2f} |")
    guarded_requests = sum(x.wrk.requests for x in runs["guarded"])
    collections = gc_after - (gc_before or 0)
    print(f"\ngarbage collections in the guarded workers: {collections} in {guarded_requests} requests "
          f"({collections / max(guarded_requests, 1):.2f} per request)")
    print(f"scrapes of the workers' /metrics: {scrapes[0]}, failed {scrapes[1]}")
    if scrapes[1]:
        print("a scrape failed: the guarded server did not carry the scraping load; no verdict")
        return 1
    noise_rate = spread(ratios("bare_again", rate))
    noise_cpu = spread(ratios("bare_again", per_cpu_second))
    print(f"noise floor (the control bare_again against bare: max(|median - 1|, IQR / 2)): "
          f"throughput ±{noise_rate:.3f}, requests per CPU second ±{noise_cpu:.3f}")
    status = 0
    for what, values, noise in (
        ("guarded: throughput ≥ 0.98× bare", ratios("guarded", rate), noise_rate),
        ("guarded: requests per CPU second ≥ 0.98× bare", ratios("guarded", per_cpu_second), noise_cpu),
    ):
        value = statistics.median(values)
        w = word(value, noise)
        if w == "FAIL":
            status = 1
        elif w == "INCONCLUSIVE" and status == 0:
            status = 2
        print(f"{w}: {what} (median ratio {value:.3f}; noise floor ±{noise:.3f})")
    return status


if __name__ == "__main__":
    sys.exit(main())
