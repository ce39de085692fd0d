"""Plan → show → apply for partition creation (and moving rows out of the default partition)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connections

from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.config import PartitionConfig
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.identifiers import check_identifier, qn, ts
from django_scaleops.partitioning.introspection import fetch, is_partitioned, partitions, waiting_for_archive


@dataclass(frozen=True)
class PlannedPartition:
    """One partition to create; ``rows_in_default`` rows will move into it from the default partition.

    ``held``: a detached table of that name is waiting for ``archive_partitions``, so the partition
    is not created (that would re-attach the table and put archived rows back) until the archive
    is finished.
    """

    config: PartitionConfig
    name: str
    start: datetime
    end: datetime
    rows_in_default: int = 0
    held: bool = False

    def describe(self) -> str:
        span = f"[{self.start:%Y-%m-%d %H:%M}, {self.end:%Y-%m-%d %H:%M}) UTC"
        if self.held:
            return (
                f"{self.config.label}: skip {self.name} {span}: a detached table of that name is waiting for"
                " archive_partitions; run archive_partitions first, then ensure_partitions again"
            )
        move = f", moving {self.rows_in_default} rows out of the default partition" if self.rows_in_default else ""
        return f"{self.config.label}: create {self.name} {span}{move}"


@dataclass
class PartitionPlan:
    """What ``ensure_partitions`` would do; empty when everything already exists.

    ``held`` lists the partitions it will not create yet (see :class:`PlannedPartition`).
    """

    creations: list[PlannedPartition] = field(default_factory=list)
    held: list[PlannedPartition] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.creations)

    def describe(self) -> list[str]:
        return [c.describe() for c in [*self.creations, *self.held]]


def partition_name(config: PartitionConfig, start: datetime) -> str:
    return check_identifier(f"{config.table}_{intervals.suffix(start, config.interval)}", "partition name")


def count_in_range(using: str, table: str, key: str, start: datetime, end: datetime) -> int:
    rows = fetch(
        connections[using],
        f"SELECT count(*) FROM {qn(table)} WHERE {qn(key)} >= {ts(start)} AND {qn(key)} < {ts(end)}",
    )
    return int(rows[0][0])


def plan_model(
    config: PartitionConfig,
    *,
    using: str,
    now: datetime,
    since: datetime | None = None,
    rescue: bool = False,
) -> list[PlannedPartition]:
    """The partitions ``config`` still needs: from ``since`` (default: now) to ``premake`` ahead,
    plus, with ``rescue``, every interval that has rows waiting in the default partition."""
    connection = connections[using]
    if not is_partitioned(connection, config.table):
        raise PartitioningError(
            f"{config.label}: table {config.table!r} is not partitioned; create it with"
            " CreatePartitionedModel or convert it with ConvertToPartitioned (see docs/partitioning.md)"
        )
    existing = partitions(connection, config.table)
    waiting = {w.name for w in waiting_for_archive(connection, config.table)}
    default = next((p.name for p in existing if p.is_default), None)
    current = intervals.floor(now, config.interval)
    first = intervals.floor(since, config.interval) if since else current
    starts: set[datetime] = set()
    start = first
    last = intervals.add(current, config.interval, config.premake)
    while start <= last:
        starts.add(start)
        start = intervals.add(start, config.interval)
    if rescue and default:
        unit = config.interval
        starts.update(
            row[0]
            for row in fetch(
                connection,
                f"SELECT DISTINCT date_trunc(%s, {qn(config.key_column)}, 'UTC') FROM {qn(default)}",
                [unit],
            )
        )
    planned = []
    for start in sorted(starts):
        end = intervals.add(start, config.interval)
        if any(p.overlaps(start, end) for p in existing):
            continue
        name = partition_name(config, start)
        moving = count_in_range(using, default, config.key_column, start, end) if default else 0
        planned.append(PlannedPartition(config, name, start, end, moving, held=name in waiting))
    return planned


def build_plan(
    configs: list[PartitionConfig],
    *,
    using: str,
    now: datetime,
    since: datetime | None = None,
    rescue: bool = False,
) -> PartitionPlan:
    from django_scaleops.partitioning.locks import run_with_lock_timeout

    plan = PartitionPlan()
    for config in configs:

        def work(_: object, config: PartitionConfig = config) -> list[PlannedPartition]:
            return plan_model(config, using=using, now=now, since=since, rescue=rescue)

        # Planning reads the default partition: under lock_timeout too, so it never queues behind DDL.
        for item in run_with_lock_timeout(using, work, what=f"plan {config.label}"):
            (plan.held if item.held else plan.creations).append(item)
    return plan


def apply_plan(
    plan: PartitionPlan, *, using: str, batch_size: int, report: Callable[[str], None] = lambda line: None
) -> int:
    """Create every planned partition that is still missing; returns how many were created."""
    from django_scaleops.partitioning.ddl import create_partition
    from django_scaleops.partitioning.locks import maintenance_lock, read_partitions

    created = 0
    for item in plan.creations:
        with maintenance_lock(using, item.config.table):
            # Another run may have done it while we waited for the lock: look again.
            existing = read_partitions(using, item.config.table)
            if any(p.overlaps(item.start, item.end) for p in existing):
                report(f"{item.config.label}: {item.name} already exists, skipped")
                continue
            if any(w.name == item.name for w in waiting_for_archive(connections[using], item.config.table)):
                report(f"{item.config.label}: {item.name} was detached for archiving meanwhile, skipped")
                continue
            moved = create_partition(item.config, item.name, item.start, item.end, using=using, batch_size=batch_size)
            created += 1
            report(
                f"{item.config.label}: created {item.name}" + (f", moved {moved} rows from default" if moved else "")
            )
    return created
