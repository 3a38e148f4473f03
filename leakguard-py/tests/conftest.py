"""Shared fixtures of leakguard's Python tests.

The tests run against the *installed* ``leakguard`` package (the wheel that ``make test``
builds and installs into ``.venv``), in a real interpreter, on the real ``/proc``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
from cargo_workspace import REPO_ROOT
from cargo_workspace import free_port as _free_port

# Fixtures defined in cargo_workspace (shared with the end-to-end tests), registered here by
# importing them.
from cargo_workspace import cargo_metadata as cargo_metadata
from cargo_workspace import cargo_target_dir as cargo_target_dir


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The workspace root (where the root Cargo.toml is)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def crate_version(cargo_metadata: Dict[str, Any]) -> str:
    """The version of the leakguard-py crate, which the wheel must carry."""
    for package in cargo_metadata["packages"]:
        if package["name"] == "leakguard-py":
            return str(package["version"])
    pytest.fail("leakguard-py is not a member of the workspace")


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Returns a function that gives a TCP port on 127.0.0.1 that nobody listens on now."""
    return _free_port


@pytest.fixture(scope="session")
def clean_env() -> Dict[str, str]:
    """This process's environment without any LEAKGUARD_* setting of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEAKGUARD_")}
