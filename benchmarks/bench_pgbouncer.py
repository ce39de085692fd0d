"""PgBouncer (transaction mode) vs connecting straight to PostgreSQL, in one run.

1. A new connection + ``SELECT 1``: the cost a Django app with ``CONN_MAX_AGE = 0`` pays per
   request. Each round is the median of 100 connections; rounds alternate.
2. 320 concurrent clients, each with its own connection, running short transactions: through
   PgBouncer's pool of 20 server connections, or straight to a server with
   ``max_connections = 300`` (some clients are then refused: counted as errors). The clients
   run in 4 processes x 80 threads; each round lasts 3 seconds after connecting. Two loads:
   5 ms between transactions (saturates the 2 cores) and 50 ms (a web worker's pace).

Run with ``make bench`` (or under ``python -m django_scaleops.testing.services run --``).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import SMOKE, compare, own_database, sized

CONNECTIONS_PER_ROUND = sized(100, 5)
CLIENTS = sized(320, 8)
PROCESSES = 4
ROUND_SECONDS = 0.3 if SMOKE else 3.0


def connect_and_select(url: str) -> float:
    """Median milliseconds of a new connection + SELECT 1, over one round."""
    timings = []
    for _ in range(CONNECTIONS_PER_ROUND):
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            conn.execute("SELECT 1").fetchone()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def client_process(url: str, threads: int, seconds: float, think: float) -> tuple[int, int]:
    """Run ``threads`` clients for ``seconds`` after all have tried to connect: (requests, errors)."""
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    errors = [0] * threads
    stop_at = [0.0]

    def client(index: int) -> None:
        conn = None
        try:
            conn = psycopg.connect(url, prepare_threshold=None, connect_timeout=10)
        except psycopg.Error:
            errors[index] += 1
        barrier.wait()
        if conn is None:
            return
        with conn:
            while time.monotonic() < stop_at[0]:
                try:
                    with conn.transaction():
                        conn.execute("SELECT 1").fetchone()
                        conn.execute("SELECT now()").fetchone()
                    counts[index] += 1
                except psycopg.Error:
                    errors[index] += 1
                    return
                time.sleep(think)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    stop_at[0] = time.monotonic() + 3600  # until everyone has connected
    barrier.wait()
    stop_at[0] = time.monotonic() + seconds
    for worker in workers:
        worker.join()
    return sum(counts), sum(errors)


def concurrent_round(pool: ProcessPoolExecutor, url: str, think: float, errors_seen: list[int]) -> float:
    per_process = CLIENTS // PROCESSES
    futures = [pool.submit(client_process, url, per_process, ROUND_SECONDS, think) for _ in range(PROCESSES)]
    results = [future.result() for future in futures]
    errors_seen.append(sum(errors for _, errors in results))
    return sum(requests for requests, _ in results) / ROUND_SECONDS


def main() -> None:
    direct = os.environ["DATABASE_URL"]
    pooled = os.environ["PGBOUNCER_URL"]
    for url in (direct, pooled):
        connect_and_select(url)  # warm-up
    compare(
        f"New connection + SELECT 1 (median of {CONNECTIONS_PER_ROUND} a round)",
        lambda: connect_and_select(pooled),
        lambda: connect_and_select(direct),
        rounds=9,
        unit="ms",
        higher_is_better=False,
        ours_name="through PgBouncer",
        peer_name="direct to PostgreSQL",
    )
    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        for think, rounds in ((0.005, 5), (0.05, 3)):
            pooled_errors: list[int] = []
            direct_errors: list[int] = []
            compare(
                f"{CLIENTS} concurrent clients, 2 short queries a transaction, {think * 1000:.0f} ms between"
                f" transactions ({ROUND_SECONDS:.0f} s a round)",
                partial(concurrent_round, pool, pooled, think, pooled_errors),
                partial(concurrent_round, pool, direct, think, direct_errors),
                rounds=rounds,
                unit="tx/s",
                ours_name="PgBouncer, 20 server conns",
                peer_name=f"direct, {CLIENTS} server conns",
            )
            print(
                f"  errors a round (median): PgBouncer {statistics.median(pooled_errors):.0f},"
                f" direct {statistics.median(direct_errors):.0f} (clients refused: max_connections = 300)"
            )


if __name__ == "__main__":
    own_database("pgbouncer")
    main()
