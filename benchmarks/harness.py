"""Shared benchmark plumbing: alternate ours and the peer round by round, print medians and ratio."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


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
) -> float:
    """Run both ``rounds`` times, alternating which goes first, and print the medians.

    Each callable runs one round and returns its figure. Returns ours / peer.
    """
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
    print(
        f"  ratio {ours_name}/{peer_name}: {ratio:.3f}  ({'higher' if higher_is_better else 'lower'} is better;"
        f" {better:.3f}x as good)"
    )
    return ratio


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
