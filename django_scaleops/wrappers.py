"""The execute-wrapper chain: the one place that puts django-scaleops' wrappers on a connection.

Django calls a connection's ``execute_wrappers`` for every statement sent through its cursors,
the first of the list outermost. Ours come first, in this order (outermost first):

1. **query monitor** (``monitoring``): times the statement as the application waited for it, a
   retry on another server included, so slow-query figures are what callers saw.
2. **APM SQL span** (``apm``): one span per statement, inside the monitor, so the span's time
   and the monitor's agree and a retry shows as one span.
3. **router** (``db``): on the primary ``track_writes`` notes a write for read-your-writes; on a
   replica ``retry_elsewhere`` re-runs a failed read on another server. Inside the monitor and
   the span, so those see one statement however many servers answered it.
4. **cache invalidation** (``cache``): innermost, so it only sees a statement that succeeded,
   on the connection (and transaction) that ran it, and queues the written tables there.

Each capability registers, from its ``ready()``, whether a connection needs its wrapper
(``provide()``); ``install()`` puts exactly those, in this order, at the front of the list.
Wrappers of the application's own stay behind ours (``connection.execute_wrapper()`` blocks
append and pop at the end of the list).
``install()`` runs on ``connection_created`` and again when a setting that switches a wrapper
changes; the router calls it when it starts routing.

Statements that do not pass through Django's cursor, the bulk operations' ``COPY``, go through
the same chain with :func:`run_through_chain`, so the monitor counts them and the cache
invalidates for them like for any other write.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.db.backends.base.base import BaseDatabaseWrapper

T = TypeVar("T")
Wrapper = Callable[..., Any]  # Django's (execute, sql, params, many, context) -> result
Provider = Callable[[BaseDatabaseWrapper], Wrapper | None]

# Outermost first; see the module docstring for why each stands where it does.
ORDER = ("monitor", "apm", "router", "cache")
_providers: dict[str, Provider] = {}
_ours: set[Any] = set()


def provide(slot: str, provider: Provider, *wrappers: Wrapper) -> None:
    """A capability's ``ready()``: ``provider(connection)`` says which of ``wrappers`` (or None) the
    connection needs in ``slot``. The capabilities depend on this module, never the reverse."""
    if slot not in ORDER:
        raise ValueError(f"unknown wrapper slot {slot!r}; the chain is {ORDER}")
    _providers[slot] = provider
    _ours.update(wrappers)


def chain_for(connection: BaseDatabaseWrapper) -> list[Wrapper]:
    """Our wrappers this connection needs, outermost first."""
    chain = []
    for slot in ORDER:
        provider = _providers.get(slot)
        wrapper = provider(connection) if provider is not None else None
        if wrapper is not None:
            chain.append(wrapper)
    return chain


def install(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Put exactly the wrappers ``connection`` needs, in chain order, ahead of the application's."""
    wanted = chain_for(connection)
    current = connection.execute_wrappers
    if current[: len(wanted)] == wanted and not any(w in _ours for w in current[len(wanted) :]):
        return
    theirs = [w for w in current if w not in _ours]
    current[:] = [*wanted, *theirs]  # in place: an open execute_wrapper() block pops its own


def install_everywhere(**kwargs: Any) -> None:
    """Re-install on this thread's open connections (a setting that switches a wrapper changed)."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        install(connection)


def run_through_chain(connection: BaseDatabaseWrapper, cursor: Any, sql: str, run: Callable[[], T]) -> T:
    """Run ``run()``, a statement Django's cursor does not send (``COPY ... FROM STDIN``), inside
    ``connection``'s wrappers as if ``sql`` had been executed: monitored, traced, invalidated."""

    def execute(sql: str, params: Any, many: bool, context: dict[str, Any]) -> T:
        return run()

    chained: Callable[..., T] = functools.reduce(
        lambda inner, wrapper: functools.partial(wrapper, inner), reversed(connection.execute_wrappers), execute
    )
    return chained(sql, None, False, {"connection": connection, "cursor": cursor})


# Settings that switch a wrapper on or off, for the setting_changed receiver.
SWITCHING_SETTINGS = frozenset(
    {
        "SCALEOPS_MONITOR_ENABLED",
        "SCALEOPS_APM_ENABLED",
        "SCALEOPS_CACHE_ENABLED",
        "CACHES",
        "DATABASE_ROUTERS",
        "DATABASES",
    }
)


def on_setting_changed(setting: str = "", **kwargs: Any) -> None:
    if setting in SWITCHING_SETTINGS or setting.startswith(("SCALEOPS_ROUTER_", "SCALEOPS_CACHE_")):
        install_everywhere()


def connect() -> None:
    """Wire the chain into Django (``AppConfig.ready()``): every new connection gets it."""
    from django.core.signals import setting_changed
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, dispatch_uid="django_scaleops.wrappers")
    setting_changed.connect(on_setting_changed, dispatch_uid="django_scaleops.wrappers.settings")
    install_everywhere()  # connections opened before ready()


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    install(connection)
