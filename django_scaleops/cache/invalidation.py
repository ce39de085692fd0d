"""Invalidation that follows transactions.

Every write statement on every connection is seen by an execute wrapper (so ``save()``,
``delete()``, ``update()``, bulk operations and raw SQL through Django's cursor all count). The
written tables are queued with ``on_commit``: Django drops the queue on rollback, savepoints
included, and runs it right away in autocommit. Committing bumps each table's version stamp (and
the stamps declared to depend on it) in one Redis script call, and broadcasts the bump to the L1
tiers of every process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from django_scaleops.cache import l1
from django_scaleops.cache.backend import gate
from django_scaleops.cache.keys import ALL_TABLES, Target, stamp_key, table_of, tables_of, written_tables
from django_scaleops.conf import conf

logger = logging.getLogger("django_scaleops.cache")

_declared: dict[str, set[str]] = {}


class PendingInvalidation:
    """One on_commit callback per transaction (and savepoint level) that collects written tables."""

    def __init__(self) -> None:
        self.tables: set[str] = set()

    def __call__(self) -> None:
        bump_tables(self.tables)


def declare_dependency(source: Target, *dependents: Target) -> None:
    """When ``source``'s table changes, also invalidate entries that depend on ``dependents``.

    Example: ``declare_dependency(Message, Conversation)`` makes a new message invalidate cached
    conversation summaries. Cascades are followed transitively.
    """
    _declared.setdefault(table_of(source), set()).update(table_of(d) for d in dependents)


def _cascade(tables: Iterable[str]) -> set[str]:
    graph: dict[str, set[str]] = {k: set(v) for k, v in _declared.items()}
    for label, dependents in conf.SCALEOPS_CACHE_DEPENDENCIES.items():
        graph.setdefault(table_of(label), set()).update(table_of(d) for d in dependents)
    seen: set[str] = set()
    todo = list(tables)
    while todo:
        table = todo.pop()
        if table not in seen:
            seen.add(table)
            todo.extend(graph.get(table, ()))
    return seen


def bump_tables(tables: Iterable[str]) -> None:
    """Bump the stamps of ``tables`` and their cascades now (one Redis call) and tell every L1."""
    try:
        stamps = [stamp_key(t) for t in _cascade(tables)]
    except Exception:  # a misconfigured cache alias (checks E301/E302): never fail the write
        logger.exception("cache invalidation failed")
        return
    if stamps:
        bump_stamps(stamps)


def bump_stamps(stamps: list[str]) -> None:
    # Runs after a commit: it must never raise into the code that committed.
    try:
        l1.drop_stamps(stamps)
        gate.bump(stamps, l1.channel() if l1.enabled() else "", json.dumps(sorted(stamps)))
    except Exception:
        logger.exception("cache invalidation failed for %d stamps", len(stamps))


def queue_tables(tables: set[str], using: str) -> None:
    """Invalidate ``tables`` when the current transaction on ``using`` commits (now in autocommit)."""
    connection = connections[using]
    if not connection.in_atomic_block:
        # Autocommit: the statement is committed. (Manual transaction management has no
        # on_commit either: the bump happens now, see docs/cache.md.)
        bump_tables(tables)
        return
    savepoints = set(connection.savepoint_ids)
    if connection.run_on_commit:
        registered_at, callback = connection.run_on_commit[-1][:2]
        if isinstance(callback, PendingInvalidation) and registered_at == savepoints:
            callback.tables |= tables
            return
    pending = PendingInvalidation()
    pending.tables |= tables
    transaction.on_commit(pending, using=using, robust=True)


def invalidate(*targets: Target, using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate entries depending on ``targets`` (models, labels or table names) and their cascades.

    Inside a transaction on ``using`` this waits for the commit (and is dropped on rollback); call
    it after raw changes Django cannot see, e.g. a ``COPY`` or a trigger's writes.
    """
    queue_tables(tables_of(targets), using)


cascade_invalidate = invalidate


def invalidate_all(using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate every cached queryset and function (bumps the stamp every entry depends on)."""
    queue_tables({ALL_TABLES}, using)


_SNAPSHOT_LEVELS = {"repeatable read", "serializable"}


def wrote_in_transaction() -> bool:
    """True when a transaction on this thread has written and not committed yet, or reads a snapshot
    older than its statements (REPEATABLE READ / SERIALIZABLE): such reads bypass the cache."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            continue
        if any(isinstance(entry[1], PendingInvalidation) for entry in connection.run_on_commit):
            return True
        level = getattr(connection, "isolation_level", None)
        if level is not None and str(getattr(level, "name", level)).replace("_", " ").lower() in _SNAPSHOT_LEVELS:
            return True
    return False


def execute_wrapper(execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    result = execute(sql, params, many, context)
    if isinstance(sql, str) and conf.SCALEOPS_CACHE_ENABLED:
        tables = written_tables(sql)
        if tables != set():
            queue_tables(tables or {ALL_TABLES}, context["connection"].alias)
    return result


def install_wrapper(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: watch this connection's writes (once per wrapper)."""
    if execute_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(execute_wrapper)


def on_bulk_write_committed(sender: Any, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """The bulk operations' committed batch (COPY included, which no execute wrapper sees)."""
    if isinstance(sender, type) and issubclass(sender, models.Model):
        queue_tables({sender._meta.db_table}, using)
