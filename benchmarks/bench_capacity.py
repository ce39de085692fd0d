"""The inputs of the capacity model (docs/scaling.md), measured on the launcher's real servers.

Per request of the example API, with every capability on (an API key rate-limited in Redis, the
router sending reads to the standby, the cache, the query monitor, compression and ETags):

- ``app_cpu_ms`` / ``request_ms``: process time / wall time of a request served in-process
  through Django's handler (as ``api_worker.py`` does: no HTTP server in front), with persistent
  database connections (``CONN_MAX_AGE``) as production runs;
- ``db_time_ms``, ``queries_per_request``, ``read_share``: the query monitor's figures (time per
  alias; the standby's share of it);
- ``db_cpu_ms``: CPU of the PostgreSQL backends that served the requests (``/proc/<pid>/schedstat``);
- ``redis_commands_per_request``: ``INFO commandstats`` before and after;
- ``redis_us_per_request``: redis-server's CPU over the requests (``/proc``).

Per connection and per server process:

- ``backend_mb``: private memory of a PostgreSQL backend after the API's queries (``/proc/<pid>/smaps_rollup``);
- ``pgbouncer_us_per_query``: PgBouncer's CPU per one-statement transaction while pgbench (or
  a psycopg loop, without pgbench) runs ``SELECT 1`` through it; its one-core ceiling is the inverse;
- Redis ops/s per core: ``redis-benchmark`` GET/SET against redis-server's CPU.

Three endpoints are measured apart (a page of messages, a cached conversation, a new message) and
combined with the weights of ``MIX``; the plan for 1,000 and 10,000 requests a second follows.
The figures go to ``benchmarks/results/capacity.json`` (``--output`` to write elsewhere).

Run with ``make bench``, or alone:
``python -m django_scaleops.testing.services run -- python benchmarks/bench_capacity.py``. About 40 s.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ["EXAMPLE_SCALEOPS"] = "1"
# Production settings: DEBUG keeps every query in connection.queries and logs readable lines.
os.environ.setdefault("DJANGO_DEBUG", "0")

from benchmarks.bench_example_api import prepare
from benchmarks.harness import SMOKE, own_database, rounds_for, sized

ROOT = Path(__file__).resolve().parent.parent
# A smoke run (make bench-smoke) writes aside: its figures are not the capacity model's inputs.
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / ("smoke" if SMOKE else "") / "capacity.json"
ROUNDS = rounds_for(3)
REQUESTS_PER_ROUND = sized(150, 5)
# A chat API's day: mostly pages of messages, some conversation summaries (cached), some posts.
MIX = {"messages_page": 0.7, "conversation": 0.2, "post_message": 0.1}
PGBENCH_SECONDS = 1 if SMOKE else 4
PGBENCH_CLIENTS = 16
REDIS_BENCHMARK_REQUESTS = sized(100_000, 1_000)
TARGETS = (1_000, 10_000)
# The servers the worked example of docs/scaling.md assumes.
PLAN_OPTIONS: dict[str, Any] = {"threads": 4, "server_cores": 16, "max_connections": 200}


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, from ``schedstat`` (ns) or else ``stat`` (clock ticks)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and its parts (status), and the private and proportional sizes (smaps_rollup, if readable)."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            figures[key] = int(value.split()[0])
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return figures
    for line in rollup.splitlines():
        key, _, value = line.partition(":")
        if key in ("Pss", "Private_Clean", "Private_Dirty"):
            figures[key] = int(value.split()[0])
    if "Private_Dirty" in figures:
        figures["Private"] = figures.pop("Private_Clean", 0) + figures.pop("Private_Dirty")
    return figures


def private_kb(figures: dict[str, int]) -> int:
    return figures.get("Private", figures.get("RssAnon", figures.get("VmRSS", 0)))


def pidfile(name: str) -> int | None:
    folder = os.environ.get("SCALEOPS_SERVICES_DIR")
    if not folder:
        return None
    try:
        return int(Path(folder, f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- per request


class Endpoint:
    """One kind of request, sent through Django's test client with an API key."""

    def __init__(self, name: str, send: Callable[[], Any]) -> None:
        self.name = name
        self.send = send


