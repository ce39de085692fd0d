"""A registry of cache warmers, run by ``manage.py warm_cache`` (once, or every N seconds).

A warmer is a function that calls cached querysets or functions; under ``warm_cache`` they run
inside :func:`refreshing`, so each stores a fresh result (holding the lease, like any refresh).
Warmers live in a ``cache_warmers`` module of any installed app, which the command imports::

    from django_scaleops.cache import warmer

    @warmer("recent-conversations")
    def recent() -> None:
        Conversation.objects.order_by("-last_activity_at")[:50].cached(timeout=300)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.utils.module_loading import autodiscover_modules

from django_scaleops.cache.core import refreshing

WarmerFunc = Callable[[], object]


@dataclass(frozen=True)
class Warmer:
    name: str
    func: WarmerFunc
    doc: str


_warmers: dict[str, Warmer] = {}


def warmer(name: str | None = None) -> Callable[[WarmerFunc], WarmerFunc]:
    """Register the decorated function as a warmer named ``name`` (default: its qualified name)."""

    def register(func: WarmerFunc) -> WarmerFunc:
        chosen = name or f"{func.__module__}.{func.__qualname__}"
        _warmers[chosen] = Warmer(chosen, func, (func.__doc__ or "").strip().split("\n")[0])
        return func

    return register


def unregister_warmer(name: str) -> None:
    _warmers.pop(name, None)


def discover() -> dict[str, Warmer]:
    autodiscover_modules("cache_warmers")
    return dict(sorted(_warmers.items()))


def run_warmer(item: Warmer, *, refresh: bool = True) -> float:
    """Run one warmer; returns the seconds it took."""
    started = time.perf_counter()
    if refresh:
        with refreshing():
            item.func()
    else:
        item.func()
    return time.perf_counter() - started
