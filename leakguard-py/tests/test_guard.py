"""leakguard.start/stop/report and the endpoint over real HTTP, in this interpreter and in
child interpreters (for the environment, the restart actions and re-exec)."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import leakguard

MiB = 2**20
TOKEN = "s3cret"


def http(
    url: str, method: str = "GET", token: Optional[str] = None, timeout: float = 30.0
) -> Tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    text = body.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture
def guard() -> Iterator[str]:
    """A running guard with its endpoint on a free port and tracemalloc on; its base URL."""
    leakguard.start(
        limit="8GiB",
        addr="127.0.0.1:0",
        interval=0.1,
        tracemalloc=8,
        warmup=0.0,
        token=TOKEN,
        restart_action="none",
        read_env=False,
    )
    try:
        addr = leakguard.endpoint_addr()
        assert addr is not None
        yield f"http://{addr}"
    finally:
        leakguard.stop()


class Leaky:
    """A type of this test module, to be found among the live objects by name."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_report_has_the_core_sections_and_the_python_section(guard: str) -> None:
    report = leakguard.report()
    assert report["memory"]["resident_bytes"] > MiB
    assert report["limit"]["bytes"] == 8 * 2**30
    assert report["allocator"]["kind"] == "glibc"
    assert report["state"] == "normal"
    python = report["python"]
    assert python["pid"] == os.getpid()
    assert python["gc"]["thresholds"] == list(gc.get_threshold())
    assert python["tracemalloc"]["tracing"] is True
    assert python["tracemalloc"]["frames"] == 8
    assert "pymalloc" in python["note"]


def test_gc_collections_and_pauses_are_counted(guard: str) -> None:
    before = leakguard.report()["python"]["gc"]
    for _ in range(3):
        gc.collect()
    after = leakguard.report()["python"]["gc"]
    assert after["collections"][2] >= before["collections"][2] + 3
    assert after["pause_seconds_total"] > before["pause_seconds_total"]
    assert after["pause_seconds_max"] > 0
    assert len(after["recent_pauses"]) >= 3
    assert after["recent_pauses"][-1]["generation"] == 2


def test_endpoint_serves_the_same_report_over_http(guard: str) -> None:
    status, body = http(f"{guard}/debug/leakguard")
    assert status == 200
    assert body["python"]["pid"] == os.getpid()
    assert body["endpoint"] == guard.removeprefix("http://")
    status, text = http(f"{guard}/metrics")
    assert status == 200
    assert "process_resident_memory_bytes" in text
    assert http(f"{guard}/healthz")[0] == 200


def test_objects_by_type_on_demand(guard: str) -> None:
    held = [Leaky(i) for i in range(5000)]
    status, body = http(f"{guard}/debug/python/objects?limit=10", token=TOKEN)
    assert status == 200
    assert len(body["top"]) == 10
    assert body["tracked_objects"] >= 5000
    counts = [row["count"] for row in body["top"]]
    assert counts == sorted(counts, reverse=True)
    name = f"{Leaky.__module__}.{Leaky.__qualname__}"
    status, body = http(f"{guard}/debug/python/objects?limit=500", token=TOKEN)
    found = {row["type"]: row["count"] for row in body["top"]}
    assert found.get(name, 0) >= 5000, body["top"][:20]
    assert len(held) == 5000
    assert http(f"{guard}/debug/python/objects?limit=zero", token=TOKEN)[0] == 400
    assert http(f"{guard}/debug/python/objects", method="POST", token=TOKEN)[0] == 405


def grow_here(n: int) -> List[bytes]:
    return [i.to_bytes(8, "little") * 100 for i in range(n)]


