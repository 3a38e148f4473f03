"""Resource handles: what is open, how long, and who opened it.

A *handle* is anything that is opened and must be closed: a connection, a client, a file, a
job, a subscription. leakguard counts them by *kind*, in the same registry as the Rust core's
handles, so they appear in the report and in the ``/metrics`` families
``leakguard_handles_open{kind}``, ``leakguard_handles_opened_total{kind}``, … .

>>> import leakguard
>>> with leakguard.track("doc_db_conn"):
...     leakguard.HandleKind("doc_db_conn").open
1
>>> leakguard.HandleKind("doc_db_conn").open
0

One open in 128 per kind (``configure_handles(kind, sample_every=N)``; every open of a kind
marked suspect) is *sampled*: its creation site is taken from the Python stack (function, file
and line of up to 12 frames, leakguard's own frames left out) and kept while the handle is open,
so :func:`handles` lists where the open ones were opened. Unsampled opens do not look at the
stack.
"""

from __future__ import annotations

import functools
import inspect
import json
import weakref
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union

from leakguard import _leakguard
from leakguard._leakguard import (
    Handle,
    HandleKind,
    capture_budget,
    configure_handles,
    set_capture_budget,
    track,
)

__all__ = [
    "Handle",
    "HandleKind",
    "capture_budget",
    "configure_handles",
    "handles",
    "set_capture_budget",
    "track",
    "tracked",
]

_T = TypeVar("_T")


def tracked(obj: _T, kind: Union[str, HandleKind]) -> _T:
    """Count ``obj`` as an open handle of ``kind`` until it is garbage-collected; return it.

    >>> import leakguard
    >>> class Client: ...
    >>> client = leakguard.tracked(Client(), "doc_client")
    >>> leakguard.HandleKind("doc_client").open
    1
    >>> del client  # collected: the handle is closed
    >>> leakguard.HandleKind("doc_client").open
    0

    The handle is closed by a :func:`weakref.finalize` callback when the object is collected
    (at once when its last reference goes, at the next ``gc`` run when it sits in a reference
    cycle) or when the interpreter exits.

    Raises:
        TypeError: ``obj`` cannot be weakly referenced (an ``int``, a ``str``, a ``tuple``, an
            instance of a class with ``__slots__`` and no ``__weakref__`` slot), so its
            collection cannot be seen; nothing is counted. Track the block that uses it with
            ``with leakguard.track(kind):`` instead.
    """
    try:
        ref = weakref.ref(obj)
    except TypeError:
        name = type(obj).__qualname__
        raise TypeError(
            f"leakguard.tracked() cannot track a {name} object: it cannot be weakly "
            f"referenced, so leakguard cannot tell when it is collected. Track the code that "
            f"uses it with `with leakguard.track({_kind_name(kind)!r}):`, or give the class a "
            f"__weakref__ slot"
        ) from None
    handle = _leakguard.open_handle(kind)
    weakref.finalize(obj, handle.close)
    del ref
    return obj


def _kind_name(kind: Union[str, HandleKind]) -> str:
    return kind.name if isinstance(kind, HandleKind) else str(kind)


def handles(kind: Optional[str] = None) -> List[Dict[str, Any]]:
    """The tracked handles, one dict per kind (Python's and Rust's), most open first.

    Works whether or not a guard is running. Keys of each dict: ``kind``, ``open``,
    ``opened``, ``closed``, ``peak``, ``oldest_age_seconds`` and ``oldest_age_max_seconds``
    (the age of the oldest open handle lies between them; None when none is open),
    ``max_open``, ``max_age_seconds``, ``max_open_exceeded``, ``max_age_exceeded``,
    ``sample_every``, ``suspect``, ``sampled_open`` and ``sites``: where the open sampled
    handles were opened, most first, each with ``sampled_open``, ``estimated_open``,
    ``oldest_age_seconds``, ``function``, ``location`` (``"file.py:12"``) and ``frames``
    (innermost first, as ``"function (file.py:12)"``).

    ``kind`` keeps only the kind of that name. The GIL is released while the counts are read.

    >>> import leakguard
    >>> with leakguard.track("doc_report_conn"):
    ...     [k["open"] for k in leakguard.handles("doc_report_conn")]
    [1]
    """
    kinds: List[Dict[str, Any]] = json.loads(_leakguard.handles_report_json())["kinds"]
    if kind is not None:
        kinds = [k for k in kinds if k["kind"] == kind]
    return kinds


_F = TypeVar("_F", bound=Callable[..., Any])


def _decorate(kind: HandleKind, func: _F) -> _F:
    """The wrapper that ``@track(kind)`` puts around ``func``."""
    if not callable(func):
        raise TypeError(
            f"leakguard.track({kind.name!r}) decorates a function; "
            f"got a {type(func).__qualname__} object"
        )
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(func):

        async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
            with kind.track():
                return await func(*args, **kwargs)

        wrapper = coroutine_wrapper
    elif inspect.isgeneratorfunction(func):

        def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
            with kind.track():
                return (yield from func(*args, **kwargs))

        wrapper = generator_wrapper
    else:

        def function_wrapper(*args: Any, **kwargs: Any) -> Any:
            with kind.track():
                return func(*args, **kwargs)

        wrapper = function_wrapper
    return functools.wraps(func)(wrapper)  # type: ignore[return-value]
