"""The rate limiter and the cache on a 3-master Redis Cluster next to a single Redis, same run.

Prints throughput (checks/s, cache hits/s; 8 threads, alternating rounds) for both, and the
limiter's exactness on the cluster: 50 concurrent clients x 10 attempts against a bucket of 120
(100/hour, burst 20) must admit exactly 120. Uses the launcher's services (``tests.settings``)
and starts its Redis Cluster on demand.

    python -m benchmarks.bench_redis_cluster
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from benchmarks.harness import SMOKE, compare, own_database

THREADS = 8
SECONDS = 0.2 if SMOKE else 1.5


def setup() -> None:
    import django
    from django.conf import settings

    from django_scaleops.testing.services import SERVICES_DIR_VAR, Services

    django.setup()
    cluster = Services.attach(os.environ[SERVICES_DIR_VAR]).redis_cluster()
    settings.CACHES["cluster"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": cluster.urls,
        "OPTIONS": {
            "CLIENT_CLASS": "django_scaleops.redis_cluster.ClusterClient",
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 1.0,
        },
    }


def on(alias: str) -> Any:
    from django.test import override_settings

    # Leases off: every check is one EVALSHA, so the figure is Redis', not the in-process lease.
    return override_settings(
        SCALEOPS_THROTTLE_CACHE_ALIAS=alias, SCALEOPS_CACHE_ALIAS=alias, SCALEOPS_THROTTLE_LEASE_MAX=0
    )


def throughput(operation: Callable[[int], object]) -> float:
    """Operations a second of ``THREADS`` threads calling ``operation(i)`` for ``SECONDS``."""
    done = [0] * THREADS
    stop = threading.Event()

    def run(slot: int) -> None:
        i = 0
        while not stop.is_set():
            operation(slot * 1_000_000 + i)
            i += 1
        done[slot] = i

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def limiter_round(alias: str) -> Callable[[], float]:
    from django_scaleops.ratelimit import limiter
    from django_scaleops.ratelimit.policy import Policy

    policy = Policy("bench", 10**9, 60)
    # 512 keys, so the cluster's buckets spread over its masters.

    def round_() -> float:
        with on(alias):
            limiter.forget_client()
            limiter.leases.forget()
            return throughput(lambda i: limiter.check(f"bench-{alias}-{i % 512}", policy, slot="bench"))

    return round_


def cache_round(alias: str) -> Callable[[], float]:
    from django_scaleops.cache import with_cache

    def round_() -> float:
        with on(alias):
            return throughput(lambda i: with_cache(f"bench:{i % 512}", lambda: "x" * 200, 300))

    return round_


def exactness(alias: str, clients: int = 50, attempts: int = 10) -> tuple[int, int]:
    from django_scaleops.ratelimit import limiter
    from django_scaleops.ratelimit.policy import Policy

    policy = Policy("exact", 100, 3600, 20)
    identity = f"exact-{alias}-{time.time_ns()}"
    barrier = threading.Barrier(clients)

    def client(_: int) -> int:
        barrier.wait()
        return sum(limiter.check(identity, policy, slot="bench").allowed for _ in range(attempts))

    with on(alias), ThreadPoolExecutor(clients) as pool:
        limiter.forget_client()
        admitted = sum(pool.map(client, range(clients)))
    return admitted, policy.capacity


def main() -> None:
    setup()
    from django_scaleops.cache.backend import gate

    for alias in ("default", "cluster"):  # warm-up: connections, scripts, slot tables
        limiter_round(alias)()
        cache_round(alias)()
        gate.reset_state()
    compare(
        f"rate limiter checks/s, {THREADS} threads (leases off: one EVALSHA a check)",
        limiter_round("cluster"),
        limiter_round("default"),
        rounds=5,
        ours_name="3-master Redis Cluster",
        peer_name="single Redis",
    )
    compare(
        f"cache hits/s (with_cache), {THREADS} threads",
        cache_round("cluster"),
        cache_round("default"),
        rounds=5,
        ours_name="3-master Redis Cluster",
        peer_name="single Redis",
    )
    print("\nlimiter exactness, 50 concurrent clients x 10 attempts, bucket of 120 (100/hour, burst 20)")
    for alias, name in (("cluster", "3-master Redis Cluster"), ("default", "single Redis")):
        admitted, allowed = exactness(alias)
        print(f"  {name:<28} admitted {admitted} of {allowed} allowed ({'exact' if admitted == allowed else 'WRONG'})")


if __name__ == "__main__":
    own_database("redis_cluster")
    main()
