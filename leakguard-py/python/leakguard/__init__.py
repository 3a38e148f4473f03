"""leakguard: an in-process memory-leak guard.

It samples the process's memory (resident size, glibc ``mallinfo2`` allocator numbers, open
file descriptors, threads, the cgroup limit that applies) so that leaks are seen early.

>>> import leakguard
>>> leakguard.parse_size("512MiB")
536870912

The work is done by leakguard's Rust core, in the extension module ``leakguard._leakguard``;
calls that read the system release the GIL. jemalloc is never loaded into a Python process:
the allocator numbers are glibc's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from leakguard import _leakguard
from leakguard._handles import (
    HandleKind,
    capture_budget,
    configure_handles,
    handles,
    set_capture_budget,
    track,
    tracked,
)
from leakguard._leakguard import ConfigError, LeakguardError
from leakguard._guard import endpoint_addr, listener, metrics, report, restart_now, running, start, stop
from leakguard.cache import CacheInfo, LRUCache, TTLCache, cached, cachedmethod
from leakguard.keys import hashkey, methodkey, typedkey, typedmethodkey

__all__ = [
    "CacheInfo",
    "ConfigError",
    "HandleKind",
    "LRUCache",
    "LeakguardError",
    "TTLCache",
    "__version__",
    "allocator_status",
    "cached",
    "cachedmethod",
    "capture_budget",
    "configure_handles",
    "endpoint_addr",
    "handles",
    "hashkey",
    "listener",
    "methodkey",
    "metrics",
    "parse_size",
    "report",
    "restart_now",
    "running",
    "sample",
    "set_capture_budget",
    "start",
    "stop",
    "track",
    "tracked",
    "typedkey",
    "typedmethodkey",
]

#: The version of the package, the same as the Rust crates'.
__version__: str = _leakguard.__version__


def sample() -> Dict[str, Any]:
    """Take one memory sample of this process.

    Returns a dict with the keys ``unix_seconds``; ``process`` (``resident_bytes``,
    ``virtual_bytes``, ``peak_resident_bytes``, ``swap_bytes``, ``threads``, ``open_fds``,
    ``max_fds``, ``start_time_seconds``, ``fds_by_type``); ``allocator`` (glibc ``mallinfo2``:
    ``allocated``, ``mapped``, ``free``; None when unavailable); ``cgroup`` (the memory limit
    that applies to this process, or None); ``duration_us``; and ``errors``, the sources that
    failed this time (the rest of the sample is still filled in).

    Note that CPython's own small-object allocator (pymalloc) takes its arenas from the OS
    directly: objects of up to 512 bytes show in ``process.resident_bytes`` but not in
    ``allocator.allocated``.

    The GIL is released while the sample is taken.
    """
    return _leakguard.sample()


def allocator_status() -> Dict[str, Any]:
    """Tell which allocator leakguard reads.

    Returns a dict: ``kind`` (``"glibc"`` in a Python process), ``jemalloc_linked`` (always
    False: jemalloc is never loaded into Python) and ``note`` (an explanation, or None).
    """
    return _leakguard.allocator_status()


def parse_size(value: str, name: str = "size") -> int:
    """Parse a memory size as operators write it and return it in bytes.

    Accepted: a number of bytes (``"1048576"``), binary units (``"512KiB"``, ``"512MiB"``,
    ``"2GiB"``, ``"512Mi"``), the single-letter binary units of Docker and the JVM
    (``"512k"``, ``"3584m"``, ``"2G"``), decimal units (``"500MB"``, ``"2GB"``) and decimals
    (``"1.5GiB"``).

    ``name`` is the setting being parsed (for example ``"LEAKGUARD_LIMIT"``); it appears in
    the error message.

    Raises:
        ConfigError: the value cannot be understood. ConfigError is also a ValueError.

    >>> parse_size("2G")
    2147483648
    >>> parse_size("lots", "LEAKGUARD_LIMIT")
    Traceback (most recent call last):
    ...
    leakguard.ConfigError: invalid value "lots" for LEAKGUARD_LIMIT: expected a size such as 512MiB, 2G, 3584m or a number of bytes
    """
    return _leakguard.parse_size(value, name)


# The submodules whose dependencies are optional (prometheus_client for ``prometheus``) are
# imported on first access, so that ``leakguard.prometheus.LeakguardCollector`` works after
# ``import leakguard`` without making every import of leakguard pay for prometheus_client.
_LAZY_SUBMODULES = ("prometheus", "gunicorn", "pytest_plugin")

if TYPE_CHECKING:
    from leakguard import gunicorn as gunicorn
    from leakguard import prometheus as prometheus
    from leakguard import pytest_plugin as pytest_plugin
else:

    def __getattr__(name: str) -> Any:
        if name in _LAZY_SUBMODULES:
            import importlib

            return importlib.import_module(f"leakguard.{name}")
        raise AttributeError(f"module 'leakguard' has no attribute {name!r}")
