"""The capacity model of docs/scaling.md: from a target rate to processes, pools and servers.

Every input is a figure that ``benchmarks/bench_capacity.py`` measures (its JSON's ``inputs``
section has the same names as :class:`CapacityInputs`); the formulas are the ones the docs state:

- app processes: ``rate x app_cpu_ms / utilisation`` cores (a Python process uses at most one),
  and enough workers for the requests in flight (Little's law on ``request_ms``);
- PgBouncer instances: ``rate x queries_per_request x pgbouncer_us_per_query`` of one core
  (PgBouncer is single-threaded), at ``utilisation``;
- pools: :func:`~django_scaleops.pgbouncer.sizing.calculate_pool_size` with the rate and the
  database time each pool serves (Little's law, with headroom);
- standbys: the read share of ``db_cpu_ms`` over one server's cores, at ``utilisation``;
- Redis nodes: ``rate x redis_us_per_request`` of one core (Redis runs commands on one thread).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from django_scaleops.pgbouncer.sizing import DEFAULT_HEADROOM, PoolRecommendation, calculate_pool_size

# Busy share of a core (or a pool) to plan for: queues stay short below it, and one instance of
# each can fail without the rest going past 100%.
DEFAULT_UTILISATION = 0.7
# Redis Cluster needs three masters; below one core's load a single Redis (with a replica) does.
MIN_CLUSTER_MASTERS = 3


def _check(name: str, value: float, *, minimum: float = 0.0, above: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):  # type: ignore[redundant-expr]
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if value < minimum or (above and value == minimum):
        raise ValueError(f"{name} must be {'>' if above else '>='} {minimum:g}, not {value!r}")


def _check_utilisation(utilisation: float) -> None:
    _check("utilisation", utilisation, above=True)
    if utilisation > 1:
        raise ValueError(f"utilisation is a share of a core: at most 1, not {utilisation!r}")


def _units(load: float, utilisation: float) -> int:
    """Whole units (cores, processes, servers) for ``load`` units kept at ``utilisation`` busy."""
    # round() first: floating point must not turn an exact 3.0 into 4 units.
    return math.ceil(round(load / utilisation, 9))


def cores_for(rate: float, cpu_ms: float, utilisation: float = DEFAULT_UTILISATION) -> float:
    """Cores that ``rate`` requests a second of ``cpu_ms`` each keep ``utilisation`` busy."""
    _check("rate", rate)
    _check("cpu_ms", cpu_ms)
    _check_utilisation(utilisation)
    return rate * cpu_ms / 1000 / utilisation


def app_processes(
    rate: float, app_cpu_ms: float, request_ms: float, *, threads: int = 1, utilisation: float = DEFAULT_UTILISATION
) -> int:
    """Application processes (gunicorn workers, all hosts together) for ``rate`` requests a second.

    Args:
        rate: requests a second.
        app_cpu_ms: CPU time of one request in the app process (``bench_capacity``: process time).
        request_ms: wall time of one request in the app process, database and Redis included.
        threads: threads (concurrent requests) per process.
        utilisation: busy share of each process to plan for.

    Returns:
        The larger of ``rate x app_cpu_ms / utilisation`` (one core per process at most: the GIL)
        and ``rate x request_ms / (threads x utilisation)`` (requests in flight, Little's law); at least 1.
    """
    cores_for(rate, app_cpu_ms, utilisation)  # checks the figures
    _check("request_ms", request_ms)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:  # type: ignore[redundant-expr]
        raise ValueError(f"threads must be an integer >= 1, not {threads!r}")
    by_cpu = _units(rate * app_cpu_ms / 1000, utilisation)
    by_concurrency = _units(rate * request_ms / 1000 / threads, utilisation)
    return max(1, by_cpu, by_concurrency)


def pgbouncer_instances(
    rate: float, queries_per_request: float, pgbouncer_us_per_query: float, *, utilisation: float = DEFAULT_UTILISATION
) -> int:
    """PgBouncer processes for ``rate`` requests a second; each uses one core at most.

    Several processes can share a port (``so_reuseport = 1``) or run one per app host.
    """
    _check("queries_per_request", queries_per_request)
    _check("pgbouncer_us_per_query", pgbouncer_us_per_query)
    _check_utilisation(utilisation)
    return max(1, _units(cores_for(rate, queries_per_request * pgbouncer_us_per_query / 1000, 1.0), utilisation))


def standbys(
    rate: float,
    db_cpu_ms: float,
    read_share: float,
    server_cores: int,
    *,
    utilisation: float = DEFAULT_UTILISATION,
    minimum: int = 1,
) -> int:
    """Streaming standbys that serve the read share of the database's CPU.

    Args:
        rate: requests a second.
        db_cpu_ms: PostgreSQL backend CPU per request, all servers together.
        read_share: share of the database work that the router sends to standbys (0..1).
        server_cores: cores of one standby.
        utilisation: busy share of a standby's cores to plan for.
        minimum: standbys to keep however small the load (1: a failover target).
    """
    _check("read_share", read_share)
    _check_utilisation(utilisation)
    if read_share > 1:
        raise ValueError(f"read_share is a share: at most 1, not {read_share!r}")
    if isinstance(server_cores, bool) or not isinstance(server_cores, int) or server_cores < 1:  # type: ignore[redundant-expr]
        raise ValueError(f"server_cores must be an integer >= 1, not {server_cores!r}")
    load = cores_for(rate, db_cpu_ms * read_share, 1.0)
    return max(minimum, _units(load / server_cores, utilisation))


def redis_nodes(rate: float, redis_us_per_request: float, *, utilisation: float = DEFAULT_UTILISATION) -> int:
    """Redis masters: one core each runs the commands; more than one means a Redis Cluster of at least 3."""
    _check("redis_us_per_request", redis_us_per_request)
    _check_utilisation(utilisation)
    needed = max(1, _units(cores_for(rate, redis_us_per_request / 1000, 1.0), utilisation))
    return needed if needed == 1 else max(MIN_CLUSTER_MASTERS, needed)


@dataclass(frozen=True)
class CapacityInputs:
    """Per-request and per-connection costs, as ``benchmarks/bench_capacity.py`` measures them.

    Attributes:
        app_cpu_ms: CPU time of one request in the app process.
        request_ms: wall time of one request in the app process.
        db_time_ms: time in the database per request (the query monitor's figures).
        queries_per_request: statements per request (each a transaction through PgBouncer).
        read_share: share of ``db_time_ms`` spent on standbys.
        db_cpu_ms: PostgreSQL backend CPU per request, primary and standbys together.
        redis_commands_per_request: Redis commands per request (INFO commandstats).
        redis_us_per_request: redis-server CPU per request, in microseconds.
        pgbouncer_us_per_query: PgBouncer CPU per one-statement transaction, in microseconds.
        backend_mb: private memory of one PostgreSQL backend after the API's queries.
    """

    app_cpu_ms: float
    request_ms: float
    db_time_ms: float
    queries_per_request: float
    read_share: float
    db_cpu_ms: float
    redis_commands_per_request: float
    redis_us_per_request: float
    pgbouncer_us_per_query: float
    backend_mb: float

    def __post_init__(self) -> None:
        for field in fields(self):
            _check(field.name, getattr(self, field.name))
        if self.read_share > 1:
            raise ValueError(f"read_share is a share: at most 1, not {self.read_share!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CapacityInputs:
        """From the ``inputs`` of a ``capacity.json`` (extra keys are ignored)."""
        missing = [field.name for field in fields(cls) if field.name not in data]
        if missing:
            raise ValueError(f"capacity inputs lack {', '.join(missing)}")
        return cls(**{field.name: float(data[field.name]) for field in fields(cls)})

    @classmethod
    def from_json(cls, path: str | Path) -> CapacityInputs:
        """From a file ``bench_capacity.py`` wrote (``benchmarks/results/capacity.json``)."""
        return cls.from_mapping(json.loads(Path(path).read_text())["inputs"])


@dataclass(frozen=True)
class CapacityPlan:
    """What :func:`plan` recommends for one target rate; every figure follows docs/scaling.md."""

    rate: float
    app_cores: float
    app_processes: int
    threads: int
    pgbouncer_instances: int
    standbys: int
    primary_pool: PoolRecommendation
    standby_pool: PoolRecommendation | None
    primary_connections: int
    standby_connections: int
    primary_cpu_share: float
    backend_memory_mb: float
    redis_masters: int
    redis_commands_per_second: float

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["primary_pool"] = self.primary_pool.as_dict()
        data["standby_pool"] = self.standby_pool.as_dict() if self.standby_pool else None
        return data


def plan(
    rate: float,
    inputs: CapacityInputs,
    *,
    threads: int = 1,
    server_cores: int = 8,
    spindles: int = 1,
    max_connections: int = 100,
    utilisation: float = DEFAULT_UTILISATION,
    headroom: float = DEFAULT_HEADROOM,
    min_standbys: int = 1,
) -> CapacityPlan:
    """Size everything for ``rate`` requests a second from measured ``inputs``.

    Args:
        rate: target requests a second.
        inputs: the measured costs (:meth:`CapacityInputs.from_json`).
        threads: threads per app process.
        server_cores: cores of each PostgreSQL server (primary and standbys alike).
        spindles: effective spindles of each server (1 for SSD).
        max_connections: each server's ``max_connections``.
        utilisation: busy share of cores and PgBouncer processes to plan for.
        headroom: multiple of the average busy connections each pool gets (Little's law).
        min_standbys: standbys however small the load.

    Returns:
        A :class:`CapacityPlan`. Pools come from
        :func:`~django_scaleops.pgbouncer.sizing.calculate_pool_size`, one per PgBouncer instance
        and server, each for its share of the rate.
    """
    processes = app_processes(rate, inputs.app_cpu_ms, inputs.request_ms, threads=threads, utilisation=utilisation)
    bouncers = pgbouncer_instances(
        rate, inputs.queries_per_request, inputs.pgbouncer_us_per_query, utilisation=utilisation
    )
    replicas = standbys(
        rate, inputs.db_cpu_ms, inputs.read_share, server_cores, utilisation=utilisation, minimum=min_standbys
    )
    workers_per_bouncer = math.ceil(processes / bouncers)
    # Without standbys the primary serves the reads too.
    read_share = inputs.read_share if replicas else 0.0
    # Both pools are sized alike; only the load each one carries differs.
    pool_for = functools.partial(
        calculate_pool_size,
        cores=server_cores,
        spindles=spindles,
        workers=workers_per_bouncer,
        threads=threads,
        max_connections=max_connections,
        pools=bouncers,
        headroom=headroom,
    )
    primary_pool = pool_for(rate=rate / bouncers, db_time_ms=inputs.db_time_ms * (1 - read_share))
    standby_pool = (
        pool_for(rate=rate / bouncers / replicas, db_time_ms=inputs.db_time_ms * read_share) if replicas else None
    )
    primary_connections = bouncers * primary_pool.max_db_connections
    standby_connections = bouncers * standby_pool.max_db_connections if standby_pool else 0
    return CapacityPlan(
        rate=rate,
        app_cores=round(cores_for(rate, inputs.app_cpu_ms, utilisation), 2),
        app_processes=processes,
        threads=threads,
        pgbouncer_instances=bouncers,
        standbys=replicas,
        primary_pool=primary_pool,
        standby_pool=standby_pool,
        primary_connections=primary_connections,
        standby_connections=standby_connections,
        primary_cpu_share=round(cores_for(rate, inputs.db_cpu_ms * (1 - read_share), 1.0) / server_cores, 3),
        backend_memory_mb=round(max(primary_connections, standby_connections) * inputs.backend_mb, 1),
        redis_masters=redis_nodes(rate, inputs.redis_us_per_request, utilisation=utilisation),
        redis_commands_per_second=round(rate * inputs.redis_commands_per_request, 1),
    )
