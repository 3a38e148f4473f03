"""Overhead of leakguard on a WSGI app under gunicorn (hooks, named cache, endpoint scraped every
second) against the same app without leakguard, driven by wrk (Debian package ``wrk``).

Run with the venv's interpreter, against a release build of the extension:

    .venv/bin/maturin build --release --manifest-path leakguard-py/Cargo.toml \\
        --interpreter .venv/bin/python --out target/wheels-release
    .venv/bin/pip install --force-reinstall --no-deps target/wheels-release/leakguard_oom-*.whl
    .venv/bin/python benches/python/gunicorn_overhead.py --rounds 30 --seconds 4

Three gunicorn servers run side by side on loopback, two sync workers each:

* ``bare``: no leakguard at all; the handler memoizes through ``functools.lru_cache(1024)``;
* ``bare_again``: a second ``bare`` server, the control: two identical servers, whose ratio
  must come out as 1;
* ``guarded``: ``gunicorn.conf.py`` imports leakguard's hooks (a guard per worker, sampling
  every second, a debug endpoint per worker that this script scrapes at ``/metrics`` every
  second, as Prometheus would); the handler memoizes through
  ``leakguard.cached(leakguard.LRUCache(1024, name="orders"))``, a cache the guard reports.

A request decodes a JSON body, looks a price up in the cache (a skewed key out of 2,048, so
both hits and misses), and renders a JSON answer. The servers run on one CPU and wrk (one
per server) and this script on the others, as when the load comes from another machine.
Every round starts the three servers afresh (so that a process's own luck, its memory layout
and where its workers run, varies from round to round like the rest of the noise instead of
biasing a server for the whole run) and warms them up together with ``--warmup`` seconds of
wrk. Then ``bare_again`` and ``guarded``, in an order that rotates every round, are each
driven for ``--seconds`` side by side with ``bare``, the two sharing the CPU at the same
moment: whatever slows the machine down then (a neighbour on the host, the CPU's clock)
slows both, where runs one after the other differ by up to ±10 % on a shared virtual
machine. Per round, a server's throughput and its requests per CPU second (the run time of
its master's and workers' threads, from ``schedstat``; the cost per request, which is what
a server on a CPU of its own would be limited by) are divided by those of the ``bare`` it
ran beside; the verdict is on the medians of those ratios, target >= 0.98 for both. Each
median comes with a distribution-free 95% confidence interval (order statistics of the
rounds' ratios), which narrows as rounds are added: PASS when the whole interval meets the
target, FAIL (exit 1) when the whole interval misses it, INCONCLUSIVE (exit 2) when it
straddles the target or when the control's interval for the same ratio does not hold 1 (the
rounds were biased). At
least 6 rounds are needed for a verdict. It also prints the CPU time of leakguard's own
threads in the guarded workers (the sampler and the endpoint's), and how many garbage
collections a request causes there (each runs leakguard's ``gc.callbacks`` entry, the one
piece of leakguard that runs Python code, on the worker's thread).
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

from intervals import median_interval

TARGET = 0.98
SERVERS = ("bare", "bare_again", "guarded")
# The CPU the servers run on (the others run wrk and this script), when there are two or more.
SERVICE_CPU: Optional[int] = None

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
        # As the servers bind (Rust's and gunicorn's listeners set SO_REUSEADDR): a port whose
        # earlier connections wait in TIME_WAIT is free for them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free (the endpoints of worker slots 0 and 1), taken
    below the kernel's ephemeral range: gunicorn's sync workers close every connection, so
    wrk's client ports fill that range with TIME_WAIT sockets, where two free neighbours
    become rare."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(1000):
        base = rng.randrange(10_000, max(low - 1, 10_001))
        try:
            for port in (base, base + 1):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
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
        """CPU seconds of the master and its workers (every thread's run time from
        ``schedstat``, in nanoseconds), and of leakguard's threads in them."""
        total = ours = 0.0
        for pid in [self.process.pid, *self.workers]:
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for t in tasks:
                try:
                    ns = int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
                except (OSError, IndexError, ValueError):
                    continue
                total += ns / 1e9
                if stat_cpu(f"/proc/{pid}/task/{t}/stat")[1].startswith("leakguard"):
                    ours += ns / 1e9
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
    d.mkdir(parents=True)
    (d / "app.py").write_text(APP)
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
            "--chdir", str(d), "--log-level", "warning"]
    if SERVICE_CPU is not None:
        args[:0] = ["taskset", "-c", str(SERVICE_CPU)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKGUARD_")}
    env["BENCH_GUARDED"] = "1" if guarded else "0"
    if guarded:
        (d / "gunicorn.conf.py").write_text(GUARDED_CONF)
        args[args.index("--workers"):args.index("--workers")] = ["-c", str(d / "gunicorn.conf.py")]
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


def spawn_wrk(wrk_bin: str, script: Path, port: int, seconds: int, connections: int) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}/orders"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish_wrk(load: "subprocess.Popen[str]", seconds: int) -> Wrk:
    out, err = load.communicate(timeout=seconds + 60)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE)
    if (load.returncode != 0 or rate is None or count is None or p99 is None or "Non-2xx" in out
            or "Socket errors" in out):
        sys.exit("wrk reported errors or no rate:\n" + out + err)
    return Wrk(int(count.group(1)), float(rate.group(1)), millis(p99.group(1)))


