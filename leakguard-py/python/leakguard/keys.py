"""Key functions for the memoizing decorators, as ``cachetools.keys`` has them.

``hashkey`` and ``typedkey`` make a key of a function's arguments; ``methodkey`` and
``typedmethodkey`` do the same for a method, leaving out its first argument (``self``).
Typed keys also tell ``1`` from ``1.0`` and ``True``. Keys are plain tuples (as in
cachetools 8): equal arguments give equal keys with equal hashes, they pickle, and an
unhashable argument raises TypeError when the key is hashed.

>>> from leakguard.keys import hashkey, typedkey
>>> hashkey(1, 2) == hashkey(1.0, 2.0), typedkey(1, 2) == typedkey(1.0, 2.0)
(True, False)
"""

from __future__ import annotations

from typing import Any, Hashable, Tuple

__all__ = ["hashkey", "methodkey", "typedkey", "typedmethodkey"]


class _HashedTuple(tuple):  # type: ignore[type-arg]
    """The separator of positional and keyword arguments in a key (the class itself, so
    that it keeps its identity through pickling), as cachetools marks them."""


_KWMARK: Tuple[Hashable, ...] = (_HashedTuple,)


def hashkey(*args: Hashable, **kwargs: Hashable) -> Tuple[Hashable, ...]:
    """Return a cache key for the given hashable arguments."""
    if kwargs:
        return args + _KWMARK + tuple(sorted(kwargs.items()))
    return args


def methodkey(self: Any, /, *args: Hashable, **kwargs: Hashable) -> Tuple[Hashable, ...]:
    """Return a cache key for a method's arguments: ``hashkey`` without ``self``."""
    if kwargs:
        return args + _KWMARK + tuple(sorted(kwargs.items()))
    return args


def typedkey(*args: Hashable, **kwargs: Hashable) -> Tuple[Hashable, ...]:
    """Return a cache key that also holds the arguments' types."""
    if kwargs:
        sorted_kwargs = tuple(sorted(kwargs.items()))
        key: Tuple[Hashable, ...] = args + _KWMARK + sorted_kwargs
        key += tuple([type(v) for _, v in sorted_kwargs])
    else:
        key = args
    return key + tuple(map(type, args))


def typedmethodkey(self: Any, /, *args: Hashable, **kwargs: Hashable) -> Tuple[Hashable, ...]:
    """Return a typed cache key for a method's arguments: ``typedkey`` without ``self``."""
    if kwargs:
        sorted_kwargs = tuple(sorted(kwargs.items()))
        key: Tuple[Hashable, ...] = args + _KWMARK + sorted_kwargs
        key += tuple([type(v) for _, v in sorted_kwargs])
    else:
        key = args
    return key + tuple(map(type, args))
