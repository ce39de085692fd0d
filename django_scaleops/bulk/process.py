"""Streaming a queryset in keyset-paged batches, and processing batches on parallel workers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db import connections, models
from django.db.models.query import FlatValuesListIterable, ModelIterable

from django_scaleops.bulk.result import BatchFailure, BatchResult, BulkOperationError
from django_scaleops.bulk.runner import BatchRunner, Outcome, ProgressCallback, chunked, positive_int, write_alias
from django_scaleops.conf import conf

BatchFn = Callable[[list[Any]], object]
Work = Callable[[list[Any]], Outcome]


def _counted(fn: BatchFn) -> Work:
    """``fn`` as batch work: it processes every row it is given."""

    def work(rows: list[Any]) -> Outcome:
        fn(rows)
        return Outcome(len(rows))

    return work


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

    runner: BatchRunner[Any] = BatchRunner(model=model, using=using, operation="process", **options)
    return runner.run(keyset_batches(queryset, size, key=key), _counted(fn))


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

    def make_runner() -> BatchRunner[Any]:
        return BatchRunner(
            model=model,
            using=alias,
            operation="process",
            continue_on_error=continue_on_error,
            bisect=bisect,
            isolation_level=isolation_level,
            max_retries=max_retries,
        )

    return run_on_workers(
        batches,
        lambda: _counted(fn),
        make_runner,
        operation="process",
        workers=workers,
        queue_depth=2 * workers,
        progress=progress,
    )


def run_on_workers(
    batches: Iterable[list[Any]],
    make_work: Callable[[], Work],
    make_runner: Callable[[], BatchRunner[Any]],
    *,
    operation: str,
    workers: int,
    queue_depth: int,
    progress: ProgressCallback | None = None,
) -> BatchResult:
    """Run ``work(rows)`` for each batch on ``workers`` threads, each with its own connection.

    The calling thread reads ``batches`` into a queue of at most ``queue_depth`` batches (so an
    iterable that queries the database uses the caller's connection, never a worker's). Each
    worker builds its ``work`` in its own thread (it may hold the thread's connection), runs every
    batch it takes in its runner's per-batch transaction, and closes its connections when done.
    The merged ``BatchResult`` keeps returned keys in input order.
    """
    lock = threading.Lock()
    stop = threading.Event()
    pending: queue.Queue[tuple[int, int, list[Any]] | None] = queue.Queue(maxsize=queue_depth)
    runners: list[BatchRunner[Any]] = []
    pks_by_batch: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def merged(*, with_pks: bool) -> BatchResult:
        collect = any(runner.result.pks is not None for runner in runners)
        total = BatchResult(operation=operation, pks=[] if collect and with_pks else None)
        for runner in runners:
            part = runner.result
            total.rows_done += part.rows_done
            total.rows_seen += part.rows_seen
            total.batches_committed += part.batches_committed
            total.retries += part.retries
            total.failures.extend(part.failures)
        total.failures.sort(key=lambda failure: failure.start)
        if total.pks is not None:
            for index in sorted(pks_by_batch):
                total.pks.extend(pks_by_batch[index])
        return total

    def report(_: BatchResult) -> None:
        if progress is not None:
            # One call at a time, each with a newer snapshot (a progress bar only moves forward);
            # without keys: copying them all after every batch would be quadratic.
            with lock:
                progress(merged(with_pks=False))

    def worker(runner: BatchRunner[Any]) -> None:
        try:
            work = make_work()
            while not stop.is_set():
                try:
                    item = pending.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                index, start, rows = item
                keys = runner.result.pks
                before = len(keys) if keys is not None else 0
                try:
                    runner.run_one(index, start, rows, work)
                finally:
                    if keys is not None and len(keys) > before:
                        with lock:  # moved, not copied: the merged result orders them by batch
                            pks_by_batch[index] = keys[before:]
                            del keys[before:]
        except BaseException as exc:
            with lock:
                errors.append(exc)
            stop.set()
        finally:
            connections.close_all()  # this thread's connections only

    runners.extend(make_runner() for _ in range(workers))  # a bad option raises here, before any thread
    threads = []
    for number, runner in enumerate(runners):
        runner.progress = report
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
    except Exception as exc:
        # The iterable failed: the batches already read are written before the error is raised.
        errors.insert(0, exc)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: stop as soon as possible
        errors.insert(0, exc)
        stop.set()
    finally:
        for _ in threads:
            put(None)
        for thread in threads:
            thread.join()
    result = merged(with_pks=True)
    if errors:
        first = errors[0]
        if isinstance(first, BulkOperationError):
            raise BulkOperationError(result) from first.__cause__
        if not result.failures:
            result.failures.append(BatchFailure(-1, result.rows_seen, result.rows_seen, first))
        raise BulkOperationError(result) from first
    return result
