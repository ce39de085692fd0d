"""Redis Cluster: the django-redis client, the cache and the rate limiter on three real masters.

The cluster comes from the launcher (``redis_cluster`` fixture); each test points the
``default`` cache at it, so the cache and the limiter use it as they would in production.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client
from django_redis import get_redis_connection
from redis.cluster import RedisCluster

from django_scaleops.cache import l1, stats, with_cache
from django_scaleops.cache.backend import gate
from django_scaleops.cache.keys import stamp_key
from django_scaleops.models import ApiKey, Tier
from django_scaleops.monitoring import aggregate
from django_scaleops.monitoring.stats import QueryStats
from django_scaleops.ratelimit import guard, limiter
from django_scaleops.ratelimit.callers import tier_cache
from django_scaleops.ratelimit.policy import Policy
from django_scaleops.ratelimit.redis_keys import bucket_key, key_identity
from django_scaleops.ratelimit.resolver import key_cache, resolve
from django_scaleops.redis_cluster import ClusterClient
from tests import test_cache, test_ratelimit
from tests.cacheapp.helpers import clean_cache  # noqa: F401  (the borrowed tests use it)
from tests.cacheapp.models import Author, Book

# Transactional: the borrowed tests of test_cache.py and test_ratelimit.py need the database.
pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def cluster_cache(urls: list[str]) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": urls,
        "OPTIONS": {
            "CLIENT_CLASS": "django_scaleops.redis_cluster.ClusterClient",
            "SOCKET_CONNECT_TIMEOUT": 0.25,
            "SOCKET_TIMEOUT": 0.5,
        },
    }


@pytest.fixture(autouse=True)
def on_cluster(redis_cluster: Any, settings: Any) -> Any:
    """The ``default`` cache (the cache's and the limiter's) on the launcher's Redis Cluster."""
    settings.CACHES = {**settings.CACHES, "default": cluster_cache(redis_cluster.urls)}
    get_redis_connection("default").flushdb()
    gate.reset_state()
    stats.reset()
    l1.tier.flush()
    key_cache.clear()
    tier_cache.clear()
    limiter.breaker.reset()
    limiter.local.clear()
    limiter.leases.forget()
    yield redis_cluster
    gate.reset_state()
    limiter.breaker.reset()
    limiter.leases.forget()


def masters_holding(client: RedisCluster, keys: list[str]) -> set[str]:
    return {client.get_node_from_key(k).name for k in keys}


# ---- 1. the django-redis client


def test_get_redis_connection_is_the_cluster_and_basic_ops_cross_slots():
    cache: Any = caches["default"]  # django-redis' RedisCache
    assert isinstance(cache.client, ClusterClient)
    redis = get_redis_connection("default")
    assert isinstance(redis, RedisCluster)
    data = {f"k{i}": i for i in range(60)}
    made = [cache.make_key(k) for k in data]
    assert len(masters_holding(redis, made)) == 3  # the keys really are spread over the masters
    cache.set_many(data, timeout=30)
    assert cache.get_many([*data, "absent"]) == data
    assert 28 <= cache.ttl("k1") <= 30
    cache.set("forever", 1, timeout=None)
    assert cache.ttl("forever") is None
    assert cache.incr("k2", 5) == 7
    with pytest.raises(ValueError, match="not found"):
        cache.incr("absent")
    assert cache.add("k3", 99) is False and cache.get("k3") == 3
    assert sorted(cache.keys("k1*")) == sorted(k for k in data if k.startswith("k1"))
    assert sorted(cache.iter_keys("k5*")) == sorted(k for k in data if k.startswith("k5"))
    assert cache.delete_many(["k0", "k10", "k20", "absent"]) == 3
    assert cache.delete_pattern("k3*") == 11
    assert len(cache.keys("k*")) == 60 - 3 - 11
    assert cache.delete("k4") is True and cache.get("k4") is None
    cache.clear()
    assert cache.keys("*") == []


# ---- 2. cache-aside: stamps and entries placed per slot


def test_stamps_share_one_slot_and_entries_spread():
    redis = get_redis_connection("default")
    stamps = [stamp_key(t) for t in ("cacheapp_book", "cacheapp_author", "*")]
    assert len({redis.keyslot(k) for k in stamps}) == 1
    entries = [gate.entry_key(f"k:{i}") for i in range(30)]
    assert len(masters_holding(redis, entries)) == 3
    assert redis.keyslot(entries[0]) == redis.keyslot(f"{entries[0]}@1.2:lease")


@pytest.mark.django_db(transaction=True)
def test_cached_reads_follow_writes_on_the_cluster(django_assert_num_queries):
    ada = Author.objects.create(name="Ada")
    Book.objects.create(title="A1", author=ada, pages=10)
    query = Book.objects.filter(author__name="Ada").order_by("title")
    assert [b.title for b in query.cached(timeout=60)] == ["A1"]
    with django_assert_num_queries(0):
        assert [b.title for b in query.cached(timeout=60)] == ["A1"]
    Book.objects.create(title="A2", author=ada, pages=20)  # bumps the stamp: the entry is unreachable
    with django_assert_num_queries(1):
        assert [b.title for b in query.cached(timeout=60)] == ["A1", "A2"]
    Author.objects.filter(pk=ada.pk).update(name="Ada L.")  # the joined table's stamp
    assert [b.title for b in query.cached(timeout=60)] == []


