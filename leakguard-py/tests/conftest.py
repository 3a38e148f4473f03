"""Shared fixtures of leakguard's Python tests.

The tests run against the *installed* ``leakguard`` package (the wheel that ``make test``
builds and installs into ``.venv``), in a real interpreter, on the real ``/proc``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The workspace root (where the root Cargo.toml is)."""
    return REPO_ROOT


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


@pytest.fixture(scope="session")
def crate_version(cargo_metadata: Dict[str, Any]) -> str:
    """The version of the leakguard-py crate, which the wheel must carry."""
    for package in cargo_metadata["packages"]:
        if package["name"] == "leakguard-py":
            return str(package["version"])
    pytest.fail("leakguard-py is not a member of the workspace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Returns a function that gives a TCP port on 127.0.0.1 that nobody listens on now."""
    return _free_port


@pytest.fixture(scope="session")
def clean_env() -> Dict[str, str]:
    """This process's environment without any LEAKGUARD_* setting of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEAKGUARD_")}
