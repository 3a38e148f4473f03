"""Bounded caches: drop-in replacements for cachetools' ``LRUCache`` and ``TTLCache``.

They behave as cachetools' classes do (the same constructors, ``maxsize``, ``currsize``,
``getsizeof``, ``popitem()``, ``__missing__``, ``expire()``, the ``timer``, pickling and
copying, subclassing with ``Base.__init__(self, ...)``, ``LRUCache[K, V]``) and pass
cachetools' own tests for these classes, with three differences:

- the data live in leakguard's native core, several times faster than cachetools' Python
  code;
- they are thread-safe: every operation takes the cache's internal lock (cachetools' caches
  need an external one);
- a cache given a ``name`` registers with the guard: its entries, size, hits, misses and
  evictions appear in ``leakguard.report()`` and on ``/metrics``
  (``leakguard_cache_*{cache="<name>"}``), and under memory pressure the guard evicts its
  least recently used entries like those of leakguard's Rust caches. For a TTLCache with the
  default timer, the guard also removes expired entries on its tick, so their memory is
  given back even when the cache is not used (cachetools removes them only when the cache
  is written, read with ``len()`` or ``currsize``, or ``expire()`` is called: entries
  removed by the guard are then not in what ``expire()`` returns).

>>> from leakguard import LRUCache
>>> cache = LRUCache(maxsize=2, name="users")
>>> cache["a"], cache["b"] = 1, 2
>>> cache["a"]
1
>>> cache["c"] = 3  # evicts "b", the least recently used
>>> sorted(cache)
['a', 'c']
"""

from __future__ import annotations

import functools
import threading
import time
from typing import (
    Any,
    Callable,
    ContextManager,
    Generic,
    Hashable,
    MutableMapping,
    NamedTuple,
    Optional,
    Tuple,
    TypeVar,
    cast,
)

from leakguard._leakguard import _CacheBase, _TTLCacheBase

__all__ = ["CacheInfo", "LRUCache", "TTLCache", "cached", "hashkey"]

_KT = TypeVar("_KT")
_VT = TypeVar("_VT")
_TT = TypeVar("_TT")
_F = TypeVar("_F", bound=Callable[..., Any])


class LRUCache(_CacheBase, MutableMapping[_KT, _VT]):
    """Least Recently Used (LRU) cache: when full, the entry read or written longest ago goes.

    ``maxsize`` bounds ``currsize``, the sum of ``getsizeof(value)`` over the entries (1 per
    entry by default). ``name``, when given, registers the cache with the guard (see the
    module's documentation).
    """

    def __init__(
        self,
        maxsize: float,
        getsizeof: Optional[Callable[[Any], float]] = None,
        *,
        name: Optional[str] = None,
    ) -> None:
        if getsizeof is not None:
            self.getsizeof = getsizeof  # type: ignore[method-assign,assignment]
        sizer = self.getsizeof
        self._lg_init(
            maxsize,
            None if sizer is _default_getsizeof else sizer,
            None,
            None,
            name,
        )

    @staticmethod
    def getsizeof(value: Any) -> float:
        """Return the size of a cache element's value (1 unless overridden or given)."""
        return 1


_default_getsizeof = LRUCache.getsizeof


class TTLCache(_TTLCacheBase, MutableMapping[_KT, _VT], Generic[_KT, _VT, _TT]):
    """LRU cache whose entries also expire ``ttl`` after they were written.

    ``timer`` gives the time (``time.monotonic`` by default; any values that ``timer() +
    ttl`` and ``<`` work on, such as ``datetime.now`` with a ``timedelta`` ttl). Expired
    entries are skipped by reads and removed by writes, ``len()``, ``currsize``, ``expire()``
    and, for the default timer, the guard's tick when the cache is named.
    """

    def __init__(
        self,
        maxsize: float,
        ttl: Any,
        timer: Callable[[], Any] = time.monotonic,
        getsizeof: Optional[Callable[[Any], float]] = None,
        *,
        name: Optional[str] = None,
    ) -> None:
        if getsizeof is not None:
            self.getsizeof = getsizeof  # type: ignore[method-assign,assignment]
        sizer = self.getsizeof
        self._lg_init(
            maxsize,
            None if sizer is _default_getsizeof else sizer,
            ttl,
            timer,
            name,
        )

    @staticmethod
    def getsizeof(value: Any) -> float:
        """Return the size of a cache element's value (1 unless overridden or given)."""
        return 1