def test_tracemalloc_top_growing_lines_since_the_baseline(guard: str) -> None:
    # warmup=0: the baseline is taken at once, on a timer thread.
    deadline = time.monotonic() + 10
    while leakguard.report()["python"]["tracemalloc"]["baseline_at"] is None:
        assert time.monotonic() < deadline, "no baseline snapshot"
        time.sleep(0.05)
    held = grow_here(20000)  # ~16 MiB on one line
    status, body = http(f"{guard}/debug/python/tracemalloc?limit=5", token=TOKEN)
    assert status == 200
    assert body["compared_to"] == "baseline"
    assert len(body["top"]) <= 5
    first = body["top"][0]
    assert first["file"] == __file__
    assert "grow_here" in Path(first["file"]).read_text().splitlines()[first["line"] - 2]
    assert first["size_diff_bytes"] >= 15 * MiB
    assert first["count_diff"] >= 20000
    assert len(held) == 20000


def shrink_here(n: int) -> List[bytes]:
    return [i.to_bytes(8, "little") * 100 for i in range(n)]


def test_tracemalloc_top_lists_only_lines_that_grew() -> None:
    # A line that held ~16 MiB at the baseline and holds nothing now has the largest change
    # of all, downwards: it is not a growing line and must not be listed.
    leakguard.start(
        addr="127.0.0.1:0",
        tracemalloc=8,
        warmup=3600.0,
        restart_action="none",
        read_env=False,
        token=TOKEN,
    )
    try:
        addr = leakguard.endpoint_addr()
        assert addr is not None
        held = shrink_here(20000)
        layer = leakguard._guard._layer
        assert layer is not None
        layer.tracemalloc.take_baseline()
        del held
        grown = grow_here(2000)
        status, body = http(f"http://{addr}/debug/python/tracemalloc?limit=500", token=TOKEN)
        assert status == 200 and body["compared_to"] == "baseline"
        assert body["top"], body
        assert all(row["size_diff_bytes"] > 0 for row in body["top"]), body["top"][:5]
        lines = Path(__file__).read_text().splitlines()
        here = [row for row in body["top"] if row["file"] == __file__]
        assert any("grow_here" in lines[row["line"] - 2] for row in here), here
        assert not any("shrink_here" in lines[row["line"] - 2] for row in here), here
        assert len(grown) == 2000
    finally:
        leakguard.stop()


def test_purge_collects_garbage_then_trims_and_says_what_it_gave_back(guard: str) -> None:
    # Cycles that only the collector can free, holding 1 KiB blocks (malloc, not pymalloc).
    gc.disable()
    try:
        for i in range(20000):
            a: Dict[str, Any] = {"blob": i.to_bytes(8, "little") * 128}
            a["self"] = a
        del a
        status, body = http(f"{guard}/debug/leakguard/purge", method="POST", token=TOKEN)
    finally:
        gc.enable()
    assert status == 200, body
    assert body["purged"] is True
    assert body["hooks"]["python"]["gc_collected"] >= 20000
    assert body["released_bytes"] is not None
    assert body["resident_before_bytes"] >= body["resident_after_bytes"]


def test_purge_needs_the_token(guard: str) -> None:
    assert http(f"{guard}/debug/leakguard/purge", method="POST")[0] == 401
    assert http(f"{guard}/debug/leakguard/purge", method="POST", token="wrong")[0] == 401


def test_python_routes_need_the_token_even_for_get(guard: str) -> None:
    # They run Python with the GIL held (a heap walk pauses the service): token-only.
    for path in ("/debug/python/objects", "/debug/python/tracemalloc"):
        assert http(f"{guard}{path}")[0] == 401, path
        assert http(f"{guard}{path}", token="wrong")[0] == 401, path
        assert http(f"{guard}{path}", token=TOKEN)[0] == 200, path
    # The probes and the guard's own GETs stay open.
    assert http(f"{guard}/readyz")[0] == 200
    assert http(f"{guard}/metrics")[0] == 200


def test_python_routes_are_off_without_a_token() -> None:
    leakguard.start(addr="127.0.0.1:0", read_env=False, restart_action="none")
    try:
        status, body = http(f"http://{leakguard.endpoint_addr()}/debug/python/objects")
        assert status == 403 and "LEAKGUARD_TOKEN" in body["error"], body
    finally:
        leakguard.stop()


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_refused_at_start(token: str) -> None:
    with pytest.raises(leakguard.ConfigError, match="token"):
        leakguard.start(addr="127.0.0.1:0", read_env=False, token=token)
    assert not leakguard.running()