class Run(NamedTuple):
    wrk: Wrk
    cpu_us: float  # the server's CPU microseconds per request
    ours_s: float  # CPU seconds of leakguard's threads
    elapsed_s: float


def measure_together(servers: List[Server], wrk_bin: str, script: Path, seconds: int, connections: int) -> List[Run]:
    """Drives the servers at once, each with its own wrk, and measures each."""
    before = [s.cpu() for s in servers]
    started = time.monotonic()
    loads = [spawn_wrk(wrk_bin, script, s.port, seconds, connections) for s in servers]
    results = [finish_wrk(load, seconds) for load in loads]
    elapsed = time.monotonic() - started
    after = [s.cpu() for s in servers]
    return [Run(w, (a[0] - b[0]) * 1e6 / max(w.requests, 1), a[1] - b[1], elapsed)
            for w, b, a in zip(results, before, after)]


def gc_collections(endpoint_base: int) -> int:
    """Garbage collections so far in the guarded workers (the report's python section)."""
    total = 0
    for slot in (0, 1):
        url = f"http://127.0.0.1:{endpoint_base + slot}/debug/leakguard"
        report = json.loads(urllib.request.urlopen(url, timeout=5).read())
        total += sum(report["python"]["gc"]["collections"])
    return total


def word(values: List[float], control: List[float]) -> str:
    """PASS when the median's whole interval meets the target, FAIL when it misses it whole,
    INCONCLUSIVE when it straddles it or the control's interval does not hold 1."""
    interval, control_interval = median_interval(values), median_interval(control)
    if interval is None or control_interval is None:
        return "INCONCLUSIVE"
    if not control_interval[0] <= 1 <= control_interval[1]:
        return "INCONCLUSIVE"
    if interval[0] >= TARGET:
        return "PASS"
    if interval[1] < TARGET:
        return "FAIL"
    return "INCONCLUSIVE"


