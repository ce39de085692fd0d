"""Streaming a queryset in keyset-paged batches, and processing batches on parallel workers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from operator import attrgetter
from typing import Any

from django.db import connections, models
from django.db.models.query import FlatValuesListIterable, ModelIterable

from django_scaleops.bulk.collector import older_objects_frozen
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

    The calling thread reads the batches (keyset-paged for a queryset, lazily for an iterable),
    at most ``2 * workers`` ahead of the workers, so memory stays bounded. Every batch runs in
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

    return run_on_workers(batches, _counted(fn), make_runner, operation="process", workers=workers, progress=progress)


class WorkerPool:
    """A ``ThreadPoolExecutor`` of exactly ``workers`` threads, each with its own database
    connections (Django's are per thread), which each thread closes when the pool closes."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scaleops-bulk")
        # Start every thread now: the executor starts one for each task submitted while none is
        # idle, and no task of this round ends before all have started. With every thread there,
        # the closing round reaches each one exactly once.
        self._on_every_thread(lambda: None)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        self.executor.submit(fn, *args)

    def close(self) -> None:
        """Wait for the tasks submitted; then each thread closes its connections, and ends."""
        try:
            self._on_every_thread(connections.close_all)  # each thread closes its own connections
        finally:
            self.executor.shutdown(wait=True)

    def _on_every_thread(self, fn: Callable[[], object]) -> None:
        # Tasks are taken first in, first out, each by a thread done with its previous one, and
        # the barrier makes each thread take one task of the round: when the round ends, every
        # task submitted before it has ended.
        barrier = threading.Barrier(self.workers)

        def task() -> None:
            try:
                fn()
            finally:
                barrier.wait()  # holds this thread until each thread has taken a task of the round

        try:
            submitted = [self.executor.submit(task) for _ in range(self.workers)]
        except BaseException:
            barrier.abort()  # a thread could not start: release the ones waiting
            raise
        futures.wait(submitted)


def run_on_workers(
    batches: Iterable[list[Any]],
    work: Work,
    make_runner: Callable[[], BatchRunner[Any]],
    *,
    operation: str,
    workers: int,
    progress: ProgressCallback | None = None,
) -> BatchResult:
    """Run ``work(rows)`` for each batch on ``workers`` threads, each with its own connection.

    The calling thread reads ``batches`` (so an iterable that queries the database uses the
    caller's connection, never a worker's) and submits each one, at most ``2 * workers`` at a time,
    running or waiting: memory holds about that many batches. Each batch runs in its own
    transaction on its thread's connection, through a runner of its own (``make_runner``, whose
    ``work`` may run on any thread), and its result is added to the call's as it ends: failure
    positions refer to the input, returned keys come in input order.
    """
    # A bad option raises here, before any thread starts.
    collect_pks = make_runner().result.pks is not None
    total = BatchResult(operation=operation)
    pks_by_batch: dict[int, list[Any]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()  # a batch failed: read, and run, no more
    slots = threading.Semaphore(2 * workers)

    def run(index: int, start: int, rows: list[Any]) -> None:
        try:
            if stop.is_set():
                return
            runner = make_runner()
            runner.progress = None  # called below, with the call's result
            try:
                runner.run_one(index, start, rows, work)
            finally:
                with lock:
                    _add(total, runner.result)
                    if runner.result.pks:
                        pks_by_batch[index] = runner.result.pks
            if progress is not None:
                # One call at a time, each with a newer snapshot (a progress bar only moves
                # forward); without keys: copying them all after every batch would be quadratic.
                with lock:
                    progress(_snapshot(total, None))
        except BaseException as exc:
            stop.set()
            with lock:
                errors.append(exc)
        finally:
            slots.release()

    with older_objects_frozen():  # from the first batch read to the last one written
        _read_and_submit(batches, run, workers, slots, stop, lock, errors)
    pks = [pk for index in sorted(pks_by_batch) for pk in pks_by_batch[index]] if collect_pks else None
    result = _snapshot(total, pks)
    if errors:
        first = errors[0]
        if isinstance(first, BulkOperationError):
            raise BulkOperationError(result) from first.__cause__
        if not result.failures:
            result.failures.append(BatchFailure(-1, result.rows_seen, result.rows_seen, first))
        raise BulkOperationError(result) from first
    return result


def _read_and_submit(
    batches: Iterable[list[Any]],
    run: Callable[[int, int, list[Any]], None],
    workers: int,
    slots: threading.Semaphore,
    stop: threading.Event,
    lock: threading.Lock,
    errors: list[BaseException],
) -> None:
    pool = WorkerPool(workers)
    try:
        start = 0
        for index, rows in enumerate(batches):
            slots.acquire()
            if stop.is_set():
                slots.release()
                break
            pool.submit(run, index, start, rows)
            start += len(rows)
    except Exception as exc:
        # The iterable failed: the batches already read are written before the error is raised.
        with lock:
            errors.insert(0, exc)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: stop as soon as possible
        stop.set()
        with lock:
            errors.insert(0, exc)
    finally:
        pool.close()


def _add(total: BatchResult, part: BatchResult) -> None:
    total.rows_done += part.rows_done
    total.rows_seen += part.rows_seen
    total.batches_committed += part.batches_committed
    total.retries += part.retries
    total.failures.extend(part.failures)


def _snapshot(total: BatchResult, pks: list[Any] | None) -> BatchResult:
    return replace(total, failures=sorted(total.failures, key=attrgetter("start")), pks=pks)
