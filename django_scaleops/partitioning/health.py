"""What ``partition_info`` shows and what ``validate_partitions`` finds."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connections

from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.config import PartitionConfig
from django_scaleops.partitioning.identifiers import qn
from django_scaleops.partitioning.introspection import fetch, partitions


def partition_details(config: PartitionConfig, *, using: str, exact: bool = False) -> list[dict[str, Any]]:
    """One dict per attached partition: name, range, estimated (and exact) rows, bytes, indexes."""
    connection = connections[using]
    details = []
    for p in partitions(connection, config.table):
        estimated, size = fetch(
            connection,
            # reltuples is -1 until the first ANALYZE: unknown, not zero.
            "SELECT CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,"
            " pg_total_relation_size(c.oid) FROM pg_class c"
            " WHERE c.oid = to_regclass(quote_ident(%s))",
            [p.name],
        )[0]
        indexes = [
            str(r[0])
            for r in fetch(
                connection,
                "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                " WHERE x.indrelid = to_regclass(quote_ident(%s)) ORDER BY i.relname",
                [p.name],
            )
        ]
        row: dict[str, Any] = {
            "model": config.label,
            "partition": p.name,
            "default": p.is_default,
            "from": p.start.isoformat() if p.start else None,
            "to": p.end.isoformat() if p.end else None,
            "estimated_rows": None if estimated is None else int(estimated),
            "bytes": int(size),
            "indexes": indexes,
        }
        if exact:
            row["rows"] = int(fetch(connection, f"SELECT count(*) FROM {qn(p.name)}")[0][0])
        details.append(row)
    return details


@dataclass(frozen=True)
class Finding:
    model: str
    kind: str  # gap | overlap | missing_default | rows_in_default | missing_future | missing_index |
    # archive_pending | detached_table | size_variance
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "kind": self.kind, "message": self.message}


def find_problems(
    config: PartitionConfig,
    *,
    using: str,
    now: datetime,
    size_factor: float = 3.0,
    min_median_bytes: int = 1 << 20,
) -> list[Finding]:
    connection = connections[using]
    label = config.label
    found: list[Finding] = []
    existing = partitions(connection, config.table)
    ranged = [p for p in existing if not p.is_default]
    for before, after in itertools.pairwise(ranged):
        if before.end is None or after.start is None:
            continue
        if before.end < after.start:
            found.append(
                Finding(
                    label,
                    "gap",
                    f"no partition for [{before.end:%Y-%m-%d}, {after.start:%Y-%m-%d}) "
                    f"between {before.name} and {after.name}",
                )
            )
        elif before.end > after.start:
            found.append(Finding(label, "overlap", f"{before.name} and {after.name} overlap"))
    if config.default_partition and not any(p.is_default for p in existing):
        found.append(Finding(label, "missing_default", f"{config.table} has no default partition"))
    for p in existing:
        if p.is_default:
            rows = int(fetch(connection, f"SELECT count(*) FROM {qn(p.name)}")[0][0])
            if rows:
                found.append(
                    Finding(
                        label, "rows_in_default", f"{rows} rows in {p.name}; run ensure_partitions --rescue-default"
                    )
                )
    start = intervals.floor(now, config.interval)
    for _ in range(config.premake + 1):
        end = intervals.add(start, config.interval)
        if not any(p.overlaps(start, end) for p in ranged):
            found.append(
                Finding(
                    label,
                    "missing_future",
                    f"no partition for [{start:%Y-%m-%d}, {end:%Y-%m-%d}); run ensure_partitions",
                )
            )
        start = end
    for index, child in fetch(
        connection,
        "SELECT pi.relname, c.relname FROM pg_index px JOIN pg_class pi ON pi.oid = px.indexrelid"
        " JOIN pg_inherits ch ON ch.inhparent = px.indrelid JOIN pg_class c ON c.oid = ch.inhrelid"
        " WHERE px.indrelid = to_regclass(quote_ident(%s)) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_inherits ii JOIN pg_index cx ON cx.indexrelid = ii.inhrelid"
        "  WHERE ii.inhparent = px.indexrelid AND cx.indrelid = ch.inhrelid)"
        " ORDER BY pi.relname, c.relname",
        [config.table],
    ):
        found.append(Finding(label, "missing_index", f"{child} has no index attached to {index}"))
    for name, comment in (
        row
        for row in fetch(
            connection,
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c"
            " WHERE c.relkind = 'r' AND NOT c.relispartition AND pg_table_is_visible(c.oid)"
            " AND starts_with(c.relname, %s) ORDER BY c.relname",
            [f"{config.table}_"],
        )
        if intervals.is_partition_name(config.table, row[0])
    ):
        if comment and comment.startswith(f"scaleops:archiving {config.table} "):
            found.append(Finding(label, "archive_pending", f"{name} is detached, waiting for archive_partitions"))
        else:
            found.append(
                Finding(
                    label,
                    "detached_table",
                    f"{name} looks like a partition but is not attached (an interrupted run, or restore"
                    " --no-attach); its rows are invisible through the model: rerun ensure_partitions or drop it",
                )
            )
    current = intervals.floor(now, config.interval)
    closed = [p for p in ranged if p.end is not None and p.end <= current]
    if len(closed) >= 3:
        sizes = {
            p.name: int(
                fetch(connection, "SELECT pg_total_relation_size(to_regclass(quote_ident(%s)))", [p.name])[0][0]
            )
            for p in closed
        }
        median = statistics.median(sizes.values())
        if median >= min_median_bytes:
            for name, size in sizes.items():
                if size > median * size_factor or size * size_factor < median:
                    found.append(
                        Finding(label, "size_variance", f"{name} is {size:,} bytes vs a median of {median:,.0f}")
                    )
    return found


def partition_metrics() -> dict[str, Any]:
    """Figures for the metrics endpoint: per model, partitions, premade ones, rows waiting in default.

    Catalog reads only (estimates, no scans), on the default database.
    """
    from django_scaleops.partitioning.config import partitioned_models

    connection = connections["default"]
    now = intervals.floor(datetime.now(UTC), "day")
    figures: dict[str, Any] = {}
    for config in partitioned_models():
        found = partitions(connection, config.table)
        default = next((p.name for p in found if p.is_default), None)
        waiting = 0
        if default:
            waiting = int(
                fetch(
                    connection,
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(quote_ident(%s))",
                    [default],
                )[0][0]
            )
        ahead = [p for p in found if p.start is not None and p.start > now]
        figures[config.label] = {
            "partitions": len([p for p in found if not p.is_default]),
            "future_partitions": len(ahead),
            "default_rows_estimate": waiting,
        }
    return figures