def test_stats_flush_is_one_slot_and_sums_on_the_cluster():
    from django_scaleops.cache import cluster

    cluster.reset()
    with_cache("cl:1", lambda: 1, 60)
    with_cache("cl:1", lambda: 1, 60)
    cluster.flush()
    cluster.flush()  # nothing new: no double counting
    figures = cluster.snapshot()["prefixes"]["cl"]
    assert (figures["hits"], figures["misses"]) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_l1_is_kept_consistent_by_sharded_pubsub(settings):
    settings.SCALEOPS_CACHE_L1_TIMEOUT = 30
    deadline = time.monotonic() + 10
    while not l1.usable() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert l1.usable()
    ada = Author.objects.create(name="Ada")
    query = Author.objects.filter(pk=ada.pk)
    time.sleep(0.2)  # the create's own broadcast, heard late, would refuse the first put
    assert [a.name for a in query.cached(timeout=60)] == ["Ada"]
    assert [a.name for a in query.cached(timeout=60)] == ["Ada"]
    assert stats.snapshot()["totals"]["l1_hits"] == 1
    # Another process's write: only the broadcast (SPUBLISH in the stamps' slot) reaches our L1.
    heard = l1.tier.generation
    gate.bump([stamp_key("cacheapp_author")], l1.channel(), f'["{stamp_key("cacheapp_author")}"]')
    deadline = time.monotonic() + 5
    while l1.tier.generation == heard and time.monotonic() < deadline:
        time.sleep(0.01)
    assert l1.tier.generation > heard
    assert len(l1.tier) == 0


# The key behaviours of tests/test_cache.py, run again with the default cache on the cluster.
test_cache_second_read = test_cache.test_second_read_is_served_from_redis
test_cache_variants = test_cache.test_variants_get_count_exists_values
test_cache_writes_invalidate = test_cache.test_save_update_delete_and_raw_sql_invalidate
test_cache_rollback = test_cache.test_rolled_back_write_invalidates_nothing
test_cache_functions = test_cache.test_cached_function_and_with_cache
test_cache_fetch_errors = test_cache.test_fetch_errors_release_the_lease_and_are_not_cached
test_cache_voided_set = test_cache.test_write_between_fetch_and_set_voids_the_lease
test_cache_stampede = test_cache.test_fifty_concurrent_misses_make_one_database_query
test_cache_row_scoped = test_cache.test_row_scoped_get_by_pk_is_invalidated_only_by_its_row
books = test_cache.books


# ---- 3. the rate limiter

test_rl_cold_key = test_ratelimit.test_cold_key_gets_exactly_limit_plus_burst_back_to_back
test_rl_usage_rollup = test_ratelimit.test_usage_is_counted_in_the_same_call_and_rolled_up
test_rl_script_flush = test_ratelimit.test_script_is_reloaded_after_a_script_flush
test_rl_revocation = test_ratelimit.test_revocation_reaches_an_instance_with_a_stale_cache_through_redis
test_rl_leases_across_instances = test_ratelimit.test_leases_never_admit_more_than_the_bucket_across_instances


def test_limiter_is_exact_under_fifty_threads():
    policy = Policy("hourly", 100, 3600, 20)  # 120 back to back, then one every 36 s
    identity = f"exact-{time.time_ns()}"
    barrier = threading.Barrier(50)

    def attempts(_: int) -> int:
        barrier.wait()
        return sum(limiter.check(identity, policy).allowed for _ in range(10))

    with ThreadPoolExecutor(50) as pool:
        admitted = sum(pool.map(attempts, range(50)))
    assert admitted == 120


def test_noscript_after_the_master_restarts(redis_cluster):
    policy = Policy("p", 10, 3600)
    identity = f"noscript-{time.time_ns()}"
    assert limiter.check(identity, policy).remaining == 9
    redis_cluster.restart(redis_cluster.owner_of(bucket_key(identity)))  # empty, no scripts
    deadline = time.monotonic() + 10
    while True:
        limiter.breaker.reset()
        decision = limiter.check(identity, policy)
        if decision.degraded is None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert decision.degraded is None
    assert decision.remaining == 9  # the restarted master lost the bucket: a fresh one, by EVALSHA after a load


