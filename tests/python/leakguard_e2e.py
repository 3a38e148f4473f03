"""Helpers of the end-to-end tests that run the demo service (`examples/examples/leaky_service.rs`):
real HTTP requests, and a running demo's addresses and output. The fixtures are in conftest.py."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import pytest

# The workspace helpers shared with the binding's tests (leakguard-py/tests/cargo_workspace.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "leakguard-py" / "tests"))
from cargo_workspace import REPO_ROOT as REPO_ROOT, free_port as free_port  # noqa: E402

STARTUP_TIMEOUT_S = 60.0
# Opened by the leaking demo through its /leak_conn endpoint: tracked as `upstream_conn`.
LEAKED_CONNECTIONS = 7
# With DEMO_TREND_SPEEDUP=120 the detector's warm-up is 5 s and its minimum span 15 s: the
# demo's leak is flagged after about 25 s. A loaded machine gets more time.
LEAK_TIMEOUT_S = 120.0


def http(
    method: str, url: str, token: Optional[str] = None, timeout: float = 10.0
) -> Tuple[int, Dict[str, str], bytes]:
    """One real HTTP request: (status, headers with lower-case names, body)."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get_json(url: str, token: Optional[str] = None) -> Any:
    status, _, body = http("GET", url, token)
    assert status == 200, f"GET {url}: {status} {body[:500]!r}"
    return json.loads(body)


@dataclass
class Demo:
    """A running demo: its leakguard endpoint, its service address and its output."""

    base_url: str
    service_url: str
    log: Path
    token: Optional[str] = None
    env: Mapping[str, str] = field(default_factory=dict)

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def report(self) -> Dict[str, Any]:
        report: Dict[str, Any] = get_json(f"{self.base_url}/debug/leakguard", self.token)
        return report

    def wait_for_leak(self) -> Dict[str, Any]:
        """Waits until the detector flags the leak and projects the OOM; returns the report."""
        deadline = time.monotonic() + LEAK_TIMEOUT_S
        while True:
            report = self.report()
            if report["leak"]["suspected"] and report["leak"]["oom_eta_seconds"] is not None:
                return report
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no leak flagged in {LEAK_TIMEOUT_S:.0f} s: {report['leak']}\n" + self.tail()
                )
            time.sleep(0.5)
