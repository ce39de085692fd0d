"""Batched bulk operations: COPY inserts, VALUES/COPY updates, chunked deletes, keyset streaming."""

from __future__ import annotations

from django_scaleops.bulk.process import keyset_batches, parallel_batch_process, stream_batch_process
from django_scaleops.bulk.queryset import BulkManager, BulkQuerySet
from django_scaleops.bulk.reading import RowsQueriedDuringCopy
from django_scaleops.bulk.result import BatchFailure, BatchResult, BulkOperationError, progress_bar_callback

__all__ = [
    "BatchFailure",
    "BatchResult",
    "BulkManager",
    "BulkOperationError",
    "BulkQuerySet",
    "RowsQueriedDuringCopy",
    "keyset_batches",
    "parallel_batch_process",
    "progress_bar_callback",
    "stream_batch_process",
]
