"""``CachedQuerySet`` / ``CachedManager``: cache-aside reads keyed by the query and table stamps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import models

from django_scaleops.cache.backend import gate
from django_scaleops.cache.core import Entry, cache_is_off, fetch_through, timeout_or_default
from django_scaleops.cache.keys import (
    ALL_TABLES,
    QueryKey,
    Target,
    entry_key,
    pk_query_key,
    query_key,
    row_key,
    row_stamp_key,
    rows_stamp_key,
    stamp_key,
    tables_of,
)
from django_scaleops.conf import conf

M = TypeVar("M", bound=models.Model)
R = TypeVar("R")


def router_primary() -> str | None:
    """The primary alias when ``PrimaryReplicaRouter`` routes reads to replicas, else None."""
    from django_scaleops.replicas.routing import get_pool

    pool = get_pool()
    return pool.primary if pool is not None and pool.replicas else None


class CachedQuerySet(models.QuerySet[M]):
    """A queryset whose ``cached*`` methods read through Redis.

    The key is a hash of the compiled SQL and its parameters; the entry also depends on the
    version stamp of every table the query reads (joins, subqueries, prefetches), so a committed
    write to any of them invalidates it with one Redis command. With the bulk operations and
    partitioned-model behaviour, use ``django_scaleops.managers.ScaleOpsQuerySet``.
    """

    # Whether a manager built on this class asks for the cache (check scaleops.W303 when it is
    # off). ScaleOpsQuerySet says no: every PartitionedModel has it, cache or not.
    asks_for_cache = True

    def cached(self, timeout: int | None = None, *, depends_on: Iterable[Target] = ()) -> list[M]:
        """The results as a list, from the cache when fresh."""
        return self._through("list", self, lambda qs: list(qs), timeout, depends_on)

    def cached_get(self, *args: Any, timeout: int | None = None, depends_on: Iterable[Target] = (), **kwargs: Any) -> M:
        """Like ``get()``; ``DoesNotExist`` and ``MultipleObjectsReturned`` are raised, not cached."""
        pk = self._plain_pk_lookup(args, kwargs)
        if pk is not None:
            # Keyed without building the filtered query or compiling it (pk_query_key).
            got: M = self._through("get", self, lambda qs: qs.get(*args, **kwargs), timeout, depends_on, pk=pk)
            return got
        clone = self.filter(*args, **kwargs) if args or kwargs else self.all()
        found: M = clone._through("get", clone, lambda qs: qs.get(), timeout, depends_on)
        return found

    def _plain_pk_lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The primary key when this is ``get(pk=...)`` on a bare queryset (a row-scoped entry)."""
        meta = self.model._meta
        query = self.query
        if args or len(kwargs) != 1 or meta.pk is None:
            return None
        ((name, value),) = kwargs.items()
        names = {"pk", "pk__exact", meta.pk.name, f"{meta.pk.name}__exact", meta.pk.attname}
        if name not in names or value is None or isinstance(value, models.Model | models.expressions.BaseExpression):
            return None
        if (
            query.where
            or query.select_related
            or query.annotations
            or query.extra
            or query.extra_tables
            or query.combinator
            or getattr(self, "_prefetch_related_lookups", None)
            or len(query.alias_map) > 1
            or query.is_sliced
            or query.distinct
        ):
            return None
        try:
            return row_key(meta.pk.to_python(value))
        except Exception:  # Django raises the proper error when the query runs
            return None

    def cached_count(self, timeout: int | None = None, *, depends_on: Iterable[Target] = ()) -> int:
        return self._through("count", self, lambda qs: qs.count(), timeout, depends_on)

    def cached_exists(self, timeout: int | None = None, *, depends_on: Iterable[Target] = ()) -> bool:
        return self._through("exists", self, lambda qs: qs.exists(), timeout, depends_on)

    def cached_values(
        self, *fields: str, timeout: int | None = None, depends_on: Iterable[Target] = (), **expressions: Any
    ) -> list[dict[str, Any]]:
        """``values(*fields, **expressions)`` as a list of dicts, from the cache when fresh."""
        values = self.values(*fields, **expressions)
        return self._through("values", values, lambda qs: list(qs), timeout, depends_on)

    def cached_values_list(
        self, *fields: str, flat: bool = False, timeout: int | None = None, depends_on: Iterable[Target] = ()
    ) -> list[Any]:
        values = self.values_list(*fields, flat=flat)
        return self._through("values_list", values, lambda qs: list(qs), timeout, depends_on)

    # Async variants for async views: the Redis and database calls run in a worker thread.
    async def acached(self, timeout: int | None = None, *, depends_on: Iterable[Target] = ()) -> list[M]:
        return await sync_to_async(self.cached)(timeout, depends_on=depends_on)

    async def acached_get(
        self, *args: Any, timeout: int | None = None, depends_on: Iterable[Target] = (), **kwargs: Any
    ) -> M:
        return await sync_to_async(lambda: self.cached_get(*args, timeout=timeout, depends_on=depends_on, **kwargs))()

    async def acached_count(self, timeout: int | None = None, *, depends_on: Iterable[Target] = ()) -> int:
        return await sync_to_async(self.cached_count)(timeout, depends_on=depends_on)

    async def acached_exists(self, timeout: int | None = None, *, depends_on: Iterable[Target] = ()) -> bool:
        return await sync_to_async(self.cached_exists)(timeout, depends_on=depends_on)

    def _through(
        self,
        kind: str,
        queryset: models.QuerySet[Any, Any],
        evaluate: Callable[[models.QuerySet[Any, Any]], R],
        timeout: int | None,
        depends_on: Iterable[Target],
        *,
        pk: str | None = None,
    ) -> R:
        seconds = timeout_or_default(timeout)
        if queryset.query.select_for_update or cache_is_off(queryset.model._meta.label_lower):
            return evaluate(queryset)  # no key to build: the cache is off, or this must lock rows
        using = queryset.db
        key = pk_query_key(queryset, using, pk) if pk is not None else query_key(queryset, using)
        if key.digest is None:
            return evaluate(queryset)  # the query can match no row: Django runs nothing either
        plain = not depends_on and pk is None
        # A queryset held and read again (its QueryKey memoised) reuses the entry it built: the
        # keys depend on nothing else but the cache configuration (gate.config_version).
        memo = (kind, seconds, gate.config_version)
        entry = key.entries.get(memo) if plain else None
        if entry is None:
            entry = self._entry(queryset, key, kind, seconds, depends_on, pk, using)
            if plain:
                if len(key.entries) > 16:
                    key.entries.clear()
                key.entries[memo] = entry

        def fill() -> R:
            # With replicas, filling from the primary keeps replication lag out of the cache. An
            # explicit .using() on the queryset is the caller's choice and is kept.
            fill_using = None if getattr(queryset, "_db", None) else conf.SCALEOPS_CACHE_FILL_USING or router_primary()
            return evaluate(queryset.using(fill_using) if fill_using else queryset.all())

        return fetch_through(entry, fill)

    @staticmethod
    def _entry(
        queryset: models.QuerySet[Any, Any],
        key: QueryKey,
        kind: str,
        seconds: int,
        depends_on: Iterable[Target],
        pk: str | None,
        using: str,
    ) -> Entry:
        tables = key.tables | tables_of(depends_on) if depends_on else key.tables
        base = entry_key("q", key.entry_digest(kind))
        table = queryset.model._meta.db_table
        if pk is not None and tables == {table}:
            # Row-scoped: only writes to this row, or writes not attributed to rows, invalidate it.
            stamps = [stamp_key(ALL_TABLES), rows_stamp_key(table), row_stamp_key(table, pk)]
        else:
            stamps = [stamp_key(ALL_TABLES), *sorted(stamp_key(t) for t in tables)]
        return Entry(
            base=base,
            stamps=stamps,
            timeout=seconds,
            prefix=queryset.model._meta.label_lower,
            tables=frozenset(tables),
            using=using,
        )


_CachedManagerBase = models.Manager.from_queryset(CachedQuerySet)


class CachedManager(_CachedManagerBase[M]):
    """The default manager of a model with cached reads: ``Model.objects.filter(...).cached(60)``."""
