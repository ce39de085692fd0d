"""Light-lock DDL: short ``lock_timeout`` with retries, and advisory locks between maintainers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg.errors
from django.db import OperationalError, connections, transaction
from django.db.backends.utils import CursorWrapper

from django_scaleops.conf import conf
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.introspection import Partition, partitions

logger = logging.getLogger("django_scaleops.partitioning")

T = TypeVar("T")


def run_with_lock_timeout(using: str, work: Callable[[CursorWrapper], T], *, what: str) -> T:
    """Run ``work`` in its own transaction with a short ``lock_timeout``, retrying when a lock is busy.

    A DDL statement that waits for a lock blocks every query queued behind it; giving up quickly
    and retrying keeps the service responsive while maintenance waits for a gap.
    """
    retries = conf.SCALEOPS_PARTITION_LOCK_RETRIES
    for attempt in range(retries + 1):
        try:
            with transaction.atomic(using=using), connections[using].cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)", [f"{conf.SCALEOPS_PARTITION_LOCK_TIMEOUT_MS}ms"]
                )
                return work(cursor)
        except OperationalError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                raise
            if attempt == retries:
                raise PartitioningError(
                    f"{what}: a lock stayed busy through {retries + 1} attempts of"
                    f" {conf.SCALEOPS_PARTITION_LOCK_TIMEOUT_MS} ms; rerun when the table is quieter"
                ) from exc
            pause = min(0.05 * 2**attempt, 2.0)
            logger.info("%s: lock busy, retry %d in %.2fs", what, attempt + 1, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def maintenance_lock(using: str, table: str, wait_seconds: float = 60.0) -> Iterator[None]:
    """A session advisory lock per table, so two maintainers never plan and apply at once."""
    connection = connections[using]
    key: list[Any] = ["django_scaleops.partitioning", table]
    deadline = time.monotonic() + wait_seconds
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", key)
            if cursor.fetchone()[0]:
                break
            if time.monotonic() > deadline:
                raise PartitioningError(
                    f"another maintenance run holds the lock on {table!r} for over {wait_seconds:.0f}s; try again later"
                )
            time.sleep(0.1)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", key)


def read_partitions(using: str, table: str) -> list[Partition]:
    """The partitions of ``table``, read under ``lock_timeout`` (reading bounds opens each partition,
    which waits behind an ACCESS EXCLUSIVE lock)."""
    return run_with_lock_timeout(
        using, lambda _: partitions(connections[using], table), what=f"read the partitions of {table}"
    )
