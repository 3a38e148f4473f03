"""leakguard.LRUCache, TTLCache and cached: cachetools' behaviour, thread safety, the lock's
behaviour with the GIL, registration with the guard and shrinking under memory pressure.

cachetools' own suite runs against these classes in test_cachetools_suite.py; here random
operation sequences are also replayed on cachetools' classes (the oracle) and compared step
by step.
"""

from __future__ import annotations

import gc
import pickle
import random
import sys
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Union

import pytest

import leakguard
from leakguard import LRUCache, TTLCache, cached
from leakguard import _leakguard as native

try:
    import cachetools
except ImportError:  # cachetools 8 (requirements-dev.txt) needs Python >= 3.11
    cachetools = None  # type: ignore[assignment]

#: The tests that replay operations on cachetools' classes as the oracle.
needs_cachetools = pytest.mark.skipif(cachetools is None, reason="cachetools is not installed")


def report_of(name: str) -> Optional[Dict[str, Any]]:
    for r in native._cache_report():
        if r["name"] == name:
            return dict(r)
    return None


class Clock:
    """A manual timer, shared by a leakguard cache and its cachetools oracle."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def replay(mine: Any, theirs: Any, seed: int, steps: int, clock: Optional[Clock]) -> None:
    rng = random.Random(seed)
    for step in range(steps):
        op = rng.random()
        key = rng.randrange(12)
        where = f"seed {seed} step {step}"
        if clock is not None and op < 0.05:
            clock.now += rng.choice([0.5, 1.0, 2.5])
        elif op < 0.40:
            value = rng.randrange(1, 4)

            def setitem(c: Any) -> Any:
                c[key] = value
                return None

            assert _outcome(setitem, mine) == _outcome(setitem, theirs), where
        elif op < 0.70:
            assert _outcome(lambda c: c[key], mine) == _outcome(lambda c: c[key], theirs), where
        elif op < 0.75:
            assert _outcome(lambda c: c.get(key), mine) == _outcome(
                lambda c: c.get(key), theirs
            ), where
        elif op < 0.80:
            assert _outcome(lambda c: c.pop(key, None), mine) == _outcome(
                lambda c: c.pop(key, None), theirs
            ), where
        elif op < 0.85:
            assert _outcome(lambda c: c.popitem(), mine) == _outcome(
                lambda c: c.popitem(), theirs
            ), where
        elif op < 0.90:

            def delitem(c: Any) -> Any:
                del c[key]
                return None

            assert _outcome(delitem, mine) == _outcome(delitem, theirs), where
        elif op < 0.95:
            assert (key in mine) == (key in theirs), where
        elif clock is not None:
            assert sorted(mine.expire()) == sorted(theirs.expire()), where
        assert list(mine) == list(theirs), where
        assert len(mine) == len(theirs), where
        assert mine.currsize == theirs.currsize, where


def _outcome(f: Any, cache: Any) -> Any:
    try:
        return ("ok", f(cache))
    except KeyError as e:
        return ("KeyError", e.args)
    except ValueError as e:
        return ("ValueError", e.args)


@needs_cachetools
@pytest.mark.parametrize("seed", range(8))
def test_lru_matches_cachetools_step_by_step(seed: int) -> None:
    replay(LRUCache(5), cachetools.LRUCache(5), seed, 600, None)


@needs_cachetools
@pytest.mark.parametrize("seed", range(4))
def test_lru_with_getsizeof_matches_cachetools(seed: int) -> None:
    replay(
        LRUCache(7, getsizeof=lambda v: v),
        cachetools.LRUCache(7, getsizeof=lambda v: v),
        seed,
        600,
        None,
    )


@needs_cachetools
@pytest.mark.parametrize("seed", range(8))
def test_ttl_matches_cachetools_step_by_step(seed: int) -> None:
    clock = Clock()
    replay(
        TTLCache(5, ttl=3, timer=clock),
        cachetools.TTLCache(5, ttl=3, timer=clock),
        seed,
        600,
        clock,
    )


def test_evicts_exactly_the_least_recently_used() -> None:
    cache: LRUCache[str, str] = LRUCache(3)
    for k in "abc":
        cache[k] = k
    cache["a"]
    cache.get("b")
    cache["d"] = "d"  # c was used longest ago
    assert sorted(cache) == ["a", "b", "d"]
    assert "c" not in cache  # `in` does not count as a use
    cache["e"] = "e"
    assert sorted(cache) == ["b", "d", "e"]
    assert cache.popitem() == ("b", "b")


def test_a_full_cache_writes_new_keys_over_the_evicted_entries() -> None:
    # A new key that evicts one entry takes its slot: the orders, the sizes, the counters and
    # the evicted objects' release must be those of a removal and an insertion.
    class Box:
        pass

    cache: LRUCache[int, Box] = LRUCache(4, name="pytest-overwrite")
    values = [Box() for _ in range(40)]
    refs = [weakref.ref(v) for v in values]
    for k in range(4):
        cache[k] = values[k]
    cache[0]
    lru = [1, 2, 3, 0]  # least recently used first; iteration is in insertion order
    for k in range(4, 40):
        cache[k] = values[k]
        evicted, lru = lru[0], lru[1:] + [k]
        assert evicted not in cache and all(x in cache for x in lru), k
        assert list(cache) == sorted(lru, key=lambda x: (x != 0, x)), k
        assert len(cache) == 4 and cache.currsize == 4
    assert lru == [36, 37, 38, 39]
    assert cache.popitem() == (36, values[36])
    r = report_of("pytest-overwrite")
    assert r is not None
    assert (r["entries"], r["inserts"]) == (3, 40)
    assert r["evictions"]["capacity"] == 36
    del values
    gc.collect()
    assert [i for i, ref in enumerate(refs) if ref() is not None] == [37, 38, 39]
    # Weighted: a value that needs two entries gone evicts both, then fits.
    weighted: LRUCache[str, int] = LRUCache(6, getsizeof=lambda v: v)
    for wk, wv in (("a", 2), ("b", 2), ("c", 2)):
        weighted[wk] = wv
    weighted["d"] = 4
    assert (list(weighted), weighted.currsize) == (["c", "d"], 6)
    weighted["e"] = 2
    assert (list(weighted), weighted.currsize) == (["d", "e"], 6)


def test_ttl_on_the_monotonic_clock_expires_and_honours_a_frozen_timer() -> None:
    # With the default timer the clock is read only when a key is found.
    ttl = 0.5
    cache: TTLCache[str, int, float] = TTLCache(4, ttl=ttl)
    before = time.monotonic()
    cache["a"] = 1
    assert cache.get("missing") is None
    assert (cache.get("a"), cache["a"], "a" in cache) == (1, 1, True)
    with cache.timer as frozen:
        if frozen >= before + ttl:
            pytest.skip("the machine stalled past the entry's time to live")
        # Wait until the clock has passed the entry's expiry: the frozen time has not.
        while time.monotonic() < before + ttl + 0.05:
            time.sleep(0.01)
        assert (cache.get("a"), cache["a"], "a" in cache) == (1, 1, True)
    assert cache.get("a") is None
    assert "a" not in cache
    with pytest.raises(KeyError):
        cache["a"]


def test_subclass_popitem_sees_every_eviction() -> None:
    evicted: List[Any] = []

    class Noisy(LRUCache):  # type: ignore[type-arg]
        def __init__(self, maxsize: int) -> None:
            LRUCache.__init__(self, maxsize)

        def popitem(self) -> Any:
            item = super().popitem()
            evicted.append(item)
            return item

    cache = Noisy(2)
    for k in range(5):
        cache[k] = k * 10
    assert evicted == [(0, 0), (1, 10), (2, 20)]
    assert dict(cache.items()) == {3: 30, 4: 40}


class Tagged(LRUCache):  # type: ignore[type-arg]
    """A subclass at module level, so that pickle finds it."""

    tag: str


def test_pickle_keeps_order_sizes_and_subclass_attributes() -> None:
    cache = Tagged(3, getsizeof=len)
    cache.tag = "x"
    cache["a"] = "1"
    cache["b"] = "22"
    cache["a"]
    copy = pickle.loads(pickle.dumps(cache))
    assert type(copy) is Tagged and copy.tag == "x"
    assert copy.currsize == 3 and copy.getsizeof is len
    copy["c"] = "333"  # evicts b (least recently used) and then a
    assert list(copy) == ["c"]


def test_generic_aliases() -> None:
    assert LRUCache[int, str](2).maxsize == 2
    assert TTLCache[int, str, float](2, ttl=1).ttl == 1


def test_thread_safe_under_concurrent_use() -> None:
    cache: LRUCache[int, int] = LRUCache(64)
    errors: List[BaseException] = []
    barrier = threading.Barrier(6)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        try:
            for _ in range(20_000):
                k = rng.randrange(200)
                op = rng.random()
                if op < 0.5:
                    cache[k] = k
                elif op < 0.8:
                    v = cache.get(k)
                    assert v is None or v == k
                elif op < 0.9:
                    cache.pop(k, None)
                else:
                    try:
                        cache.popitem()
                    except KeyError:
                        pass
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(cache) <= 64
    assert cache.currsize == len(cache) == len(list(cache))
    for k in list(cache):
        assert cache[k] == k


class SlowKey:
    """Equal to other SlowKeys of the same name, slowly: __eq__ sleeps (releasing the GIL)."""

    def __init__(self, name: str, delay: float, entered: Optional[threading.Event] = None):
        self.name = name
        self.delay = delay
        self.entered = entered

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        if self.entered is not None:
            self.entered.set()
        time.sleep(self.delay)
        return isinstance(other, SlowKey) and other.name == self.name


def test_a_thread_waiting_for_the_lock_lets_the_holder_finish() -> None:
    # The holder compares keys (sleeping, without the GIL) under the cache's lock; another
    # thread wants the lock meanwhile. It must wait with the GIL released, or both would
    # wait for each other for ever.
    # The stored key's __eq__ is the one called (as in a dict), so that one is slow.
    cache: LRUCache[Any, int] = LRUCache(10)
    entered = threading.Event()
    cache[SlowKey("k", 0.3, entered)] = 1
    results: List[Any] = []

    def holder() -> None:
        results.append(cache[SlowKey("k", 0.0)])

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(5)
    start = time.monotonic()
    cache["other"] = 2  # waits for the holder
    waited = time.monotonic() - start
    t.join(5)
    assert not t.is_alive()
    assert results == [1]
    assert cache["other"] == 2
    assert waited > 0.1


def test_using_the_cache_from_a_key_comparison_raises_instead_of_deadlocking() -> None:
    cache: LRUCache[Any, int] = LRUCache(10)

    class Meddler:
        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            cache.get("anything")
            return False

    cache[Meddler()] = 1
    with pytest.raises(RuntimeError, match="used again from within"):
        cache[Meddler()]
    assert len(cache) == 1  # still usable


def test_named_caches_register_and_report_their_counters() -> None:
    cache: LRUCache[int, int] = LRUCache(100, name="pytest-users")
    twin: LRUCache[int, int] = LRUCache(100, name="pytest-users")
    assert cache.leakguard_name == "pytest-users"
    assert twin.leakguard_name == "pytest-users-2"
    for k in range(10):
        cache[k] = k
    cache[3]
    cache.get(99)
    del cache[4]
    r = report_of("pytest-users")
    assert r is not None
    assert (r["kind"], r["entries"], r["capacity"], r["capacity_unit"]) == (
        "lru",
        9,
        100,
        "entries",
    )
    assert (r["hits"], r["misses"], r["inserts"]) == (1, 1, 10)
    assert r["evictions"]["explicit"] == 1
    assert r["weight_bytes_estimated"] is True and r["weight_bytes"] > 0
    del cache, twin
    gc.collect()
    assert report_of("pytest-users") is None
    assert report_of("pytest-users-2") is None


def test_unnamed_caches_do_not_register() -> None:
    before = {r["name"] for r in native._cache_report()}
    cache: LRUCache[int, int] = LRUCache(10)
    cache[1] = 1
    assert cache.leakguard_name is None
    assert {r["name"] for r in native._cache_report()} == before


def test_memory_pressure_evicts_least_recently_used_and_frees_values() -> None:
    class Value:
        pass

    cache: LRUCache[int, Value] = LRUCache(1000, name="pytest-pressure")
    refs = []
    for k in range(100):
        v = Value()
        refs.append(weakref.ref(v))
        cache[k] = v
    del v
    for k in range(50, 100):
        cache[k]  # the upper half is the most recently used
    # From another thread, without the GIL, as the guard's thread does it.
    t = threading.Thread(target=native._shrink_caches, args=(0.5,))
    t.start()
    t.join()
    cache.get(0)  # any call into the extension applies decrements deferred by that thread
    assert len(cache) == 50
    assert sorted(cache) == list(range(50, 100))
    assert all(r() is None for r in refs[:50])
    assert all(r() is not None for r in refs[50:])
    r = report_of("pytest-pressure")
    assert r is not None and r["evictions"]["pressure"] == 50 and r["entries"] == 50
    assert cache.leakguard_stats()["evictions"]["pressure"] == 50


def test_shrinking_gives_up_on_a_busy_cache_instead_of_waiting() -> None:
    cache: LRUCache[Any, int] = LRUCache(10, name="pytest-busy")
    entered = threading.Event()
    cache[SlowKey("k", 1.0, entered)] = 1
    t = threading.Thread(target=lambda: cache.get(SlowKey("k", 0.0)))
    t.start()
    assert entered.wait(5)
    start = time.monotonic()
    native._shrink_caches(0.0)  # the cache's lock is held for a second
    assert time.monotonic() - start < 0.8
    t.join(5)
    assert len(cache) == 1
    native._shrink_caches(0.0)
    assert len(cache) == 0


def test_the_guard_tick_reclaims_expired_entries_of_idle_caches() -> None:
    cache: TTLCache[int, int, float] = TTLCache(100, ttl=0.05, name="pytest-ttl")
    for k in range(10):
        cache[k] = k
    time.sleep(0.1)
    r = report_of("pytest-ttl")
    assert r is not None and r["entries"] == 10 and r["kind"] == "ttl"
    assert r["ttl_seconds"] == pytest.approx(0.05)
    native._maintain_caches()
    r = report_of("pytest-ttl")
    assert r is not None and r["entries"] == 0 and r["evictions"]["expired"] == 10


def test_getsizeof_caches_report_their_weight() -> None:
    cache: LRUCache[str, bytes] = LRUCache(1 << 20, getsizeof=len, name="pytest-bytes")
    cache["a"] = b"x" * 1000
    cache["b"] = b"y" * 500
    r = report_of("pytest-bytes")
    assert r is not None
    assert (r["capacity_unit"], r["weight"], r["weight_bytes"]) == ("weight", 1500, 1500)
    assert r["weight_bytes_estimated"] is False


def test_cached_memoizes_with_info_lock_and_key() -> None:
    calls: List[int] = []

    @cached(LRUCache(maxsize=2), info=True)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(2), square(2), square(3), square(2)] == [4, 4, 9, 4]
    assert calls == [2, 3]
    info = square.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.maxsize, info.currsize) == (2, 2, 2, 2)
    square.cache_clear()  # type: ignore[attr-defined]
    assert square.cache_info().currsize == 0  # type: ignore[attr-defined]

    lock = threading.Lock()

    @cached(LRUCache(maxsize=10), key=lambda a, b=0: a, lock=lock)
    def first(a: int, b: int = 0) -> int:
        return a + b

    assert first(1, b=5) == 6
    assert first(1, b=7) == 6  # same key
    assert first.cache_lock is lock  # type: ignore[attr-defined]


def test_cached_takes_condition_and_info_by_position_as_cachetools() -> None:
    # cachetools.cached(cache, key, lock, condition, info)
    cond = threading.Condition()

    @cached(LRUCache(maxsize=2), leakguard.hashkey, None, cond, True)
    def double(n: int) -> int:
        return 2 * n

    assert double(3) == 6 and double(3) == 6
    assert tuple(double.cache_info()) == (1, 1, 2, 1)  # type: ignore[attr-defined]
    assert double.cache_condition is cond  # type: ignore[attr-defined]


def test_reference_cycles_through_a_cache_are_collected() -> None:
    class Node:
        pass

    cache: LRUCache[str, Any] = LRUCache(10)
    node = Node()
    node.cache = cache  # type: ignore[attr-defined]
    cache["self"] = node
    ttl: TTLCache[str, Any, float] = TTLCache(10, ttl=60)
    ttl["self"] = ttl
    refs: List["weakref.ref[Any]"] = [weakref.ref(cache), weakref.ref(node), weakref.ref(ttl)]
    del cache, node, ttl
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_uninitialized_subclass_raises_a_clear_error() -> None:
    class Forgetful(LRUCache):  # type: ignore[type-arg]
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__init__ was not called"):
        Forgetful()[1] = 1


def test_docstring_examples_run() -> None:
    import doctest

    import leakguard._memoize
    import leakguard.cache
    import leakguard.keys

    for module, examples in [
        (leakguard.cache, 4),
        (leakguard._memoize, 4),
        (leakguard.keys, 2),
    ]:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted >= examples, module
        assert result.failed == 0, module


def test_exports() -> None:
    for name in ("LRUCache", "TTLCache", "cached", "cachedmethod", "CacheInfo", "hashkey"):
        assert name in leakguard.__all__
        assert getattr(leakguard, name) is not None


def test_get_and_getitem_are_typed_by_the_class_parameters() -> None:
    # Checked by mypy --strict (make lint): were get() or [] typed Any, returning them from
    # these functions would be an error ("Returning Any from function declared to return").
    def lru_get(c: LRUCache[str, int]) -> Optional[int]:
        return c.get("a")

    def lru_get_default(c: LRUCache[str, int]) -> Union[int, str]:
        return c.get("a", "none")

    def ttl_item(c: TTLCache[str, int, float]) -> int:
        return c["a"]

    lru: LRUCache[str, int] = LRUCache(2)
    lru["a"] = 1
    ttl: TTLCache[str, int, float] = TTLCache(2, ttl=60)
    ttl["a"] = 3
    assert (lru_get(lru), lru_get_default(LRUCache(2)), ttl_item(ttl)) == (1, "none", 3)


@pytest.mark.parametrize("make", [lambda: LRUCache(64), lambda: TTLCache(64, 3600)])
def test_int_keys_that_share_a_hash_are_told_apart_as_a_dict_does(make: Any) -> None:
    # Small exact ints are their own hash, and a lookup takes two such ints with equal
    # hashes as equal without Python's comparison; every other key with the same hash
    # (a big int, -1 whose hash is -2, bool, float, an int subclass) must still be compared.
    class Int(int):
        pass

    m = 2**61 - 1
    keys: List[Any] = [5, 5 + m, -5 - m, 10**30, -1, -2, 1, True, 1.0, 7, Int(7), 0, False]
    cache = make()
    expected: Dict[Any, Any] = {}
    for i, k in enumerate(keys):
        cache[k] = i
        expected[k] = i
    assert len(cache) == len(expected)
    for k in keys:
        # Equal keys made anew (not the stored objects), so that identity does not decide.
        fresh = int(str(k)) if type(k) is int else k
        assert cache[fresh] == expected[k], k
        assert cache.get(fresh) == expected[k], k
        assert (fresh in cache) is True
    assert 5 + 2 * m not in cache and cache.get(-3) is None
    del cache[int("-1")]
    assert -1 not in cache and cache[-2] == expected[-2]
