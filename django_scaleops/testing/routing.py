"""Test helpers for projects that use ``PrimaryReplicaRouter``.

::

    from django_scaleops.testing.routing import assert_reads_from

    with assert_reads_from("replica"):
        list(Message.objects.all())

Reads are seen at the connection that answered them, after any failover, so the helper tells
where the rows really came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

from django_scaleops.replicas.state import reset_routing_state


@dataclass
class ReadLog:
    reads: list[tuple[str, str]] = field(default_factory=list)  # (alias, sql)

    @property
    def aliases(self) -> list[str]:
        return [alias for alias, _ in self.reads]


@contextmanager
def record_reads() -> Iterator[ReadLog]:
    """Record the alias that answered each read (SELECT) run inside the block."""
    log = ReadLog()

    def spy(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        result = execute(sql, params, many, context)
        if not many and sql.lstrip()[:6].upper().startswith(("SELECT", "WITH")):
            log.reads.append((context["connection"].alias, sql))
        return result

    with ExitStack() as stack:
        for connection in connections.all():
            stack.enter_context(connection.execute_wrapper(spy))
        yield log


@contextmanager
def assert_reads_from(alias: str, *, at_least: int = 1) -> Iterator[ReadLog]:
    """Fail unless every read in the block was answered by ``alias`` (and at least ``at_least`` ran).

    Args:
        alias: the database alias every read must have gone to.
        at_least: the minimum number of reads the block must run (0 allows none).
    """
    with record_reads() as log:
        yield log
    wrong = [(a, sql) for a, sql in log.reads if a != alias]
    if wrong or len(log.reads) < at_least:
        detail = "\n".join(f"  {a}: {sql[:120]}" for a, sql in (wrong or log.reads)[:10])
        raise AssertionError(
            f"expected {'at least ' + str(at_least) + ' ' if at_least else ''}reads from {alias!r}; got"
            f" {len(log.reads)} reads, {len(wrong)} elsewhere:\n{detail}"
        )


__all__ = ["ReadLog", "assert_reads_from", "record_reads", "reset_routing_state"]