def endpoints(secret: str) -> list[Endpoint]:
    from django.test import Client

    from example_project.chat.models import Conversation

    conversation = Conversation.objects.using("default").order_by("id").first()
    assert conversation is not None
    sender = conversation.participants.values_list("id", flat=True).first()
    headers = {"X-API-Key": secret}
    # Two clients: a post pins its client to the primary until the standby has replayed it
    # (read-your-writes), which would move the readers' queries off the standby.
    reader, writer = Client(headers=headers), Client(headers=headers)
    page = f"/api/conversations/{conversation.pk}/messages/?limit=50"
    detail = f"/api/conversations/{conversation.pk}/"
    body = json.dumps({"sender": sender, "body": "capacity benchmark"})

    def ok(response: Any, status: int = 200) -> None:
        if response.status_code != status:
            raise SystemExit(f"unexpected status {response.status_code}: {response.content[:200]!r}")

    return [
        Endpoint("messages_page", lambda: ok(reader.get(page, HTTP_ACCEPT_ENCODING="gzip"))),
        Endpoint("conversation", lambda: ok(reader.get(detail, HTTP_ACCEPT_ENCODING="gzip"))),
        Endpoint("post_message", lambda: ok(writer.post(page, body, content_type="application/json"), 201)),
    ]


def api_key() -> str:
    """An API key on a tier that admits everything the benchmark sends."""
    from django_scaleops.models import ApiKey, Tier

    tier, _ = Tier.objects.update_or_create(
        name="Capacity benchmark", defaults={"requests_per_period": 10_000_000, "period_seconds": 60, "burst": 0}
    )
    _, secret = ApiKey.create_key(name="capacity benchmark", tier=tier)
    return secret


def backend_pids() -> dict[str, int]:
    from django.db import connections

    from django_scaleops.monitoring.monitor import unmonitored

    pids = {}
    with unmonitored():
        for alias in ("default", "replica"):
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids[alias] = int(cursor.fetchone()[0])
    return pids


def redis_calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items() if name != "cmdstat_info"}


def measure_round(endpoint: Endpoint, redis: Any, redis_pid: int | None, count: int) -> dict[str, Any]:
    from django_scaleops.monitoring.monitor import monitor

    pids = backend_pids()
    before_db = monitor.snapshot()
    before_calls = redis_calls(redis)
    before_redis_cpu = cpu_seconds(redis_pid) if redis_pid else 0.0
    before_backends = {alias: cpu_seconds(pid) for alias, pid in pids.items()}
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        endpoint.send()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    backend_cpu = {alias: cpu_seconds(pid) - before_backends[alias] for alias, pid in pids.items()}
    redis_cpu = cpu_seconds(redis_pid) - before_redis_cpu if redis_pid else None
    after_calls = redis_calls(redis)
    if backend_pids() != pids:
        raise SystemExit("a database connection was replaced during the round: its backend CPU is unknown")
    delta = monitor.snapshot().minus(before_db)
    db_us = {alias: hist.total for alias, hist in delta.aliases.items()}
    queries = sum(hist.count for hist in delta.aliases.values())
    commands = {name: calls - before_calls.get(name, 0) for name, calls in after_calls.items()}
    return {
        "app_cpu_ms": cpu * 1000 / count,
        "request_ms": wall * 1000 / count,
        "db_time_ms": sum(db_us.values()) / 1000 / count,
        "queries_per_request": queries / count,
        "read_share": db_us.get("replica", 0.0) / sum(db_us.values()) if sum(db_us.values()) else 0.0,
        "db_cpu_ms": sum(backend_cpu.values()) * 1000 / count,
        "redis_commands_per_request": sum(commands.values()) / count,
        "redis_us_per_request": redis_cpu * 1e6 / count if redis_cpu is not None else None,
        "redis_commands": {
            name.removeprefix("cmdstat_"): round(calls / count, 3) for name, calls in sorted(commands.items()) if calls
        },
    }


def quiet_logs() -> None:
    """Send the request log lines to /dev/null: still formatted and written (a cost of every
    request), but not between the figures."""
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
                handler.setStream(sink)


def persistent_connections() -> None:
    """Keep each alias' connection across requests, as production does (``CONN_MAX_AGE``): the
    example project's default (0) would pay a new backend per request, and leave no backend whose
    CPU could be read."""
    from django.db import connections

    for alias in ("default", "replica"):
        connections[alias].close()
        connections[alias].settings_dict["CONN_MAX_AGE"] = 600


