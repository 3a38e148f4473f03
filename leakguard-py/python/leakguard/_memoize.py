"""The memoizing decorators ``cached`` and ``cachedmethod``, as cachetools 8 has them.

The wrappers follow cachetools' own (``cachetools/_decorator.py``, ``_cached.py``,
``_cachedmethod.py`` and ``_descriptor.py`` of cachetools 8.0.1, by Thomas Kemmer, MIT
licence): one wrapper class per combination of ``lock``, ``condition`` and ``info``, so that
each call does only what its options ask, and cachetools' own tests of these decorators pass
against them (``tests/test_cachetools_suite.py``). They work with any mapping; given a
leakguard cache with a ``name``, what they store is reported, exported and shrunk by the
guard like any other entry of that cache.
"""

from __future__ import annotations

import functools
import types
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Hashable,
    MutableMapping,
    NamedTuple,
    Optional,
    Set,
    TypeVar,
    Union,
    cast,
)

from leakguard import keys
from leakguard._leakguard import _CachedBase

__all__ = ["CacheInfo", "cached", "cachedmethod"]

_F = TypeVar("_F", bound=Callable[..., Any])
_Info = Callable[[Any, int, int], "CacheInfo"]


class CacheInfo(NamedTuple):
    """Statistics of a memoized function, as ``functools.lru_cache`` gives them."""

    hits: int
    misses: int
    maxsize: Optional[float]
    currsize: float


def _make_info(cache: Any, hits: int, misses: int) -> CacheInfo:
    """``maxsize`` and ``currsize`` of a cache that has them (leakguard's and cachetools'
    caches); ``None`` and ``len(cache)`` for another mapping."""
    if hasattr(cache, "maxsize") and hasattr(cache, "currsize"):
        return CacheInfo(hits, misses, cache.maxsize, cache.currsize)
    return CacheInfo(hits, misses, None, len(cache))


# ---------------------------------------------------------------------------------------
# What a call does: one mixin per combination of lock, condition and info.


class _BasicMixin:
    cache: Any
    cache_key: Callable[..., Hashable]

    def __init__(self, func: Callable[..., Any]) -> None:
        self.__func = func

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        key = self.cache_key(*args, **kwargs)
        try:
            return cache[key]
        except KeyError:
            pass  # not cached
        val = self.__func(*args, **kwargs)
        try:
            cache[key] = val
        except ValueError:
            pass  # value too large
        return val

    def cache_clear(self) -> None:
        self.cache.clear()


class _LockedMixin:
    cache: Any
    cache_key: Callable[..., Hashable]
    cache_lock: Any

    def __init__(self, func: Callable[..., Any]) -> None:
        self.__func = func

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        key = self.cache_key(*args, **kwargs)
        lock = self.cache_lock
        with lock:
            try:
                return cache[key]
            except KeyError:
                pass  # not cached
        val = self.__func(*args, **kwargs)
        with lock:
            try:
                # Another thread may have stored a value meanwhile: keep that one.
                return cache.setdefault(key, val)
            except ValueError:
                return val  # value too large

    def cache_clear(self) -> None:
        with self.cache_lock:
            self.cache.clear()


class _ConditionMixin:
    cache: Any
    cache_key: Callable[..., Hashable]
    cache_lock: Any
    cache_condition: Any

    def __init__(self, func: Callable[..., Any]) -> None:
        self.__func = func
        self.__pending: Set[Hashable] = set()

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        key = self.cache_key(*args, **kwargs)
        lock = self.cache_lock
        cond = self.cache_condition
        with lock:
            # One computation per key at a time: the others wait for its result.
            while key in self.__pending:
                cond.wait()
            try:
                return cache[key]
            except KeyError:
                self.__pending.add(key)
        try:
            val = self.__func(*args, **kwargs)
            with lock:
                try:
                    cache[key] = val
                except ValueError:
                    pass  # value too large
                return val
        finally:
            with lock:
                self.__pending.remove(key)
                cond.notify_all()

    def cache_clear(self) -> None:
        with self.cache_lock:
            self.cache.clear()


class _InfoMixin:
    cache: Any
    cache_key: Callable[..., Hashable]

    def __init__(self, func: Callable[..., Any], info: _Info) -> None:
        self.__func = func
        self.__info = info
        self.__hits = self.__misses = 0

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        key = self.cache_key(*args, **kwargs)
        try:
            result = cache[key]
            self.__hits += 1
            return result
        except KeyError:
            self.__misses += 1
        val = self.__func(*args, **kwargs)
        try:
            cache[key] = val
        except ValueError:
            pass  # value too large
        return val

    def cache_clear(self) -> None:
        self.cache.clear()
        self.__hits = self.__misses = 0

    def cache_info(self) -> CacheInfo:
        return self.__info(self.cache, self.__hits, self.__misses)


