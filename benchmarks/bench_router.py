"""Read replicas: PrimaryReplicaRouter vs a fixed 2 s time pin (Rails-style) vs
django-multidb-router, on a 90% read / 10% write workload with the replica ~200 ms behind.

Twenty simulated clients, each a Django test client with its own cookies, take turns:
10% of requests update the client's own conversation title (a version number), 45% read it
back, 45% read someone else's. A read of one's own conversation that returns an older version
is a stale read. Each router runs in its own worker process; rounds alternate. Then the routing
decision itself is timed per query (``ConnectionRouter.db_for_read``, as the ORM calls it):
against Django with no router, and, in the common case (no transaction, no write position, a
healthy replica), against django-multidb-router's, with a goal of 1.5 µs per query.

django-multidb-router is a benchmark-only peer: ``pip install -e '.[bench]'``. When it is
missing, the comparison runs against the time pin only. Run with ``make bench``.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import statistics
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Worker, compare, own_database, record, rounds_for, sized, wait_for_replay

CLIENTS = 20
CONVERSATIONS = 200
OPS_PER_ROUND = sized(500, 40)
WARM_UP_OPS = sized(50, 5)
ROUNDS = 5
# Routing decisions a round, and rounds, in the per-query timing.
DECISIONS = sized(50_000, 2_000)
DECISION_ROUNDS = 9
# The common case's goal (µs per query) and, against django-multidb-router's 0.9 µs measured on
# the machine that set it, the "as good" factor it means: 0.9 / 1.5.
DECISION_GOAL_US = 1.5
DECISION_TARGET = 0.6
APPLY_DELAY = "200ms"
TIME_PIN_SECONDS = 2.0
MODE_VAR = "ROUTER_BENCH_MODE"
BENCH_USER = "bench-router"


# ---- Django setup, shared by the main process and the workers -----------------------------


def configure(mode: str) -> None:
    import django
    from django.conf import settings

    from django_scaleops.testing.env import database_from_url

    routers = {
        "ours": ["django_scaleops.routers.PrimaryReplicaRouter"],
        "timepin": ["__main__.TimePinRouter"],
        "multidb": ["multidb.PinningReplicaRouter"],
        "none": [],
    }[mode]
    middleware = {
        "ours": ["django_scaleops.replicas.middleware.ReplicaRoutingMiddleware"],
        "timepin": ["__main__.TimePinMiddleware"],
        "multidb": ["multidb.middleware.PinningRouterMiddleware"],
        "none": [],
    }[mode]
    settings.configure(
        SECRET_KEY="bench-only",
        DEBUG=False,
        USE_TZ=True,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_scaleops",
            "example_project.chat",
        ],
        DATABASES={
            "default": database_from_url(os.environ["DATABASE_URL"]),
            "replica": database_from_url(
                os.environ["REPLICA_URL"], TEST={"MIRROR": "default"}, OPTIONS={"connect_timeout": 2}
            ),
        },
        DATABASE_ROUTERS=routers,
        MIDDLEWARE=middleware,
        ROOT_URLCONF="__main__",
        SCALEOPS_ROUTER_REPLICA_ALIASES=["replica"],
        REPLICA_DATABASES=["replica"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


# ---- the Rails-style peer: after a write, every read of that client goes to the primary for 2 s


_pinned: ContextVar[bool] = ContextVar("bench_time_pin", default=False)


class TimePinRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "default" if _pinned.get() else "replica"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "default"


class TimePinMiddleware:
    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        pinned_until = float(request.COOKIES.get("pin_until", "0"))
        token = _pinned.set(time.time() < pinned_until or request.method != "GET")
        try:
            response = self.get_response(request)
        finally:
            _pinned.reset(token)
        if request.method != "GET":
            response.set_cookie("pin_until", str(time.time() + TIME_PIN_SECONDS))
        return response


# ---- the views the simulated clients call (ROOT_URLCONF is this module in the workers) ------


def write_view(request: Any, pk: int) -> Any:
    from django.http import JsonResponse

    from example_project.chat.models import Conversation

    Conversation.objects.filter(pk=pk).update(title=request.POST["version"])
    return JsonResponse({"ok": True})


def read_view(request: Any, pk: int) -> Any:
    from django.db.models.expressions import RawSQL
    from django.http import JsonResponse

    from example_project.chat.models import Conversation

    row = Conversation.objects.filter(pk=pk).annotate(port=RawSQL("inet_server_port()", ())).values("title", "port")
    return JsonResponse(row.get())


urlpatterns: list[Any] = []


def worker(mode: str) -> None:
    configure(mode)
    from django.db import connections
    from django.test import Client
    from django.urls import path

    from example_project.chat.models import Conversation

    urlpatterns.extend([path("w/<int:pk>/", write_view), path("r/<int:pk>/", read_view)])
    replica_port = int(connections["replica"].settings_dict["PORT"])
    mine = Conversation.objects.using("default").filter(created_by__username=BENCH_USER)
    pks = list(mine.order_by("pk").values_list("pk", flat=True))
    # Each router's clients own their rows: versions written by one worker are not another's.
    slot = ["ours", "timepin", "multidb"].index(mode)
    own = pks[slot * CLIENTS : (slot + 1) * CLIENTS]
    clients = [Client() for _ in own]
    versions = [
        int(t) for t in Conversation.objects.using("default").filter(pk__in=own).values_list("title", flat=True)
    ]
    rng = random.Random(hash(mode) & 0xFFFF)
    for line in sys.stdin:
        count = int(line)
        reads = replica_reads = own_reads = stale = 0
        started = time.perf_counter()
        for i in range(count):
            who = i % len(clients)
            dice = rng.random()
            if dice < 0.10:
                versions[who] += 1
                response = clients[who].post(f"/w/{own[who]}/", {"version": str(versions[who])})
                assert response.status_code == 200, response.status_code
                continue
            pk = own[who] if dice < 0.55 else rng.choice(pks)
            row = clients[who].get(f"/r/{pk}/").json()
            reads += 1
            replica_reads += row["port"] == replica_port
            if pk == own[who]:
                own_reads += 1
                stale += int(row["title"]) < versions[who]
        elapsed = time.perf_counter() - started
        figures = {"reads": reads, "replica_reads": replica_reads, "own_reads": own_reads, "stale": stale}
        print(json.dumps({**figures, "requests_per_s": count / elapsed}), flush=True)


class JsonWorker(Worker):
    def run(self, count: int) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{count}\n")
        self.proc.stdin.flush()
        while line := self.proc.stdout.readline():
            # Skip log lines that share the worker's stdout (JSON log lines have no "reads").
            figures: dict[str, Any] = json.loads(line) if line.startswith("{") else {}
            if "reads" in figures:
                return figures
        raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")


# ---- main -------------------------------------------------------------------------------


def seed() -> None:
    """The benchmark's own conversations (owned by one user), leaving any demo data alone."""
    from django.contrib.auth.models import User

    from example_project.chat.models import Conversation

    owner, _ = User.objects.using("default").get_or_create(username=BENCH_USER)
    Conversation.objects.using("default").filter(created_by=owner).delete()
    Conversation.objects.using("default").bulk_create(
        Conversation(title="0", created_by=owner) for _ in range(CONVERSATIONS)
    )