def per_request() -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    import redis as redis_py

    persistent_connections()

    redis = redis_py.Redis.from_url(os.environ["REDIS_URL"])
    redis_pid = int(redis.info("server")["process_id"])
    if not Path(f"/proc/{redis_pid}").exists():
        redis_pid = 0  # Redis on another machine: its CPU is not ours to read
    secret = api_key()
    results: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints(secret):
        for _ in range(30):  # warm-up: imports, connections, the key's lookup, the cache
            endpoint.send()
        rounds = [measure_round(endpoint, redis, redis_pid or None, REQUESTS_PER_ROUND) for _ in range(ROUNDS)]
        figures: dict[str, Any] = {}
        for key, value in rounds[0].items():
            if isinstance(value, float):
                figures[key] = round(statistics.median(r[key] for r in rounds), 4)
            else:
                figures[key] = value if value is None else rounds[-1][key]
        results[endpoint.name] = figures
    mix: dict[str, float] = {}
    for key in ("app_cpu_ms", "request_ms", "db_time_ms", "queries_per_request", "db_cpu_ms"):
        mix[key] = sum(weight * results[name][key] for name, weight in MIX.items())
    mix["redis_commands_per_request"] = sum(w * results[n]["redis_commands_per_request"] for n, w in MIX.items())
    if all(results[name]["redis_us_per_request"] is not None for name in MIX):
        mix["redis_us_per_request"] = sum(w * results[n]["redis_us_per_request"] for n, w in MIX.items())
    # Read share of the mix: the standby's time over all database time, each endpoint weighted.
    read_ms = sum(w * results[n]["db_time_ms"] * results[n]["read_share"] for n, w in MIX.items())
    mix["read_share"] = read_ms / mix["db_time_ms"] if mix["db_time_ms"] else 0.0
    return results, {key: round(value, 4) for key, value in mix.items()}


# --------------------------------------------------------------------------- per connection


def backend_memory() -> dict[str, Any]:
    """A fresh backend, and the Django connection's standby backend after the API's queries."""
    import psycopg
    from django.db import connections

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        fresh = memory_kb(int(row[0]))
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        used = memory_kb(int(cursor.fetchone()[0]))
    return {"fresh_kb": fresh, "after_api_kb": used, "private_mb": round(private_kb(used) / 1024, 2)}


def pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    return candidates[0] if candidates else None


def pgbouncer_cpu() -> dict[str, Any]:
    """PgBouncer's CPU per one-statement transaction while clients keep it busy."""
    url = urlsplit(os.environ["PGBOUNCER_URL"])
    pid = pidfile("pgbouncer")
    if pid is None or not Path(f"/proc/{pid}").exists():
        return {"skipped": "PgBouncer's pid is unknown (not started by the launcher)"}
    binary = pgbench_binary()
    before = cpu_seconds(pid)
    if binary:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write("SELECT 1;\n")
        try:
            output = subprocess.run(
                [
                    binary, "-n", "-M", "simple", "-f", script.name, "-c", str(PGBENCH_CLIENTS), "-j", "2",
                    "-T", str(PGBENCH_SECONDS), "-h", url.hostname or "127.0.0.1", "-p", str(url.port),
                    "-U", url.username or "postgres", url.path.lstrip("/"),
                ],
                capture_output=True, text=True, check=True, timeout=PGBENCH_SECONDS + 30,
            ).stdout  # fmt: skip
        finally:
            os.unlink(script.name)
        match = re.search(r"number of transactions actually processed: (\d+)", output)
        transactions = int(match.group(1)) if match else 0
        tool = "pgbench -M simple, SELECT 1"
    else:
        transactions = psycopg_loop(os.environ["PGBOUNCER_URL"])
        tool = "psycopg loop, SELECT 1"
    cpu = cpu_seconds(pid) - before
    us_per_query = cpu * 1e6 / transactions if transactions else 0.0
    return {
        "tool": tool,
        "clients": PGBENCH_CLIENTS,
        "transactions_per_second": round(transactions / PGBENCH_SECONDS),
        "pgbouncer_cpu_share": round(cpu / PGBENCH_SECONDS, 3),
        "us_per_query": round(us_per_query, 2),
        "ceiling_per_core": round(1e6 / us_per_query) if us_per_query else None,
    }


