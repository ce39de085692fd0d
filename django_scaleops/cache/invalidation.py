"""Invalidation that follows transactions.

Every write statement on every connection is seen by an execute wrapper (so ``save()``,
``delete()``, ``update()``, bulk operations and raw SQL through Django's cursor all count). The
written tables are queued with ``on_commit``: Django drops the queue on rollback, savepoints
included, and runs it right away in autocommit. Committing bumps each table's version stamp (and
the stamps declared to depend on it) in one Redis script call, and broadcasts the bump to the L1
tiers of every process.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.utils.module_loading import import_string

from django_scaleops.cache import l1, stats
from django_scaleops.cache.backend import gate
from django_scaleops.cache.keys import (
    ALL_TABLES,
    MAX_ATTRIBUTED_ROWS,
    Target,
    is_plain_insert,
    row_key,
    row_stamp_key,
    rows_stamp_key,
    stamp_key,
    table_of,
    tables_of,
    written_rows,
    written_tables,
)
from django_scaleops.conf import conf

logger = logging.getLogger("django_scaleops.cache")

_declared: dict[str, set[str]] = {}


class Writes:
    """What a statement (or a transaction) wrote, as precisely as it is known."""

    def __init__(
        self, tables: Iterable[str] = (), inserted: Iterable[str] = (), rows: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.tables = set(tables)  # rows unknown: every entry of the table goes
        self.inserted = set(inserted)  # new rows only: row-scoped entries stay
        self.rows = set(rows)  # (table, pk): only those rows' row-scoped entries go

    def update(self, other: Writes) -> None:
        self.tables |= other.tables
        self.inserted |= other.inserted
        self.rows |= other.rows

    def stamps(self) -> list[str]:
        precise = self.inserted | {table for table, _ in self.rows}
        # Cascades are table-level: a dependent table loses all of its entries.
        whole = _cascade(self.tables) | (_cascade(precise) - precise)
        stamps = {stamp_key(t) for t in whole | precise} | {rows_stamp_key(t) for t in whole}
        stamps |= {row_stamp_key(table, pk) for table, pk in self.rows}
        return sorted(stamps)


class PendingInvalidation:
    """One on_commit callback per transaction (and savepoint level) that collects the writes."""

    def __init__(self) -> None:
        self.writes = Writes()

    def __call__(self) -> None:
        bump(self.writes)


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
    bump(Writes(tables))


def bump(writes: Writes) -> None:
    try:
        stamps = writes.stamps()
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
        stats.count_invalidations(len(set(stamps)))  # owed bumps (Redis down) count too: they happen
    except Exception:
        logger.exception("cache invalidation failed for %d stamps", len(stamps))


def queue_tables(tables: set[str], using: str) -> None:
    """Invalidate ``tables`` when the current transaction on ``using`` commits (now in autocommit)."""
    queue(Writes(tables), using)


def queue(writes: Writes, using: str) -> None:
    connection = connections[using]
    if not connection.in_atomic_block:
        # Autocommit: the statement is committed. (Manual transaction management has no
        # on_commit either: the bump happens now, see docs/cache.md.)
        bump(writes)
        return
    savepoints = set(connection.savepoint_ids)
    if connection.run_on_commit:
        registered_at, callback = connection.run_on_commit[-1][:2]
        if isinstance(callback, PendingInvalidation) and registered_at == savepoints:
            callback.writes.update(writes)
            return
    pending = PendingInvalidation()
    pending.writes.update(writes)
    transaction.on_commit(pending, using=using, robust=True)


def invalidate(*targets: Target, using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate entries depending on ``targets`` (models, labels or table names) and their cascades.

    Inside a transaction on ``using`` this waits for the commit (and is dropped on rollback); call
    it after raw changes Django cannot see, e.g. a ``COPY`` or a trigger's writes.
    """
    queue_tables(tables_of(targets), using)


cascade_invalidate = invalidate


def broadcast_invalidate(*targets: Target) -> None:
    """Invalidate ``targets`` now, whatever transaction is open, in Redis and in every process's L1.

    For changes made outside this process's transactions (another service, a replication
    consumer); inside Django, prefer :func:`invalidate`, which waits for the commit.
    """
    bump(Writes(tables_of(targets)))


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
    if isinstance(sql, str) and conf.SCALEOPS_CACHE_ENABLED and redis_cache_configured():
        tables = written_tables(sql)
        if tables is None:
            queue(Writes({ALL_TABLES}), context["connection"].alias)
        elif tables:
            queue(_precise(sql, params, many, tables), context["connection"].alias)
    return result


def _precise(sql: str, params: Any, many: bool, tables: set[str]) -> Writes:
    if len(tables) == 1:
        if is_plain_insert(sql):
            return Writes(inserted=tables)
        rows = None if many else written_rows(sql, params)
        if rows is not None:
            return Writes(rows=[(rows[0], pk) for pk in rows[1]])
    return Writes(tables)


@functools.lru_cache(maxsize=16)
def _is_django_redis(backend: str) -> bool:
    try:
        from django_redis.cache import RedisCache

        return issubclass(import_string(backend), RedisCache)
    except ImportError:
        return False


def redis_cache_configured() -> bool:
    """Whether the cache alias is a django-redis cache. Without one nothing is cached, so writes
    have nothing to invalidate (checks scaleops.E301/E302 report the setting)."""
    config = settings.CACHES.get(conf.SCALEOPS_CACHE_ALIAS)
    return config is not None and _is_django_redis(str(config.get("BACKEND", "")))


def watching() -> bool:
    """Whether writes are watched: the cache is enabled and is django-redis (else nothing is cached)."""
    return bool(conf.SCALEOPS_CACHE_ENABLED) and redis_cache_configured()


def on_bulk_rows_written(sender: Any, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """A bulk batch has written (COPY included, which no execute wrapper sees): queue it like an ORM write."""
    if isinstance(sender, type) and issubclass(sender, models.Model):
        table = sender._meta.db_table
        operation, pks = kwargs.get("operation"), kwargs.get("pks")
        if operation == "create":
            queue(Writes(inserted={table}), using)
        elif operation in ("update", "delete") and pks is not None and len(pks) <= MAX_ATTRIBUTED_ROWS:
            queue(Writes(rows=[(table, row_key(pk)) for pk in pks]), using)
        else:
            queue(Writes({table}), using)