class _LockedInfoMixin:
    cache: Any
    cache_key: Callable[..., Hashable]
    cache_lock: Any

    def __init__(self, func: Callable[..., Any], info: _Info) -> None:
        self.__func = func
        self.__info = info
        self.__hits = self.__misses = 0

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        key = self.cache_key(*args, **kwargs)
        lock = self.cache_lock
        with lock:
            try:
                result = cache[key]
                self.__hits += 1
                return result
            except KeyError:
                self.__misses += 1
        val = self.__func(*args, **kwargs)
        with lock:
            try:
                # Another thread may have stored a value meanwhile: keep that one.
                return cache.setdefault(key, val)
            except ValueError:
                return val  # value too large

    def cache_clear(self) -> None:
        with self.cache_lock:
            self.cache.clear()
            self.__hits = self.__misses = 0

    def cache_info(self) -> CacheInfo:
        with self.cache_lock:
            return self.__info(self.cache, self.__hits, self.__misses)


class _ConditionInfoMixin:
    cache: Any
    cache_key: Callable[..., Hashable]
    cache_lock: Any
    cache_condition: Any

    def __init__(self, func: Callable[..., Any], info: _Info) -> None:
        self.__func = func
        self.__info = info
        self.__hits = self.__misses = 0
        self.__pending: Set[Hashable] = set()

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        cache = self.cache
        key = self.cache_key(*args, **kwargs)
        lock = self.cache_lock
        cond = self.cache_condition
        with lock:
            while key in self.__pending:
                cond.wait()
            try:
                result = cache[key]
                self.__hits += 1
                return result
            except KeyError:
                self.__pending.add(key)
                self.__misses += 1
        try:
            val = self.__func(*args, **kwargs)
            with lock:
                try:
                    cache[key] = val
                except ValueError:
                    pass  # value too large
                return val
        finally:
            with lock:
                self.__pending.remove(key)
                cond.notify_all()

    def cache_clear(self) -> None:
        with self.cache_lock:
            self.cache.clear()
            self.__hits = self.__misses = 0

    def cache_info(self) -> CacheInfo:
        with self.cache_lock:
            return self.__info(self.cache, self.__hits, self.__misses)


_MIXINS: Dict[Any, Any] = {
    (False, False, False): _BasicMixin,
    (True, False, False): _LockedMixin,
    (True, True, False): _ConditionMixin,
    (False, False, True): _InfoMixin,
    (True, False, True): _LockedInfoMixin,
    (True, True, True): _ConditionInfoMixin,
}


def _lock_and_condition(lock: Any, cond: Any) -> Any:
    """The lock a wrapper holds: the given one, else the condition (a condition is a lock)."""
    return lock if lock is not None else cond


# ---------------------------------------------------------------------------------------
# cached: the wrapper of a function.


class _FunctionWrapperBase:
    """The public attributes of a ``cached`` function, and what makes it behave like one
    (binding as a method, copying and pickling as ``functools.lru_cache`` does)."""

    __wrapped__: Callable[..., Any]
    __qualname__: str

    def __init__(
        self,
        func: Callable[..., Any],
        cache: Any,
        key: Callable[..., Hashable],
        lock: Any = None,
        cond: Any = None,
    ) -> None:
        # First, so that func.__dict__ cannot override the wrapper's state.
        functools.update_wrapper(cast(Any, self), func)
        self.cache = cache
        self.cache_key = key
        self.cache_lock = lock
        self.cache_condition = cond

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else types.MethodType(cast(Any, self), obj)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self

    def __reduce__(self) -> str:
        return self.__qualname__

    def __repr__(self) -> str:
        return f"<cached {self.__wrapped__!r}>"


