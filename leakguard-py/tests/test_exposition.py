"""The demo service's /metrics, scraped over real HTTP: it parses and passes promtool.

`make test` builds the demo (`cargo build --example leaky_service`) and puts promtool on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, NamedTuple, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

MiB = 2**20
STARTUP_TIMEOUT_S = 60.0
PROCESS_FAMILIES = (
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
)


class Demo(NamedTuple):
    base_url: str
    log: Path


def get(url: str, timeout: float = 10.0) -> Tuple[int, Dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8")
            return response.status, dict(response.headers), body
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def demo(
    cargo_target_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    free_port: Callable[[], int],
    clean_env: Dict[str, str],
) -> Iterator[Demo]:
    binary = cargo_target_dir / "debug" / "examples" / "leaky_service"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it with `cargo build --example leaky_service`")
    leakguard_addr = f"127.0.0.1:{free_port()}"
    env = dict(clean_env)
    env.update(
        DEMO_ADDR=f"127.0.0.1:{free_port()}",
        LEAKGUARD_ADDR=leakguard_addr,
        LEAKGUARD_INTERVAL="100ms",
    )
    log = tmp_path_factory.mktemp("leaky_service") / "output.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [str(binary)], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )

    try:
        base_url = f"http://{leakguard_addr}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if child.poll() is not None:
                pytest.fail(
                    f"leaky_service exited with {child.returncode} before /healthz answered:\n"
                    + tail(log)
                )
            try:
                if get(f"{base_url}/healthz", timeout=2.0)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no 200 from {base_url}/healthz in {STARTUP_TIMEOUT_S:.0f} s:\n" + tail(log))
            time.sleep(0.1)
        yield Demo(base_url, log)
    finally:
        # The finalizer: never leave the child running, whatever happened above.
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)


@pytest.fixture(scope="module")
def metrics(demo: Demo) -> str:
    # Let the sampler (every 100 ms) take a few samples first.
    time.sleep(0.5)
    status, headers, body = get(f"{demo.base_url}/metrics")
    assert status == 200, body
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert content_type.startswith("text/plain"), content_type
    assert "version=0.0.4" in content_type, content_type
    return body


def test_metrics_have_the_standard_process_families(metrics: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    for name in PROCESS_FAMILIES:
        assert name in families, f"{name} missing; families: {sorted(families)}"
        samples = families[name].samples
        assert samples, f"{name} has no sample"
        assert all(s.value > 0 for s in samples), (name, samples)
    resident = families["process_resident_memory_bytes"].samples[0].value
    assert resident > MiB, resident
    assert families["process_start_time_seconds"].samples[0].value <= time.time()


def test_metrics_have_leakguard_families(metrics: str) -> None:
    names = [f.name for f in text_string_to_metric_families(metrics)]
    assert any(name.startswith("leakguard_") for name in names), names


def test_metrics_pass_promtool_check_metrics(metrics: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH (`make test` installs it from Debian's prometheus package)")
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"promtool check metrics: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
