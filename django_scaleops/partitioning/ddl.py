"""The DDL steps: create a partition beside the table, fill it from the default partition, attach it."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, connections
from django.db.backends.utils import CursorWrapper

from django_scaleops.partitioning.config import PartitionConfig
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import qn, ts
from django_scaleops.partitioning.introspection import (
    fetch,
    referencing_constraints,
    table_exists,
    waiting_for_archive,
)
from django_scaleops.partitioning.locks import read_partitions, run_with_lock_timeout

RANGE_CHECK = "scaleops_partition_range"


def columns(using: str, table: str) -> list[str]:
    rows = fetch(
        connections[using],
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%s))"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [str(r[0]) for r in rows]


def range_condition(key: str, start: datetime | None, end: datetime | None) -> str:
    parts = [f"{qn(key)} IS NOT NULL"]
    if start is not None:
        parts.append(f"{qn(key)} >= {ts(start)}")
    if end is not None:
        parts.append(f"{qn(key)} < {ts(end)}")
    return " AND ".join(parts)


def bound_clause(start: datetime | None, end: datetime | None) -> str:
    return f"FOR VALUES FROM ({ts(start) if start else 'MINVALUE'}) TO ({ts(end) if end else 'MAXVALUE'})"


def create_standalone(
    cursor: CursorWrapper, parent: str, name: str, key: str, start: datetime | None, end: datetime | None
) -> None:
    """A plain table shaped like ``parent`` with a CHECK matching the range (idempotent).

    With the CHECK in place, ``ATTACH PARTITION`` skips its validation scan, and attaching needs
    only a SHARE UPDATE EXCLUSIVE lock on the parent (which does not block reads or writes),
    where ``CREATE TABLE ... PARTITION OF`` would take an ACCESS EXCLUSIVE one.
    """
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {qn(name)}"
        f" (LIKE {qn(parent)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)"
    )
    cursor.execute(
        "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(quote_ident(%s)) AND conname = %s",
        [name, RANGE_CHECK],
    )
    if cursor.fetchone() is None:
        cursor.execute(
            f"ALTER TABLE {qn(name)} ADD CONSTRAINT {qn(RANGE_CHECK)} CHECK ({range_condition(key, start, end)})"
        )


def move_rows_sql(
    source: str, target: str, cols: list[str], key: str, start: datetime | None, end: datetime | None
) -> str:
    listed = ", ".join(qn(c) for c in cols)
    return (
        f"WITH moved AS (DELETE FROM {qn(source)} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {qn(source)} WHERE {range_condition(key, start, end)} LIMIT %s"
        f")) RETURNING {listed}) INSERT INTO {qn(target)} ({listed}) SELECT {listed} FROM moved"
    )


def _day(value: datetime | None, open_end: str) -> str:
    return f"{value:%Y-%m-%d}" if value else open_end


def create_partition(
    config: PartitionConfig,
    name: str,
    start: datetime | None,
    end: datetime | None,
    *,
    using: str,
    batch_size: int,
) -> int:
    """Create partition ``name`` for [start, end) with light locks; returns rows moved from default.

    Rows of that range waiting in the default partition are moved in committed batches (each batch
    is one DELETE ... RETURNING → INSERT statement, so a row is never lost or doubled), and the last
    batch is moved in the same transaction as the ATTACH. Rows of a batch already moved are not
    visible through the parent until the ATTACH; tables that foreign keys reference are moved in one
    transaction instead, because PostgreSQL checks those keys per partition.
    """
    parent, key = config.table, config.key_column
    if any(w.name == name for w in waiting_for_archive(connections[using], parent)):
        # CREATE TABLE IF NOT EXISTS would adopt it and put rows already in an archive back.
        raise PartitioningError(
            f"{config.label}: {name} is detached and waiting for archive_partitions; it is never re-attached."
            " Run archive_partitions to finish its archive, then create the partition again"
        )
    default = next((p.name for p in read_partitions(using, parent) if p.is_default), None)
    cols = columns(using, parent)
    run_with_lock_timeout(using, lambda c: create_standalone(c, parent, name, key, start, end), what=f"create {name}")
    moved = 0
    referenced = bool(referencing_constraints(connections[using], parent))
    if default and not referenced:
        sql = move_rows_sql(default, name, cols, key, start, end)

        def count_waiting(cursor: CursorWrapper) -> int:
            cursor.execute(f"SELECT count(*) FROM {qn(default)} WHERE {range_condition(key, start, end)}")
            return int(cursor.fetchone()[0])

        def move_batch(cursor: CursorWrapper) -> int:
            cursor.execute(sql, [batch_size])
            return int(cursor.rowcount)

        # Whole batches while more than one batch waits; the last (at most batch_size rows, plus any
        # that arrive meanwhile) moves with the ATTACH, so a small rescue is a single atomic step.
        waiting = run_with_lock_timeout(using, count_waiting, what=f"count rows for {name}")
        for _ in range(max(0, (waiting - 1) // batch_size)):
            moved += run_with_lock_timeout(using, move_batch, what=f"move rows into {name}")

    def attach(cursor: CursorWrapper) -> int:
        rest = 0
        if default:
            cursor.execute(f"LOCK TABLE {qn(parent)} IN SHARE UPDATE EXCLUSIVE MODE")
            cursor.execute(f"LOCK TABLE {qn(default)} IN ACCESS EXCLUSIVE MODE")
            cursor.execute(move_rows_sql(default, name, cols, key, start, end), [2**62])
            rest = int(cursor.rowcount)
        cursor.execute(f"ALTER TABLE {qn(parent)} ATTACH PARTITION {qn(name)} {bound_clause(start, end)}")
        if rest and referenced:
            # Surface a referenced row now (see the docstring) rather than as a failed COMMIT.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        return rest

    try:
        moved += run_with_lock_timeout(using, attach, what=f"attach {name}")
    except IntegrityError as exc:
        if not referenced:
            raise  # rows moved by earlier batches stay in the new table: a rerun finishes the attach
        drop_table_if_exists(using, name)  # still empty: referenced tables move in that one transaction
        raise PartitioningError(
            f"{config.label}: rows of [{_day(start, '-inf')}, {_day(end, '+inf')}) in {default!r} are referenced by a"
            f" foreign key ({exc}); PostgreSQL cannot move referenced rows between partitions. Nothing was"
            " moved. Move or delete the referencing rows first, or keep the default partition empty by"
            " running ensure_partitions ahead of time."
        ) from exc
    return moved


def drop_table_if_exists(using: str, name: str) -> None:
    if table_exists(connections[using], name):
        run_with_lock_timeout(using, lambda c: c.execute(f"DROP TABLE IF EXISTS {qn(name)}"), what=f"drop {name}")