def psycopg_loop(url: str) -> int:
    import psycopg

    counts = [0] * PGBENCH_CLIENTS
    stop = time.monotonic() + PGBENCH_SECONDS

    def client(index: int) -> None:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            while time.monotonic() < stop:
                conn.execute("SELECT 1").fetchone()
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(PGBENCH_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def redis_per_core() -> dict[str, Any]:
    """GET/SET ops per CPU-second of redis-server (redis-benchmark, one command per round trip)."""
    import redis as redis_py

    url = urlsplit(os.environ["REDIS_URL"])
    pid = int(redis_py.Redis.from_url(os.environ["REDIS_URL"]).info("server")["process_id"])
    binary = shutil.which("redis-benchmark")
    if binary is None or not Path(f"/proc/{pid}").exists():
        return {"skipped": "redis-benchmark is not installed, or Redis runs elsewhere"}
    before = cpu_seconds(pid)
    started = time.perf_counter()
    subprocess.run(
        [binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port), "-t", "get,set", "-c", "20",
         "-n", str(REDIS_BENCHMARK_REQUESTS), "-q"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - before
    operations = 2 * REDIS_BENCHMARK_REQUESTS
    return {
        "tool": "redis-benchmark -t get,set -c 20",
        "ops_per_second": round(operations / elapsed),
        "ops_per_cpu_second": round(operations / cpu) if cpu else None,
    }


# --------------------------------------------------------------------------- report


def versions() -> dict[str, Any]:
    import django
    import psycopg
    import redis as redis_py
    from django.db import connections

    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = str(cursor.fetchone()[0]).split()[0]
    pgbouncer = subprocess.run(
        [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", "--version"], capture_output=True, text=True
    ).stdout.split("\n")[0]
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "psycopg": psycopg.__version__,
        "postgresql": postgres,
        "pgbouncer": pgbouncer.removeprefix("PgBouncer ").strip() or None,
        "redis": redis_py.Redis.from_url(os.environ["REDIS_URL"]).info("server")["redis_version"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Where to write the JSON.")
    args = parser.parse_args()
    started = time.perf_counter()
    prepare()
    quiet_logs()
    from django_scaleops.pgbouncer.capacity import CapacityInputs, plan

    endpoints_figures, mix = per_request()
    memory = backend_memory()
    bouncer = pgbouncer_cpu()
    redis_core = redis_per_core()
    inputs = CapacityInputs(
        app_cpu_ms=mix["app_cpu_ms"],
        request_ms=mix["request_ms"],
        db_time_ms=mix["db_time_ms"],
        queries_per_request=mix["queries_per_request"],
        read_share=mix["read_share"],
        db_cpu_ms=mix["db_cpu_ms"],
        redis_commands_per_request=mix["redis_commands_per_request"],
        redis_us_per_request=mix.get("redis_us_per_request", 0.0),
        pgbouncer_us_per_query=float(bouncer.get("us_per_query", 0.0)),
        backend_mb=memory["private_mb"],
    )
    plans = {str(rate): plan(rate, inputs, **PLAN_OPTIONS).as_dict() for rate in TARGETS}
    measured = {key: round(value, 4) for key, value in asdict(inputs).items()}
    report = {
        "generated_by": "benchmarks/bench_capacity.py",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": versions(),
        "mix": MIX,
        "inputs": measured,
        "endpoints": endpoints_figures,
        "postgres_backend": memory,
        "pgbouncer": bouncer,
        "redis": redis_core,
        "plan_options": PLAN_OPTIONS,
        "plans": plans,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    print("\nCapacity model inputs (docs/scaling.md), example API with every capability on")
    print(f"  request mix: {', '.join(f'{name} {weight:.0%}' for name, weight in MIX.items())}")
    for name, figures in endpoints_figures.items():
        print(
            f"  {name:<14} app CPU {figures['app_cpu_ms']:.2f} ms, wall {figures['request_ms']:.2f} ms,"
            f" db {figures['db_time_ms']:.2f} ms in {figures['queries_per_request']:.1f} queries"
            f" ({figures['read_share']:.0%} on the standby), backend CPU {figures['db_cpu_ms']:.3f} ms,"
            f" Redis {figures['redis_commands_per_request']:.1f} commands"
            + (f" / {figures['redis_us_per_request']:.0f} us" if figures["redis_us_per_request"] is not None else "")
        )
    for key, value in measured.items():
        print(f"  {key:<28} {value}")
    print(f"  PostgreSQL backend: {memory}")
    print(f"  PgBouncer: {bouncer}")
    print(f"  Redis per core: {redis_core}")
    for rate, figures in plans.items():
        print(
            f"  plan for {int(rate):,} req/s: {figures['app_processes']} app processes x"
            f" {figures['threads']} threads ({figures['app_cores']} cores), {figures['pgbouncer_instances']}"
            f" PgBouncer, pool {figures['primary_pool']['default_pool_size']} to the primary"
            f" ({figures['primary_pool']['limited_by']}), {figures['standbys']} standbys"
            + (f" with pool {figures['standby_pool']['default_pool_size']} each" if figures["standby_pool"] else "")
            + f", {figures['redis_masters']} Redis masters"
        )
    print(f"  wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    own_database("capacity")
    main()
