"""The transaction engine shared by every bulk operation.

Per batch: one transaction (or, inside a caller's ``atomic()``, one savepoint; or, for work that
is one statement, in autocommit mode, that statement's own), the isolation level set as its first
statement, bounded retry on serialization failures and deadlocks, bisection of a
failing batch down to the bad rows, ``bulk_write_committed`` on commit, a progress callback and a
log line. With ``atomic=True`` every batch runs in one transaction that commits all or nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

from django.db import connections, models, router, transaction
from django.db.transaction import TransactionManagementError

from django_scaleops.apm.helpers import custom_span
from django_scaleops.bulk import stats
from django_scaleops.bulk.collector import older_objects_frozen
from django_scaleops.bulk.result import BatchFailure, BatchResult, BulkOperationError
from django_scaleops.conf import conf
from django_scaleops.signals import bulk_rows_written, bulk_write_committed

logger = logging.getLogger("django_scaleops.bulk")

T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
ISOLATION_LEVELS = {
    "read committed": "READ COMMITTED",
    "repeatable read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
}
WRITE_OPERATIONS = frozenset({"create", "update", "delete"})

ProgressCallback = Callable[[BatchResult], object]


@dataclass
class Outcome:
    """What one batch (or part of one, when bisecting) wrote."""

    rows: int = 0
    pks: list[Any] | None = None

    def __add__(self, other: Outcome) -> Outcome:
        pks = None if self.pks is None and other.pks is None else [*(self.pks or ()), *(other.pks or ())]
        return Outcome(self.rows + other.rows, pks)


class _RollBack(Exception):
    """Raised inside ``atomic=True`` to roll back after failures were recorded."""


def sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_retryable(exc: BaseException) -> bool:
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def normalize_isolation(level: object) -> str | None:
    if level is None:
        return None
    name = getattr(level, "name", level)  # psycopg.IsolationLevel
    key = str(name).strip().lower().replace("_", " ")
    if key not in ISOLATION_LEVELS:
        raise ValueError(f"isolation_level must be one of {sorted(ISOLATION_LEVELS)}, not {level!r}.")
    return ISOLATION_LEVELS[key]


def write_alias(queryset: models.QuerySet[Any]) -> str:
    """The queryset's ``.using()`` alias, else the router's write alias for its model."""
    alias: str | None = getattr(queryset, "_db", None)
    return alias or router.db_for_write(queryset.model)


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` items, reading the iterable lazily (a generator is never materialised)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}.")
    return value


def _forget_traceback(exc: BaseException) -> BaseException:
    # A kept failure must not keep its frames (and the batch rows they reference) alive.
    seen: BaseException | None = exc
    while seen is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return exc


class BatchRunner(Generic[T]):
    """Runs ``work(rows) -> Outcome`` over batches with the transaction policy of one operation."""

    def __init__(
        self,
        *,
        model: type[models.Model] | None,
        using: str,
        operation: str,
        atomic: bool = False,
        isolation_level: object = None,
        continue_on_error: bool = False,
        bisect: bool = True,
        max_retries: int | None = None,
        progress: ProgressCallback | None = None,
        collect_pks: bool = False,
        atomic_work: bool = False,
    ) -> None:
        self.model = model
        self.using = using
        self.operation = operation
        self.atomic = atomic
        self.isolation = normalize_isolation(isolation_level)
        self.continue_on_error = continue_on_error
        self.bisect = bisect
        retries = conf.SCALEOPS_BULK_MAX_RETRIES if max_retries is None else max_retries
        if retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {retries!r}.")
        self.max_retries = retries
        self.progress = progress
        self.result = BatchResult(operation=operation, pks=[] if collect_pks else None)
        # work(rows) writes all or nothing by itself (one COPY): outside a transaction, a batch then
        # needs no BEGIN, SAVEPOINT, RELEASE and COMMIT round trips. They cost most on workers,
        # where each reply waits for the interpreter lock while the caller's thread reads rows.
        self.atomic_work = atomic_work

    # -- public

    def run(self, batches: Iterable[list[T]], work: Callable[[list[T]], Outcome]) -> BatchResult:
        connection = connections[self.using]
        if self.isolation and connection.in_atomic_block:
            raise TransactionManagementError(
                "isolation_level needs a transaction of its own: call the bulk operation outside atomic()."
            )
        with older_objects_frozen():
            if self.atomic:
                self._run_atomic(batches, work)
            else:
                # Inside a caller's transaction a failed attempt cannot be retried on its own.
                can_retry = not connection.in_atomic_block
                for index, rows in enumerate(batches):
                    self._run_batch(index, self.result.rows_seen, rows, work, can_retry)
        return self.result

    def run_one(self, index: int, start: int, rows: list[T], work: Callable[[list[T]], Outcome]) -> None:
        """One batch in its own transaction (for workers that receive batches from elsewhere)."""
        self._run_batch(index, start, rows, work, not connections[self.using].in_atomic_block)

    # -- per-batch transactions

    def _run_batch(
        self, index: int, start: int, rows: list[T], work: Callable[[list[T]], Outcome], can_retry: bool
    ) -> None:
        # One APM span per batch (free when no APM vendor is configured).
        label = self.model._meta.label if self.model is not None else "items"
        # A streamed batch (batch_create) is read while it is written: its size is known after.
        with custom_span(f"bulk.{self.operation}", resource=label, tags={"batch": index}):
            self._run_batch_in_span(index, start, rows, work, can_retry)

    def _run_batch_in_span(
        self, index: int, start: int, rows: list[T], work: Callable[[list[T]], Outcome], can_retry: bool
    ) -> None:
        result = self.result
        attempt = 0
        began = time.monotonic()
        while True:
            failures: list[BatchFailure] = []
            try:
                if self._runs_alone():
                    outcome = self._attempt_alone(index, start, rows, work, failures)
                else:
                    with transaction.atomic(using=self.using):
                        self._set_isolation()
                        outcome = self._attempt(index, start, rows, work, failures)
                        self._announce(outcome)
            except Exception as exc:
                if can_retry and attempt < self.max_retries and is_retryable(exc):
                    attempt += 1
                    result.retries += 1
                    stats.record(self.operation, retries=1)
                    logger.info("bulk %s batch %d: %s, retry %d", self.operation, index, sqlstate(exc), attempt)
                    time.sleep(min(0.02 * 2**attempt, 0.5) * random.uniform(0.5, 1.5))
                    continue
                result.rows_seen += len(rows)  # counted once written or failed: all of it is read by then
                failure = BatchFailure(index, start, start + len(rows), exc, sqlstate(exc))
                result.failures.append(failure)
                stats.record(self.operation, failed_batches=1)
                self._log(index, len(rows), 0, began, failed=True)
                if not self.continue_on_error:
                    raise BulkOperationError(result) from exc
                _forget_traceback(exc)
                self._report()
                return
            break
        result.rows_seen += len(rows)
        result.failures.extend(failures)
        result.rows_done += outcome.rows
        result.batches_committed += 1
        if result.pks is not None and outcome.pks:
            result.pks.extend(outcome.pks)
        stats.record(self.operation, rows=outcome.rows, batches=1, failed_batches=len(failures))
        self._log(index, len(rows), outcome.rows, began, failed=bool(failures))
        self._report()

    # -- one transaction for everything

    def _run_atomic(self, batches: Iterable[list[T]], work: Callable[[list[T]], Outcome]) -> None:
        result = self.result
        index, rows = -1, list[T]()
        try:
            with transaction.atomic(using=self.using):
                self._set_isolation()
                for index, rows in enumerate(batches):
                    start = result.rows_seen
                    began = time.monotonic()
                    try:
                        outcome = self._attempt(index, start, rows, work, result.failures)
                    finally:
                        result.rows_seen += len(rows)  # a streamed batch is all read by now
                    self._announce(outcome)
                    result.rows_done += outcome.rows
                    result.batches_committed += 1
                    if result.pks is not None and outcome.pks:
                        result.pks.extend(outcome.pks)
                    self._log(index, len(rows), outcome.rows, began, failed=False)
                    self._report()
                if result.failures:
                    raise _RollBack
        except _RollBack:
            self._rolled_back()
        except Exception as exc:
            start = result.rows_seen - len(rows)
            result.failures.append(BatchFailure(index, start, result.rows_seen, exc, sqlstate(exc)))
            self._rolled_back()
            raise BulkOperationError(result) from exc
        else:
            stats.record(self.operation, rows=result.rows_done, batches=result.batches_committed)

    def _rolled_back(self) -> None:
        result = self.result
        result.rolled_back = True
        result.rows_done = 0
        result.batches_committed = 0
        if result.pks is not None:
            result.pks.clear()
        stats.record(self.operation, failed_batches=len(result.failures))
        self._report()

    # -- pieces

    def _attempt(
        self, index: int, start: int, rows: list[T], work: Callable[[list[T]], Outcome], failures: list[BatchFailure]
    ) -> Outcome:
        """Run ``work``; with ``continue_on_error``, isolate failing rows by bisection under savepoints."""
        if not self.continue_on_error:
            return work(rows)
        try:
            with transaction.atomic(using=self.using):
                return work(rows)
        except Exception as exc:
            if is_retryable(exc):
                raise  # the whole transaction must be retried, not a part of it
            if self.bisect and len(rows) > 1:
                middle = len(rows) // 2
                left = self._attempt(index, start, rows[:middle], work, failures)
                return left + self._attempt(index, start + middle, rows[middle:], work, failures)
            failures.append(BatchFailure(index, start, start + len(rows), _forget_traceback(exc), sqlstate(exc)))
            return Outcome()

    def _runs_alone(self) -> bool:
        """Whether a batch can run as its own statement: in autocommit mode, outside any transaction."""
        if not self.atomic_work or self.isolation:
            return False
        connection = connections[self.using]
        return not connection.in_atomic_block and connection.get_autocommit()

    def _attempt_alone(
        self, index: int, start: int, rows: list[T], work: Callable[[list[T]], Outcome], failures: list[BatchFailure]
    ) -> Outcome:
        """``work(rows)`` outside a transaction: it commits all the rows or none of them."""
        try:
            outcome = work(rows)
        except Exception as exc:
            if not self.continue_on_error or is_retryable(exc):
                raise
            # Nothing was written: find the bad rows in a transaction, as any batch does.
            with transaction.atomic(using=self.using):
                outcome = self._attempt(index, start, rows, work, failures)
                self._announce(outcome)
            return outcome
        self._announce(outcome)  # outside a transaction, Django runs it now: the rows are committed
        return outcome

    def _set_isolation(self) -> None:
        if self.isolation:
            with connections[self.using].cursor() as cursor:
                cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {self.isolation}")

    def _announce(self, outcome: Outcome) -> None:
        """Tell listeners what the batch wrote: now (inside its transaction), and again on commit."""
        if not outcome.rows or self.operation not in WRITE_OPERATIONS or self.model is None:
            return
        model, using, operation, pks = self.model, self.using, self.operation, outcome.pks
        # Sent now, as an ORM write is seen now: the cache queues its invalidation on this
        # transaction (dropped on rollback) and reads in the transaction stop using the cache.
        bulk_rows_written.send(sender=model, using=using, operation=operation, pks=pks)

        def send() -> None:
            bulk_write_committed.send(sender=model, using=using, operation=operation, pks=pks)

        # robust: the rows are committed; a failing receiver must not make the batch look failed.
        transaction.on_commit(send, using=using, robust=True)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.result)

    def _log(self, index: int, size: int, written: int, began: float, *, failed: bool) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "bulk %s %s batch %d: %d rows in, %d written, %.1f ms%s",
                self.operation,
                self.model._meta.label if self.model is not None else "items",
                index,
                size,
                written,
                (time.monotonic() - began) * 1000,
                " (with failures)" if failed else "",
            )