def test_stop_releases_the_port_and_start_on_the_same_address_works() -> None:
    leakguard.start(addr="127.0.0.1:0", read_env=False, restart_action="none")
    addr = leakguard.endpoint_addr()
    assert addr is not None
    host, port = addr.rsplit(":", 1)
    leakguard.stop()
    # Nothing listens any more: a connection is refused, not queued.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5).close()
    leakguard.start(addr=addr, read_env=False, restart_action="none")
    try:
        assert leakguard.endpoint_addr() == addr
        assert http(f"http://{addr}/healthz")[0] == 200
    finally:
        leakguard.stop()


def test_a_listener_the_application_closes_is_really_closed(free_port: Any) -> None:
    port = free_port()
    sock = leakguard.listener("closing", f"127.0.0.1:{port}")
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn, _ = sock.accept()  # a blocking accept works: the socket is a normal Python one
    conn.close()
    client.close()
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


PROBE_CLIENT = """
import sys, time, urllib.request
worst = 0.0
for _ in range(40):
    start = time.monotonic()
    urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=30).read()
    worst = max(worst, time.monotonic() - start)
print(round(worst, 3))
"""

FLOOD_CLIENT = """
import sys, urllib.request
req = urllib.request.Request(
    sys.argv[1] + "/debug/python/objects?limit=5", headers={"Authorization": "Bearer " + sys.argv[2]}
)
print("started", flush=True)
while True:
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except Exception:
        pass
"""


