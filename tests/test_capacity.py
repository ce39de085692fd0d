"""The capacity model (docs/scaling.md) against calculate_pool_size, the pgbouncer_config command and
the capacity functions: expected values are computed here from the formulas the docs state, in exact
arithmetic, never copied from the implementation."""

from __future__ import annotations

import copy
import json
import math
import re
from fractions import Fraction
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from hypothesis import example, given, settings
from hypothesis import strategies as st

from django_scaleops.pgbouncer import calculate_pool_size
from django_scaleops.pgbouncer.capacity import (
    CapacityInputs,
    app_processes,
    pgbouncer_instances,
    plan,
    redis_nodes,
    standbys,
)
from django_scaleops.pgbouncer.sizing import connections_for_load
from tests.test_pgbouncer import temporary_alias

REFERENCE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "capacity.json"
HEADROOMS = ["1", "1.25", "1.5", "2", "3"]


def little(rate: Fraction, db_ms: Fraction, headroom: Fraction) -> int:
    """docs/scaling.md: connections = rate x time in the database x headroom, rounded up."""
    return math.ceil(rate * db_ms / 1000 * headroom)


def budget_share(max_connections: int, pools: int) -> int:
    """docs/pgbouncer.md: max_connections minus 10 % (at least 5) reserved, shared by the pools."""
    reserved = max(5, math.ceil(Fraction(max_connections, 10)))
    return (max_connections - reserved) // pools


def expected_pool(
    *, cores: int, spindles: int, workers: int, threads: int, max_connections: int, pools: int, load: int
) -> dict[str, int]:
    """Every candidate of the pool size; the pool is the smallest."""
    return {
        "cores": max(1, 2 * cores + spindles),
        "clients": workers * threads,
        "load": max(1, load),
        "max_connections": budget_share(max_connections, pools),
    }


@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(0, 200_000),
    db_us=st.integers(0, 500_000),
    headroom=st.sampled_from(HEADROOMS),
    cores=st.integers(0, 64),
    spindles=st.integers(0, 4),
    workers=st.integers(1, 500),
    threads=st.integers(1, 16),
    max_connections=st.integers(20, 2000),
    pools=st.integers(1, 8),
)
@example(rate=0, db_us=0, headroom="2", cores=8, spindles=1, workers=10, threads=4, max_connections=100, pools=1)
@example(rate=1, db_us=1, headroom="1", cores=8, spindles=1, workers=10, threads=4, max_connections=100, pools=1)
@example(rate=1000, db_us=4000, headroom="1", cores=8, spindles=1, workers=10, threads=4, max_connections=100, pools=1)
def test_pool_size_is_littles_law_capped_by_cores_clients_and_budget(
    rate, db_us, headroom, cores, spindles, workers, threads, max_connections, pools
):
    db_ms = Fraction(db_us, 1000)
    load = little(Fraction(rate), db_ms, Fraction(headroom))
    candidates = expected_pool(
        cores=cores,
        spindles=spindles,
        workers=workers,
        threads=threads,
        max_connections=max_connections,
        pools=pools,
        load=load,
    )
    if candidates["max_connections"] < 1:
        with pytest.raises(ValueError, match="leaves no room"):
            calculate_pool_size(cores=cores, max_connections=max_connections, pools=pools)
        return
    rec = calculate_pool_size(
        cores=cores,
        spindles=spindles,
        workers=workers,
        threads=threads,
        max_connections=max_connections,
        pools=pools,
        rate=rate,
        db_time_ms=float(db_ms),
        headroom=float(headroom),
    )
    pool = min(candidates.values())
    assert rec.default_pool_size == pool
    assert candidates[rec.limited_by] == pool, (rec.limited_by, candidates)
    assert rec.load_demand == max(1, load)
    assert connections_for_load(rate, float(db_ms), float(headroom)) == load
    # The reserve: a quarter of the pool, unless pool + reserve of every pool overflow the budget.
    reserve = pool // 4
    budget = max_connections - max(5, math.ceil(Fraction(max_connections, 10)))
    if (pool + reserve) * pools > budget:
        reserve = 0
    assert (rec.reserve_pool_size, rec.max_db_connections) == (reserve, pool + reserve)
    assert rec.max_client_conn == max(100, 2 * workers * threads)


def test_without_a_rate_the_pool_is_sized_as_before():
    rec = calculate_pool_size(cores=4, spindles=1, workers=8, threads=4)
    assert rec.load_demand is None and rec.limited_by == "cores" and rec.default_pool_size == 9


