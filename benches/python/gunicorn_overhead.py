"""Throughput of a WSGI app under gunicorn with leakguard (hooks, named cache, endpoint scraped
every second) against the same app without leakguard, driven by wrk (Debian package ``wrk``).

Run with the venv's interpreter, against a release build of the extension:

    .venv/bin/maturin build --release --manifest-path leakguard-py/Cargo.toml \\
        --interpreter .venv/bin/python --out target/wheels-release
    .venv/bin/pip install --force-reinstall --no-deps target/wheels-release/leakguard_oom-*.whl
    .venv/bin/python benches/python/gunicorn_overhead.py --rounds 9 --seconds 5

Two gunicorn servers run side by side on loopback, two sync workers each:

* ``guarded``: ``gunicorn.conf.py`` imports leakguard's hooks (a guard per worker, sampling
  every second, a debug endpoint per worker that this script scrapes at ``/metrics`` every
  second, as Prometheus would); the handler memoizes through
  ``leakguard.cached(leakguard.LRUCache(1024, name="orders"))``, a cache the guard reports;
* ``bare``: no leakguard at all; the handler memoizes through ``functools.lru_cache(1024)``.

A request decodes a JSON body, looks a price up in the cache (a skewed key out of 2,048, so
both hits and misses), and renders a JSON answer. wrk runs ``--seconds`` per round, the two servers
interleaved (bare, guarded, bare, guarded, ...; the first round of each is a warm-up and not
counted), so a noisy neighbour hurts both alike. The result is the ratio of the medians of the
rounds' requests per second, guarded / bare; the target is >= 0.98. Exit status 1 on a miss.
"""

from __future__ import annotations

import argparse
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
from typing import Dict, List

TARGET = 0.98

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


def wait_http(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
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


def start(tmp: Path, name: str, guarded: bool, endpoint_base: int) -> "tuple[subprocess.Popen[bytes], int, Path]":
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
        server = subprocess.Popen(args + ["app:app"], env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/orders", server, log)
    return server, port, log


def wrk(wrk_bin: str, script: Path, port: int, seconds: int, connections: int) -> float:
    out = subprocess.run(
        [wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}/orders"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None or "Non-2xx" in out or "Socket errors" in out:
        sys.exit("wrk reported errors or no rate:\n" + out)
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="measured rounds per server (default 9)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per wrk round (default 5)")
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
        servers = {
            "bare": start(tmp, "bare", False, 0),
            "guarded": start(tmp, "guarded", True, endpoint_base),
        }
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
        rates: Dict[str, List[float]] = {"bare": [], "guarded": []}
        try:
            for r in range(opts.rounds + 1):
                for name in ("bare", "guarded") if r % 2 == 0 else ("guarded", "bare"):
                    rate = wrk(wrk_bin, script, servers[name][1], opts.seconds, opts.connections)
                    if r > 0:  # round 0 warms both up
                        rates[name].append(rate)
                    print(f"round {r} {name:8} {rate:9.0f} req/s" + (" (warm-up)" if r == 0 else ""), flush=True)
            # The guard really ran: the cache is reported by a worker's endpoint.
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{endpoint_base}/metrics", timeout=5).read().decode()
            if 'leakguard_cache_hits_total{cache="orders"}' not in metrics:
                sys.exit("the guarded workers do not report the named cache:\n" + metrics[:2000])
        finally:
            stop.set()
            for server, _, _ in servers.values():
                server.terminate()
            for server, _, _ in servers.values():
                server.wait(timeout=60)

    bare = statistics.median(rates["bare"])
    guarded = statistics.median(rates["guarded"])
    ratio = guarded / bare
    print()
    print(f"| server | median req/s | rounds (req/s) |")
    print(f"| --- | --- | --- |")
    for name, med in (("bare", bare), ("guarded", guarded)):
        print(f"| {name} | {med:.0f} | {', '.join(f'{x:.0f}' for x in rates[name])} |")
    if scrapes[1]:
        print(f"\n{scrapes[1]} of {sum(scrapes)} scrapes of the workers' /metrics failed: "
              "the guarded server did not carry the scraping load; no verdict")
        return 1
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print(f"\nguarded / bare = {ratio:.3f} (target >= {TARGET}): {verdict}; "
          f"{scrapes[0]} scrapes of the workers' /metrics, {scrapes[1]} failed")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
