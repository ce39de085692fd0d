"""What exists on the database: is a table partitioned, its partitions and their bounds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

_BOUND = re.compile(r"FOR VALUES FROM \((?P<start>[^)]*)\) TO \((?P<end>[^)]*)\)")

# The comment archive_partitions puts on a partition it detached, in the same transaction:
# "scaleops:archiving <parent table> <start ISO or -> <end ISO or ->".
ARCHIVE_MARK = "scaleops:archiving"


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


@dataclass(frozen=True)
class WaitingTable:
    """A partition ``archive_partitions`` detached and has not dropped yet (its archive is unfinished)."""

    name: str
    start: datetime | None
    end: datetime | None


def archive_comment(table: str, start: datetime | None, end: datetime | None) -> str:
    return f"{ARCHIVE_MARK} {table} {start.isoformat() if start else '-'} {end.isoformat() if end else '-'}"


def waiting_for_archive(connection: BaseDatabaseWrapper, table: str) -> list[WaitingTable]:
    """Detached partitions of ``table`` carrying the archive mark, by name.

    Nothing may re-attach or reuse them: their rows belong to the archive being written.
    """
    rows = fetch(
        connection,
        "SELECT c.relname, d.description FROM pg_class c JOIN pg_description d"
        " ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0"
        " WHERE c.relkind = 'r' AND NOT c.relispartition AND starts_with(d.description, %s)"
        " AND pg_table_is_visible(c.oid) ORDER BY c.relname",
        [f"{ARCHIVE_MARK} {table} "],
    )
    found = []
    for name, comment in rows:
        fields = str(comment).split(" ")
        if len(fields) < 4 or fields[1] != table:
            continue
        start, end = fields[2], fields[3]
        found.append(
            WaitingTable(
                str(name),
                None if start == "-" else datetime.fromisoformat(start),
                None if end == "-" else datetime.fromisoformat(end),
            )
        )
    return found
