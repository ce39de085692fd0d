"""``BulkQuerySet`` and ``BulkManager``: the bulk operations as queryset and manager methods."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from django.db import models

from django_scaleops.bulk import create, delete, process, update
from django_scaleops.bulk.process import BatchFn
from django_scaleops.bulk.result import BatchResult

_M = TypeVar("_M", bound=models.Model, covariant=True)


class BulkQuerySet(models.QuerySet[_M]):
    """A queryset with batched bulk operations.

    Every operation takes the transaction options ``atomic`` (one transaction for everything,
    default: one per batch), ``isolation_level`` ("read committed", "repeatable read",
    "serializable"), ``max_retries`` (serialization failures and deadlocks; default
    ``SCALEOPS_BULK_MAX_RETRIES``), ``continue_on_error`` (record failed batches and go on; default:
    stop and raise ``BulkOperationError``), ``bisect`` (with ``continue_on_error``, narrow a failed
    batch down to its bad rows) and ``progress`` (called with the ``BatchResult`` after each batch).
    The alias is the queryset's (``.using()``) or the router's write alias.
    """

    def batch_create(
        self,
        rows: Iterable[Any],
        *,
        fields: Sequence[str] | None = None,
        batch_size: int | None = None,
        returning: bool = False,
        on_conflict: str | None = None,
        conflict_fields: Sequence[str] | None = None,
        update_fields: Sequence[str] | None = None,
        **options: Any,
    ) -> BatchResult:
        """Insert model instances, mappings (field name to value) or tuples (with ``fields=``).

        Args:
            rows: any iterable, read lazily one batch at a time (a generator is never materialised).
            fields: the field of each tuple position; for tuples and mappings, fields left out get
                their Python default (or their ``db_default`` from the database).
            batch_size: rows per batch (default ``SCALEOPS_BULK_CREATE_BATCH_SIZE``, 5,000).
            returning: fetch the new primary keys with ``INSERT ... RETURNING``: they are set on
                the instances and collected in ``BatchResult.pks``. Without it, and without
                ``on_conflict``, rows go in by binary COPY.
            on_conflict: ``"ignore"`` (``DO NOTHING``) or ``"update"`` (``DO UPDATE`` of
                ``update_fields``, by default every inserted column but the keys). Large batches go
                through a COPY'd temporary table and one ``INSERT ... SELECT ... ON CONFLICT``.
            conflict_fields: the unique fields that identify a row (required for ``"update"``).
            workers: with more than 1, batches are written on that many threads, each with its own
                connection (closed at the end), while the calling thread reads the next batches
                from ``rows``. Each batch still commits on its own; order between workers is not
                defined; not with ``atomic=True`` or inside ``atomic()``.
            stream: read each batch's rows from ``rows`` while its COPY sends them (one
                connection), so that building rows overlaps the server's work: for rows made by a
                generator, about 1.5x faster (docs/bulk.md). ``rows`` must then not use this
                connection: a query it makes raises ``django_scaleops.bulk.RowsQueriedDuringCopy``
                (``workers=`` allows it).
                Only a plain COPY streams (not with ``returning`` or ``on_conflict``).

        Returns:
            A ``BatchResult``.
        """
        return create.batch_create(
            self,
            rows,
            fields=fields,
            batch_size=batch_size,
            returning=returning,
            on_conflict=on_conflict,
            conflict_fields=conflict_fields,
            update_fields=update_fields,
            **options,
        )

    def batch_update(
        self, objs: Iterable[Any], fields: Sequence[str], *, batch_size: int | None = None, **options: Any
    ) -> BatchResult:
        """Write ``fields`` of saved instances, matched by primary key, batch by batch.

        Each batch is sorted by key and sent as ``UPDATE ... FROM (VALUES ...)``, or for batches
        over ``SCALEOPS_BULK_TEMP_TABLE_ROWS`` rows COPY'd into a temporary table first.
        """
        return update.batch_update(self, objs, fields, batch_size=batch_size, **options)

    def batch_delete(self, *, batch_size: int | None = None, **options: Any) -> BatchResult:
        """Delete this queryset's rows in primary-key order, one short transaction per batch.

        Without ``pre_delete``/``post_delete`` receivers, cascades or generic relations no
        instance is loaded: each batch is one ``DELETE`` of a key range. Otherwise each batch goes
        through Django's collector (signals and cascades as with ``QuerySet.delete()``).
        """
        return delete.batch_delete(self, batch_size=batch_size, **options)

    def stream_batch_process(
        self, fn: BatchFn, *, batch_size: int | None = None, key: str = "pk", **options: Any
    ) -> BatchResult:
        """Call ``fn(rows)`` for each batch of this queryset, paged by ``key`` (unique, not null).

        Each call runs in the batch's transaction, so writes made by ``fn`` commit (or retry, or
        roll back) with the batch. Paging is by key, not by server-side cursor: it works behind
        PgBouncer in transaction mode and memory holds one batch.
        """
        return process.stream_batch_process(self, fn, batch_size=batch_size, key=key, **options)

    def parallel_batch_process(
        self, items_or_queryset: Iterable[Any] | None, fn: BatchFn, *, workers: int = 5, **options: Any
    ) -> BatchResult:
        """Like ``stream_batch_process`` on ``workers`` threads, one connection each.

        ``items_or_queryset`` of ``None`` means this queryset. Transactions run on ``using=``, else
        this queryset's ``.using()`` alias, else the router's write alias (``"default"`` for items).
        """
        source: Iterable[Any] = self if items_or_queryset is None else items_or_queryset
        options.setdefault("using", getattr(self, "_db", None))
        return process.parallel_batch_process(source, fn, workers=workers, **options)


class BulkManager(models.Manager.from_queryset(BulkQuerySet)):  # type: ignore[misc]
    """``objects = BulkManager()``; subclass it, or use ``YourManager.from_queryset(BulkQuerySet)``."""
