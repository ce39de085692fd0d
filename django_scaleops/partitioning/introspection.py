"""What exists on the database: is a table partitioned, its partitions and their bounds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

_BOUND = re.compile(r"FOR VALUES FROM \((?P<start>[^)]*)\) TO \((?P<end>[^)]*)\)")


@dataclass(frozen=True)
class Partition:
    """An attached partition. ``start``/``end`` are None for MINVALUE/MAXVALUE; both None for DEFAULT."""

    name: str
    start: datetime | None
    end: datetime | None
    is_default: bool = False

    def overlaps(self, start: datetime, end: datetime) -> bool:
        if self.is_default:
            return False
        return (self.start is None or self.start < end) and (self.end is None or start < self.end)


def _bound(text: str) -> datetime | None:
    text = text.strip()
    if text.upper() in {"MINVALUE", "MAXVALUE"}:
        return None
    return datetime.fromisoformat(text.strip("'"))


def fetch(connection: BaseDatabaseWrapper, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def is_partitioned(connection: BaseDatabaseWrapper, table: str) -> bool:
    return bool(
        fetch(
            connection,
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            " WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
            [table],
        )
    )


def table_exists(connection: BaseDatabaseWrapper, table: str) -> bool:
    return bool(fetch(connection, "SELECT to_regclass(quote_ident(%s))", [table])[0][0])


def partitions(connection: BaseDatabaseWrapper, table: str) -> list[Partition]:
    """The partitions attached to ``table``, oldest first, the default partition last."""
    # Bounds render in the session time zone; make it UTC so they parse the same everywhere.
    rows = fetch(
        connection,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname = %s AND pg_table_is_visible(p.oid)",
        [table],
    )
    found: list[Partition] = []
    for name, bound in rows:
        if bound == "DEFAULT":
            found.append(Partition(name, None, None, is_default=True))
            continue
        match = _BOUND.match(bound)
        if match is None:
            continue  # not a range partition of ours
        found.append(Partition(name, _bound(match["start"]), _bound(match["end"])))
    return sorted(found, key=lambda p: (p.is_default, p.start is not None, p.start or datetime.min, p.name))


def referencing_constraints(connection: BaseDatabaseWrapper, table: str) -> list[tuple[str, str]]:
    """Foreign keys (table, constraint) that point at ``table`` from a parent table."""
    return [
        (str(r[0]), str(r[1]))
        for r in fetch(
            connection,
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c"
            " WHERE c.contype = 'f' AND c.confrelid = to_regclass(quote_ident(%s)) AND c.conparentid = 0",
            [table],
        )
    ]