def show(values: List[float]) -> str:
    """The median and its interval."""
    interval = median_interval(values)
    span = f"{interval[0]:.3f}–{interval[1]:.3f}" if interval else "-"
    return f"{statistics.median(values):.3f} ({span})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    ap.add_argument("--seconds", type=int, default=4, help="seconds per wrk run (default 4)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk to warm a server up (default 2)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    opts = ap.parse_args()
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        sys.exit("wrk is not on PATH (Debian: apt-get install wrk)")
    # The servers get a CPU of their own and wrk (and this script) the others, as when the
    # load comes from another machine.
    global SERVICE_CPU
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and shutil.which("taskset"):
        SERVICE_CPU = cpus[0]
        os.sched_setaffinity(0, set(cpus[1:]))
        print(f"servers on CPU {SERVICE_CPU}; wrk and this script on CPUs {cpus[1:]}", flush=True)

    with tempfile.TemporaryDirectory(prefix="leakguard-gunicorn-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        # The scraper: every second, /metrics of each guarded worker, as Prometheus would,
        # while the round's servers run (``base`` is their endpoints' first port, or None).
        stop = threading.Event()
        scrapes = [0, 0]  # ok, failed
        live: Dict[str, Optional[int]] = {"base": None}
        live_lock = threading.Lock()

        def scraper() -> None:
            while not stop.wait(1.0):
                with live_lock:
                    base = live["base"]
                    if base is None:
                        continue
                    for slot in (0, 1):
                        try:
                            urllib.request.urlopen(f"http://127.0.0.1:{base + slot}/metrics", timeout=5).read()
                            scrapes[0] += 1
                        except OSError:
                            scrapes[1] += 1

        t = threading.Thread(target=scraper, daemon=True)
        t.start()
        runs: Dict[str, List[Run]] = {name: [] for name in SERVERS}
        # paired_bare[name][round]: bare's run measured side by side with that server's.
        paired_bare: Dict[str, List[Run]] = {name: [] for name in SERVERS}
        collections = 0
        try:
            for r in range(opts.rounds):
                endpoint_base = free_port_pair()
                servers: List[Server] = []
                try:
                    for name in SERVERS:
                        servers.append(start(tmp / f"round-{r}", name, name == "guarded", endpoint_base))
                    with live_lock:
                        live["base"] = endpoint_base
                    measure_together(servers, wrk_bin, script, opts.warmup, opts.connections)
                    gc_before = gc_collections(endpoint_base)
                    # Each server side by side with ``bare``, sharing the service CPU at the
                    # same moment, in an order that rotates every round.
                    others = servers[1:]
                    for k in range(len(others)):
                        other = others[(k + r) % len(others)]
                        bare_run, other_run = measure_together(
                            [servers[0], other], wrk_bin, script, opts.seconds, opts.connections)
                        runs[other.name].append(other_run)
                        paired_bare[other.name].append(bare_run)
                        if k == 0:
                            runs["bare"].append(bare_run)
                            paired_bare["bare"].append(bare_run)
                    collections += gc_collections(endpoint_base) - gc_before
                    if r == opts.rounds - 1:
                        # The guard really ran: the cache is reported by a worker's endpoint.
                        metrics = urllib.request.urlopen(
                            f"http://127.0.0.1:{endpoint_base}/metrics", timeout=5).read().decode()
                        if 'leakguard_cache_hits_total{cache="orders"}' not in metrics:
                            sys.exit("the guarded workers do not report the named cache:\n" + metrics[:2000])
                finally:
                    with live_lock:
                        live["base"] = None
                    for s in servers:
                        s.process.terminate()
                    for s in servers:
                        s.process.wait(timeout=60)
                print(f"round {r + 1}/{opts.rounds}: " + ", ".join(
                    f"{name} {runs[name][-1].wrk.rate:.0f} req/s {runs[name][-1].cpu_us:.0f} µs CPU/req"
                    for name in SERVERS), flush=True)
        finally:
            stop.set()

    bare = runs["bare"]

    def ratios(name: str, f: Callable[[Run], float]) -> List[float]:
        return [f(x) / f(b) for x, b in zip(runs[name], paired_bare[name])]

    def rate(x: Run) -> float:
        return x.wrk.rate

    def per_cpu_second(x: Run) -> float:
        return 1 / x.cpu_us

    print()
    print("| server | req/s (median) | p99 ms (median) | throughput / bare | CPU µs per "
          "request (median) | requests per CPU second / bare | leakguard's threads, "
          "CPU ms per second (all rounds) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in SERVERS:
        rs = runs[name]
        print(f"| `{name}` | {statistics.median(x.wrk.rate for x in rs):.0f} | "
              f"{statistics.median(x.wrk.p99_ms for x in rs):.2f} | {show(ratios(name, rate))} | "
              f"{statistics.median(x.cpu_us for x in rs):.0f} | {show(ratios(name, per_cpu_second))} | "
              f"{sum(x.ours_s for x in rs) * 1e3 / sum(x.elapsed_s for x in rs):.2f} |")
    guarded_requests = sum(x.wrk.requests for x in runs["guarded"])
    print(f"\ngarbage collections in the guarded workers: {collections} in {guarded_requests} requests "
          f"({collections / max(guarded_requests, 1):.2f} per request)")
    print(f"scrapes of the workers' /metrics: {scrapes[0]}, failed {scrapes[1]}")
    if scrapes[1]:
        print("a scrape failed: the guarded server did not carry the scraping load; no verdict")
        return 1
    coverage = (median_interval(ratios("bare_again", rate)) or (0.0, 0.0, float("nan")))[2]
    print(f"ratios: the median over {len(bare)} rounds and its confidence interval ({coverage:.1%} "
          "coverage, distribution-free); the control bare_again must hold 1 in each interval")
    status = 0
    for what, values, control in (
        ("guarded: throughput ≥ 0.98× bare", ratios("guarded", rate), ratios("bare_again", rate)),
        ("guarded: requests per CPU second ≥ 0.98× bare", ratios("guarded", per_cpu_second),
         ratios("bare_again", per_cpu_second)),
    ):
        w = word(values, control)
        if w == "FAIL":
            status = 1
        elif w == "INCONCLUSIVE" and status == 0:
            status = 2
        print(f"{w}: {what} (median ratio {show(values)}; the control's {show(control)})")
    return status


if __name__ == "__main__":
    sys.exit(main())
