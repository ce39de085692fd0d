"""Cache keys (hashed SQL and parameters) and the tables a query reads or a statement writes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from django.apps import apps
from django.db import models

from django_scaleops.cache.backend import gate

ALL_TABLES = "*"  # the stamp every entry depends on: bumped by writes we cannot attribute to a table

Target = type[models.Model] | str


def digest(*parts: Any) -> str:
    """A stable hash of ``parts``; each value is tagged with its type so 1 and "1" differ."""
    hasher = hashlib.blake2b(digest_size=20)
    for part in parts:
        hasher.update(f"{_stable(part)!r}\x1f".encode())
    return hasher.hexdigest()


def _stable(value: Any) -> Any:
    # Model instances by label and primary key: their repr is their __str__, which may collide.
    if isinstance(value, models.Model):
        return ("model", value._meta.label_lower, _stable(value.pk))
    if isinstance(value, list | tuple):
        return (type(value).__qualname__, tuple(_stable(v) for v in value))
    if isinstance(value, set | frozenset):  # iteration order varies between processes
        return ("set", tuple(sorted(repr(_stable(v)) for v in value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(k), _stable(v)) for k, v in value.items())))
    return (type(value).__qualname__, value)


def stamp_key(table: str) -> str:
    return gate.stamp_key(f"v:{table}")


def rows_stamp_key(table: str) -> str:
    """The stamp of every row-scoped entry of ``table``: bumped by writes not attributed to rows."""
    return gate.stamp_key(f"v:{table}#rows")


def row_stamp_key(table: str, pk: object) -> str:
    return gate.stamp_key(f"v:{table}#row:{pk}")


def entry_key(kind: str, name: str) -> str:
    return gate.key(f"{kind}:{name}")


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
    return table, [str(pk) for pk in params[len(params) - count :]]


def is_plain_insert(sql: str) -> bool:
    """An INSERT that cannot change existing rows (no ON CONFLICT ... DO UPDATE)."""
    return sql.startswith("INSERT") and "ON CONFLICT" not in sql.upper()
