"""Shared benchmark plumbing: alternate ours and the peer round by round, print medians and ratio.

Every figure a benchmark prints through :func:`compare` or :func:`record` is also written, when the
script ends, to ``benchmarks/results/<script>.json`` with the machine it ran on (cores, Python,
Django, PostgreSQL, Redis); ``make bench-report`` turns those files into tables and charts.

``SCALEOPS_BENCH_SMOKE=1`` (``make bench-smoke``) runs every benchmark with tiny sizes and one round,
judges no figure and writes its JSON under ``benchmarks/results/smoke/`` (not kept): it proves each
benchmark still runs, which CI checks.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

SMOKE = os.environ.get("SCALEOPS_BENCH_SMOKE") == "1"

# Service URLs the launcher exports whose database part :func:`own_database` rewrites.
DATABASE_URL_VARS = re.compile(r"^(DATABASE|REPLICA\d*|PGBOUNCER)_URL$")

OWN_DATABASE_VAR = "SCALEOPS_BENCH_DATABASE"


def sized(full: int, smoke: int) -> int:
    """The benchmark's size: ``full`` normally, ``smoke`` under ``make bench-smoke``."""
    return smoke if SMOKE else full


def rounds_for(full: int) -> int:
    """How many rounds to run: ``full`` normally, one under ``make bench-smoke``."""
    return 1 if SMOKE else full


def own_database(name: str) -> str:
    """Give this benchmark a fresh database of its own, before Django is set up.

    Drops and creates ``bench_<name>`` on the launcher's primary and points ``DATABASE_URL``,
    ``REPLICA_URL`` (and any ``REPLICA<N>_URL``) and ``PGBOUNCER_URL`` at it, then empties the
    launcher's Redis, so no benchmark depends on what ran before it. Subprocesses inherit the URLs.
    Returns the database name. A subprocess of the benchmark (a worker, a probe) inherits the
    database and calling this again there changes nothing.
    """
    import psycopg

    if inherited := os.environ.get(OWN_DATABASE_VAR):
        return inherited
    dbname = f"bench_{re.sub(r'[^a-z0-9_]', '_', name.lower())}"
    admin_url = os.environ["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    for var, url in list(os.environ.items()):
        if DATABASE_URL_VARS.match(var) and url:
            parts = urlsplit(url)
            os.environ[var] = urlunsplit(parts._replace(path=f"/{dbname}"))
    if os.environ.get("REDIS_URL"):
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    _wait_for_database_on_replicas(dbname)
    os.environ[OWN_DATABASE_VAR] = dbname
    return dbname


def _wait_for_database_on_replicas(dbname: str, timeout: float = 60.0) -> None:
    """A standby replays ``CREATE DATABASE`` a moment later: wait until each one lets us in."""
    import psycopg

    for var, url in os.environ.items():
        if not (var.startswith("REPLICA") and var.endswith("_URL") and url):
            continue
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(url, connect_timeout=5).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{dbname} did not reach the standby at {var} within {timeout:.0f} s") from None
                time.sleep(0.1)


# What this script measured, written to JSON when it ends.
_results: list[dict[str, Any]] = []


def _figures(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def paired_interval(
    ours: list[float], peer: list[float], *, higher_is_better: bool = True, resamples: int = 2000
) -> tuple[float, float]:
    """A 90 % bootstrap interval of the median "as good" factor of the rounds, each round's ours
    against the same round's peer: how far one run's factor could move on this machine's noise.

    Rounds are paired because they share the machine's state (a neighbour's load, a cache); the
    resampling is seeded, so the same figures give the same interval.
    """
    import random

    if not ours or any(value <= 0 for value in (*ours, *peer)):
        # A round where either side measured nothing (0 % of reads on the replica) has no
        # factor, and an interval of the other rounds would not be this comparison's.
        return float("nan"), float("nan")
    factors = [mine / theirs if higher_is_better else theirs / mine for mine, theirs in zip(ours, peer, strict=True)]
    if len(factors) == 1:
        return factors[0], factors[0]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(factors, k=len(factors))) for _ in range(resamples))
    return medians[int(0.05 * resamples)], medians[int(0.95 * resamples) - 1]


def record(
    title: str,
    value: float,
    unit: str,
    *,
    higher_is_better: bool = True,
    target: float | None = None,
    note: str = "",
) -> None:
    """Keep one figure that has no peer (a size, a latency against a fixed goal) in the results."""
    _results.append(
        {
            "kind": "figure",
            "title": title,
            "unit": unit,
            "value": value,
            "higher_is_better": higher_is_better,
            "target": target,
            "note": note,
        }
    )


