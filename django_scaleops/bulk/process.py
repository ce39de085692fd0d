"""Streaming a queryset in keyset-paged batches, and processing batches on parallel workers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db import connections, models
from django.db.models.query import FlatValuesListIterable, ModelIterable

from django_scaleops.bulk.result import BatchFailure, BatchResult, BulkOperationError
from django_scaleops.bulk.runner import BatchRunner, Outcome, ProgressCallback, positive_int, write_alias
from django_scaleops.conf import conf

BatchFn = Callable[[list[Any]], object]


def _check_streamable(queryset: models.QuerySet[Any], what: str) -> None:
    if queryset.query.is_sliced:
        raise TypeError(f"Cannot use 'limit' or 'offset' with {what}(): it pages by key itself.")
    if queryset.query.distinct_fields:
        raise TypeError(f"Cannot call {what}() after .distinct(*fields).")


def keyset_batches(queryset: models.QuerySet[Any], size: int, *, key: str = "pk") -> Iterator[list[Any]]:
    """Lists of up to ``size`` rows ordered by ``key`` (unique, not null), one query per batch.

    Each query is ``WHERE key > <last key> ORDER BY key LIMIT size``: no server-side cursor and no
    transaction spanning batches, so it works behind PgBouncer in transaction mode, and it never
    rescans rows already seen (nor the dead tuples of rows already deleted).
    """
    model = queryset.model
    field = model._meta.pk if key == "pk" else model._meta.get_field(key)
    assert field is not None
    attname = getattr(field, "attname", key)
    shape = getattr(queryset, "_iterable_class", ModelIterable)
    names: tuple[str, ...] = tuple(getattr(queryset, "_fields", None) or ())
    if shape is not ModelIterable and key not in names and attname not in names:
        raise ValueError(f"keyset paging by {key!r} needs it among the values()/values_list() fields.")
    position = names.index(key if key in names else attname) if names else 0
    page = queryset.order_by(key)
    last: Any = None
    while True:
        current = page if last is None else page.filter(**{f"{key}__gt": last})
        rows = list(current[:size])
        if not rows:
            return
        tail = rows[-1]
        if shape is FlatValuesListIterable:
            last = tail
        elif isinstance(tail, dict):
            last = tail[names[position]]
        elif isinstance(tail, tuple):
            last = tail[position]
        else:
            last = getattr(tail, attname)
        yield rows
        if len(rows) < size:
            return


def stream_batch_process(
    queryset: models.QuerySet[Any],
    fn: BatchFn,
    *,
    batch_size: int | None = None,
    key: str = "pk",
    **options: Any,
) -> BatchResult:
    """Call ``fn(rows)`` per keyset-paged batch, each call in its batch transaction."""
    _check_streamable(queryset, "stream_batch_process")
    size = positive_int("batch_size", conf.SCALEOPS_BULK_BATCH_SIZE if batch_size is None else batch_size)
    model = queryset.model
    using = write_alias(queryset)

    def work(rows: list[Any]) -> Outcome:
        fn(rows)
        return Outcome(len(rows))

    runner: BatchRunner[Any] = BatchRunner(model=model, using=using, operation="process", **options)
    return runner.run(keyset_batches(queryset, size, key=key), work)


def parallel_batch_process(
    items_or_queryset: Iterable[Any] | models.QuerySet[Any],
    fn: BatchFn,
    *,
    workers: int = 5,
    batch_size: int | None = None,
    key: str = "pk",
    using: str | None = None,
    continue_on_error: bool = False,
    bisect: bool = True,
    isolation_level: object = None,
    max_retries: int | None = None,
    progress: ProgressCallback | None = None,
) -> BatchResult:
    """Call ``fn(rows)`` on ``workers`` threads, each with its own database connection, closed at the end.

    The calling thread reads the batches (keyset-paged for a queryset, lazily for an iterable)
    into a queue of at most ``2 * workers`` batches, so memory stays bounded. Every batch runs in
    its own transaction on the worker's connection (``atomic=True`` is not possible across
    connections). Batch order between workers is not defined.
    """
    workers = positive_int("workers", workers)
    size = positive_int("batch_size", conf.SCALEOPS_BULK_BATCH_SIZE if batch_size is None else batch_size)
    from django_scaleops.bulk.create import chunked

    model: type[models.Model] | None
    if isinstance(items_or_queryset, models.QuerySet):
        _check_streamable(items_or_queryset, "parallel_batch_process")
        model = items_or_queryset.model
        alias = using or write_alias(items_or_queryset)
        batches: Iterator[list[Any]] = keyset_batches(items_or_queryset, size, key=key)
    else:
        model = None
        alias = using or "default"
        batches = chunked(items_or_queryset, size)

    lock = threading.Lock()
    stop = threading.Event()
    pending: queue.Queue[tuple[int, int, list[Any]] | None] = queue.Queue(maxsize=2 * workers)
    runners: list[BatchRunner[Any]] = []
    errors: list[BaseException] = []

    def merged() -> BatchResult:
        total = BatchResult(operation="process")
        for runner in runners:
            part = runner.result
            total.rows_done += part.rows_done
            total.rows_seen += part.rows_seen
            total.batches_committed += part.batches_committed
            total.retries += part.retries
            total.failures.extend(part.failures)
        total.failures.sort(key=lambda failure: failure.start)
        return total

    def report(_: BatchResult) -> None:
        if progress is not None:
            with lock:
                snapshot = merged()
            progress(snapshot)

    def work(rows: list[Any]) -> Outcome:
        fn(rows)
        return Outcome(len(rows))

    def worker(runner: BatchRunner[Any]) -> None:
        try:
            while not stop.is_set():
                try:
                    item = pending.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                index, start, rows = item
                runner.run_one(index, start, rows, work)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            stop.set()
        finally:
            connections.close_all()  # this thread's connections only

    threads = []
    for number in range(workers):
        runner: BatchRunner[Any] = BatchRunner(
            model=model,
            using=alias,
            operation="process",
            continue_on_error=continue_on_error,
            bisect=bisect,
            isolation_level=isolation_level,
            max_retries=max_retries,
            progress=report,
        )
        runners.append(runner)
        thread = threading.Thread(target=worker, args=(runner,), name=f"scaleops-bulk-{number}", daemon=True)
        threads.append(thread)
        thread.start()

    def put(item: tuple[int, int, list[Any]] | None) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                if not any(t.is_alive() for t in threads):
                    return False
        return False

    try:
        start = 0
        for index, rows in enumerate(batches):
            if not put((index, start, rows)):
                break
            start += len(rows)
    except BaseException as exc:
        errors.insert(0, exc)
        stop.set()
    finally:
        for _ in threads:
            put(None)
        for thread in threads:
            thread.join()
    result = merged()
    if errors:
        first = errors[0]
        if isinstance(first, BulkOperationError):
            raise BulkOperationError(result) from first.__cause__
        if not result.failures:
            result.failures.append(BatchFailure(-1, result.rows_seen, result.rows_seen, first))
        raise BulkOperationError(result) from first
    return result
