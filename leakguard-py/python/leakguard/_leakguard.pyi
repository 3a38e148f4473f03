"""Type stubs of leakguard's native module, ``leakguard._leakguard``.

Checked against the built module with ``python -m mypy.stubtest leakguard._leakguard``.
"""

from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union, final

__all__ = [
    "__version__",
    "LeakguardError",
    "ConfigError",
    "sample",
    "allocator_status",
    "parse_size",
    # Handles.
    "HandleKind",
    "track",
    "Handle",
    "open_handle",
    "configure_handles",
    "set_suspect",
    "open_by_kind",
    "handles_report_json",
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

# Handles.

_F = TypeVar("_F", bound=Callable[..., Any])

@final
class HandleKind:
    """A kind of handle; ``HandleKind("db_conn")`` registers it (once)."""

    def __new__(cls, name: str) -> HandleKind: ...
    @property
    def name(self) -> str:
        """The kind's name (``"other"`` past the capacity of named kinds)."""
    @property
    def open(self) -> int:
        """Handles of this kind open now."""
    def track(self) -> track:
        """A context manager (and decorator) that counts one handle of this kind as open."""

@final
class track:
    """``with track(kind):`` / ``@track(kind)``: one handle of the kind open inside."""

    def __new__(cls, kind: Union[str, HandleKind]) -> track: ...
    @property
    def kind(self) -> str:
        """The kind's name."""
    def __enter__(self) -> track: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc_value: Optional[BaseException] = None,
        traceback: Optional[TracebackType] = None,
    ) -> None: ...
    def __call__(self, func: _F) -> _F:
        """Decorates ``func``: each call counts as an open handle while it runs."""

@final
class Handle:
    """One open handle, closed by ``close()``."""

    @property
    def kind(self) -> str:
        """The kind's name."""
    @property
    def closed(self) -> bool:
        """Whether the handle was closed."""
    def close(self) -> None:
        """Closes the handle; closing it again does nothing."""

def open_handle(kind: Union[str, HandleKind]) -> Handle:
    """Opens a handle of ``kind``; it counts as open until its ``close()``."""

def configure_handles(
    name: str,
    *,
    max_open: Optional[int] = None,
    max_age: Optional[float] = None,
    sample_every: Optional[int] = None,
) -> HandleKind:
    """Sets the limits and sampling of the kind ``name`` and returns it."""

def set_suspect(name: str, suspect: bool) -> bool:
    """Marks an existing kind as suspect (every open sampled) or not; whether it exists."""

def open_by_kind() -> List[Tuple[str, int]]:
    """Handles open now, by kind."""

def handles_report_json() -> str:
    """The ``handles`` section of the report, as JSON text."""
