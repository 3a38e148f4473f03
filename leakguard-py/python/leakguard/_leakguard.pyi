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

# The guard (leakguard._guard wraps it).

from typing import Callable, List, Optional, Tuple, Union, final

__all__ += ["Guard", "start_guard", "listener"]

_Route = Tuple[str, List[str], Callable[[str, str, str], Tuple[int, str, str]]]

@final
class Guard:
    """A running guard. Made by ``start_guard``; ``leakguard.start()`` keeps the one of the process."""

    def report(self) -> Dict[str, Any]: ...
    def metrics(self) -> str: ...
    def tick(self) -> Dict[str, Any]: ...
    def state(self) -> str: ...
    def is_ready(self) -> bool: ...
    def is_restarting(self) -> bool: ...
    def endpoint_addr(self) -> Optional[str]: ...
    def restart_now(self, reason: str) -> None: ...
    def stop(self) -> None: ...
    def running(self) -> bool: ...

def start_guard(
    *,
    limit: Union[int, str, None] = None,
    addr: Optional[str] = None,
    interval: Union[int, float, str, None] = None,
    warn: Union[float, str, None] = None,
    critical: Union[float, str, None] = None,
    restart: Union[float, str, None] = None,
    restart_action: Optional[str] = None,
    on_restart: Optional[Callable[[str], Any]] = None,
    min_uptime: Union[int, float, str, None] = None,
    token: Optional[str] = None,
    drain_delay: Union[int, float, str, None] = None,
    drain_timeout: Union[int, float, str, None] = None,
    max_restarts_per_hour: Optional[int] = None,
    read_env: bool = True,
    routes: List[_Route] = ...,
    report_sections: List[Tuple[str, Callable[[], str]]] = ...,
    purge_hooks: List[Tuple[str, Callable[[], str]]] = ...,
) -> Guard:
    """Starts a guard; the LEAKGUARD_* variables override the arguments unless read_env is False."""

def listener(name: str, addr: str) -> int:
    """A listening socket's fd, inherited after a re-exec or newly bound, kept for the next handover."""
