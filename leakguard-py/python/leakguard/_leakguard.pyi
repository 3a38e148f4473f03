"""Type stubs of leakguard's native module, ``leakguard._leakguard``.

Checked against the built module with ``python -m mypy.stubtest leakguard._leakguard``.
"""

from typing import Any, Dict

__all__ = [
    "__version__",
    "LeakguardError",
    "ConfigError",
    "sample",
    "allocator_status",
    "parse_size",
]

__version__: str

class LeakguardError(Exception):
    """Base class of every error raised by leakguard."""

class ConfigError(LeakguardError, ValueError):
    """A configuration value could not be understood; the message names the setting and the value."""

def sample() -> Dict[str, Any]:
    """Takes one memory sample of this process and returns it as a dict."""

def allocator_status() -> Dict[str, Any]:
    """What leakguard found out about the allocator, as a dict."""

def parse_size(value: str, name: str = "size") -> int:
    """Parses a memory size as operators write it; returns bytes."""
