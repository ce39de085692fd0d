"""Fork safety for Django's native pool (``OPTIONS["pool"]``) and open connections.

A forked child inherits its parent's sockets. If it uses an inherited connection (or the
native pool holding them), two processes talk over one PostgreSQL session and corrupt each
other's results. If it closes one, it ends the parent's session. So the child must *forget*
them: never use them, never close them. Django creates a fresh pool on first use afterwards.

``install_fork_guard()`` (on by default through ``SCALEOPS_PGBOUNCER_FORK_GUARD``) registers
:func:`forget_inherited_connections` to run in every child after ``os.fork()``: gunicorn
``--preload`` workers, Celery prefork, multiprocessing with the fork start method.
Calling :func:`close_pools` in the parent before it forks (gunicorn's ``pre_fork`` hook) is
cheaper still: nothing is inherited at all.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from django.db import connections

# Inherited objects are parked here, their sockets swapped for dead ones (see _detach), so
# neither use nor finalisation can reach the parent's sessions.
_inherited: list[Any] = []
_installed = False
_install_lock = threading.Lock()


def _native_pools() -> dict[str, Any]:
    # Django keeps every alias' psycopg pool in one class-level dict.
    from django.db.backends.postgresql.base import DatabaseWrapper

    pools: dict[str, Any] = getattr(DatabaseWrapper, "_connection_pools", {})
    return pools


def forget_inherited_connections() -> int:
    """In a freshly forked child: drop the parent's connections and pools without closing them.

    Returns how many connections and pools were set aside.
    """
    count = 0
    pools = _native_pools()
    for alias in list(pools):
        pool = pools.pop(alias)
        for idle in list(getattr(pool, "_pool", ())):  # psycopg_pool's idle connections
            _detach(idle)
        _inherited.append(pool)
        count += 1
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            _detach(connection.connection)
            _inherited.append(connection.connection)
            connection.connection = None
            # Whatever the parent was doing belongs to the parent's session.
            connection.in_atomic_block = False
            connection.savepoint_ids = []
            connection.needs_rollback = False
            connection.run_on_commit = []
            count += 1
    return count


def _detach(connection: Any) -> None:
    """Point the child's copy of ``connection``'s socket at a dead socket.

    The parent's socket stays open and untouched; whatever the child later sends on this
    connection (libpq's Terminate when it is garbage-collected at exit) goes nowhere.
    """
    try:
        fd = int(connection.pgconn.socket)
    except Exception:  # already closed, or not a psycopg connection
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        os.dup2(dead.fileno(), fd)


def close_pools() -> None:
    """In a parent about to fork: close this thread's connections and every native pool."""
    for alias in connections:
        connection = connections[alias]
        connection.close()
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


def install_fork_guard() -> None:
    """Run :func:`forget_inherited_connections` in every child after ``os.fork()`` (once per process)."""
    global _installed
    with _install_lock:
        if _installed or not hasattr(os, "register_at_fork"):
            return
        os.register_at_fork(after_in_child=forget_inherited_connections)
        _installed = True
