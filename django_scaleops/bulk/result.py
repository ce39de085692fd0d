"""What a bulk operation did: rows, committed batches, retries and the exact failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class SupportsAdvance(Protocol):
    def advance(self, count: int = 1) -> None: ...


@dataclass(frozen=True)
class BatchFailure:
    """One failed batch, or after bisection one failed row range.

    ``start`` and ``stop`` are positions in the input (0-based, ``stop`` excluded), so
    ``rows[start:stop]`` are the rows that were not written.
    """

    batch_index: int
    start: int
    stop: int
    error: BaseException
    sqlstate: str | None = None

    @property
    def size(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        code = f" [{self.sqlstate}]" if self.sqlstate else ""
        rows = f"rows {self.start}..{self.stop - 1}"
        return f"batch {self.batch_index}, {rows}: {type(self.error).__name__}{code}: {self.error}"


@dataclass
class BatchResult:
    """The outcome of ``batch_create`` / ``batch_update`` / ``batch_delete`` / ``*_batch_process``.

    Attributes:
        operation: "create", "update", "delete" or "process".
        rows_done: rows written (or processed) in batches that committed. With ``atomic=True`` it
            counts pending rows while running and is 0 if the transaction rolled back.
        rows_seen: input rows consumed so far.
        batches_committed: batches whose rows are committed (or will be, inside an outer transaction).
        failures: one entry per failed batch, or per isolated row range when bisecting.
        retries: serialization-failure / deadlock retries that were needed.
        rolled_back: ``atomic=True`` and something failed, so nothing was written.
        pks: primary keys returned by ``INSERT ... RETURNING`` (``batch_create(returning=True)``),
            else None.
    """

    operation: str
    rows_done: int = 0
    rows_seen: int = 0
    batches_committed: int = 0
    failures: list[BatchFailure] = field(default_factory=list)
    retries: int = 0
    rolled_back: bool = False
    pks: list[Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.rolled_back

    @property
    def failed_rows(self) -> int:
        return sum(failure.size for failure in self.failures)

    def raise_for_errors(self) -> None:
        """Raise ``BulkOperationError`` if any batch failed (for ``continue_on_error=True`` callers)."""
        if not self.ok:
            raise BulkOperationError(self)

    def __str__(self) -> str:
        state = "rolled back" if self.rolled_back else f"{self.batches_committed} batches committed"
        return (
            f"{self.operation}: {self.rows_done} rows done of {self.rows_seen} seen, {state},"
            f" {len(self.failures)} failures, {self.retries} retries"
        )


class BulkOperationError(Exception):
    """A bulk operation stopped (or, with ``atomic=True``, rolled back) because a batch failed.

    ``result`` says what was committed before the failure and which rows failed; the original
    database error is chained as ``__cause__``.
    """

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        detail = "; ".join(str(failure) for failure in result.failures[:3])
        more = f" (+{len(result.failures) - 3} more)" if len(result.failures) > 3 else ""
        super().__init__(f"{result}. {detail}{more}")


def progress_bar_callback(bar: SupportsAdvance) -> Callable[[BatchResult], None]:
    """A ``progress=`` callback that advances a ``django_scaleops.progress.ProgressBar`` by rows read.

    Example, in a management command::

        with ProgressBar(self.stdout, total=queryset.count(), label="reindex") as bar:
            queryset.stream_batch_process(reindex, progress=progress_bar_callback(bar))
    """
    seen = 0

    def advance(result: BatchResult) -> None:
        nonlocal seen
        bar.advance(result.rows_seen - seen)
        seen = result.rows_seen

    return advance
