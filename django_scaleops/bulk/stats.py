"""Process-wide counters of bulk work, published as the ``bulk`` metrics source."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

_lock = threading.Lock()
_counters: Counter[str] = Counter()


def record(operation: str, *, rows: int = 0, batches: int = 0, failed_batches: int = 0, retries: int = 0) -> None:
    with _lock:
        _counters[f"{operation}_rows"] += rows
        _counters[f"{operation}_batches"] += batches
        _counters[f"{operation}_failed_batches"] += failed_batches
        _counters[f"{operation}_retries"] += retries


def snapshot() -> dict[str, Any]:
    """Rows, committed batches, failed batches and retries per operation since the process started."""
    with _lock:
        return {name: count for name, count in sorted(_counters.items()) if count}
