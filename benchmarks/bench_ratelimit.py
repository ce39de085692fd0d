"""Rate limiting: ours vs DRF's SimpleRateThrottle vs django-ratelimit, same Redis, same run.

1. Exactness: admitted requests of 50 threads x 10 attempts at 100/min (no burst), fresh key a round.
2. Window edge: admitted within ~1 s straddling django-ratelimit's fixed-window boundary.
3. Redis round trips per check (counted at the client) and commands (``INFO commandstats``).
4. Requests/s of one tiny view through gunicorn (2 sync workers), with and without each limiter,
   with our leases on (the default) and off, and with a bare Redis PING a request for the floor.
5. The allowed-request hot path in process: µs per request through ApiKeyThrottleMiddleware alone
   (warm key; leases on: no I/O, leases off: one EVALSHA), the figure the 10% budget is held to.
6. Abuse: database queries and answers for 300 random unknown keys from one address, and the
   Redis memory the negative cache takes when full.

``--hot-path`` runs only section 5 (also against an older checkout, to compare like with like).

Needs the ``bench`` extra (djangorestframework, gunicorn, hiredis: all three limiters share the
same django-redis client, so all get the C reply parser). Run with ``make bench`` (about 2 minutes
on 2 cores; rounds and request counts are scaled down for that).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import ROOT, compare, own_database, rounds_for, sized
from django_scaleops.testing.processes import free_ports

LIMIT = 100  # per minute, as in the anchors
LEASED_LIMIT = 1_000_000  # large enough for leases (0.1% of it is more than SCALEOPS_THROTTLE_LEASE_MAX)
THREADS, ATTEMPTS = 50, 10
ROUNDS = rounds_for(5)
HTTP_REQUESTS = sized(1500, 20)  # per round and configuration
HTTP_CLIENTS = 4


def sync_response(response: Any) -> Any:
    """The middleware is hybrid; with a sync get_response it answers synchronously."""
    assert hasattr(response, "status_code"), response
    return response


def setup_django() -> str:
    """Migrate, seed a small chat dataset once; returns the URL of a realistic API view."""
    from benchmarks.bench_example_api import prepare

    prepare()
    from example_project.chat.models import Conversation

    conversation = Conversation.objects.order_by("id").values_list("id", flat=True).first()
    return f"/api/conversations/{conversation}/messages/?limit=50"


# ---- the three limiters, one check each


class RoundTrips:
    """Counts commands sent to Redis by this process (a pipeline or a script is one round trip)."""

    count = 0
    _lock = threading.Lock()

    @classmethod
    def install(cls) -> None:
        from redis.connection import Connection

        original = Connection.send_packed_command

        def counted(self: Any, command: Any, check_health: bool = True) -> None:
            with cls._lock:
                cls.count += 1
            original(self, command, check_health)

        Connection.send_packed_command = counted  # type: ignore[method-assign]


def ours_check(limit: int = LIMIT) -> Callable[[str], bool]:
    from django_scaleops.ratelimit import limiter
    from django_scaleops.ratelimit.policy import Policy

    policy = Policy("bench", limit, 60, burst=0)
    return lambda key: limiter.check(key, policy).allowed


def drf_check() -> Callable[[str], bool]:
    from django.test import RequestFactory
    from rest_framework.throttling import SimpleRateThrottle

    class KeyThrottle(SimpleRateThrottle):  # type: ignore[misc]
        rate = f"{LIMIT}/min"

        def get_cache_key(self, request: Any, view: Any) -> str:
            return str(request.bench_key)

    factory = RequestFactory()

    def check(key: str) -> bool:
        request = factory.get("/")
        request.bench_key = key  # type: ignore[attr-defined]
        return bool(KeyThrottle().allow_request(request, None))

    return check


def ratelimit_check() -> Callable[[str], bool]:
    from django.test import RequestFactory
    from django_ratelimit.core import is_ratelimited  # type: ignore[import-untyped]

    factory = RequestFactory()

    def check(key: str) -> bool:
        request = factory.get("/")
        limited = is_ratelimited(
            request, group="bench", key=lambda group, request: key, rate=f"{LIMIT}/m", increment=True
        )
        return not limited

    return check


def concurrent_admitted(check: Callable[[str], bool], key: str) -> int:
    barrier = threading.Barrier(THREADS)

    def attempts(_: int) -> int:
        barrier.wait()
        return sum(check(key) for _ in range(ATTEMPTS))

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(attempts, range(THREADS)))


def peer_admitted(check: Callable[[str], bool], name: str) -> float:
    return concurrent_admitted(check, fresh(name))


def fresh(name: str) -> str:
    return f"bench-{name}-{time.time_ns()}"


# ---- window edge


def key_near_window_end(period: int = 60) -> tuple[str, float]:
    """A key whose django-ratelimit window ends 1.5-3 s from now, and that end (epoch seconds).

    django-ratelimit's window named ``end`` still counts during the second ``end``; the next
    window starts at ``end + 1``, which is what this returns.
    """
    now = time.time()
    for attempt in range(100_000):
        value = f"edge-{time.time_ns()}-{attempt}"
        ts = int(now)
        end = ts - (ts % period) + (zlib.crc32(value.encode()) % period)
        if end < ts:
            end += period
        if 1.5 <= end + 1 - now <= 3.0:
            return value, float(end + 1)
    raise RuntimeError("no key with a window end in range")


def edge_admitted(check: Callable[[str], bool], key: str, boundary: float) -> int:
    """100 attempts 0.4 s before the boundary and 100 just after: what a client at the edge gets."""
    time.sleep(max(0.0, boundary - 0.4 - time.time()))
    admitted = sum(check(key) for _ in range(LIMIT))
    time.sleep(max(0.0, boundary + 0.1 - time.time()))
    admitted += sum(check(key) for _ in range(LIMIT))
    return admitted


# ---- round trips and commands


def commands_per_check(check: Callable[[str], bool], checks: int = 300) -> tuple[float, float, dict[str, int]]:
    from django_scaleops.ratelimit.redis_keys import redis_connection

    client = redis_connection()
    client.config_resetstat()
    before = RoundTrips.count
    key = fresh("commands")
    for _ in range(checks):
        check(key)
    trips = RoundTrips.count - before
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("config", None)
    calls.pop("info", None)
    return trips / checks, sum(calls.values()) / checks, calls


# ---- gunicorn throughput


class Server:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_ports(1)[0]
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "benchmarks.ratelimit_site:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--log-level", "warning",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "BENCH_RATELIMIT_MODE": mode,
                "DJANGO_SETTINGS_MODULE": "benchmarks.ratelimit_site",
            },
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"gunicorn ({mode}) did not start") from None
                time.sleep(0.1)

    def requests_per_second(self, key: str, count: int = HTTP_REQUESTS, url: str = "/ping/") -> float:
        per_client = count // HTTP_CLIENTS

        def run(_: int) -> None:
            for _ in range(per_client):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("GET", url, headers={"X-API-Key": key})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status != 200:
                    raise RuntimeError(f"{self.mode}: HTTP {response.status}")

        started = time.perf_counter()
        with ThreadPoolExecutor(HTTP_CLIENTS) as pool:
            list(pool.map(run, range(HTTP_CLIENTS)))
        return per_client * HTTP_CLIENTS / (time.perf_counter() - started)

    def close(self) -> None:
        # SIGQUIT: gunicorn's quick shutdown (SIGTERM waits for workers, up to 30 s on a busy machine).
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---- the hot path in process, and abuse


def hot_path(rounds: int = rounds_for(7), requests: int = sized(5000, 50)) -> None:
    """µs per allowed request through the middleware alone: warm key, a view that does nothing."""
    import statistics

    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from django_scaleops.models import ApiKey, Tier
    from django_scaleops.ratelimit.middleware import ApiKeyThrottleMiddleware

    tier, _ = Tier.objects.get_or_create(
        name="bench-unlimited", defaults={"requests_per_period": 1_000_000_000, "period_seconds": 60}
    )
    _, secret = ApiKey.create_key(name="bench hot path", tier=tier)
    middleware = ApiKeyThrottleMiddleware(lambda request: HttpResponse("ok"))
    request = RequestFactory().get("/ping/", HTTP_X_API_KEY=secret, REMOTE_ADDR="10.20.30.40")
    print("\nHot path in process: ApiKeyThrottleMiddleware alone, warm key, every request allowed")
    for label, lease_max, count in (
        ("leases on (no I/O)", 32, requests),
        ("leases off (one EVALSHA)", 0, requests // 5),
    ):
        with override_settings(SCALEOPS_THROTTLE_LEASE_MAX=lease_max):
            for _ in range(200):  # warm-up: key cache, script, connection
                assert sync_response(middleware(request)).status_code == 200
            medians = []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(count):
                    middleware(request)
                medians.append((time.perf_counter() - started) / count * 1e6)
        print(
            f"  {label:<28} median {statistics.median(medians):8.1f} µs/request"
            f"   (min {min(medians):.1f}  max {max(medians):.1f}, {rounds} rounds of {count})"
        )


def unknown_key_flood(requests: int = sized(300, 20)) -> None:
    """What 300 random, well-formed, unknown keys from one address cost."""
    from django.db import connections
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from django_scaleops.ratelimit import guard
    from django_scaleops.ratelimit.keys import generate_key
    from django_scaleops.ratelimit.middleware import ApiKeyThrottleMiddleware

    address = f"10.99.{time.time_ns() % 250}.1"
    middleware = ApiKeyThrottleMiddleware(lambda request: HttpResponse("ok"))
    factory = RequestFactory()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:  # every alias: the example's router may send reads to a replica
        captured = [stack.enter_context(CaptureQueriesContext(connections[alias])) for alias in connections]
        statuses = [
            sync_response(
                middleware(factory.get("/ping/", HTTP_X_API_KEY=generate_key().key, REMOTE_ADDR=address))
            ).status_code
            for _ in range(requests)
        ]
    elapsed = time.perf_counter() - started
    queries = [query for capture in captured for query in capture.captured_queries]
    guard.forget(address)
    answers = ", ".join(f"{statuses.count(code)}x {code}" for code in sorted(set(statuses)))
    print(f"\nUnknown-key flood: {requests} random well-formed keys from one address")
    print(f"  {len(queries)} database queries; answers {answers}; {elapsed / requests * 1e6:.0f} µs/request")


def negative_cache_memory() -> None:
    """Redis memory of the negative cache filled to its default bound (65,536 prefixes)."""
    from django_scaleops.ratelimit import negative
    from django_scaleops.ratelimit.keys import generate_key
    from django_scaleops.ratelimit.redis_keys import redis_connection

    client = redis_connection()
    pipe = client.pipeline(transaction=False)
    count = sized(negative.shards() * negative.shard_size() * 2, 2_000)  # twice the bound: the bound must hold
    for index in range(count):
        prefix = generate_key().prefix
        negative._script(client, negative.ADD)(
            keys=[negative.shard_key(prefix)], args=[prefix, 60_000, negative.shard_size()], client=pipe
        )
        if index % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    keys = list(client.scan_iter(match="scaleops:rl:nk:*", count=1000))
    members = sum(client.zcard(key) for key in keys)
    used = sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)
    print(f"\nNegative cache after {count:,} unknown prefixes (bound {negative.shards() * negative.shard_size():,})")
    print(
        f"  {len(keys)} shard keys, {members:,} prefixes, {used / 1e6:.2f} MB ({used / max(1, members):.0f} B a prefix)"
    )
    client.delete(*keys)


def main() -> None:
    if "--hot-path" in sys.argv:
        setup_django()
        hot_path()
        return
    api_url = setup_django()
    from django_scaleops.models import ApiKey, Tier

    RoundTrips.install()
    ours, drf, ratelimit = ours_check(), drf_check(), ratelimit_check()
    for check in (ours, drf, ratelimit):
        check(fresh("warmup"))

    print(f"Rate limiting at {LIMIT}/min: ours (GCRA, one EVALSHA) vs DRF SimpleRateThrottle vs django-ratelimit")
    print(f"(same Redis; {THREADS} threads x {ATTEMPTS} attempts = {THREADS * ATTEMPTS} a round, fresh key a round)")
    for name, peer in (("DRF SimpleRateThrottle", drf), ("django-ratelimit", ratelimit)):
        compare(
            f"Admitted of {THREADS * ATTEMPTS} concurrent attempts, limit {LIMIT} (exact = {LIMIT})",
            lambda: concurrent_admitted(ours, fresh("ours")),
            functools.partial(peer_admitted, peer, name),
            rounds=ROUNDS,
            unit="admitted",
            higher_is_better=False,
            ours_name="ours",
            peer_name=name,
        )

    edge_rounds: dict[str, list[int]] = {"ours": [], "django-ratelimit": []}
    for _ in range(rounds_for(3)):
        key, boundary = key_near_window_end()
        edge_rounds["django-ratelimit"].append(edge_admitted(ratelimit, key, boundary))
        edge_rounds["ours"].append(edge_admitted(ours, f"edge-ours-{time.time_ns()}", boundary))
    print(f"\nWindow edge: {LIMIT} attempts 0.4 s before a django-ratelimit window ends, {LIMIT} just after (3 rounds)")
    for name, values in edge_rounds.items():
        print(f"  {name:<28} admitted {values}  (limit {LIMIT}/min; ours bound {LIMIT} + 1 per 0.6 s)")

    print("\nRedis per check (300 checks on one key; round trips counted at the client)")
    checks = (
        ("ours", ours),
        ("ours, 1,000,000/min (leases)", ours_check(LEASED_LIMIT)),
        ("DRF SimpleRateThrottle", drf),
        ("django-ratelimit", ratelimit),
    )
    for name, check in checks:
        trips, commands, calls = commands_per_check(check)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        print(f"  {name:<28} {trips:.2f} round trips, {commands:.2f} commands incl. inside scripts ({detail})")

    tier, _ = Tier.objects.get_or_create(
        name="bench-unlimited", defaults={"requests_per_period": 1_000_000_000, "period_seconds": 60}
    )
    _, secret = ApiKey.create_key(name="bench", tier=tier)
    servers = {mode: Server(mode) for mode in ("bare", "ours", "ours-noleases", "ping", "drf-bare", "drf")}
    try:
        for server in servers.values():
            server.requests_per_second(secret, sized(200, 8))  # warm-up: imports, key cache, connections
        for mode in ("bare", "ours"):
            servers[mode].requests_per_second(secret, sized(100, 4), api_url)
        print(
            f"\nThroughput through gunicorn (2 sync workers, {HTTP_CLIENTS} clients,"
            f" {HTTP_REQUESTS} requests a round, every request admitted)"
        )
        plain = ("/ping/", HTTP_REQUESTS)
        api = (api_url, HTTP_REQUESTS // 3)
        # title, (server, label) of ours, (server, label) of the peer, (URL, requests a round)
        comparisons = [
            ("Plain Django view: with ApiKeyThrottleMiddleware vs without",
             ("ours", "with our limiter"), ("bare", "no limiter"), plain),
            ("Plain Django view: with ApiKeyThrottleMiddleware, leases off (a Redis call every request) vs without",
             ("ours-noleases", "limiter, no leases"), ("bare", "no limiter"), plain),
            ("Plain Django view: one Redis PING a request (the floor of any limiter asking every time) vs nothing",
             ("ping", "one PING a request"), ("bare", "no limiter"), plain),
            ("Example API view (newest 50 messages, database reads): with ApiKeyThrottleMiddleware vs without",
             ("ours", "with our limiter"), ("bare", "no limiter"), api),
            ("Plain view: our limiter vs DRF's SimpleRateThrottle (each with its own framework's view)",
             ("ours", "ours (Django view)"), ("drf", "DRF throttle (APIView)"), plain),
            ("DRF APIView: with SimpleRateThrottle vs without",
             ("drf", "with DRF throttle"), ("drf-bare", "no throttle"), plain),
        ]  # fmt: skip
        for title, (ours_mode, ours_name), (peer_mode, peer_name), (url, count) in comparisons:
            compare(
                title,
                functools.partial(servers[ours_mode].requests_per_second, secret, count, url),
                functools.partial(servers[peer_mode].requests_per_second, secret, count, url),
                rounds=ROUNDS,
                unit="req/s",
                ours_name=ours_name,
                peer_name=peer_name,
            )
    finally:
        for server in servers.values():
            server.close()
    hot_path()
    unknown_key_flood()
    negative_cache_memory()


if __name__ == "__main__":
    own_database("ratelimit")
    main()
