"""How many server connections a PgBouncer pool should hold, and why.

The rule of the PostgreSQL wiki and HikariCP: a server does its best work with about
``2 x cores + effective spindles`` connections actually running queries. More clients than that
should queue in the pooler, not in the server's scheduler. When the load is known, Little's law
says how many of those a pool needs: ``rate x time in the database per request x headroom``
(docs/scaling.md, the capacity model).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

# PostgreSQL's default superuser_reserved_connections, plus room for psql, migrations and backups.
MIN_RESERVED_CONNECTIONS = 5
RESERVED_SHARE = 0.1
# Room for a rolling deploy, when old and new workers are connected at the same time.
CLIENT_HEADROOM = 2
# Little's law gives the connections busy on average; twice that keeps a pool half busy, so bursts
# of a Poisson arrival stream rarely wait for a connection (docs/scaling.md).
DEFAULT_HEADROOM = 2.0


def connections_for_load(rate: float, db_time_ms: float, headroom: float = DEFAULT_HEADROOM) -> int:
    """Server connections a pool needs for ``rate`` requests a second (Little's law, with headroom).

    Args:
        rate: requests a second that go through the pool.
        db_time_ms: time each request spends in the database, in milliseconds (the query
            monitor's sum of query durations per request; ``benchmarks/bench_capacity.py``).
        headroom: multiple of the average number of busy connections to provide (>= 1).

    Returns:
        ``ceil(rate x db_time_ms / 1000 x headroom)``: 0 when there is no load.

    Raises:
        ValueError: a figure is negative, not finite, or ``headroom`` is below 1.
    """
    for name, value in (("rate", rate), ("db_time_ms", db_time_ms), ("headroom", headroom)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:  # type: ignore[redundant-expr]
            raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    if headroom < 1:
        raise ValueError(f"headroom must be >= 1 (a pool sized below the average load queues forever), not {headroom}")
    # round() first: 1000 x 4.2 / 1000 is 4.200000000000001 in floating point, and must not become 5.
    return math.ceil(round(rate * db_time_ms / 1000 * headroom, 9))


@dataclass(frozen=True)
class PoolRecommendation:
    """What :func:`calculate_pool_size` recommends, with the figures it started from.

    Attributes:
        default_pool_size: server connections per pool (database + user) in PgBouncer.
        reserve_pool_size: extra connections PgBouncer may open when clients have waited
            ``reserve_pool_timeout``; 0 when the server budget leaves no room.
        max_db_connections: hard cap of server connections per database (pool + reserve).
        max_client_conn: client connections PgBouncer accepts (all workers x threads, twice over
            for rolling deploys).
        per_process_pool_size: ``max_size`` for Django's native pool (``OPTIONS["pool"]``) in
            each worker process: one connection per thread is all a process can use.
        active_target: ``2 x cores + spindles``, the server's sweet spot.
        client_demand: ``workers x threads``, connections the application can use at once.
        load_demand: ``connections_for_load(rate, db_time_ms, headroom)`` (at least 1), or None
            when no rate was given.
        server_budget: ``max_connections`` minus reserved connections, or None when unknown.
        limited_by: what set the pool size: ``"cores"``, ``"clients"``, ``"load"`` or
            ``"max_connections"``.
        notes: one sentence per decision, for people reading the generated config.
    """

    default_pool_size: int
    reserve_pool_size: int
    max_db_connections: int
    max_client_conn: int
    per_process_pool_size: int
    active_target: int
    client_demand: int
    load_demand: int | None
    server_budget: int | None
    limited_by: str
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


def calculate_pool_size(
    *,
    cores: int | None = None,
    spindles: int = 1,
    workers: int = 1,
    threads: int = 1,
    max_connections: int | None = None,
    reserved_connections: int | None = None,
    pools: int = 1,
    rate: float | None = None,
    db_time_ms: float | None = None,
    headroom: float = DEFAULT_HEADROOM,
) -> PoolRecommendation:
    """Recommend PgBouncer pool sizes for one PostgreSQL server.

    Args:
        cores: CPU cores of the database server (default: this machine's).
        spindles: effective spindles (1 for an SSD or a cached working set, 0 if all in RAM).
        workers: application processes across all hosts (gunicorn workers x hosts).
        threads: threads (or concurrent requests) per process.
        max_connections: the server's ``max_connections``; None skips the budget check.
        reserved_connections: connections kept free for superusers, migrations and backups
            (default: 10% of ``max_connections``, at least 5).
        pools: PgBouncer pools that share this server (databases x users x PgBouncer instances).
        rate: requests a second through this pool; with ``db_time_ms``, the pool is no larger
            than Little's law needs (:func:`connections_for_load`). None: sized by cores and clients.
        db_time_ms: time in the database per request, in ms (required with ``rate``).
        headroom: multiple of the average busy connections to provide (default 2).

    Returns:
        A :class:`PoolRecommendation`.

    Raises:
        ValueError: a figure is out of range, or the server has no room for even one
            connection per pool.
    """
    cores = cores if cores is not None else (os.cpu_count() or 1)
    for name, value, minimum in (
        ("cores", cores, 0),
        ("spindles", spindles, 0),
        ("workers", workers, 1),
        ("threads", threads, 1),
        ("pools", pools, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:  # type: ignore[redundant-expr]
            raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    load_demand: int | None = None
    if rate is not None or db_time_ms is not None:
        if rate is None or db_time_ms is None:
            raise ValueError("give rate and db_time_ms together (Little's law needs both)")
        # A pool of 0 connections would refuse every client: one at least.
        load_demand = max(1, connections_for_load(rate, db_time_ms, headroom))
    active_target = max(1, 2 * cores + spindles)
    client_demand = workers * threads
    notes = [
        f"2 x {cores} cores + {spindles} spindles = {active_target} connections keep the server busy.",
        f"{workers} workers x {threads} threads = {client_demand} connections the application can use at once.",
    ]
    pool_size, limited_by = active_target, "cores"
    if client_demand < pool_size:
        pool_size, limited_by = client_demand, "clients"
    if load_demand is not None:
        notes.append(
            f"{rate:g} requests/s x {db_time_ms:g} ms in the database x {headroom:g} headroom ="
            f" {load_demand} connections (Little's law)."
        )
        if load_demand < pool_size:
            pool_size, limited_by = load_demand, "load"
        elif load_demand > active_target:
            notes.append(
                "The load needs more connections than the server can run at once: add standbys for reads,"
                " or shorten the time in the database (docs/scaling.md)."
            )
    if limited_by == "clients":
        notes.append("Pool limited to the client demand: more server connections would stay idle.")
    elif limited_by == "load":
        notes.append("Pool limited to what the load keeps busy: more server connections would stay idle.")
    server_budget: int | None = None
    if max_connections is not None:
        if reserved_connections is None:
            reserved_connections = max(MIN_RESERVED_CONNECTIONS, math.ceil(max_connections * RESERVED_SHARE))
        server_budget = max_connections - reserved_connections
        share = server_budget // pools
        if share < 1:
            raise ValueError(
                f"max_connections={max_connections} minus {reserved_connections} reserved leaves no room for "
                f"{pools} pools; raise max_connections or use fewer pools"
            )
        notes.append(
            f"max_connections {max_connections} - {reserved_connections} reserved = {server_budget},"
            f" {share} per pool across {pools} pools."
        )
        if pool_size > share:
            pool_size, limited_by = share, "max_connections"
            notes.append("Pool limited by the server's max_connections.")
    reserve = pool_size // 4
    if server_budget is not None and (pool_size + reserve) * pools > server_budget:
        reserve = 0
    if reserve:
        notes.append(f"{reserve} reserve connections absorb bursts after clients wait reserve_pool_timeout.")
    return PoolRecommendation(
        default_pool_size=pool_size,
        reserve_pool_size=reserve,
        max_db_connections=pool_size + reserve,
        max_client_conn=max(100, client_demand * CLIENT_HEADROOM),
        per_process_pool_size=threads,
        active_target=active_target,
        client_demand=client_demand,
        load_demand=load_demand,
        server_budget=server_budget,
        limited_by=limited_by,
        notes=tuple(notes),
    )
