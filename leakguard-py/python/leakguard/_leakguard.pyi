"""Type stubs of leakguard's native module, ``leakguard._leakguard``.

Checked against the built module with ``python -m mypy.stubtest leakguard._leakguard``.
"""

from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    SupportsIndex,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

from typing_extensions import Self, disjoint_base, final

__all__ = [
    "__version__",
    "LeakguardError",
    "ConfigError",
    "sample",
    "allocator_status",
    "parse_size",
    "_CacheCore",
    "_TTLCacheCore",
    "_CacheBase",
    "_TTLCacheBase",
    "_CachedCore",
    "_CachedBase",
    "_Timer",
    "_cache_report",
    "_shrink_caches",
    "_maintain_caches",
    # Handles.
    "HandleKind",
    "track",
    "Handle",
    "open_handle",
    "configure_handles",
    "set_suspect",
    "set_capture_budget",
    "capture_budget",
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
    on_event: Optional[Callable[[str, str, str], Any]] = None,
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
# The caches' native core (leakguard.cache builds LRUCache and TTLCache on it).

@disjoint_base
class _CacheCore:
    """Native base of ``leakguard.LRUCache``: the mapping, its lock, its registration."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def _lg_init(
        self,
        maxsize: Any,
        getsizeof: Optional[Callable[[Any], Any]],
        ttl: Any,
        timer: Optional[Callable[[], Any]],
        name: Optional[str],
    ) -> None: ...
    @property
    def leakguard_name(self) -> Optional[str]:
        """The name under which the cache is registered with the guard, or None."""
    def leakguard_stats(self) -> Dict[str, Any]:
        """The cache's counters: ``hits``, ``misses``, ``inserts`` and ``evictions`` by cause."""
    def leakguard_shrink(self, fraction: float) -> int:
        """Evicts least recently used entries down to ``fraction`` of ``currsize``."""
    def __getitem__(self, key: Any, /) -> Any: ...
    def __setitem__(self, key: Any, value: Any, /) -> None: ...
    def __delitem__(self, key: Any, /) -> None: ...
    def __contains__(self, key: Any, /) -> bool: ...
    def __missing__(self, key: Any) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    @property
    def maxsize(self) -> Any:
        """The maximum size of the cache."""
    @property
    def currsize(self) -> Any:
        """The current size of the cache."""
    # Two forms, which LRUCache and TTLCache narrow with their key and value types.
    @overload
    def get(self, key: Any) -> Any: ...
    @overload
    def get(self, key: Any, default: Any) -> Any: ...
    def pop(self, key: Any, *default: Any) -> Any: ...
    def setdefault(self, key: Any, default: Any = None) -> Any: ...
    def popitem(self) -> Tuple[Any, Any]:
        """Removes and returns the ``(key, value)`` pair least recently used."""
    def clear(self) -> None:
        """Removes every entry."""
    def __copy__(self) -> Self: ...
    def __reduce_ex__(self, _protocol: SupportsIndex) -> Tuple[Any, ...]: ...
    def __setstate__(self, state: Tuple[Any, Any]) -> None: ...

class _TTLCacheCore(_CacheCore):
    """Native base of ``leakguard.TTLCache``: adds ``ttl``, ``timer`` and ``expire``."""

    @property
    def ttl(self) -> Any:
        """The time-to-live value of the cache's items."""
    @property
    def timer(self) -> _Timer:
        """The timer function used by the cache."""
    def expire(self, time: Any = None) -> List[Tuple[Any, Any]]:
        """Removes expired items and returns the expired ``(key, value)`` pairs."""

# The classes leakguard.cache derives from: the cores with c[k], c[k] = v and del c[k] as C slots.
class _CacheBase(_CacheCore): ...
class _TTLCacheBase(_TTLCacheCore, _CacheBase): ...

# The native core of leakguard.cached's wrapper without a lock or a condition.
@disjoint_base
class _CachedCore:
    """Native core of the wrapper of a function memoized without a lock or a condition."""

    def __new__(
        cls, func: Callable[..., Any], cache: Any, key: Callable[..., Any], kind: int, info: bool, kwmark: Any
    ) -> Self: ...
    @property
    def cache(self) -> Any:
        """The cache the results are kept in."""
    @property
    def cache_key(self) -> Callable[..., Any]:
        """The function that makes a key of the arguments."""
    def _lg_counts(self) -> Tuple[int, int]:
        """The calls answered from the cache and those that were not, as counted so far (with
        ``info``)."""
    def _lg_reset_counts(self) -> None:
        """Sets the counts back to 0."""

# What leakguard._memoize derives the wrapper from: the core with the call as a C slot.
class _CachedBase(_CachedCore):
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

@final
class _Timer:
    """The timer of a TTLCache, as cachetools wraps it."""

    def __new__(cls, timer: Callable[[], Any]) -> Self: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *_exc: object) -> None: ...
    def __copy__(self) -> _Timer: ...
    def __reduce__(self) -> Tuple[Any, ...]: ...

def _cache_report() -> List[Dict[str, Any]]:
    """Every cache registered with the guard, as the report shows them."""

def _shrink_caches(fraction: float) -> int:
    """Shrinks every registered cache to ``fraction`` of its size; returns the entries evicted."""

def _maintain_caches() -> None:
    """Reclaims expired entries of every registered cache."""
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

def set_capture_budget(per_second: int) -> None:
    """Sets the capture budget: a kind sampled at the default rate records about this many
    creation sites a second at most (0: no budget)."""

def capture_budget() -> int:
    """The capture budget in force (creation sites a second per kind; 0: none)."""

def open_by_kind() -> List[Tuple[str, int]]:
    """Handles open now, by kind."""

def handles_report_json() -> str:
    """The ``handles`` section of the report, as JSON text."""