def test_readiness_answers_at_once_while_clients_loop_a_heap_walk(guard: str) -> None:
    # A large heap makes /debug/python/objects take a long time with the GIL held; four
    # clients loop it. The probes never wait for it.
    heap = [Leaky(i) for i in range(300_000)]
    floods = [
        subprocess.Popen(
            [sys.executable, "-c", FLOOD_CLIENT, guard, TOKEN],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for flood in floods:
            assert flood.stdout is not None
            assert flood.stdout.readline() == "started\n"
        probe = subprocess.run(
            [sys.executable, "-c", PROBE_CLIENT, guard],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode == 0, probe.stderr
        assert float(probe.stdout) < 0.5, probe.stdout
    finally:
        for flood in floods:
            flood.kill()
            flood.wait()
    assert len(heap) == 300_000


def test_start_twice_is_refused_and_stop_is_idempotent(guard: str) -> None:
    with pytest.raises(leakguard.LeakguardError, match="runs already"):
        leakguard.start(addr="off", read_env=False)
    leakguard.stop()
    leakguard.stop()
    assert not leakguard.running()
    with pytest.raises(leakguard.LeakguardError, match="not running"):
        leakguard.report()
    # And it can start again.
    leakguard.start(addr="off", read_env=False, limit=1 << 30)
    assert leakguard.running()
    assert leakguard.report()["limit"]["bytes"] == 1 << 30


def test_stop_ends_the_endpoint_and_tracemalloc_and_the_gc_callback() -> None:
    callbacks = len(gc.callbacks)
    leakguard.start(addr="127.0.0.1:0", tracemalloc=1, read_env=False)
    addr = leakguard.endpoint_addr()
    assert len(gc.callbacks) == callbacks + 1
    assert tracemalloc.is_tracing()
    leakguard.stop()
    assert len(gc.callbacks) == callbacks
    assert not tracemalloc.is_tracing()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{addr}/healthz", timeout=5)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"limit": "lots"}, ["limit", "lots"]),
        ({"interval": "soon"}, ["interval", "soon"]),
        ({"restart": "2"}, ["restart"]),
        ({"addr": "nowhere:port"}, ["addr"]),
        ({"restart_action": "reboot"}, ["restart_action", "reboot"]),
    ],
)
def test_bad_settings_raise_config_error_and_nothing_starts(
    kwargs: Dict[str, Any], names: List[str]
) -> None:
    with pytest.raises(leakguard.ConfigError) as info:
        leakguard.start(read_env=False, **kwargs)
    for name in names:
        assert name in str(info.value)
    assert not leakguard.running()


def test_bad_argument_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        leakguard.start(limit=[1], read_env=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        leakguard.start(tracemalloc=0, read_env=False)
    assert not leakguard.running()


def run_child(
    code: str, env: Dict[str, str], tmp_path: Path, timeout: float = 60
) -> "subprocess.CompletedProcess[str]":
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_environment_variables_override_the_arguments(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    env = dict(clean_env, LEAKGUARD_LIMIT="3584m", LEAKGUARD_ADDR="off", LEAKGUARD_WARN="70%")
    proc = run_child(
        """
        import json, leakguard
        leakguard.start(limit="1GiB", addr="127.0.0.1:0", warn=0.5)
        r = leakguard.report()
        print(json.dumps([r["limit"]["bytes"], r["limit"]["source"], r["thresholds"]["warn"],
                          leakguard.endpoint_addr()]))
        """,
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [3584 * MiB, "LEAKGUARD_LIMIT", 0.7, None]
    bad = run_child("import leakguard\nleakguard.start()\n", dict(env, LEAKGUARD_INTERVAL="x"), tmp_path)
    assert bad.returncode == 1
    assert "leakguard.ConfigError" in bad.stderr and "LEAKGUARD_INTERVAL" in bad.stderr


def test_a_callable_restart_action_is_called_after_the_drain(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    proc = run_child(
        """
        import threading, time, leakguard
        called = threading.Event()
        reasons = []
        def on_restart(reason):
            reasons.append(reason)
            called.set()
        leakguard.start(addr="off", read_env=False, restart_action=on_restart, drain_delay=0,
                        drain_timeout=0.2, max_restarts_per_hour=2)
        leakguard.restart_now("test asks")
        assert called.wait(30), "not called"
        print(reasons[0])
        # The callback returned and the process lives on: readiness comes back, and the next
        # restart is allowed (within the hourly limit).
        deadline = time.monotonic() + 30
        while not leakguard.report()["ready"]:
            assert time.monotonic() < deadline, "readiness did not come back"
            time.sleep(0.01)
        events = [e["message"] for e in leakguard.report()["events"]]
        print(any("lives on" in m for m in events))
        called.clear()
        leakguard.restart_now("again")
        assert called.wait(30), "not called again"
        while not leakguard.report()["ready"]:
            assert time.monotonic() < deadline, "readiness did not come back"
            time.sleep(0.01)
        try:
            leakguard.restart_now("a third time")
        except leakguard.LeakguardError as e:
            print("refused:", e)
        leakguard.stop()
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["test asks", "True"], proc.stdout
    assert lines[2].startswith("refused: restart refused: 2 restart(s) in the last hour"), lines


def test_a_signal_action_the_process_survives_restores_readiness(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    # A service that reloads on the signal instead of ending: after the drain timeout the
    # guard sees the process lives on, says so, and turns readiness back on.
    proc = run_child(
        """
        import signal, threading, time, leakguard
        got = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: got.set())
        leakguard.start(addr="off", read_env=False, restart_action="signal:USR1", drain_delay=0,
                        drain_timeout=0.2)
        leakguard.restart_now("reload")
        deadline = time.monotonic() + 30
        while not got.is_set():
            assert time.monotonic() < deadline, "no signal"
            time.sleep(0.01)
        while not leakguard.report()["ready"]:
            assert time.monotonic() < deadline, "readiness did not come back"
            time.sleep(0.01)
        print(any("lives on" in e["message"] for e in leakguard.report()["events"]))
        leakguard.restart_now("again")
        print("accepted")
        leakguard.stop()
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True", "accepted"], proc.stdout


def test_the_exit_action_runs_atexit_handlers(tmp_path: Path, clean_env: Dict[str, str]) -> None:
    proc = run_child(
        """
        import atexit, time, leakguard
        atexit.register(lambda: print("atexit ran", flush=True))
        leakguard.start(addr="off", read_env=False, restart_action="exit:42", drain_delay=0)
        leakguard.restart_now("test")
        time.sleep(60)
        print("still alive")
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 42, proc.stdout + proc.stderr
    assert "atexit ran" in proc.stdout and "still alive" not in proc.stdout, proc.stdout


def test_memory_over_the_threshold_restarts_with_exit_code(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    # A limit just above what the child uses now, then 64 MiB held: the restart threshold is
    # crossed and held, and the exit action ends the process with its code after the drain.
    proc = run_child(
        """
        import time, leakguard
        rss = leakguard.sample()["process"]["resident_bytes"]
        leakguard.start(limit=rss + (48 << 20), addr="off", interval=0.05, read_env=False,
                        restart_action="exit:42", min_uptime=0, drain_delay=0)
        held = [bytes([i % 251]) * 4096 for i in range(16384)]
        time.sleep(30)
        print("still alive")
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 42, proc.stdout + proc.stderr
    assert "still alive" not in proc.stdout


def test_reexec_restarts_in_place_and_hands_the_listener_over(
    tmp_path: Path, clean_env: Dict[str, str], free_port: Any
) -> None:
    # A single-process server: the first image serves one request, then re-execs (same pid);
    # the second image gets the same listening socket (the client's second connection, made
    # while the exec happens, waits in its backlog) and serves it.
    port = free_port()
    code = f"""
        import os, sys, leakguard
        sock = leakguard.listener("http", "127.0.0.1:{port}")
        leakguard.start(addr="off", read_env=False, restart_action="reexec", drain_delay=0)
        restarts = leakguard.report()["restart"]["restarts_total"]
        conn, _ = sock.accept()
        conn.recv(1024)
        body = f"pid={{os.getpid()}} restarts={{restarts}}".encode()
        conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        conn.close()
        if restarts == 0:
            leakguard.restart_now("test")
            import time; time.sleep(60)
        """
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(code))
    child = subprocess.Popen(
        [sys.executable, str(script)], env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        bodies: List[str] = []
        while len(bodies) < 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                    bodies.append(r.read().decode())
            except OSError:
                # Only while the first image starts: across the re-exec nothing is refused.
                assert not bodies, "a request failed across the re-exec"
                assert time.monotonic() < deadline, "the server did not answer"
                assert child.poll() is None, child.communicate()
                time.sleep(0.05)
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert bodies == [f"pid={child.pid} restarts=0", f"pid={child.pid} restarts=1"]


CLIENT = """
import sys, time, urllib.request
# Starts asking once the other interpreter's thread holds the GIL (it says so on stdin).
assert sys.stdin.readline() == "holding\\n"
for path in ("/metrics", "/healthz", "/debug/leakguard/nothing"):
    start = time.monotonic()
    try:
        urllib.request.urlopen(sys.argv[1] + path, timeout=3).read()
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    print(path, status, round(time.monotonic() - start, 3))
"""


def test_the_endpoint_answers_while_python_holds_the_gil(guard: str) -> None:
    # A client in another interpreter asks while a thread of this one holds the GIL for 4 s
    # (a pure-Python loop, with the switch interval far longer): the Rust endpoint answers the
    # questions that need no Python at once.
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, guard],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None
    previous = sys.getswitchinterval()

    def hold_the_gil() -> None:
        end = time.monotonic() + 4.0
        assert client.stdin is not None
        client.stdin.write("holding\n")
        client.stdin.flush()
        while time.monotonic() < end:
            pass

    import threading

    sys.setswitchinterval(100.0)
    try:
        holder = threading.Thread(target=hold_the_gil)
        holder.start()
        out, _ = client.communicate(timeout=60)
        holder.join()
    finally:
        sys.setswitchinterval(previous)
    rows = [line.split() for line in out.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [
        ("/metrics", "200"),
        ("/healthz", "200"),
        ("/debug/leakguard/nothing", "404"),
    ], out
    assert all(float(r[2]) < 2.0 for r in rows), out