# Both classes' default sizer is the same function, recognised (and skipped) by identity.
TTLCache.getsizeof = staticmethod(_default_getsizeof)  # type: ignore[method-assign]


class CacheInfo(NamedTuple):
    """Statistics of a ``cached`` function, as ``functools.lru_cache`` gives them."""

    hits: int
    misses: int
    maxsize: Optional[float]
    currsize: float


def hashkey(*args: Hashable, **kwargs: Hashable) -> Tuple[Hashable, ...]:
    """Return a cache key for the given hashable arguments (as ``cachetools.keys.hashkey``)."""
    if kwargs:
        return args + _KWMARK + tuple(sorted(kwargs.items()))
    return args


class _KwMark:
    """Separates positional from keyword arguments in keys made by ``hashkey``."""


_KWMARK: Tuple[Hashable, ...] = (_KwMark,)


def cached(
    cache: Optional[MutableMapping[Any, Any]],
    key: Callable[..., Hashable] = hashkey,
    lock: Optional[ContextManager[Any]] = None,
    *,
    info: bool = False,
) -> Callable[[_F], _F]:
    """Decorator that memoizes a function's results in ``cache``, as ``cachetools.cached``.

    ``info`` is keyword-only: ``cachetools.cached``'s fourth positional parameter is
    ``condition`` (recent cachetools), which leakguard does not have, so a positional call
    written for cachetools raises TypeError instead of meaning something else.

    ``key(*args, **kwargs)`` makes the cache key (``hashkey`` by default). ``lock``, when
    given, is held around each access to the cache (not while the function runs); a
    leakguard cache is thread-safe without one. With ``info=True`` the wrapper has
    ``cache_info()`` (hits, misses, maxsize, currsize). The wrapper also has
    ``cache_clear()``, ``cache``, ``cache_key`` and ``cache_lock``. ``cache=None`` calls the
    function every time.

    >>> from leakguard import LRUCache, cached
    >>> @cached(LRUCache(maxsize=32))
    ... def square(n):
    ...     return n * n
    >>> square(4), square(4)
    (16, 16)
    """

    def decorator(func: _F) -> _F:
        hits = misses = 0
        counter = threading.Lock()

        if cache is None:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                nonlocal misses
                with counter:
                    misses += 1
                return func(*args, **kwargs)

            def clear() -> None:
                nonlocal hits, misses
                with counter:
                    hits = misses = 0

        elif lock is None:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                nonlocal hits, misses
                k = key(*args, **kwargs)
                try:
                    result = cache[k]
                except KeyError:
                    pass
                else:
                    if info:
                        with counter:
                            hits += 1
                    return result
                if info:
                    with counter:
                        misses += 1
                v = func(*args, **kwargs)
                try:
                    cache[k] = v
                except ValueError:
                    pass  # value too large
                return v

            def clear() -> None:
                nonlocal hits, misses
                cache.clear()
                with counter:
                    hits = misses = 0

        else:
            the_lock = lock

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                nonlocal hits, misses
                k = key(*args, **kwargs)
                try:
                    with the_lock:
                        result = cache[k]
                except KeyError:
                    pass
                else:
                    if info:
                        with counter:
                            hits += 1
                    return result
                if info:
                    with counter:
                        misses += 1
                v = func(*args, **kwargs)
                try:
                    with the_lock:
                        # In case of a race, keep the value stored first.
                        return cache.setdefault(k, v)
                except ValueError:
                    return v  # value too large

            def clear() -> None:
                nonlocal hits, misses
                with the_lock:
                    cache.clear()
                with counter:
                    hits = misses = 0

        functools.update_wrapper(wrapper, func)
        attrs: Any = wrapper
        attrs.cache = cache
        attrs.cache_key = key
        attrs.cache_lock = lock
        attrs.cache_clear = clear
        if info:

            def cache_info() -> CacheInfo:
                with counter:
                    h, m = hits, misses
                if cache is None:
                    return CacheInfo(h, m, 0, 0)
                maxsize = getattr(cache, "maxsize", None)
                currsize = getattr(cache, "currsize", len(cache))
                return CacheInfo(h, m, maxsize, currsize)

            attrs.cache_info = cache_info
        return cast(_F, wrapper)

    return decorator

