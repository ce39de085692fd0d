"""Execute wrappers the router installs on Django connections.

- ``track_writes`` (primary): notes that this context wrote, so the next read (or the end of
  the request) takes the primary's WAL position. It sees raw-cursor writes too, not only ORM ones.
- ``retry_elsewhere`` (replicas): a read that fails on a replica outside a transaction runs once
  more elsewhere. What else happens depends on the failure (``failure_kind``):

  - a connection failure (connection refused, reset or closed, admin shutdown, timeout): the
    replica is marked down at once and the read goes to another healthy, caught-up replica or
    the primary;
  - a recovery conflict (SQLSTATE 40001 or 40P01, "canceling statement due to conflict with
    recovery"): one statement was cancelled by WAL replay on a working server, so the replica
    stays in rotation and the primary answers that read.

  Reads through server-side cursors (``.iterator()``) are watched while they stream
  (``ReplicaStream``): a failure before the first row is retried the same way; one after rows
  were returned raises ``ReplicaStreamBroken``.

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
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from django_scaleops.replicas.state import current_state


class ReplicaPool(Protocol):
    """What the failover wrappers need of the replica pool (``routing.ReplicaPool``, which
    imports this module and hands its getter over with ``use_pool``)."""

    primary: str
    health: dict[str, Any]

    def mark_down(self, alias: str, reason: str) -> None: ...

    def reroute_failed_read(self, connection: BaseDatabaseWrapper, exc: BaseException, kind: str) -> str: ...


def _no_pool() -> ReplicaPool | None:
    return None  # until routing hands its getter over


_pool_getter: Callable[[], ReplicaPool | None] = _no_pool


def use_pool(getter: Callable[[], ReplicaPool | None]) -> None:
    """Called by ``routing`` at import: where the failover wrappers find the pool."""
    global _pool_getter
    _pool_getter = getter


def close_quietly(connection: BaseDatabaseWrapper) -> None:
    try:
        connection.close()
    except Exception:  # a broken connection may fail to close; it is discarded either way
        connection.connection = None


logger = logging.getLogger("django_scaleops.router")

ExecuteWrapper = Callable[[Callable[..., Any], str, Any, bool, dict[str, Any]], Any]
T = TypeVar("T")

_READ_PREFIXES = ("SELECT", "SHOW", "SAVEPOINT", "RELEASE", "ROLLBACK", "SET ")

# What a failed replica read says about the replica (``failure_kind``).
CONNECTION = "connection"  # the server or the connection to it is gone: out of rotation
CONFLICT = "conflict"  # replay cancelled this one statement: the server is fine
# Connection exceptions (08xxx) and admin/crash shutdown, cannot connect now (57P01-57P03).
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")
# Recovery conflicts: 40001 for locks, snapshots, tablespaces, buffer pins; 40P01 for a buffer-pin
# deadlock with the startup process. On a read-only standby nothing else raises them.
_CONFLICT_SQLSTATES = ("40001", "40P01")


class ReplicaStreamBroken(OperationalError):
    """A server-side cursor on a replica failed after it had returned rows.

    The rows already returned cannot be taken back and the rest cannot be fetched from another
    server without repeating or skipping some, so the iteration stops here: run the query again.
    """

    def __init__(self, alias: str, rows: int, reason: str) -> None:
        self.alias = alias
        self.rows = rows
        super().__init__(
            f"the stream of rows from replica {alias!r} broke after {rows} rows ({reason}); it cannot be"
            " resumed transparently: run the query again"
        )


def wrapper_for(connection: BaseDatabaseWrapper) -> ExecuteWrapper | None:
    """The router's wrapper for this connection while it routes: ``track_writes`` on the primary,
    ``retry_elsewhere`` on a replica (``django_scaleops.wrappers`` puts it in the chain)."""
    pool = _active_pool()
    if pool is None:
        return None
    if connection.alias == pool.primary:
        return track_writes
    if connection.alias in pool.health:
        return retry_elsewhere
    return None


def ensure_installed(connection: BaseDatabaseWrapper, wrapper: ExecuteWrapper) -> None:
    """Put the chain on ``connection`` if ``wrapper`` is missing (a pool built after it opened)."""
    if wrapper not in connection.execute_wrappers:
        from django_scaleops import wrappers

        wrappers.install(connection)


def is_read(sql: str) -> bool:
    return sql.lstrip()[:9].upper().startswith(_READ_PREFIXES)


def track_writes(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    try:
        return execute(sql, params, many, context)
    except DatabaseError as exc:
        connection: BaseDatabaseWrapper = context["connection"]
        if failure_kind(exc) == CONNECTION and not connection.in_atomic_block:
            # The primary went away (stopped, failed over). Django would keep the dead connection
            # until the request ends, failing every statement; closed now, the next statement
            # connects again, to whichever host accepts writes (target_session_attrs). This one
            # is not retried: a write may have committed before the connection died.
            close_quietly(connection)
        raise
    finally:
        if many or not is_read(sql):
            pool = _active_pool()
            if pool is not None and context["connection"].alias == pool.primary:
                current_state().wrote = True


def failure_kind(exc: BaseException) -> str | None:
    """``CONNECTION``, ``CONFLICT`` or None (an error about the query: not retried).

    Takes Django's errors (the SQLSTATE is on the psycopg error they wrap) and psycopg's.
    """
    if isinstance(exc, (InterfaceError, psycopg.InterfaceError)):
        return CONNECTION
    if not isinstance(exc, (OperationalError, psycopg.OperationalError)):
        return None
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
    if sqlstate is None:
        # From the client side (connection lost, connect timeout), not from the server.
        return CONNECTION
    if sqlstate.startswith(_CONNECTION_SQLSTATES):
        return CONNECTION
    if sqlstate in _CONFLICT_SQLSTATES:
        return CONFLICT
    return None


def is_retryable(exc: BaseException) -> bool:
    return failure_kind(exc) is not None


def retry_elsewhere(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    connection: BaseDatabaseWrapper = context["connection"]
    cursor: CursorWrapper = context["cursor"]
    try:
        result = execute(sql, params, many, context)
    except DatabaseError as exc:
        kind = failure_kind(exc)
        pool = _active_pool()
        if kind is None or many or connection.in_atomic_block or pool is None or connection.alias not in pool.health:
            raise
        failed = cursor.cursor
        # The cursor of a dead connection may not close cleanly; it is dropped either way.
        with contextlib.suppress(Exception):
            failed.close()
        target = pool.reroute_failed_read(connection, exc, kind)
        result, cursor.cursor = _run_on(target, sql, params, streaming=isinstance(failed, psycopg.ServerCursor))
        return result
    if isinstance(cursor.cursor, psycopg.ServerCursor) and not many and not connection.in_atomic_block:
        # A server-side cursor (.iterator()): its rows arrive later, fetch by fetch.
        cursor.cursor = ReplicaStream(cursor.cursor, connection, sql, params)
    return result


def _run_on(target: str, sql: str, params: Any, *, streaming: bool) -> tuple[Any, Any]:
    """Run a read on ``target``: the result of execute and the raw cursor holding its rows."""
    connection = connections[target]
    # A stream stays a stream where the target allows server-side cursors: memory stays bounded.
    use_chunked = streaming and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    retry_cursor = connection.chunked_cursor() if use_chunked else connection.cursor()
    result = retry_cursor.execute(sql, params)
    # The ORM fetches through the cursor it holds: it gets the cursor that has the rows.
    return result, retry_cursor.cursor


class ReplicaStream:
    """A replica's server-side cursor, counting the rows it has returned.

    A connection failure or recovery conflict before the first row: the query runs again
    elsewhere (as ``retry_elsewhere`` does) and the rows come from there. After rows were
    returned: ``ReplicaStreamBroken``. Anything else is the cursor's own.
    """

    def __init__(self, cursor: psycopg.ServerCursor[Any], connection: BaseDatabaseWrapper, sql: str, params: Any):
        self._cursor: Any = cursor
        self._connection = connection
        self._sql = sql
        self._params = params
        self._watching = True  # until the rows come from elsewhere
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def execute(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        self._sql, self._params, self.rows = sql, params, 0
        return self._cursor.execute(sql, params, **kwargs)

    def fetchmany(self, size: int = 0) -> list[Any]:
        rows: list[Any] = self._fetch(lambda cursor: cursor.fetchmany(size))
        self.rows += len(rows)
        return rows

    def fetchone(self) -> Any:
        row = self._fetch(lambda cursor: cursor.fetchone())
        self.rows += row is not None
        return row

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self._fetch(lambda cursor: cursor.fetchall())
        self.rows += len(rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        while rows := self.fetchmany(self._cursor.itersize):
            yield from rows

    def close(self) -> None:
        # After a failure the connection may be gone: closing is best effort.
        with contextlib.suppress(psycopg.Error):
            self._cursor.close()

    def _fetch(self, fetch: Callable[[Any], T]) -> T:
        if not self._watching:
            return fetch(self._cursor)
        try:
            return fetch(self._cursor)
        except psycopg.Error as exc:
            kind = failure_kind(exc)
            pool = _active_pool()
            connection = self._connection
            if kind is None or pool is None or connection.alias not in pool.health:
                raise
            if self.rows == 0 and not connection.in_atomic_block:
                # Nothing returned yet: as good as a failed execute.
                with contextlib.suppress(Exception):
                    self._cursor.close()
                target = pool.reroute_failed_read(connection, exc, kind)
                _, self._cursor = _run_on(target, self._sql, self._params, streaming=True)
                self._watching = False
                return fetch(self._cursor)
            raise self._broken(pool, exc, kind) from exc

    def _broken(self, pool: ReplicaPool, exc: psycopg.Error, kind: str) -> ReplicaStreamBroken:
        alias = self._connection.alias
        reason = f"{type(exc).__name__}, SQLSTATE {exc.sqlstate}"
        if kind == CONNECTION:
            pool.mark_down(alias, f"stream failed: {reason}")
        raw = self._connection.connection
        if raw is None or raw.closed or raw.broken:
            close_quietly(self._connection)
        logger.warning("stream from replica %s broke after %d rows (%s)", alias, self.rows, reason)
        return ReplicaStreamBroken(alias, self.rows, reason)


def _active_pool() -> ReplicaPool | None:
    return _pool_getter()