def compare(
    title: str,
    ours: Callable[[], float],
    peer: Callable[[], float],
    *,
    rounds: int = 11,
    unit: str = "ops/s",
    higher_is_better: bool = True,
    ours_name: str = "ours",
    peer_name: str = "peer",
    target: float | None = None,
    key: str = "",
) -> float:
    """Run both ``rounds`` times, alternating which goes first, and print the medians.

    Each callable runs one round and returns its figure. Returns ours / peer (of the medians); the
    results also keep :func:`paired_interval` of the rounds, printed beside it. ``target`` is the
    "as good" factor ours must reach (1.0: the peer's figure; 0.85: 85 % of it), shown by the report
    and never judged in smoke mode; ``key`` names the comparison in the results (the title if empty).
    """
    rounds = rounds_for(rounds)
    results: dict[str, list[float]] = {ours_name: [], peer_name: []}
    for round_no in range(rounds):
        order = [(ours_name, ours), (peer_name, peer)]
        if round_no % 2:
            order.reverse()
        for name, run in order:
            results[name].append(run())
    ours_median = statistics.median(results[ours_name])
    peer_median = statistics.median(results[peer_name])
    ratio = ours_median / peer_median if peer_median else float("inf")
    better = ratio if higher_is_better else (1 / ratio if ratio else float("inf"))
    print(f"\n{title}")
    for name, values in results.items():
        spread = f"min {min(values):,.1f}  max {max(values):,.1f}"
        print(f"  {name:<28} median {statistics.median(values):>12,.1f} {unit}   ({spread}, {rounds} rounds)")
    low, high = paired_interval(results[ours_name], results[peer_name], higher_is_better=higher_is_better)
    verdict = ""
    if target is not None and not SMOKE:
        verdict = f"; target {target:.2f}x: {'met' if better >= target else 'MISSED'}"
        if low <= target <= high:
            verdict += ", within this run's noise"
    print(
        f"  ratio {ours_name}/{peer_name}: {ratio:.3f}  ({'higher' if higher_is_better else 'lower'} is better;"
        f" {better:.3f}x as good, round by round {low:.3f}-{high:.3f}{verdict})"
    )
    _results.append(
        {
            "kind": "comparison",
            "key": key or title,
            "title": title,
            "unit": unit,
            "higher_is_better": higher_is_better,
            "rounds": rounds,
            "ours_name": ours_name,
            "peer_name": peer_name,
            "ours": _figures(results[ours_name]),
            "peer": _figures(results[peer_name]),
            "ratio": ratio,
            "as_good": better,
            # 90 % bootstrap interval of the per-round factor's median (paired_interval).
            "as_good_interval": [low, high],
            "target": target,
        }
    )
    return ratio


def machine() -> dict[str, Any]:
    """The machine and the versions the figures were measured with."""
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import django

        facts["django"] = django.get_version()
    except ImportError:  # pragma: no cover - every benchmark imports Django
        pass
    if url := os.environ.get("DATABASE_URL"):
        try:
            import psycopg

            with psycopg.connect(url, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                facts["postgresql"] = row[0] if row else None
        except Exception as exc:  # the report says what it could not read
            facts["postgresql"] = f"unknown ({type(exc).__name__})"
    if url := os.environ.get("REDIS_URL"):
        try:
            import redis

            facts["redis"] = redis.Redis.from_url(url, socket_timeout=5).info("server")["redis_version"]
        except Exception as exc:
            facts["redis"] = f"unknown ({type(exc).__name__})"
    return facts


def results_path(script: str | None = None) -> Path:
    name = Path(script or sys.argv[0]).stem
    return (RESULTS_DIR / "smoke" if SMOKE else RESULTS_DIR) / f"{name}.json"


@atexit.register
def _write_results() -> None:
    """Write what the script measured; a worker subprocess (which measures nothing here) writes nothing."""
    if not _results or not Path(sys.argv[0]).stem.startswith("bench_"):
        return
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": path.stem,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "smoke": SMOKE,
        "machine": machine(),
        "results": _results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(ROOT)}")


class Worker:
    """A Python subprocess that runs one round per request, so two configurations can alternate.

    The worker script reads a line with a count from stdin and answers with a float on stdout.
    """

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )

    def round(self, count: int) -> float:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()
        # Log lines may share the worker's stdout (a StreamHandler): the figure is the first
        # line that is a number.
        while line := self.proc.stdout.readline():
            try:
                return float(line)
            except ValueError:
                continue
        raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def interleaved(
    first: Callable[[], float],
    second: Callable[[], float],
    count: int,
    summary: Callable[[list[float]], float] = statistics.median,
) -> tuple[Callable[[], float], Callable[[], float]]:
    """Two callables for :func:`compare` that run a round of two configurations request by request.

    ``first`` and ``second`` each run one request and return its figure (a worker's ``round(1)``).
    A round is ``count`` of them from each side in turn (A B, then B A, ...); each side's figure is
    ``summary`` of its own: the median for a p50, the harmonic mean for requests per second (the
    round's throughput). A busy machine's load drifts over seconds: measured a whole round after
    the other, two rounds of the same configuration differed by 10 % and more, which buried a
    difference of 1-2 %; taken in turn, both sides see the same drift (on the example API the
    spread of the round's factor fell seven to ten times). A B, B A rather than A B, A B: a
    worker answers faster right after its own previous request (its caches are warm), and this
    way each side gets as many of those as the other. Whichever callable ``compare`` calls first
    runs the round; the other returns its half.
    """
    left: dict[int, float] = {}

    def run(side: int) -> float:
        if side in left:
            return left.pop(side)
        figures: tuple[list[float], list[float]] = ([], [])
        for index in range(count):
            for taking in (0, 1) if index % 2 == 0 else (1, 0):
                figures[taking].append((first, second)[taking]())
        left.clear()
        left[1 - side] = summary(figures[1 - side])
        return summary(figures[side])

    return (lambda: run(0)), (lambda: run(1))


def wait_for_replay(timeout: float = 60.0) -> None:
    """Wait until the "replica" alias has replayed everything the primary wrote so far.

    A benchmark that writes (migrate, seeding) and then reads through the replica router would
    otherwise read a standby that has not replayed the tables yet (it lags after large writes).
    """
    from django.db import connections

    if "replica" not in connections.databases:
        return

    def scalar(alias: str, sql: str) -> Any:
        with connections[alias].cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    target = scalar("default", "SELECT pg_current_wal_insert_lsn()::text")
    deadline = time.monotonic() + timeout
    while not scalar("replica", f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica did not replay the primary's writes within {timeout:.0f} s")
        time.sleep(0.05)