def workload(names: list[str]) -> dict[str, list[dict[str, Any]]]:
    workers = {name: JsonWorker(Path(__file__).name, {MODE_VAR: name}) for name in names}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        for w in workers.values():
            w.run(WARM_UP_OPS)

        def round_of(name: str) -> float:
            figures = workers[name].run(OPS_PER_ROUND)
            results[name].append(figures)
            return 100.0 * float(figures["replica_reads"]) / float(figures["reads"])

        for peer in names[1:]:
            compare(
                f"Reads served by the replica, {OPS_PER_ROUND} requests a round, replica {APPLY_DELAY} behind",
                lambda: round_of("ours"),
                lambda peer=peer: round_of(peer),  # type: ignore[misc]
                rounds=ROUNDS,
                unit="% on replica",
                ours_name="PrimaryReplicaRouter",
                peer_name={"timepin": "2 s time pin", "multidb": "django-multidb-router"}[peer],
                key=f"router.replica_reads_vs_{peer}",
            )
    finally:
        for w in workers.values():
            w.close()
    return results


def overhead() -> None:
    from django.db.utils import ConnectionRouter

    from django_scaleops.routers import PrimaryReplicaRouter, reset_routing_state
    from example_project.chat.models import Conversation

    calls = DECISIONS

    def timed(router: ConnectionRouter) -> float:
        # CPU time of this thread: the loop never waits, and on a shared machine wall time would
        # also count the time other processes held the core.
        router.db_for_read(Conversation)
        started = time.thread_time()
        for _ in range(calls):
            router.db_for_read(Conversation)
        return (time.thread_time() - started) / calls * 1e9

    ours = ConnectionRouter([PrimaryReplicaRouter()])
    bare = ConnectionRouter([])
    # The common case after a write: the client has a write position, the replica has replayed it,
    # so every read is checked against the replica's known replay position (ns: 10% must show).
    reset_routing_state()
    pk = Conversation.objects.using("default").values_list("pk", flat=True).first()
    Conversation.objects.using("default").filter(pk=pk).update(title="0")
    wait_for_replay()
    assert ours.db_for_read(Conversation) == "replica"
    compare(
        f"Routing decision per read query, client with a write position ({calls:,} calls a round)",
        lambda: timed(ours),
        lambda: timed(bare),
        rounds=DECISION_ROUNDS,
        unit="ns/query",
        higher_is_better=False,
        ours_name="PrimaryReplicaRouter",
        peer_name="no router (Django default)",
        key="router.decision_write_position_vs_no_router",
    )
    # The common case: no transaction, no write position, a healthy replica.
    reset_routing_state()
    assert ours.db_for_read(Conversation) == "replica"
    compare(
        f"Routing decision per read query, no write position ({calls:,} calls a round)",
        lambda: timed(ours),
        lambda: timed(bare),
        rounds=DECISION_ROUNDS,
        unit="ns/query",
        higher_is_better=False,
        ours_name="PrimaryReplicaRouter",
        peer_name="no router (Django default)",
        key="router.decision_vs_no_router",
    )
    ours_rounds: list[float] = []

    def timed_ours() -> float:
        ours_rounds.append(timed(ours))
        return ours_rounds[-1]

    try:
        # A benchmark-only peer without type information: imported by name.
        pinning_router = importlib.import_module("multidb").PinningReplicaRouter
    except ImportError:
        pinning_router = None
    if pinning_router is not None:
        multidb = ConnectionRouter([pinning_router()])
        compare(
            f"Routing decision per read query, no write position ({calls:,} calls a round)",
            timed_ours,
            lambda: timed(multidb),
            rounds=DECISION_ROUNDS,
            unit="ns/query",
            higher_is_better=False,
            ours_name="PrimaryReplicaRouter",
            peer_name="django-multidb-router",
            target=DECISION_TARGET,
            key="router.decision_vs_multidb",
        )
    else:
        for _ in range(rounds_for(DECISION_ROUNDS)):
            timed_ours()
    decision_us = statistics.median(ours_rounds) / 1000
    print(f"\nRouting decision, common case: {decision_us:.2f} µs per query (goal {DECISION_GOAL_US} µs)")
    record(
        "Routing decision per read query, common case (no transaction, no write position, healthy replica)",
        decision_us,
        "µs/query",
        higher_is_better=False,
        target=DECISION_GOAL_US,
        note="ConnectionRouter.db_for_read, PrimaryReplicaRouter: median of its rounds",
    )


