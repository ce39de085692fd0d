"""Execute wrappers the router installs on Django connections.

- ``track_writes`` (primary): notes that this context wrote, so the next read (or the end of
  the request) takes the primary's WAL position. It sees raw-cursor writes too, not only ORM ones.
- ``retry_elsewhere`` (replicas): a read that fails on a replica outside a transaction with a
  connection error or a hot-standby conflict (SQLSTATE 40001) runs once more on another replica
  or the primary, and the replica is marked down at once.

Why an execute wrapper: it is Django's public hook around every statement of a connection,
needs no monkey-patching of the ORM, and also covers ``.raw()``, ``.iterator()`` and
``connection.cursor()``. The retried statement runs on the other connection's cursor, and that
cursor is put in place of the failed one inside Django's cursor wrapper, so the ORM fetches the
rows from where they now are. Connection failures before any statement (replica refusing
connections) are caught earlier, when the router picks the replica.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_scaleops.db.state import current_state

if TYPE_CHECKING:
    from django_scaleops.db.pool import ReplicaPool

logger = logging.getLogger("django_scaleops.router")

ExecuteWrapper = Callable[[Callable[..., Any], str, Any, bool, dict[str, Any]], Any]

_READ_PREFIXES = ("SELECT", "SHOW", "SAVEPOINT", "RELEASE", "ROLLBACK", "SET ")
# Errors that say "this server cannot answer now", not "this query is wrong": connection
# exceptions (08xxx), admin/crash shutdown, cannot connect now, and hot-standby conflicts.
_RETRYABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001")


def install(connection: BaseDatabaseWrapper, wrapper: ExecuteWrapper) -> None:
    if wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(wrapper)


def is_read(sql: str) -> bool:
    return sql.lstrip()[:9].upper().startswith(_READ_PREFIXES)


def track_writes(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    try:
        return execute(sql, params, many, context)
    finally:
        if many or not is_read(sql):
            pool = _active_pool()
            if pool is not None and context["connection"].alias == pool.primary:
                current_state().wrote = True


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    # No SQLSTATE: the error came from the client side (connection lost), not the server.
    return sqlstate is None or str(sqlstate).startswith(_RETRYABLE_SQLSTATES)


def retry_elsewhere(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    try:
        return execute(sql, params, many, context)
    except DatabaseError as exc:
        connection: BaseDatabaseWrapper = context["connection"]
        pool = _active_pool()
        if (
            pool is None
            or connection.alias not in pool.health
            or many
            or connection.in_atomic_block
            or not is_retryable(exc)
        ):
            raise
        alias = connection.alias
        pool.health[alias].failovers += 1
        pool.fallback_reads += 1
        pool.mark_down(
            alias, f"read failed: {type(exc).__name__} (SQLSTATE {getattr(exc.__cause__, 'sqlstate', None)})"
        )
        # The cursor of a dead connection may not close cleanly; it is dropped either way.
        with contextlib.suppress(Exception):
            context["cursor"].cursor.close()
        from django_scaleops.db.pool import _close_quietly

        _close_quietly(connection)
        state = current_state()
        floor = pool.health[alias].replay_lsn  # what this request may already have seen there
        target = pool.pick_replica(state, exclude=alias, floor=floor) or pool.primary
        logger.warning("read on replica %s failed (%s); retried on %s", alias, type(exc).__name__, target)
        retry_cursor = connections[target].cursor()
        result = retry_cursor.execute(sql, params)
        # The ORM fetches through the cursor it holds: give it the cursor that has the rows.
        context["cursor"].cursor = retry_cursor.cursor
        return result


def _active_pool() -> ReplicaPool | None:
    from django_scaleops.db.pool import get_pool

    return get_pool()
