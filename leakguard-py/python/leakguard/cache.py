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

import time
from typing import TYPE_CHECKING, Any, Callable, Generic, MutableMapping, Optional, TypeVar, Union, overload

from leakguard._leakguard import _CacheBase, _TTLCacheBase
from leakguard._memoize import CacheInfo, cached, cachedmethod
from leakguard.keys import hashkey, methodkey, typedkey, typedmethodkey

# The decorators and key functions live in their own modules; they are named here too, where
# earlier versions defined them.
__all__ = [
    "CacheInfo",
    "LRUCache",
    "TTLCache",
    "cached",
    "cachedmethod",
    "hashkey",
    "methodkey",
    "typedkey",
    "typedmethodkey",
]

_KT = TypeVar("_KT")
_VT = TypeVar("_VT")
_TT = TypeVar("_TT")
_T = TypeVar("_T")


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

    if TYPE_CHECKING:
        # The native base's methods take and give Any: typed here by the class's parameters.
        def __getitem__(self, key: _KT, /) -> _VT: ...

        @overload
        def get(self, key: _KT) -> Optional[_VT]: ...

        @overload
        def get(self, key: _KT, default: Union[_VT, _T]) -> Union[_VT, _T]: ...

        def get(self, key: _KT, default: Any = None) -> Any: ...


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

    if TYPE_CHECKING:
        # The native base's methods take and give Any: typed here by the class's parameters.
        def __getitem__(self, key: _KT, /) -> _VT: ...

        @overload
        def get(self, key: _KT) -> Optional[_VT]: ...

        @overload
        def get(self, key: _KT, default: Union[_VT, _T]) -> Union[_VT, _T]: ...

        def get(self, key: _KT, default: Any = None) -> Any: ...


# Both classes' default sizer is the same function, recognised (and skipped) by identity.
TTLCache.getsizeof = staticmethod(_default_getsizeof)  # type: ignore[method-assign]