class _NativeWrapper(_CachedBase):
    """The wrapper of a function memoized without a lock or a condition: a call (the key,
    the lookup, the count and, on a miss, the function's call and the store) runs in the
    native core, as ``_BasicMixin`` does it; the rest is ``_FunctionWrapperBase``'s."""

    __wrapped__: Callable[..., Any]
    __qualname__: str

    def __init__(
        self, func: Callable[..., Any], cache: Any, key: Any, kind: int, info: bool, kwmark: Any
    ) -> None:
        # The core holds cache and key (read-only attributes: func.__dict__ cannot override
        # them).
        functools.update_wrapper(cast(Any, self), func)

    # Properties, so that what a stacked wrapper's __dict__ brings cannot override them.
    @property
    def cache_lock(self) -> None:
        return None

    @property
    def cache_condition(self) -> None:
        return None

    __get__ = _FunctionWrapperBase.__get__
    __copy__ = _FunctionWrapperBase.__copy__
    __deepcopy__ = _FunctionWrapperBase.__deepcopy__
    __reduce__ = _FunctionWrapperBase.__reduce__
    __repr__ = _FunctionWrapperBase.__repr__

    def cache_clear(self) -> None:
        self.cache.clear()


class _NativeInfoWrapper(_NativeWrapper):
    """``_NativeWrapper`` counting hits and misses, as ``_InfoMixin`` does."""

    def cache_clear(self) -> None:
        self.cache.clear()
        self._lg_reset_counts()

    def cache_info(self) -> CacheInfo:
        hits, misses = self._lg_counts()
        return _make_info(self.cache, hits, misses)


def _key_kind(key: Any) -> int:
    """1 for ``hashkey`` and 2 for ``typedkey`` (their keys are built natively), else 0."""
    if key is keys.hashkey:
        return 1
    if key is keys.typedkey:
        return 2
    return 0


def _function_class(locked: bool, conditioned: bool, info: bool) -> Any:
    mixin = _MIXINS[(locked, conditioned, info)]
    return _FUNCTION_CLASSES[mixin]


def _make_function_class(mixin: Any) -> Any:
    def __init__(
        self: Any, func: Any, cache: Any, key: Any, lock: Any, cond: Any, info: Any
    ) -> None:
        _FunctionWrapperBase.__init__(self, func, cache, key, lock, cond)
        if info is None:
            mixin.__init__(self, func)
        else:
            mixin.__init__(self, func, info)

    name = "_Cached" + mixin.__name__.replace("Mixin", "").lstrip("_")
    return type(name, (_FunctionWrapperBase, mixin), {"__init__": __init__, "__module__": __name__})


_FUNCTION_CLASSES: Dict[Any, Any] = {m: _make_function_class(m) for m in _MIXINS.values()}


def cached(
    cache: MutableMapping[Any, Any],
    key: Callable[..., Hashable] = keys.hashkey,
    lock: Optional[ContextManager[Any]] = None,
    condition: Optional[Any] = None,
    info: bool = False,
) -> Callable[[_F], _F]:
    """Decorator that memoizes a function's results in ``cache``, as ``cachetools.cached``.

    ``key(*args, **kwargs)`` makes the cache key (``hashkey`` by default; ``typedkey`` tells
    ``1`` from ``1.0``). ``lock``, when given, is held around each access to the cache (not
    while the function runs); a leakguard cache is thread-safe without one. ``condition``
    (a ``threading.Condition``, also used as the lock when ``lock`` is not given) makes
    concurrent calls with the same key wait for the first one's result instead of
    computing it again. With ``info=True`` the wrapper has ``cache_info()`` (hits, misses,
    maxsize, currsize). The wrapper also has ``cache_clear()``, ``cache``, ``cache_key``,
    ``cache_lock`` and ``cache_condition`` (read-only when neither ``lock`` nor ``condition``
    is given: such a wrapper's calls run in native code, and a hit runs no Python code at
    all when ``key`` is ``hashkey`` or ``typedkey`` and the cache is a leakguard cache or a
    dict). ``cache`` must be a mapping: ``None`` raises
    TypeError.

    >>> from leakguard import LRUCache, cached
    >>> @cached(LRUCache(maxsize=32, name="squares"))
    ... def square(n):
    ...     return n * n
    >>> square(4), square(4)
    (16, 16)
    """
    if cache is None:
        raise TypeError("cache must not be None")

    def decorator(func: _F) -> _F:
        the_lock = _lock_and_condition(lock, condition)
        if the_lock is None:
            native = _NativeInfoWrapper if info else _NativeWrapper
            kwmark = keys._KWMARK[0]
            return native(func, cache, key, _key_kind(key), bool(info), kwmark)  # type: ignore[return-value]
        cls = _function_class(the_lock is not None, condition is not None, bool(info))
        wrapper = cls(func, cache, key, the_lock, condition, _make_info if info else None)
        return wrapper  # type: ignore[no-any-return]

    return decorator


# ---------------------------------------------------------------------------------------
# cachedmethod: a descriptor that gives each instance its own wrapper.


