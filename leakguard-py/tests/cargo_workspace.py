"""The workspace as the Python tests see it: its root, ``cargo metadata``, the target directory,
and free loopback ports. Shared by this directory's conftest.py and by the end-to-end tests'
(``tests/python``), which import it rather than keep copies; the fixtures defined here are
registered by importing them into a conftest.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def cargo_metadata() -> Dict[str, Any]:
    """``cargo metadata --no-deps`` of the workspace (honours CARGO_TARGET_DIR)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH: the tests read the workspace's metadata with it")
    out = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    metadata: Dict[str, Any] = json.loads(out)
    return metadata


@pytest.fixture(scope="session")
def cargo_target_dir(cargo_metadata: Dict[str, Any]) -> Path:
    """Cargo's target directory (``target/`` unless CARGO_TARGET_DIR says otherwise)."""
    return Path(cargo_metadata["target_directory"])
