"""Fixtures of the end-to-end tests that run the demo service (`examples/examples/leaky_service.rs`).

`make test` builds the demo (`make demo-bin`: target/debug/examples/leaky_service), puts promtool
on PATH and installs headless Chromium with its WebDriver (`make chromium`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
from leakguard_e2e import LEAKED_CONNECTIONS, STARTUP_TIMEOUT_S, Demo, free_port, http

# After leakguard_e2e, which puts the shared workspace helpers on the path.
# Fixtures defined in cargo_workspace, registered here by importing them.
from cargo_workspace import cargo_metadata as cargo_metadata  # noqa: E402
from cargo_workspace import cargo_target_dir as cargo_target_dir  # noqa: E402


@pytest.fixture(scope="session")
def start_demo(
    cargo_target_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Demo]]:
    """Returns a function that starts the demo with extra environment and waits for /healthz;
    every demo started is stopped at the end of the session."""
    binary = cargo_target_dir / "debug" / "examples" / "leaky_service"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it with `make demo-bin`")
    children: List[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> Demo:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEAKGUARD_", "DEMO_"))}
        leakguard_addr = f"127.0.0.1:{free_port()}"
        service_addr = f"127.0.0.1:{free_port()}"
        env.update(DEMO_ADDR=service_addr, LEAKGUARD_ADDR=leakguard_addr, LEAKGUARD_INTERVAL="100ms")
        env.update(extra)
        log = tmp_path_factory.mktemp("leaky_service") / "output.log"
        with log.open("wb") as out:
            child = subprocess.Popen(
                [str(binary)], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        children.append(child)
        demo = Demo(f"http://{leakguard_addr}", f"http://{service_addr}", log, extra.get("LEAKGUARD_TOKEN"), env)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if child.poll() is not None:
                pytest.fail(f"leaky_service exited with {child.returncode} before /healthz answered:\n{demo.tail()}")
            try:
                if http("GET", f"{demo.base_url}/healthz", timeout=2.0)[0] == 200:
                    return demo
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no 200 from {demo.base_url}/healthz in {STARTUP_TIMEOUT_S:.0f} s:\n{demo.tail()}")
            time.sleep(0.1)

    try:
        yield start
    finally:
        # Never leave a child running, whatever happened.
        for child in children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(timeout=10)



@pytest.fixture(scope="session")
def leaking_demo(start_demo: Callable[..., Demo]) -> Demo:
    """The demo leaking 512 KiB/s (and filling its cache) against a 1 GiB limit, so far from a
    restart for minutes, with the detector sped up 120 times and 7 leaked connections;
    returned once the leak is flagged."""
    demo = start_demo(DEMO_LIMIT="1GiB", DEMO_LEAK_KIB_PER_SEC="512", DEMO_TREND_SPEEDUP="120")
    status, _, body = http("GET", f"{demo.service_url}/leak_conn?n={LEAKED_CONNECTIONS}")
    assert status == 200, body
    demo.wait_for_leak()
    return demo