class _MethodWrapperBase:
    """The public attributes of a ``cachedmethod`` bound to an instance; ``cache``,
    ``cache_lock`` and ``cache_condition`` are read from the instance on each access."""

    __wrapped__: Callable[..., Any]

    def __init__(
        self,
        obj: Any,
        descriptor: "_MethodDescriptor",
        method: Callable[..., Any],
        cache: Callable[[Any], Any],
        key: Callable[..., Hashable],
        lock: Optional[Callable[[Any], Any]] = None,
        cond: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        functools.update_wrapper(cast(Any, self), method)
        self.__obj = obj
        self.__descriptor = descriptor
        self.__cache = cache
        self.__lock = lock if lock is not None else _none
        self.__cond = cond if cond is not None else _none
        self.cache_key = functools.partial(key, obj)

    def __reduce__(self) -> Any:
        # Rebuilt through the descriptor (the lock and condition getters may not pickle);
        # an info wrapper's counts start again.
        return (self.__descriptor.__get__, (self.__obj,))

    def __repr__(self) -> str:
        return f"<cachedmethod {self.__wrapped__!r} of {object.__repr__(self.__obj)}>"

    @property
    def cache(self) -> Any:
        return self.__cache(self.__obj)

    @property
    def cache_lock(self) -> Any:
        return self.__lock(self.__obj)

    @property
    def cache_condition(self) -> Any:
        return self.__cond(self.__obj)


def _none(_: Any) -> None:
    return None


def _make_method_class(mixin: Any) -> Any:
    def __init__(
        self: Any,
        obj: Any,
        descriptor: Any,
        method: Any,
        cache: Any,
        key: Any,
        lock: Any,
        cond: Any,
        info: Any,
    ) -> None:
        _MethodWrapperBase.__init__(self, obj, descriptor, method, cache, key, lock, cond)
        bound = types.MethodType(method, obj)
        if info is None:
            mixin.__init__(self, bound)
        else:
            mixin.__init__(self, bound, info)

    name = "_CachedMethod" + mixin.__name__.replace("Mixin", "").lstrip("_")
    return type(name, (_MethodWrapperBase, mixin), {"__init__": __init__, "__module__": __name__})


_METHOD_CLASSES: Dict[Any, Any] = {m: _make_method_class(m) for m in _MIXINS.values()}


class _MethodDescriptor:
    """What ``@cachedmethod`` puts in the class: on first access from an instance it stores
    that instance's wrapper in the instance's ``__dict__`` under the method's name."""

    __wrapped__: Callable[..., Any]

    def __init__(self, wrapper: Callable[[Any, "_MethodDescriptor"], Any]) -> None:
        self.__owner: Any = None
        self.__attrname: Optional[str] = None
        self.__unbound: Optional[_Unbound] = None
        self.__wrapper = wrapper

    def __set_name__(self, owner: Any, name: str) -> None:
        if self.__attrname is None:
            self.__owner = owner
            self.__attrname = name
        elif name != self.__attrname:
            raise TypeError(
                "Cannot assign the same descriptor to two different names "
                f"({self.__attrname!r} and {name!r})."
            )

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        attrname = self.__attrname
        if attrname is None:
            if isinstance(obj, type):
                # Before Python 3.13, @classmethod calls __get__(cls, type(cls)) without
                # __set_name__: raise the TypeError that 3.13 raises.
                self.__call__()
            msg = "Cannot use descriptor instance without calling __set_name__ on it"
            raise TypeError(msg) from None
        if obj is None:
            return self.__get_unbound()
        for cls in type(obj).__mro__:
            if attrname in cls.__dict__:
                descriptor = cls.__dict__[attrname]
                break
        else:
            descriptor = None  # removed from the class after __set_name__
        if descriptor is self:
            wrapper = self.__wrapper(obj, self)
            try:
                # Another thread may have stored one meanwhile: keep that one.
                wrapper = obj.__dict__.setdefault(attrname, wrapper)
            except (AttributeError, TypeError) as e:
                self.__instance_dict_error(obj, e)
        else:
            # Reached through super() from an override: a wrapper per descriptor, kept
            # apart from the override's.
            try:
                wrappers = obj.__dict__.setdefault("__cachetools_cachedmethods", {})
            except (AttributeError, TypeError) as e:
                self.__instance_dict_error(obj, e)
            wrapper = wrappers.get(self)
            if wrapper is None:
                wrapper = wrappers.setdefault(self, self.__wrapper(obj, self))
        return wrapper

    def __reduce__(self) -> Any:
        # Pickled and copied by reference, so that wrappers and their keys can be.
        return (_lookup, (self.__owner, self.__attrname))

    # Called by whatever wraps the descriptor (@classmethod since Python 3.13,
    # @staticmethod, @property or any other decorator).
    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "Cannot call @cachedmethod descriptor directly: @cachedmethod must "
            "be the outermost decorator, and decorating class methods, static "
            "methods or properties is not supported"
        )

    def __get_unbound(self) -> "_Unbound":
        if self.__unbound is None:
            self.__unbound = _Unbound(self)
        return self.__unbound

    def __instance_dict_error(self, obj: Any, error: Exception) -> None:
        if isinstance(error, AttributeError):
            msg = (
                f"No '__dict__' attribute on {type(obj).__name__!r} "
                f"instance to cache {self.__attrname!r}"
            )
        else:
            msg = (
                f"The '__dict__' attribute on {type(obj).__name__!r} "
                f"instance does not support item assignment for "
                f"caching {self.__attrname!r}"
            )
        raise TypeError(msg) from None


