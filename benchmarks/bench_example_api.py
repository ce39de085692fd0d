"""The example API with every django-scaleops capability on vs bare Django, requests/s.

Both configurations serve the same database; the settings differ only by ``EXAMPLE_SCALEOPS``.

1. In-process: each configuration runs in its own worker process (Django's test client through the
   WSGI handler) and a round sends its requests to the two in turn, one at a time. Also the same
   requests per second of the worker's own CPU time, which a busy machine disturbs far less than
   the wall clock.
2. Under gunicorn: two servers of 4 sync workers each on loopback, ``DJANGO_DEBUG=0``, driven in
   turn by the same load generator (processes of keep-alive ``http.client`` threads).

``--breakdown`` also measures each capability's cost: workers with all but one capability on,
CPU time per request against the worker with all of them.

Requests carry no ``Accept-Encoding`` (as the test client's), so both answer the same bytes.
Run with ``make bench``.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import multiprocessing
import multiprocessing.pool
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    ROOT,
    SMOKE,
    Worker,
    compare,
    interleaved,
    own_database,
    record,
    rounds_for,
    sized,
    wait_for_replay,
)
from django_scaleops.testing.processes import free_ports

REQUESTS_PER_ROUND = sized(300, 5)
WARM_UP_REQUESTS = sized(50, 2)
TARGET = 0.95

# Seeded once per database; smoke seeds a handful (a page of 50 still has 50 messages).
SEED_MESSAGES = sized(5_000, 120)
SEED_CONVERSATIONS = sized(20, 2)

# One worker under smoke: the same code paths, without starting Django eight times on a busy runner.
GUNICORN_WORKERS = sized(4, 1)
GUNICORN_REQUESTS_PER_ROUND = sized(1_200, 8)
# The load generator: processes (the GIL would cap one) of threads, each with its own connection.
LOAD_PROCESSES = 2
LOAD_THREADS = 4
SERVER_START_TIMEOUT = 120.0


def prepare() -> str:
    """Migrate and seed the benchmark's database; return the path the rounds request."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django
    from django.core.management import call_command

    django.setup()
    from example_project.chat.models import Conversation, Message

    call_command("migrate", interactive=False, verbosity=0)
    # Other benchmarks may have filled the chat tables without conversations: seed unless both exist.
    # Read the primary: the standby may not have replayed the migrations yet (it lags after the
    # benchmarks before this one); the workers read through the router once it has.
    if Message.objects.using("default").count() < SEED_MESSAGES or not Conversation.objects.using("default").exists():
        with open(os.devnull, "w") as quiet:
            call_command("seed_demo_data", messages=SEED_MESSAGES, conversations=SEED_CONVERSATIONS, stdout=quiet)
    wait_for_replay()
    conversation = Conversation.objects.using("default").order_by("id").values_list("id", flat=True).first()
    return f"/api/conversations/{conversation}/messages/?limit=50"