@pytest.mark.parametrize(
    ("rate", "db_time_ms", "pool", "limited_by"),
    [
        (0, 5.0, 1, "load"),  # no traffic still needs one connection to answer the first request
        (0.001, 0.001, 1, "load"),  # tiny: rounds up to one, never to zero
        (1e9, 5.0, 2 * 8 + 1, "cores"),  # beyond what one server can run: the server's sweet spot
    ],
)
def test_edge_rates(rate, db_time_ms, pool, limited_by):
    rec = calculate_pool_size(cores=8, spindles=1, workers=1000, threads=4, rate=rate, db_time_ms=db_time_ms)
    assert (rec.default_pool_size, rec.limited_by) == (pool, limited_by)
    if limited_by == "cores":
        assert any("add standbys" in note for note in rec.notes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 100}, "rate and db_time_ms together"),
        ({"db_time_ms": 2.0}, "rate and db_time_ms together"),
        ({"rate": -1, "db_time_ms": 2.0}, "rate must be a finite number"),
        ({"rate": float("inf"), "db_time_ms": 2.0}, "rate must be a finite number"),
        ({"rate": 100, "db_time_ms": float("nan")}, "db_time_ms must be a finite number"),
        ({"rate": 100, "db_time_ms": 2.0, "headroom": 0.5}, "headroom must be >= 1"),
        ({"rate": True, "db_time_ms": 2.0}, "rate must be a finite number"),
    ],
)
def test_rate_inputs_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        calculate_pool_size(**kwargs)


# ---- the rest of the model


def units(load: Fraction, utilisation: Fraction) -> int:
    return math.ceil(load / utilisation)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(0, 1_000_000),
    cpu_us=st.integers(1, 50_000),
    extra_wall_us=st.integers(0, 200_000),
    threads=st.integers(1, 32),
    utilisation=st.sampled_from(["0.5", "0.7", "1"]),
)
def test_app_processes_cover_cpu_and_requests_in_flight(rate, cpu_us, extra_wall_us, threads, utilisation):
    u = Fraction(utilisation)
    cpu_ms, wall_ms = Fraction(cpu_us, 1000), Fraction(cpu_us + extra_wall_us, 1000)
    by_cpu = units(rate * cpu_ms / 1000, u)
    in_flight = units(rate * wall_ms / 1000 / threads, u)
    got = app_processes(rate, float(cpu_ms), float(wall_ms), threads=threads, utilisation=float(u))
    assert got == max(1, by_cpu, in_flight)


@pytest.mark.parametrize("rate", [0, 1, 10_000, 100_000, 5_000_000])
@pytest.mark.parametrize(("queries", "us_per_query"), [(2, 10.0), (6, 25.0)])
def test_pgbouncer_instances_follow_its_one_core_ceiling(rate, queries, us_per_query):
    needed = pgbouncer_instances(rate, queries, us_per_query, utilisation=0.7)
    per_core = Fraction(10**6) / Fraction(us_per_query)  # queries a second one PgBouncer process can do
    load = Fraction(rate * queries) / per_core
    assert needed == max(1, math.ceil(load / Fraction(7, 10)))
    # Enough instances keep each at or under the target utilisation; one fewer would not.
    assert Fraction(rate * queries, needed) <= per_core * Fraction(7, 10)
    if needed > 1:
        assert Fraction(rate * queries, needed - 1) > per_core * Fraction(7, 10)


def test_standbys_and_redis_nodes():
    # 10,000 req/s x 1 ms backend CPU x 80 % reads = 8 cores; on 4-core standbys at 70 %: ceil(2.86) = 3.
    assert standbys(10_000, 1.0, 0.8, 4, utilisation=0.7) == 3
    assert standbys(0, 1.0, 0.8, 4) == 1  # a failover target however small the load
    assert standbys(1_000, 1.0, 0.0, 4, minimum=0) == 0  # no reads on standbys, none asked for
    # Redis: 100 us of its one core per request: 7,000 req/s is exactly 0.7 of a core, 7,001 is not.
    assert redis_nodes(7_000, 100.0, utilisation=0.7) == 1
    assert redis_nodes(7_001, 100.0, utilisation=0.7) == 3  # a cluster has three masters at least
    assert redis_nodes(100_000, 100.0, utilisation=0.7) == math.ceil(Fraction(100_000 * 100, 10**6) / Fraction(7, 10))
    with pytest.raises(ValueError, match="utilisation"):
        redis_nodes(1, 1.0, utilisation=1.5)
    with pytest.raises(ValueError, match="read_share"):
        standbys(1, 1.0, 1.5, 4)


INPUTS = CapacityInputs(
    app_cpu_ms=3.5,
    request_ms=4.5,
    db_time_ms=1.2,
    queries_per_request=2.0,
    read_share=0.8,
    db_cpu_ms=0.8,
    redis_commands_per_request=6.0,
    redis_us_per_request=90.0,
    pgbouncer_us_per_query=10.0,
    backend_mb=2.5,
)