def _lookup(owner: Any, name: str) -> Any:
    return owner.__dict__[name]


class _Unbound:
    """What the method is when read from the class: callable with the instance first (or by
    the receiver's keyword), bound like a method when aliased in another class."""

    __wrapped__: Callable[..., Any]

    def __init__(self, descriptor: _MethodDescriptor) -> None:
        functools.update_wrapper(self, descriptor.__wrapped__)
        self.__descriptor = descriptor
        self.__receiver: Optional[str] = None

    def __reduce__(self) -> Any:
        return (self.__descriptor.__get__, (None,))

    def __repr__(self) -> str:
        return f"<cachedmethod {self.__wrapped__!r}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return self.__descriptor.__get__(obj)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        if args:
            obj, *rest = args
        else:
            obj, rest = self.__pop_receiver(kwargs), []
        return self.__descriptor.__get__(obj)(*rest, **kwargs)

    def __pop_receiver(self, kwargs: Dict[str, Any]) -> Any:
        if self.__receiver is None:
            import inspect

            self.__receiver = ""
            try:
                param = next(iter(inspect.signature(self).parameters.values()))
            except (ValueError, StopIteration):
                pass  # no signature, or no parameters
            else:
                if param.kind is param.POSITIONAL_OR_KEYWORD:
                    self.__receiver = param.name
        try:
            return kwargs.pop(self.__receiver)
        except KeyError:
            msg = "Cannot call @cachedmethod through the class without an instance"
            raise TypeError(msg) from None


def cachedmethod(
    cache: Callable[[Any], MutableMapping[Any, Any]],
    key: Callable[..., Hashable] = keys.methodkey,
    lock: Optional[Callable[[Any], ContextManager[Any]]] = None,
    condition: Optional[Callable[[Any], Any]] = None,
    info: bool = False,
) -> Callable[[_F], _F]:
    """Decorator that memoizes a method's results, as ``cachetools.cachedmethod``.

    ``cache(self)`` gives the cache of an instance (for example ``lambda self: self.cache``,
    or ``operator.attrgetter("cache")``), and likewise ``lock(self)`` and ``condition(self)``
    when given. ``key`` is ``methodkey`` by default (the arguments without ``self``). Each
    instance gets its own wrapper (stored in its ``__dict__`` on first access), with
    ``cache``, ``cache_key``, ``cache_lock``, ``cache_condition``, ``cache_clear()`` and,
    with ``info=True``, ``cache_info()``. ``cache`` must be callable, else TypeError.

    >>> from leakguard import LRUCache, cachedmethod
    >>> class Prices:
    ...     def __init__(self):
    ...         self.cache = LRUCache(maxsize=100)
    ...     @cachedmethod(lambda self: self.cache)
    ...     def price(self, item):
    ...         return len(item)
    >>> Prices().price("apple")
    5
    """
    if not callable(cache):
        raise TypeError("cache must be callable")

    def decorator(method: _F) -> _F:
        the_lock = _lock_and_condition(lock, condition)
        mixin = _MIXINS[(the_lock is not None, condition is not None, bool(info))]
        cls = _METHOD_CLASSES[mixin]
        make_info: Union[_Info, None] = _make_info if info else None

        def wrapper(obj: Any, descriptor: _MethodDescriptor) -> Any:
            return cls(obj, descriptor, method, cache, key, the_lock, condition, make_info)

        descriptor = _MethodDescriptor(wrapper)
        return functools.update_wrapper(descriptor, method)  # type: ignore[return-value]

    return decorator
