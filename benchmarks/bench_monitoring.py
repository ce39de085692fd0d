"""Per-query overhead of the query monitor vs no wrapper and vs a django-silk-style stack capture.

Two measurements, alternating rounds (``benchmarks.harness.compare``):

1. The wrapper alone, as Django calls it (``partial(wrapper, execute)(sql, params, many, context)``)
   around an ``execute`` that does nothing: the overhead itself, in µs per query, free of database
   noise. The silk-style peer times the query and captures the Python stack per query
   (``traceback.format_stack()``, what django-silk stores with each SQL row).
2. ``SELECT 1`` round trips on the real primary through Django's cursor, with each wrapper: what
   the overhead is next to the cheapest real query.

Run with ``make bench`` (or under ``python -m django_scaleops.testing.services run --``). About a minute.
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ["EXAMPLE_SCALEOPS"] = "1"

from benchmarks.harness import own_database

own_database("monitoring")

import django  # noqa: E402

django.setup()

from django.db import DEFAULT_DB_ALIAS, connection, connections  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from benchmarks.harness import compare, rounds_for, sized  # noqa: E402
from django_scaleops.monitoring.monitor import monitor, uninstall  # noqa: E402

CALLS_PER_ROUND = sized(50_000, 500)
QUERIES_PER_ROUND = sized(2_000, 20)
SQL = 'SELECT "chat_message"."id", "chat_message"."body" FROM "chat_message" WHERE "chat_message"."id" = %s'


class SilkStyleWrapper:
    """What django-silk does per query: time it and keep the formatted stack with the SQL."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.rows.append(
                {
                    "query": sql,
                    "start": started,
                    "duration": time.perf_counter() - started,
                    "traceback": "".join(reversed(traceback.format_stack())),
                }
            )
            if len(self.rows) > 1000:
                self.rows.clear()  # silk writes them to its tables at the end of the request


def noop_execute(sql: str, params: Any, many: bool, context: Any) -> None:
    return None


def per_call_us(wrapper: Any | None) -> float:
    call = noop_execute if wrapper is None else functools.partial(wrapper, noop_execute)
    # Django's CursorWrapper passes its DatabaseWrapper (``self.db``), not the ``connection``
    # proxy, whose every attribute read costs ~1.5 µs through asgiref's Local.
    context = {"connection": connections[DEFAULT_DB_ALIAS], "cursor": None}
    params = (42,)
    started = time.perf_counter()
    for _ in range(CALLS_PER_ROUND):
        call(SQL, params, False, context)
    return (time.perf_counter() - started) / CALLS_PER_ROUND * 1e6


def per_query_us(wrapper: Any | None) -> float:
    with connection.cursor() as cursor:
        if wrapper is not None:
            connection.execute_wrappers.insert(0, wrapper)
        try:
            started = time.perf_counter()
            for _ in range(QUERIES_PER_ROUND):
                cursor.execute("SELECT 1")
            return (time.perf_counter() - started) / QUERIES_PER_ROUND * 1e6
        finally:
            if wrapper is not None:
                connection.execute_wrappers.remove(wrapper)


def main() -> None:
    # Figures stay in this process: the benchmark measures the hot path, not Redis.
    with override_settings(SCALEOPS_MONITOR_CACHE_ALIAS=None):
        uninstall()  # wrappers are added explicitly per round below
        monitor.active = True
        monitor.configure()
        silk = SilkStyleWrapper()
        bare = [per_call_us(None) for _ in range(rounds_for(5))]
        print(f"\nNo wrapper: {statistics.median(bare):.3f} µs per call (the cost of calling execute itself)")
        compare(
            f"Wrapper overhead per query, no-op execute ({CALLS_PER_ROUND:,} calls a round)",
            lambda: per_call_us(monitor),
            lambda: per_call_us(silk),
            unit="µs/call",
            higher_is_better=False,
            ours_name="scaleops monitor",
            peer_name="silk-style stack capture",
        )
        compare(
            f"SELECT 1 on the real primary through Django's cursor ({QUERIES_PER_ROUND:,} a round)",
            lambda: per_query_us(monitor),
            lambda: per_query_us(None),
            unit="µs/query",
            higher_is_better=False,
            ours_name="scaleops monitor",
            peer_name="no wrapper",
        )
        compare(
            f"SELECT 1 on the real primary through Django's cursor ({QUERIES_PER_ROUND:,} a round)",
            lambda: per_query_us(monitor),
            lambda: per_query_us(silk),
            unit="µs/query",
            higher_is_better=False,
            ours_name="scaleops monitor",
            peer_name="silk-style stack capture",
        )
        print(f"\n(the monitor counted {monitor.snapshot().total:,} queries in this run)")


if __name__ == "__main__":
    main()