class ApiWorker(Worker):
    """``api_worker.py``: a round answers requests/s of wall-clock time or, with ``cpu``, of its CPU time."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("api_worker.py", {"DJANGO_DEBUG": "0", **env})

    def cpu_round(self, count: int) -> float:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{count} cpu\n")
        self.proc.stdin.flush()
        while line := self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                return float(line)
        raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")


def in_process() -> None:
    ours = ApiWorker({"EXAMPLE_SCALEOPS": "1"})
    bare = ApiWorker({"EXAMPLE_SCALEOPS": "0"})
    try:
        for worker in (ours, bare):
            worker.round(WARM_UP_REQUESTS)  # imports, connections, URL resolver
        # Request by request in turn (harness.interleaved); the harmonic mean of per-request rates
        # is the round's requests per second.
        compare(
            f"Example API, GET messages of a conversation ({REQUESTS_PER_ROUND} requests a round, in-process"
            " WSGI, each side in turn)",
            *interleaved(
                functools.partial(ours.round, 1),
                functools.partial(bare.round, 1),
                REQUESTS_PER_ROUND,
                statistics.harmonic_mean,
            ),
            unit="req/s",
            ours_name="with django-scaleops",
            peer_name="bare Django",
            target=TARGET,
            key="example_api.in_process",
        )
        compare(
            "Example API, the same requests per second of the worker's CPU time (app process only:"
            " the database and Redis servers' CPU is not counted)",
            *interleaved(
                functools.partial(ours.cpu_round, 1),
                functools.partial(bare.cpu_round, 1),
                REQUESTS_PER_ROUND,
                statistics.harmonic_mean,
            ),
            unit="req/CPU-s",
            ours_name="with django-scaleops",
            peer_name="bare Django",
            target=TARGET,
            key="example_api.in_process_cpu",
        )
    finally:
        ours.close()
        bare.close()


def breakdown() -> None:
    """CPU µs per request each capability adds: all on, against all on but that one."""
    from example_project.settings import CAPABILITIES

    variants = {"all": {}, **{name: {"EXAMPLE_SCALEOPS_OFF": name} for name in CAPABILITIES}}
    workers = {name: ApiWorker({"EXAMPLE_SCALEOPS": "1", **env}) for name, env in variants.items()}
    workers["bare"] = ApiWorker({"EXAMPLE_SCALEOPS": "0"})
    try:
        rates: dict[str, list[float]] = {name: [] for name in workers}
        for worker in workers.values():
            worker.round(WARM_UP_REQUESTS)
        for round_no in range(rounds_for(7)):
            order = list(workers.items())
            if round_no % 2:
                order.reverse()
            for name, worker in order:
                rates[name].append(worker.cpu_round(REQUESTS_PER_ROUND))
        micros = {name: 1e6 / statistics.median(values) for name, values in rates.items()}
        print("\nCPU time per request, all capabilities on against all but one (µs; negative: noise)")
        print(f"  all on {micros['all']:,.0f}  bare Django {micros['bare']:,.0f}")
        for name in CAPABILITIES:
            cost = micros["all"] - micros[name]
            print(f"  {name:<10} {cost:>8,.0f}")
            record(f"Example API, CPU µs per request of {name}", cost, "µs", higher_is_better=False)
    finally:
        for worker in workers.values():
            worker.close()


@contextlib.contextmanager
def gunicorn_server(scaleops: bool) -> Iterator[int]:
    """A gunicorn of ``GUNICORN_WORKERS`` sync workers serving the example; yields its port."""
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "EXAMPLE_SCALEOPS": "1" if scaleops else "0",
        "DJANGO_DEBUG": "0",
    }
    command = [sys.executable, "-m", "gunicorn", "example_project.wsgi:application"]
    command += ["--workers", str(GUNICORN_WORKERS), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    command += ["--graceful-timeout", "5"]
    # The request log lines (ours) are written as in production, to a stream nobody reads here.
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_until_serving(port: int, path: str) -> None:
    """Until every worker could have started: the path answers 200 a few times in a row."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    answered = 0
    while answered < 2 * GUNICORN_WORKERS:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            status = _get(connection, path)
        except OSError:
            status = 0
        finally:
            connection.close()
        if status == 200:
            answered += 1
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn on port {port} did not serve {path} within {SERVER_START_TIMEOUT:.0f} s")
        time.sleep(0.2)


def _get(connection: http.client.HTTPConnection, path: str) -> int:
    # A gunicorn sync worker closes after each response; http.client then reconnects by itself.
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response.status


def drive(port: int, path: str, count: int, threads: int) -> tuple[float, float]:
    """Send ``count`` GETs over ``threads`` connections; the first start and last end (perf_counter)."""
    per_thread = [count // threads + (1 if n < count % threads else 0) for n in range(threads)]
    failures: list[str] = []

    def run(requests: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(requests):
                status = _get(connection, path)
                if status != 200:
                    failures.append(f"status {status}")
                    return
        except OSError as exc:
            failures.append(repr(exc))
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(requests,)) for requests in per_thread]
    started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across this machine's processes
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError(f"load generator: {failures[0]}")
    return started, time.perf_counter()


def gunicorn_round(pool: multiprocessing.pool.Pool, port: int, path: str) -> float:
    share = GUNICORN_REQUESTS_PER_ROUND // LOAD_PROCESSES
    spans = pool.starmap(drive, [(port, path, share, LOAD_THREADS)] * LOAD_PROCESSES)
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return share * LOAD_PROCESSES / elapsed


def under_gunicorn(path: str) -> None:
    with (
        gunicorn_server(True) as ours_port,
        gunicorn_server(False) as bare_port,
        multiprocessing.get_context("spawn").Pool(LOAD_PROCESSES) as pool,
    ):
        for port in (ours_port, bare_port):
            wait_until_serving(port, path)
            gunicorn_round(pool, port, path)  # warm-up: every worker's connections and caches
        compare(
            f"Example API under gunicorn, {GUNICORN_WORKERS} sync workers each, DJANGO_DEBUG=0"
            f" ({GUNICORN_REQUESTS_PER_ROUND} requests a round over {LOAD_PROCESSES * LOAD_THREADS} connections;"
            f" {os.cpu_count()} cores run both the servers and the load generator, so the figure is a ratio)",
            lambda: gunicorn_round(pool, ours_port, path),
            lambda: gunicorn_round(pool, bare_port, path),
            unit="req/s",
            ours_name="with django-scaleops",
            peer_name="bare Django",
            target=TARGET,
            key="example_api.gunicorn_4_workers",
        )


def main() -> None:
    path = prepare()
    in_process()
    if "--breakdown" in sys.argv:
        breakdown()
    under_gunicorn(path)
    if SMOKE:
        print("smoke: sizes and rounds are tiny, no figure is judged")


if __name__ == "__main__":
    own_database("example_api")
    main()