@pytest.mark.parametrize("rate", [0, 50, 1_000, 10_000, 3_000_000])
def test_plan_pools_are_littles_law_for_each_instance_and_server(rate):
    options = {"threads": 4, "server_cores": 16, "spindles": 1, "max_connections": 200}
    result = plan(rate, INPUTS, **options)
    bouncers, replicas = result.pgbouncer_instances, result.standbys
    assert bouncers == pgbouncer_instances(rate, 2.0, 10.0)
    if rate == 3_000_000:
        assert bouncers > 1  # past one PgBouncer's ceiling: the load is split
    workers = math.ceil(result.app_processes / bouncers)
    db_ms, read = Fraction(INPUTS.db_time_ms), Fraction(INPUTS.read_share)
    primary_load = little(Fraction(rate) / bouncers, db_ms * (1 - read), Fraction(2))
    primary = expected_pool(
        cores=16, spindles=1, workers=workers, threads=4, max_connections=200, pools=bouncers, load=primary_load
    )
    assert result.primary_pool.default_pool_size == min(primary.values())
    standby_load = little(Fraction(rate) / bouncers / replicas, db_ms * read, Fraction(2))
    standby = expected_pool(
        cores=16, spindles=1, workers=workers, threads=4, max_connections=200, pools=bouncers, load=standby_load
    )
    assert result.standby_pool is not None
    assert result.standby_pool.default_pool_size == min(standby.values())
    assert result.primary_connections == bouncers * result.primary_pool.max_db_connections
    assert result.redis_commands_per_second == rate * 6
    json.dumps(result.as_dict())


def test_the_reference_figures_load_and_plan():
    data = json.loads(REFERENCE.read_text())
    inputs = CapacityInputs.from_json(REFERENCE)
    assert inputs.app_cpu_ms > 0 and inputs.db_time_ms > 0 and inputs.pgbouncer_us_per_query > 0
    assert data["machine"]["cores"] >= 1 and data["machine"]["postgresql"]
    assert "/" not in json.dumps(data["machine"])  # versions, not paths of the machine
    for rate in ("1000", "10000"):
        assert plan(int(rate), inputs, **data["plan_options"]).app_processes == data["plans"][rate]["app_processes"]
    with pytest.raises(ValueError, match="lack"):
        CapacityInputs.from_mapping({"app_cpu_ms": 1})


# ---- manage.py pgbouncer_config


@pytest.fixture
def app_alias():
    params = copy.deepcopy(connections["default"].settings_dict)
    params.pop("TEST", None)
    params["PASSWORD"] = "capacity-Secret-1"
    with temporary_alias("capacity_app", **params):
        yield "capacity_app"


def generated(alias: str, *args: str) -> dict[str, int]:
    out = StringIO()
    call_command("pgbouncer_config", f"--database={alias}", "--dry-run", *args, stdout=out)
    text = out.getvalue()
    assert "capacity-Secret-1" not in text
    figures = {}
    for key in ("default_pool_size", "reserve_pool_size", "max_db_connections", "max_client_conn"):
        match = re.search(rf"^{key} = (\d+)$", text, re.MULTILINE)
        assert match, f"{key} missing from the generated ini"
        figures[key] = int(match.group(1))
    return figures


@pytest.mark.django_db(databases=["default"])
@pytest.mark.parametrize(
    ("rate", "db_time_ms", "headroom"),
    [(0, 1.2, "2"), (50, 1.2, "2"), (1000, 1.2, "2"), (2500, 3.7, "1.5"), (10_000_000, 1.2, "2")],
)
def test_generated_config_follows_the_model(app_alias, rate, db_time_ms, headroom):
    figures = generated(
        app_alias,
        "--cores=8",
        "--spindles=1",
        "--workers=20",
        "--threads=4",
        f"--rate={rate}",
        f"--db-time-ms={db_time_ms}",
        f"--headroom={headroom}",
        "--max-connections=200",
    )
    load = little(Fraction(rate), Fraction(str(db_time_ms)), Fraction(headroom))
    candidates = expected_pool(cores=8, spindles=1, workers=20, threads=4, max_connections=200, pools=1, load=load)
    assert figures["default_pool_size"] == min(candidates.values())
    assert figures["max_db_connections"] == figures["default_pool_size"] + figures["reserve_pool_size"]
    assert figures["max_client_conn"] == max(100, 2 * 20 * 4)


@pytest.mark.django_db(databases=["default"])
def test_generated_config_asks_the_real_server_for_its_budget():
    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW max_connections")
        max_connections = int(cursor.fetchone()[0])
    # The command asks the alias' own server; a PASSWORD (ignored by the launcher's trust auth)
    # gives it something to make the userlist's verifier from.
    settings_dict = connections["default"].settings_dict
    password = settings_dict["PASSWORD"]
    settings_dict["PASSWORD"] = "capacity-Secret-1"
    try:
        # A load far beyond the server: the budget or the cores cap it, as the model says.
        figures = generated("default", "--cores=500", "--workers=2000", "--threads=8", "--rate=1e6", "--db-time-ms=50")
    finally:
        settings_dict["PASSWORD"] = password
    assert figures["default_pool_size"] == min(2 * 500 + 1, budget_share(max_connections, 1))


@pytest.mark.django_db(databases=["default"])
def test_generated_config_refuses_half_a_load(app_alias):
    with pytest.raises(CommandError, match="--rate and --db-time-ms together"):
        generated(app_alias, "--rate=100", "--max-connections=100")
