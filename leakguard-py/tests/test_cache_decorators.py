"""leakguard.cached, cachedmethod and the key functions: what cachetools' suite does not see.

cachetools' own tests of these run in test_cachetools_suite.py. Here: the guard's side (a
named cache used through a decorator is reported and shrunk like any other), the condition
argument under real threads, and the errors and repr a user meets.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Dict, List, Optional, cast

import pytest

import leakguard
from leakguard import LRUCache, TTLCache, cached, cachedmethod, hashkey, typedkey
from leakguard import _leakguard as native


def report_of(name: str) -> Optional[Dict[str, Any]]:
    for r in native._cache_report():
        if r["name"] == name:
            return dict(r)
    return None


def test_a_named_cache_behind_cached_is_reported_and_shrunk_by_the_guard() -> None:
    calls: List[int] = []
    cache: LRUCache[Any, int] = LRUCache(maxsize=100, name="pytest-decorated")

    @cached(cache, info=True)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    for n in [1, 2, 3, 1, 2, 3, 1]:
        square(n)
    assert calls == [1, 2, 3]
    r = report_of(cache.leakguard_name or "")
    assert r is not None
    assert (r["entries"], r["hits"], r["misses"]) == (3, 4, 3)
    assert tuple(square.cache_info()) == (4, 3, 100, 3)  # type: ignore[attr-defined]

    # Memory pressure: the guard evicts the least recently used entries; the function is
    # called again for them, and the report counts them as evicted under pressure.
    assert native._shrink_caches(0.0) >= 3
    assert len(cache) == 0
    square(1)
    assert calls == [1, 2, 3, 1]
    r = report_of(cache.leakguard_name or "")
    assert r is not None
    assert r["evictions"]["pressure"] == 3


def test_condition_makes_concurrent_callers_of_one_key_wait_for_one_computation() -> None:
    started = threading.Event()
    release = threading.Event()
    waiting = threading.Event()
    calls: List[int] = []

    class Watched(threading.Condition):
        def wait(self, timeout: Optional[float] = None) -> bool:
            waiting.set()
            return super().wait(timeout)

    cond = Watched()

    @cached(LRUCache(maxsize=10), hashkey, None, cond, True)  # condition and info by position
    def slow(n: int) -> int:
        calls.append(n)
        started.set()
        assert release.wait(30)
        return n * 10

    results: List[int] = []
    first = threading.Thread(target=lambda: results.append(slow(7)))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=lambda: results.append(slow(7)))
    second.start()
    # The second caller waits on the condition for the first one's result.
    assert waiting.wait(30)
    release.set()
    first.join(30)
    second.join(30)
    assert results == [70, 70]
    assert calls == [7]
    assert slow.cache_condition is cond  # type: ignore[attr-defined]
    assert slow.cache_lock is cond  # type: ignore[attr-defined]
    assert tuple(slow.cache_info()) == (1, 1, 10, 1)  # type: ignore[attr-defined]


def test_invalid_caches_raise_type_error() -> None:
    untyped: Any = cached
    with pytest.raises(TypeError, match="None"):
        untyped(None)
    with pytest.raises(TypeError, match="callable"):
        cachedmethod(LRUCache(maxsize=2))  # type: ignore[arg-type]


def test_repr_and_attributes_are_cachetools() -> None:
    cache: LRUCache[Any, Any] = LRUCache(maxsize=2)

    def f(x: int) -> int:
        return x

    wrapper: Any = cached(cache, key=typedkey)(f)
    assert repr(wrapper) == f"<cached {f!r}>"
    assert wrapper.__wrapped__ is f
    assert (wrapper.cache, wrapper.cache_key, wrapper.cache_lock) == (cache, typedkey, None)
    assert wrapper.cache_condition is None
    assert wrapper(1) == 1 and wrapper(1.0) == 1.0
    assert len(cache) == 2  # typed keys: 1 and 1.0 apart


class Prices:
    """Instances share one named TTL cache through cachedmethod."""

    shared: "TTLCache[Any, int, float]" = TTLCache(maxsize=64, ttl=3600, name="pytest-prices")

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.calls = 0

    @cachedmethod(lambda self: self.shared, key=lambda self, item: (self.factor, item), info=True)
    def price(self, item: str) -> int:
        self.calls += 1
        return self.factor * len(item)


def test_cachedmethod_keeps_a_wrapper_per_instance_over_a_shared_named_cache() -> None:
    a, b = Prices(1), Prices(2)
    assert [a.price("apple"), a.price("apple"), b.price("apple")] == [5, 5, 10]
    assert (a.calls, b.calls) == (1, 1)
    wrapper = cast(Any, a.price)
    assert tuple(wrapper.cache_info()) == (1, 1, 64, 2)
    assert repr(wrapper).startswith("<cachedmethod ")
    assert a.__dict__["price"] is wrapper  # stored in the instance on first access
    r = report_of(Prices.shared.leakguard_name or "")
    assert r is not None and r["kind"] == "ttl" and r["entries"] == 2
    # Pickled by reference through the class, with a wrapper of its own.
    copy = pickle.loads(pickle.dumps(a))
    assert copy.price("apple") == 5
    Prices.shared.clear()


def test_every_decorator_and_key_function_is_exported() -> None:
    for name in ["cached", "cachedmethod", "hashkey", "methodkey", "typedkey", "typedmethodkey"]:
        assert name in leakguard.__all__
        assert getattr(leakguard, name) is getattr(leakguard.cache, name)
    assert leakguard.keys.methodkey("self", 1, x=2) == leakguard.keys.hashkey(1, x=2)


def test_a_hit_runs_no_python_code_and_keys_are_those_of_the_key_functions() -> None:
    cache: LRUCache[Any, Any] = LRUCache(maxsize=8, name="pytest-native-hit")
    calls: List[Any] = []

    @cached(cache, info=True)
    def f(a: Any, b: Any = 0, *, c: Any = 0) -> Any:
        calls.append((a, b, c))
        return (a, b, c)

    assert f(1, c=3, b=2) == (1, 2, 3)
    assert f(1, **{}) == (1, 0, 0)
    # The keys are hashkey's: the arguments' tuple, and the sorted keywords after the mark.
    assert set(cache) == {hashkey(1, c=3, b=2), hashkey(1)}
    events: List[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            events.append(frame.f_code.co_name)

    import sys

    sys.setprofile(profile)
    try:
        hits = [f(1, b=2, c=3), f(1)]
    finally:
        sys.setprofile(None)
    assert hits == [(1, 2, 3), (1, 0, 0)]
    assert events == []  # no Python frame: not the wrapper's, not hashkey's
    assert len(calls) == 2
    assert tuple(f.cache_info()) == (2, 2, 8, 2)  # type: ignore[attr-defined]

    typed: LRUCache[Any, Any] = LRUCache(maxsize=8)
    g: Any = cached(typed, key=typedkey)(lambda a, b=0: (a, b))
    assert g(1, b=2.0) == (1, 2.0) and g(1.0, b=2) == (1.0, 2)
    assert set(typed) == {typedkey(1, b=2.0), typedkey(1.0, b=2)}


def test_errors_propagate_and_are_not_cached() -> None:
    cache: LRUCache[Any, Any] = LRUCache(maxsize=8)
    calls: List[int] = []

    @cached(cache)
    def f(n: Any) -> int:
        calls.append(n)
        if n < 0:
            raise ValueError("negative")
        return int(n)

    for _ in range(2):
        with pytest.raises(ValueError, match="negative"):
            f(-1)
    assert calls == [-1, -1] and len(cache) == 0
    with pytest.raises(TypeError, match="unhashable"):
        f([1])
    assert f(2) == 2 and f(2) == 2 and calls == [-1, -1, 2]

    # A recursive function sees its own results cached.
    @cached(LRUCache(maxsize=128))
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(80) == 23416728348467685


def test_other_mappings_and_overriding_caches_are_read_through_getitem() -> None:
    class Defaulting(LRUCache[Any, Any]):
        def __missing__(self, key: Any) -> Any:
            return "default"

    class Counting(LRUCache[Any, Any]):
        reads = 0

        def __getitem__(self, key: Any) -> Any:
            Counting.reads += 1
            return super().__getitem__(key)

    class Odd(KeyError):
        pass

    class Strict(dict):  # type: ignore[type-arg]
        def __missing__(self, key: Any) -> Any:
            raise Odd(key)  # a KeyError subclass: a miss

    caches: List[Any] = [Defaulting(maxsize=4), Counting(maxsize=4), Strict(), {}]
    for cache in caches:
        wrapper: Any = cached(cache)(lambda n: n * 10)
        first, second = wrapper(1), wrapper(1)
        if isinstance(cache, Defaulting):
            assert (first, second) == ("default", "default")  # __missing__ answers
        else:
            assert (first, second) == (10, 10) and cache[(1,)] == 10
    assert Counting.reads >= 2

    class Refusing(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: Any, value: Any) -> None:
            raise ValueError("value too large")

    refused: Any = cached(Refusing())(lambda n: n + 1)
    assert refused(1) == 2 and refused(1) == 2  # computed each time, not stored


def test_the_wrapper_behaves_as_a_function() -> None:
    import copy
    import gc
    import weakref

    cache: LRUCache[Any, Any] = LRUCache(maxsize=8)

    class Shop:
        @cached(cache)
        def price(self, item: str) -> int:
            return len(item)

    shop = Shop()
    assert shop.price("apple") == 5 and Shop.price(shop, "apple") == 5
    wrapper: Any = Shop.__dict__["price"]
    assert copy.copy(wrapper) is wrapper and copy.deepcopy(wrapper) is wrapper
    assert (wrapper.cache_lock, wrapper.cache_condition) == (None, None)
    with pytest.raises(AttributeError):
        wrapper.cache = {}
    wrapper.cache_clear()
    assert len(cache) == 0

    # Stacked over a locked wrapper, the outer one keeps its own attributes.
    lock = threading.Lock()
    inner: Any = cached(LRUCache(maxsize=2), lock=lock)(lambda n: n)
    outer: Any = cached(LRUCache(maxsize=2))(inner)
    assert outer(3) == 3 and outer.cache_lock is None and outer.__wrapped__ is inner

    # A cycle through the wrapper (the function's globals, the cache holding the wrapper)
    # is collected.
    def make() -> "weakref.ref[Any]":
        holder: LRUCache[Any, Any] = LRUCache(maxsize=2)

        def fn(n: int) -> int:
            return n

        w: Any = cached(holder)(fn)
        holder["self"] = w
        return weakref.ref(w)

    ref = make()
    gc.collect()
    assert ref() is None
