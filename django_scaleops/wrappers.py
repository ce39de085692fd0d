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

Each capability says whether a connection needs its wrapper (``_PROVIDERS``); ``install()`` puts
exactly those, in this order, at the front of the list. Wrappers of the application's own stay
behind ours (``connection.execute_wrapper()`` blocks append and pop at the end of the list).
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


def _monitor(connection: BaseDatabaseWrapper) -> Wrapper | None:
    from django_scaleops.monitoring.monitor import monitor

    return monitor if monitor.active else None


def _apm(connection: BaseDatabaseWrapper) -> Wrapper | None:
    from django_scaleops.apm import state

    if not state.request_tracing:
        return None
    from django_scaleops.apm.tracing import traced_execute

    return traced_execute


def _router(connection: BaseDatabaseWrapper) -> Wrapper | None:
    from django_scaleops.db import failover

    return failover.wrapper_for(connection)


def _cache(connection: BaseDatabaseWrapper) -> Wrapper | None:
    from django_scaleops.cache import invalidation

    return invalidation.execute_wrapper if invalidation.watching() else None


# Outermost first; see the module docstring for why each stands where it does.
_PROVIDERS: tuple[tuple[str, Callable[[BaseDatabaseWrapper], Wrapper | None]], ...] = (
    ("monitor", _monitor),
    ("apm", _apm),
    ("router", _router),
    ("cache", _cache),
)


def _ours() -> set[Any]:
    from django_scaleops.apm.tracing import traced_execute
    from django_scaleops.cache.invalidation import execute_wrapper
    from django_scaleops.db.failover import retry_elsewhere, track_writes
    from django_scaleops.monitoring.monitor import monitor

    return {monitor, traced_execute, track_writes, retry_elsewhere, execute_wrapper}


def chain_for(connection: BaseDatabaseWrapper) -> list[Wrapper]:
    """Our wrappers this connection needs, outermost first."""
    return [wrapper for _, provide in _PROVIDERS if (wrapper := provide(connection)) is not None]


def install(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Put exactly the wrappers ``connection`` needs, in chain order, ahead of the application's."""
    wanted = chain_for(connection)
    current = connection.execute_wrappers
    if current[: len(wanted)] == wanted and not any(w in _OURS for w in current[len(wanted) :]):
        return
    theirs = [w for w in current if w not in _OURS]
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


class _LazyOurs:
    """The set of our wrapper functions, resolved on first use (their modules import Django models)."""

    _set: set[Any] | None = None

    def __contains__(self, item: object) -> bool:
        if self._set is None:
            self._set = _ours()
        return item in self._set


_OURS = _LazyOurs()

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
