"""Cache keys (hashed SQL and parameters) and the tables a query reads or a statement writes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.utils import timezone

from django_scaleops.cache.backend import gate
from django_scaleops.cache.encoding import encode, encode_sql_param
from django_scaleops.cache.query_state import state_digest
from django_scaleops.conf import conf

ALL_TABLES = "*"  # the stamp every entry depends on: bumped by writes we cannot attribute to a table

Target = type[models.Model] | str


def digest(*parts: Any) -> str:
    """A stable hash of ``parts``, encoded losslessly with their types (see ``encoding``).

    Raises ``UnkeyableValue`` for a part that cannot be keyed safely.
    """
    hasher = hashlib.blake2b(digest_size=20)
    for part in parts:
        hasher.update(encode(part))
    return hasher.hexdigest()


def _kind_digest(kind: str, query_digest: bytes) -> str:
    hasher = hashlib.blake2b(digest_size=20)
    hasher.update(encode(kind))
    hasher.update(query_digest)
    return hasher.hexdigest()


def _query_digest(queryset: models.QuerySet[Any, Any], using: str, sql: str, params: Sequence[Any]) -> bytes:
    hasher = hashlib.blake2b(digest_size=20)
    hasher.update(encode(database_identity(using)))
    _update_with_queryset(hasher, queryset, sql, params)
    return hasher.digest()


@dataclass(frozen=True)
class QueryKey:
    """What a queryset's SQL gives the cache: its key material and the tables it reads.

    ``digest`` is None when the query can match no row (``EmptyResultSet``): nothing to cache.
    """

    digest: bytes | None
    tables: frozenset[str]
    # What a plain read of this key builds on every call (entry key, stamp keys): kept per kind,
    # timeout and gate configuration by querysets._through.
    entries: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    def entry_digest(self, kind: str) -> str:
        assert self.digest is not None
        return _kind_digest(kind, self.digest)


# The compile-time context of a query besides the query itself: the alias and the server behind
# it (a router may send the same queryset elsewhere), and the time zones (``__date``, ``Trunc`` and
# friends compile the active zone's name into the parameters; a naive datetime compiled in a
# ``Value`` is made aware in the default zone).
def _compile_context(using: str) -> tuple[Any, ...]:
    return (
        using,
        database_identity(using),
        settings.USE_TZ,
        settings.TIME_ZONE,
        timezone.get_current_timezone_name(),
    )


_MEMO = "_scaleops_query_keys"


def query_key(queryset: models.QuerySet[Any, Any], using: str) -> QueryKey:
    """The ``QueryKey`` of ``queryset`` read from ``using``, compiled once per queryset object and context.

    Its digest is a hash of everything that decides the result (see docs/cache.md, "Keys").

    Django never changes a queryset in place: ``filter()``, ``values()``, slicing and every other
    refinement return a clone, and a clone starts without this memo. So a queryset object held and
    reused (a module-level queryset, a view attribute) pays for the compile once. The memo also
    names the ``Query`` object it was built from, so a queryset whose ``query`` was replaced
    compiles again, and it is keyed by the compile context (alias, server, time zone).
    """
    query = queryset.query  # applies a related manager's deferred filter before anything is memoised
    context = _compile_context(using)
    memo: tuple[Any, dict[tuple[Any, ...], QueryKey]] | None = queryset.__dict__.get(_MEMO)
    if memo is not None and memo[0] is query:
        found = memo[1].get(context)
        if found is not None:
            return found
    else:
        memo = (query, {})
        queryset.__dict__[_MEMO] = memo
    # A queryset built alike before, in this process and context: its compiled key (query_state).
    size = conf.SCALEOPS_CACHE_COMPILED_QUERIES
    use = _MEMO_USE.get(queryset.model) or _MEMO_USE.setdefault(queryset.model, _MemoUse())
    state = state_digest(queryset) if size and use.wanted() else None
    made = _COMPILED.get((state, context)) if state is not None else None
    if state is not None:
        use.record(made is not None)
    if made is None:
        try:
            sql, params = query.get_compiler(using=using).as_sql()
        except EmptyResultSet:
            made = QueryKey(None, frozenset())
        else:
            made = QueryKey(_query_digest(queryset, using, sql, params), frozenset(tables_of_queryset(queryset, sql)))
        if state is not None:
            if len(_COMPILED) >= size:
                _COMPILED.clear()
            _COMPILED[(state, context)] = made
    if len(memo[1]) > 8:  # one entry per alias and time zone in use: bounded all the same
        memo[1].clear()
    memo[1][context] = made
    return made


# (state digest, compile context) -> the QueryKey compiled from a queryset with that state.
_COMPILED: dict[tuple[bytes, tuple[Any, ...]], QueryKey] = {}


class _MemoUse:
    """Whether digesting a model's querysets pays in this process: a digest costs about a third of
    the compile it may save (on the benchmark's page, 50 against 140 µs), so where that model's
    queries rarely come back (a feed read page by page, each page once) it is taken for one read
    in 8 only, enough to notice when they start coming back. Decided per window of 256 digested
    reads: sampling below a quarter found, digesting every read again from a third."""

    WINDOW = 256
    SAMPLE = 8

    def __init__(self) -> None:
        self.looked = self.found = self.tick = 0
        self.sampling = False

    def wanted(self) -> bool:
        if not self.sampling:
            return True
        self.tick += 1
        return self.tick % self.SAMPLE == 0

    def record(self, found: bool) -> None:
        # Unlocked: a count lost to a race only moves the decision by one read.
        self.looked += 1
        self.found += found
        if self.looked >= self.WINDOW:
            if self.sampling:
                self.sampling = self.found * 3 < self.looked
            else:
                self.sampling = self.found * 4 < self.looked
            self.looked = self.found = 0


_MEMO_USE: dict[type[models.Model], _MemoUse] = {}


def forget_compiled() -> None:
    """Empty the compiled-key memo and what it learned of this process's reads (tests)."""
    _COMPILED.clear()
    _MEMO_USE.clear()


def pk_query_key(queryset: models.QuerySet[Any, Any], using: str, pk: str) -> QueryKey:
    """The ``QueryKey`` of ``queryset.get(pk=pk)`` for a plain queryset, without compiling it.

    ``CachedQuerySet._plain_pk_lookup`` vouches that nothing but these decides the SQL: no filter,
    join, annotation, extra, slice, DISTINCT, combination or prefetch. What is left is hashed: the
    server, the queryset's class (its ``get``), the model and its columns (a deploy that adds one
    changes the key, as it would change the SQL), the deferred fields, the result shape and the key
    (normalised by the field's ``to_python``). It never equals a compiled query's digest: its first
    part is a tag no compiled query writes. A differential test holds it against the compiled SQL.
    """
    query = queryset.query
    shape = (
        type(queryset),
        queryset.model,
        queryset._iterable_class,
        tuple(getattr(queryset, "_fields", None) or ()),
        frozenset(query.deferred_loading[0]),
        bool(query.deferred_loading[1]),
    )
    prefix = _PK_SHAPES.get(shape)
    if prefix is None:
        prefix = _pk_shape_prefix(*shape)
        if len(_PK_SHAPES) > 1000:
            _PK_SHAPES.clear()
        _PK_SHAPES[shape] = prefix
    identity = database_identity(using)
    encoded_identity = _IDENTITIES.get(identity)
    if encoded_identity is None:
        if len(_IDENTITIES) > 100:
            _IDENTITIES.clear()
        encoded_identity = _IDENTITIES[identity] = encode(identity)
    hasher = hashlib.blake2b(prefix, digest_size=20)
    hasher.update(encoded_identity)
    hasher.update(encode(pk))
    return QueryKey(hasher.digest(), frozenset({queryset.model._meta.db_table}))


# The encoded parts of a get-by-pk key that do not change from one read to the next.
_PK_SHAPES: dict[tuple[Any, ...], bytes] = {}
_IDENTITIES: dict[tuple[Any, ...], bytes] = {}


def _pk_shape_prefix(
    queryset_class: type[Any],
    model: type[models.Model],
    iterable: type[Any],
    fields: tuple[str, ...],
    deferred: frozenset[str],
    defer: bool,
) -> bytes:
    columns = tuple(
        (f.attname, f.column, f"{type(f).__module__}.{type(f).__qualname__}") for f in model._meta.concrete_fields
    )
    return encode(
        (
            "get-by-pk",
            f"{queryset_class.__module__}.{queryset_class.__qualname__}",
            model._meta.label_lower,
            columns,
            f"{iterable.__module__}.{iterable.__qualname__}",
            fields,
            (deferred, defer),
        )
    )


def _update_with_queryset(hasher: Any, queryset: models.QuerySet[Any, Any], sql: str, params: Sequence[Any]) -> None:
    iterable = queryset._iterable_class
    fields = getattr(queryset, "_fields", None) or ()
    # The model (a proxy has the same SQL), the result shape (instances, values(), values_list
    # flat / named / tuples) and select_related, which decides the instances built from a row.
    hasher.update(
        encode(
            (
                queryset.model._meta.label_lower,
                f"{iterable.__module__}.{iterable.__qualname__}",
                tuple(fields),
                queryset.query.select_related,
            )
        )
    )
    hasher.update(encode(sql))
    hasher.update(len(params).to_bytes(4, "big"))
    for param in params:
        hasher.update(encode_sql_param(param))
    lookups = getattr(queryset, "_prefetch_related_lookups", ())
    hasher.update(len(lookups).to_bytes(4, "big"))
    for lookup in lookups:
        if isinstance(lookup, str):
            hasher.update(encode(("lookup", lookup)))
            continue
        hasher.update(encode(("prefetch", lookup.prefetch_through, lookup.prefetch_to, lookup.to_attr)))
        inner = lookup.queryset
        if inner is None:
            hasher.update(encode(None))
            continue
        try:
            inner_sql, inner_params = inner.query.get_compiler(using=inner.db).as_sql()
        except EmptyResultSet:
            hasher.update(encode("empty"))
            continue
        _update_with_queryset(hasher, inner, inner_sql, inner_params)


def database_identity(using: str) -> tuple[Any, ...]:
    """What tells databases apart: server, database, user and options, not the alias's NAME alone.

    A replica of the router's primary has the primary's identity: they hold the same rows, so
    they share entries.
    """
    from django_scaleops.replicas.routing import get_pool

    pool = get_pool()
    if pool is not None and using in pool.replicas:
        using = pool.primary
    connection = connections[using]
    settings = connection.settings_dict
    options = {k: v for k, v in (settings.get("OPTIONS") or {}).items() if k not in _SECRET_OPTIONS}
    return (
        connection.vendor,
        settings.get("HOST") or "",
        str(settings.get("PORT") or ""),
        settings.get("NAME") or "",
        settings.get("USER") or "",
        tuple(sorted((str(k), str(v)) for k, v in options.items())),
        # Schema-per-tenant apps (django-tenants) switch the search path on the connection.
        str(getattr(connection, "schema_name", "")),
    )


_SECRET_OPTIONS = frozenset({"password", "passfile", "sslpassword"})


def stamp_key(table: str) -> str:
    return gate.stamp_key(f"v:{table}")


def rows_stamp_key(table: str) -> str:
    """The stamp of every row-scoped entry of ``table``: bumped by writes not attributed to rows."""
    return gate.stamp_key(f"v:{table}#rows")


def row_stamp_key(table: str, pk: object) -> str:
    return gate.stamp_key(f"v:{table}#row:{pk}")


def row_key(value: object) -> str:
    """How a primary key value names its row's stamp: one spelling per value, whichever side
    (a read's ``to_python`` value, a write's SQL parameter) it comes from. ``Decimal("1.5")`` and
    ``Decimal("1.50")`` are one row; so are two aware datetimes of the same instant."""
    if isinstance(value, Decimal) and value.is_finite():
        return str(value.normalize())
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat()
    return str(value)


def entry_key(kind: str, name: str) -> str:
    return gate.entry_key(f"{kind}:{name}")


def table_of(target: Target) -> str:
    """A model class, an "app_label.Model" label or a table name, as a table name."""
    if isinstance(target, str):
        if "." in target and not target.startswith('"'):
            try:
                return str(apps.get_model(target)._meta.db_table)
            except (LookupError, ValueError):
                pass
        return target.strip('"')
    return target._meta.db_table


@lru_cache(maxsize=1)
def _pk_columns() -> dict[str, str]:
    return {m._meta.db_table: str(m._meta.pk.column) for m in apps.get_models(include_auto_created=True)}


@lru_cache(maxsize=1)
def _known_tables() -> tuple[frozenset[str], re.Pattern[str] | None]:
    tables = frozenset(m._meta.db_table for m in apps.get_models(include_auto_created=True))
    if not tables:
        return tables, None
    names = "|".join(re.escape(t) for t in sorted(tables, key=len, reverse=True))
    return tables, re.compile(rf'(?<![\w$])"?({names})"?(?![\w$])')


def tables_in_sql(sql: str) -> set[str]:
    """Every known model table named in ``sql`` (quoted or not): a conservative superset."""
    _, pattern = _known_tables()
    return set(pattern.findall(sql)) if pattern else set()


def tables_of_queryset(queryset: models.QuerySet[Any], sql: str) -> set[str]:
    """The tables a queryset's results depend on: joins, subqueries and prefetched relations."""
    query = queryset.query
    tables = {alias.table_name for alias in query.alias_map.values()} | tables_in_sql(sql)
    tables.add(queryset.model._meta.db_table)
    for lookup in getattr(queryset, "_prefetch_related_lookups", ()):
        path = lookup.prefetch_through if hasattr(lookup, "prefetch_through") else lookup
        tables |= _tables_along(queryset.model, str(path))
        inner = getattr(lookup, "queryset", None)
        if inner is not None:  # a Prefetch's own filters may join further tables
            try:
                inner_sql = inner.query.get_compiler(using=inner.db).as_sql()[0]
            except EmptyResultSet:
                inner_sql = ""
            tables |= tables_of_queryset(inner, inner_sql)
    return tables


def _tables_along(model: type[models.Model], path: str) -> set[str]:
    tables: set[str] = set()
    for name in path.split("__"):
        try:
            field = model._meta.get_field(name)
        except Exception:  # a GenericForeignKey or a to_attr name: declare it with depends_on
            break
        related = field.related_model
        if related is None or isinstance(related, str):
            break
        through = getattr(getattr(field, "remote_field", None), "through", None) or getattr(field, "through", None)
        if through is not None and not isinstance(through, str):
            tables.add(through._meta.db_table)
        tables.add(related._meta.db_table)
        model = related
    return tables


_WRITE_START = ("INSERT", "UPDATE", "DELETE", "TRUNCA", "WITH", "MERGE", "COPY")
_IDENT = r'(?:"(?:[^"]|"")+"|[\w$]+)'
_WRITE_TARGET = re.compile(
    rf"^\s*(?:INSERT\s+INTO|UPDATE(?:\s+ONLY)?|DELETE\s+FROM(?:\s+ONLY)?|MERGE\s+INTO|COPY)\s+"
    rf"(?:{_IDENT}\.)?({_IDENT})",
    re.IGNORECASE,
)


def written_tables(sql: str) -> set[str] | None:
    """Tables a statement writes; an empty set for reads; None for a write we cannot attribute."""
    head = sql[:64].lstrip()[:6].upper()
    if not head.startswith(_WRITE_START):
        return set()
    if head.startswith("WITH") and not re.search(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", sql, re.IGNORECASE):
        return set()
    if head.startswith("COPY") and re.search(r"\bTO\s+STDOUT\b", sql, re.IGNORECASE):
        return set()
    match = _WRITE_TARGET.match(sql)
    if match:
        name = match.group(1)
        return {name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()}
    # TRUNCATE a, b; data-modifying CTEs: every table named, or everything when none is known.
    named = tables_in_sql(sql)
    return named or None


def tables_of(targets: Iterable[Target]) -> set[str]:
    return {table_of(t) for t in targets}


MAX_ATTRIBUTED_ROWS = 100
# Django's own single-table writes by primary key: save() (``= %s``), delete() and
# ``filter(pk__in=...).update()`` (``IN (%s, ...)``). The WHERE clause is last, so its
# parameters are the last ones.
_ROW_WRITE = re.compile(
    r'^(?:UPDATE "(?P<updated>[^"]+)" SET .+|DELETE FROM "(?P<deleted>[^"]+)")'
    r' WHERE "(?P<table>[^"]+)"\."(?P<column>[^"]+)" (?:= %s|IN \((?P<many>%s(?:, %s)*)\))$',
    re.DOTALL,
)


def written_rows(sql: str, params: Any) -> tuple[str, list[str]] | None:
    """The table and primary keys of a Django-generated write by primary key, else None."""
    if not sql.startswith(("UPDATE", "DELETE")):
        return None
    match = _ROW_WRITE.match(sql)
    if not match or not isinstance(params, list | tuple):
        return None
    table = match.group("table")
    if table != (match.group("updated") or match.group("deleted")) or _pk_columns().get(table) != match.group("column"):
        return None
    count = match.group("many").count("%s") if match.group("many") else 1
    if count > MAX_ATTRIBUTED_ROWS or len(params) < count:
        return None
    return table, [row_key(pk) for pk in params[len(params) - count :]]


def is_plain_insert(sql: str) -> bool:
    """An INSERT that cannot change existing rows (no ON CONFLICT ... DO UPDATE), or a COPY FROM."""
    if sql.startswith("COPY"):
        return True  # written_tables() has already told COPY ... TO (a read) apart
    return sql.startswith("INSERT") and "ON CONFLICT" not in sql.upper()