def main() -> None:
    configure("ours")
    from django.core.management import call_command

    from django_scaleops.testing.services import SERVICES_DIR_VAR, Services

    call_command("migrate", interactive=False, verbosity=0)
    seed()
    names = ["ours", "timepin"]
    try:
        importlib.import_module("multidb")
        names.append("multidb")
    except ImportError:
        print("django-multidb-router is not installed (pip install -e '.[bench]'): comparing with the time pin only")
    root = os.environ.get(SERVICES_DIR_VAR)
    replica = Services.attach(root).replica if root else None
    if replica is None:
        print(f"services given by URL: the replica cannot be delayed by {APPLY_DELAY}; its lag is whatever it is")
    else:
        wait_for_replay()
        replica.set_apply_delay(APPLY_DELAY)
    try:
        results = workload(names)
    finally:
        if replica is not None:
            replica.set_apply_delay(None)
    print("\nPer router, all rounds (stale = a client read an older version of what it had written):")
    for name, rounds in results.items():
        reads = sum(r["reads"] for r in rounds)
        on_replica = sum(r["replica_reads"] for r in rounds)
        own = sum(r["own_reads"] for r in rounds)
        stale = sum(r["stale"] for r in rounds)
        rps = statistics.median(r["requests_per_s"] for r in rounds)
        print(
            f"  {name:<8} reads {reads:>6}  on replica {100 * on_replica / reads:5.1f}%  "
            f"own-write reads {own:>5}  stale {stale:>3}  median {rps:,.0f} req/s"
        )
    overhead()


if __name__ == "__main__":
    own_database("router")
    mode = os.environ.get(MODE_VAR)
    if mode:
        worker(mode)
    else:
        main()