def test_limiter_and_cache_answer_rightly_while_slots_migrate(redis_cluster):
    """Keys move between masters (ASK, then MOVED) while calls run: no error, no wrong answer."""
    policy = Policy("hourly", 100, 3600, 20)
    identity = f"moving-{time.time_ns()}"
    source = redis_cluster.owner_of(bucket_key(identity))
    target = next(n for n in redis_cluster.nodes if n != source)
    admitted = 0
    errors: list[str] = []
    values: list[object] = []
    stop = threading.Event()

    def traffic() -> None:
        nonlocal admitted
        while not stop.is_set():
            decision = limiter.check(identity, policy)
            if decision.degraded is not None:
                errors.append("degraded")
                limiter.breaker.reset()
            admitted += decision.allowed
            values.append(with_cache(f"moving:{len(values) % 20}", lambda: "v", 60))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        redis_cluster.reshard(source, target, 5461)  # every slot of the source, the bucket's among them
    finally:
        stop.set()
        worker.join()
    assert redis_cluster.owner_of(bucket_key(identity)) == target
    assert errors == []
    assert set(values) == {"v"}
    assert admitted == 120  # the bucket moved with its slot: never reset, never refilled
    redis_cluster.rebalance()


# ---- 4. a master dies mid-load


def _tier(name: str, mode: str) -> Tier:
    return Tier.objects.create(name=name, requests_per_period=2, period_seconds=3600, burst=1, failure_mode=mode)


@test_ratelimit.throttled
@pytest.mark.django_db(transaction=True)
def test_killed_master_degrades_per_tier_then_recovers(redis_cluster, settings):
    settings.SCALEOPS_CACHE_BREAKER_COOLDOWN = 0.2
    redis = get_redis_connection("default")
    keys = {}
    for mode in ("open", "closed", "local"):
        api_key, secret = ApiKey.create_key(name=mode, tier=_tier(f"t-{mode}", mode))
        keys[mode] = (api_key, secret)
    ada = Author.objects.create(name="Ada")
    client = Client()
    guard.forget("127.0.0.1")
    for _, secret in keys.values():
        assert client.get("/exempt/", headers=test_ratelimit.auth(secret)).status_code == 200
        resolve(secret)
    # The master of the closed tier's bucket and of the cache's stamps: both lose it.
    victim = redis_cluster.owner_of(bucket_key(key_identity(keys["closed"][0].pk)))
    Author.objects.filter(pk=ada.pk).cached(timeout=60)
    redis_cluster.kill(redis_cluster.owner_of(stamp_key("cacheapp_author")))
    if victim.is_running():
        redis_cluster.kill(victim)
    statuses: dict[str, list[int]] = {mode: [] for mode in keys}
    names: list[str] = []
    for _ in range(4):
        for mode, (_, secret) in keys.items():
            statuses[mode].append(client.get("/ok/", headers=test_ratelimit.auth(secret)).status_code)
        names += [a.name for a in Author.objects.filter(pk=ada.pk).cached(timeout=60)]
        Author.objects.filter(pk=ada.pk).update(name="Ada")
    assert 500 not in [s for batch in statuses.values() for s in batch]
    assert statuses["closed"] == [503] * 4
    assert statuses["open"] == [200] * 4
    assert statuses["local"].count(200) >= 1 and set(statuses["local"]) <= {200, 429}
    assert names == ["Ada"] * 4  # read from the database meanwhile
    assert stats.snapshot()["totals"]["bypassed"] >= 4
    redis_cluster.heal()
    time.sleep(0.3)
    deadline = time.monotonic() + 15
    while True:
        limiter.breaker.reset()
        response = client.get("/ok/", headers=test_ratelimit.auth(keys["closed"][1]))
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 200
    gate.reset_state()
    before = stats.snapshot()["totals"].get("hits", 0)
    Author.objects.filter(pk=ada.pk).cached(timeout=60)
    Author.objects.filter(pk=ada.pk).cached(timeout=60)
    assert stats.snapshot()["totals"]["hits"] == before + 1  # the cache serves again
    assert redis.ping()


# ---- 5. monitoring and dashboard aggregates


def test_monitoring_aggregate_keys_share_one_slot():
    from django_scaleops.monitoring.histogram import LogHistogram

    redis = get_redis_connection("default")
    delta = QueryStats()
    hist = LogHistogram()
    hist.add(0.003)
    delta.aliases["default"] = hist
    delta.fingerprints["abc"] = hist
    delta.fingerprint_text["abc"] = "SELECT 1"
    delta.window[int(time.time())] = [1, 0]
    aggregate.push(redis, "scaleops:qm", delta)
    aggregate.push(redis, "scaleops:qm", delta)
    keys = list(redis.scan_iter(match="{scaleops:qm}:*"))
    assert len(keys) >= 4
    assert len({redis.keyslot(k) for k in keys}) == 1
    fleet = aggregate.read(redis, "scaleops:qm")
    assert fleet.aliases["default"].count == 2
    assert aggregate.clear(redis, "scaleops:qm") == len(keys)


def test_dashboard_history_keys_share_one_slot():
    from django_scaleops.dashboard.sampler import History

    redis = get_redis_connection("default")
    history = History(redis, prefix="scaleops:dash", points=10)
    minute = int(time.time() // 60)
    history.append({f"series-{i}": (minute, float(i)) for i in range(20)})
    keys = list(redis.scan_iter(match="{scaleops:dash}:*"))
    assert len(keys) == 21
    assert len({redis.keyslot(k) for k in keys}) == 1
    assert history.read(["series-3"], minute - 1) == {"series-3": [(minute, 3.0)]}
    assert history.clear() == 21
