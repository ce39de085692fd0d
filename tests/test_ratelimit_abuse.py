"""Abuse and operations paths of the rate limiter, against the launcher's real Redis and PostgreSQL.

Unknown-key floods, the failed-authentication limit per address, the negative cache and its
bound, the in-process key cache LRU, the status endpoint's own limits, invalid tier rows and
revocation through ``QuerySet`` methods.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.checks import run_checks
from django.db import IntegrityError, connection, transaction
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_scaleops import metrics
from django_scaleops.models import ApiKey, Tier
from django_scaleops.ratelimit import guard, limiter, negative, publish_key_changes
from django_scaleops.ratelimit.keys import generate_key
from django_scaleops.ratelimit.redis_keys import key_identity, redis_connection, revoked_key
from django_scaleops.ratelimit.resolver import UNKNOWN_CACHE_SIZE, ResolvedKey, key_cache, resolve
from tests.test_ratelimit import auth, clean_state, evalsha_calls, make_key, remaining, seeded_tier, throttled  # noqa: F401

FLOOD = 300
FAILURES = 20  # the default SCALEOPS_THROTTLE_AUTH_FAILURE_RATE, "20/m": one more every 3 s


def unknown_key() -> str:
    """A random, well-formed key that no row has."""
    return generate_key().key


def flood_window_bound(elapsed: float) -> int:
    """Failed lookups an address may make in ``elapsed`` seconds: 20, then one every 3 s."""
    return FAILURES + math.floor(elapsed / 3) + 1


def apikey_queries(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "scaleops_apikey" in q["sql"]]


@pytest.fixture
def other_addresses() -> Iterator[list[str]]:
    addresses = [f"10.9.{i // 250}.{i % 250}" for i in range(FLOOD)]
    yield addresses
    for address in addresses:
        guard.forget(address)


# ---- unknown-key floods


@throttled
@pytest.mark.django_db
def test_unknown_key_flood_from_one_address_is_refused_after_20_failures_without_queries():
    client = Client()
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        responses = [client.get("/ok/", headers=auth(unknown_key())) for _ in range(FLOOD)]
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert statuses[:FAILURES] == [401] * FAILURES
    assert statuses[FAILURES] == 429
    assert statuses.count(401) <= flood_window_bound(elapsed)
    assert statuses.count(401) + statuses.count(429) == FLOOD
    # One query per key looked up; the refused ones cost none (was: 300 queries, never limited).
    assert len(queries) == statuses.count(401)
    assert len(queries) <= flood_window_bound(elapsed)
    refused = responses[FAILURES]
    assert refused["Content-Type"] == "application/problem+json"
    assert 1 <= int(refused["Retry-After"]) <= 3
    assert json.loads(refused.content)["status"] == 429
    assert "Too many failed" in json.loads(refused.content)["detail"]


@throttled
@pytest.mark.django_db(transaction=True)
def test_unknown_key_flood_through_async_views_is_refused_the_same_way():
    async def flood() -> list[int]:
        client = AsyncClient()
        return [(await client.get("/async-ok/", headers=auth(unknown_key()))).status_code for _ in range(60)]

    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        statuses = async_to_sync(flood)()
    elapsed = time.monotonic() - started
    assert statuses[:FAILURES] == [401] * FAILURES
    assert statuses[FAILURES] == 429
    assert statuses.count(401) <= flood_window_bound(elapsed)
    assert len(apikey_queries(queries)) <= statuses.count(401)


@throttled
@pytest.mark.django_db
def test_failures_of_malformed_revoked_expired_and_forged_keys_count_too():
    _, secret = make_key()
    revoked, revoked_secret = make_key()
    revoked.revoke()
    _, expired_secret = make_key(expires_at=timezone.now() - timedelta(seconds=1))
    assert Client().get("/ok/", headers=auth(secret)).status_code == 200
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    presented = ["garbage", forged, revoked_secret, expired_secret] * (FAILURES // 4)
    client = Client()
    assert [client.get("/ok/", headers=auth(raw)).status_code for raw in presented] == [401] * FAILURES
    # Over the limit: 429 whether the key fails from the cache (forged) or would need a lookup.
    assert client.get("/ok/", headers=auth(forged)).status_code == 429
    assert client.get("/ok/", headers=auth(unknown_key())).status_code == 429
    # The valid key this process has verified is never held up by its address's failures.
    assert client.get("/ok/", headers=auth(secret)).status_code == 200


@throttled
@pytest.mark.django_db
def test_a_blocked_address_blocks_only_lookups_and_only_itself():
    _, cold_secret = make_key("Free")
    client = Client()
    for _ in range(FAILURES):
        assert client.get("/ok/", headers=auth(unknown_key())).status_code == 401
    # A valid key not cached yet needs the lookup the limit protects: refused too (documented).
    assert client.get("/ok/", headers=auth(cold_secret)).status_code == 429
    # Another address is not affected.
    assert client.get("/ok/", headers=auth(cold_secret), REMOTE_ADDR="10.1.2.3").status_code == 200
    guard.forget("10.1.2.3")


@throttled
@pytest.mark.django_db
def test_the_address_comes_from_the_trusted_proxy_and_the_limit_is_configurable():
    client = Client()
    with override_settings(SCALEOPS_THROTTLE_PROXY_COUNT=1, SCALEOPS_THROTTLE_AUTH_FAILURE_RATE="3/m"):
        first = [
            client.get("/ok/", headers=auth(unknown_key()), HTTP_X_FORWARDED_FOR="10.0.0.7").status_code
            for _ in range(5)
        ]
        other = client.get("/ok/", headers=auth(unknown_key()), HTTP_X_FORWARDED_FOR="10.0.0.8")
    guard.forget("10.0.0.7")
    guard.forget("10.0.0.8")
    assert first == [401, 401, 401, 429, 429]
    assert other.status_code == 401
    with override_settings(SCALEOPS_THROTTLE_AUTH_FAILURE_RATE=None):
        assert {client.get("/ok/", headers=auth(unknown_key())).status_code for _ in range(FAILURES + 5)} == {401}


@throttled
@pytest.mark.django_db
def test_failures_are_limited_in_process_while_redis_is_unreachable(caplog):
    broken = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}}
    client = Client()
    with (
        override_settings(CACHES=broken, SCALEOPS_THROTTLE_AUTH_FAILURE_RATE="4/m"),
        caplog.at_level(logging.WARNING, logger="django_scaleops.ratelimit"),
    ):
        statuses = [client.get("/ok/", headers=auth(unknown_key())).status_code for _ in range(6)]
    limiter.local.clear()
    assert statuses == [401] * 4 + [429] * 2
    assert "degraded" in caplog.text


# ---- the negative cache


@throttled
@pytest.mark.django_db
def test_an_unknown_prefix_is_looked_up_once_then_answered_from_redis_by_every_instance():
    raw = unknown_key()
    client = Client()
    with override_settings(SCALEOPS_THROTTLE_AUTH_FAILURE_RATE=None):
        with CaptureQueriesContext(connection) as first:
            assert client.get("/ok/", headers=auth(raw)).status_code == 401
        key_cache.clear()  # another instance: nothing in its process
        with CaptureQueriesContext(connection) as again:
            assert client.get("/ok/", headers=auth(raw)).status_code == 401
        with override_settings(SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL=0.2):
            raw_short = unknown_key()
            client.get("/ok/", headers=auth(raw_short))
            time.sleep(0.3)
            key_cache.clear()
            with CaptureQueriesContext(connection) as expired:
                assert client.get("/ok/", headers=auth(raw_short)).status_code == 401
    assert len(first) == 1
    assert len(again) == 0
    assert len(expired) == 1


@throttled
@pytest.mark.django_db
def test_a_cold_valid_key_costs_one_query_and_two_redis_calls_then_none():
    _, secret = make_key("Free")
    client = Client()
    before = evalsha_calls()
    with CaptureQueriesContext(connection) as cold:
        assert client.get("/ok/", headers=auth(secret)).status_code == 200
    # the look at the address's failure bucket, the negative cache, the tier's bucket (+ warm-up)
    assert evalsha_calls() - before == 3 + 1
    with CaptureQueriesContext(connection) as warm:
        assert client.get("/ok/", headers=auth(secret)).status_code == 200
    assert (len(cold), len(warm)) == (1, 0)


@throttled
@pytest.mark.django_db
def test_a_key_created_after_its_prefix_was_probed_works_at_once():
    new = generate_key()
    client = Client()
    assert client.get("/ok/", headers=auth(new.key)).status_code == 401  # now cached as unknown
    ApiKey.objects.create(name="late", tier=seeded_tier("Free"), prefix=new.prefix, hashed_key=new.hashed)
    assert client.get("/ok/", headers=auth(new.key)).status_code == 200
    key_cache.clear()  # another instance: the Redis entry was dropped too
    assert not negative.contains(new.prefix)


@pytest.mark.django_db
def test_the_negative_cache_holds_at_most_its_size_and_touches_nothing_else():
    client = redis_connection()
    api_key, _ = make_key("Free")
    limiter.check(key_identity(api_key.pk), api_key.tier.policy(), record_usage=True)
    limiter.mark_revoked(key_identity(api_key.pk), revoked=True, ttl=60)
    before = {k for k in client.scan_iter(match="scaleops:rl:{k*") if b":nk:" not in k}
    namespace = f"scaleops:rl-bound-{time.time_ns()}"  # only this test's shards
    with override_settings(SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE=1024, SCALEOPS_THROTTLE_REDIS_PREFIX=namespace):
        assert (negative.shards(), negative.shard_size()) == (8, 128)
        prefixes = [generate_key().prefix for _ in range(10_000)]
        pipe = client.pipeline(transaction=False)
        for prefix in prefixes:  # what a flood from many addresses would add, in one go
            negative._script(client, negative.ADD)(
                keys=[negative.shard_key(prefix)], args=[prefix, 60_000, negative.shard_size()], client=pipe
            )
        pipe.execute()
        negative.add(prefixes[-1])
        shards = list(client.scan_iter(match=f"{namespace}:nk:*"))
        sizes = [client.zcard(key) for key in shards]
        assert len(shards) <= 8
        assert sum(sizes) <= 1024
        assert max(sizes) == 128
        # Full shards drop the entries that expire soonest: the newest are there.
        assert negative.contains(prefixes[-1])
        # Never over 128, not even for a moment: every shard keeps Redis' compact encoding.
        assert {client.object("encoding", key) for key in shards} == {b"listpack"}
    after = {k for k in client.scan_iter(match="scaleops:rl:{k*") if b":nk:" not in k}
    assert before <= after  # buckets, usage and markers untouched
    assert client.exists(revoked_key(key_identity(api_key.pk)))
    client.delete(*shards)
    limiter.mark_revoked(key_identity(api_key.pk), revoked=False, ttl=60)


@pytest.mark.django_db
def test_negative_cache_can_be_turned_off():
    prefix = generate_key().prefix
    with override_settings(SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE=0):
        negative.add(prefix)
        assert not negative.contains(prefix)


# ---- the in-process key cache


def _resolved(prefix: str) -> ResolvedKey:
    return ResolvedKey(
        id=1, name="x", prefix=prefix, policy=seeded_policy(), hashed="0" * 64, revoked=False, expires_at=None
    )


def seeded_policy() -> Any:
    from django_scaleops.ratelimit.policy import Policy

    return Policy("Standard", 100, 60, 20)


def test_the_key_cache_is_an_lru_that_never_empties_itself():
    with override_settings(SCALEOPS_THROTTLE_KEY_CACHE_SIZE=3):
        for prefix in ("a", "b", "c"):
            key_cache.put(prefix, _resolved(prefix))
        assert isinstance(key_cache.get("a"), ResolvedKey)  # a is now the most recent
        key_cache.put("d", _resolved("d"))
        assert [p for p in "abcd" if isinstance(key_cache.get(p), ResolvedKey)] == ["a", "c", "d"]
        assert len(key_cache.keys) == 3


def test_unknown_prefixes_never_push_a_key_out():
    with override_settings(SCALEOPS_THROTTLE_KEY_CACHE_SIZE=2):
        key_cache.put("real", _resolved("real"))
        for index in range(UNKNOWN_CACHE_SIZE + 500):
            key_cache.put(f"u{index}", None)
        assert isinstance(key_cache.get("real"), ResolvedKey)
        assert len(key_cache.unknown) == UNKNOWN_CACHE_SIZE
        assert key_cache.get(f"u{UNKNOWN_CACHE_SIZE + 499}") is None


@throttled
@pytest.mark.django_db
def test_a_flood_from_many_addresses_leaves_a_warm_key_warm(other_addresses):
    _, secret = make_key("Professional")
    client = Client()
    with override_settings(SCALEOPS_THROTTLE_KEY_CACHE_SIZE=1):  # one real key fills it
        assert client.get("/ok/", headers=auth(secret)).status_code == 200
        statuses = {
            client.get("/ok/", headers=auth(unknown_key()), REMOTE_ADDR=address).status_code
            for address in other_addresses
        }
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/ok/", headers=auth(secret)).status_code == 200
    assert statuses == {401}
    assert len(queries) == 0


# ---- the status endpoint


@throttled
@pytest.mark.django_db
def test_the_status_endpoint_cannot_be_used_to_probe_keys():
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        statuses = [client.get("/rate-limit/status/", headers=auth(unknown_key())).status_code for _ in range(40)]
    assert statuses[:FAILURES] == [401] * FAILURES
    assert set(statuses[FAILURES:]) <= {429, 401}
    assert statuses[FAILURES] == 429
    assert len(queries) <= statuses.count(401)


@throttled
@pytest.mark.django_db
def test_the_status_endpoint_limits_each_key_apart_from_its_quota():
    _, secret = make_key("Free")
    client = Client()
    with override_settings(SCALEOPS_THROTTLE_STATUS_RATE="3/m"):
        answers = [client.get("/rate-limit/status/", headers=auth(secret)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1]["Retry-After"]) >= 1
    assert json.loads(answers[2].content)["remaining"] == 12  # the tier's quota is untouched
    with override_settings(SCALEOPS_THROTTLE_STATUS_RATE=None):
        assert client.get("/rate-limit/status/", headers=auth(secret)).status_code == 200


# ---- invalid tier rows


INVALID_ROWS: dict[str, dict[str, Any]] = {
    "limit 0": {"requests_per_period": 0},
    "period 0": {"period_seconds": 0},
    "unknown failure mode": {"failure_mode": "bogus"},
}


def _invalid_tier(mode: str, values: dict[str, Any], name: str = "") -> tuple[Tier, str]:
    # A new name each time: the limiter logs about a tier once a minute per process.
    name = name or f"broken-{mode}-{time.time_ns()}"
    tier = Tier.objects.create(name=name, requests_per_period=5, period_seconds=60, failure_mode=mode)
    _, secret = ApiKey.create_key(name=f"broken {mode}", tier=tier)
    Tier.objects.filter(pk=tier.pk).update(**values)  # around the admin: no validation, no signal
    key_cache.clear()  # or wait SCALEOPS_THROTTLE_KEY_CACHE_TTL
    return tier, secret


@throttled
@pytest.mark.django_db
@pytest.mark.parametrize("row", list(INVALID_ROWS))
@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_an_invalid_tier_follows_its_failure_mode_and_is_reported(row, mode, caplog):
    tier, secret = _invalid_tier(mode, INVALID_ROWS[row])
    client = Client()
    resolve(secret)  # cache the key: a cold lookup asks Redis for the guard and the negative cache
    before = evalsha_calls()
    with caplog.at_level(logging.WARNING, logger="django_scaleops.ratelimit"):
        responses = [client.get("/ok/", headers=auth(secret)) for _ in range(3)]
        status = client.get("/rate-limit/status/", headers=auth(secret))
        asynchronous = async_to_sync(AsyncClient().get)("/async-ok/", headers=auth(secret))
    statuses = [r.status_code for r in responses]
    effective = "open" if row == "unknown failure mode" else mode
    if effective == "open":
        assert statuses == [200, 200, 200]
        assert "RateLimit" not in responses[0]  # its numbers would be made up
        assert asynchronous.status_code == 200
    elif effective == "closed":
        assert statuses == [503, 503, 503]
        assert responses[0]["Retry-After"].isdigit()
        assert "misconfigured" in json.loads(responses[0].content)["detail"]
        assert asynchronous.status_code == 503
    elif row == "limit 0":
        # The in-process limiter, with the row raised to the smallest valid values: 1 a minute.
        assert statuses == [200, 429, 429]
        assert asynchronous.status_code == 429
    else:
        # Period 0 read as 1 s: 5 a second, in process.
        assert statuses == [200, 200, 200]
        assert asynchronous.status_code == 200
    assert status.status_code == 200
    assert json.loads(status.content)["degraded"] == effective
    # Redis was not asked about the tier (the status endpoint's own bucket is one call).
    assert evalsha_calls() - before == 1 + 1  # + evalsha_calls' own warm-up
    lines = [r.getMessage() for r in caplog.records if "is invalid" in r.getMessage()]
    assert len(lines) == 1  # once per tier and process a minute, not once a request
    assert tier.name in lines[0] and effective in lines[0]
    assert secret not in caplog.text
    counted = metrics.collect()["ratelimit"]
    assert counted.get("invalid_tier", 0) >= 1 and counted.get(f"degraded_{effective}", 0) >= 1
    errors = [m for m in run_checks(databases=["default"]) if m.id == "scaleops.E207"]
    assert len(errors) == 1 and tier.name in errors[0].msg


@throttled
@pytest.mark.django_db
def test_a_negative_burst_is_refused_by_the_database_and_handled_if_it_gets_in():
    tier = seeded_tier("Standard")
    with pytest.raises(IntegrityError), transaction.atomic():
        Tier.objects.filter(pk=tier.pk).update(burst=-1)  # PositiveIntegerField's CHECK constraint
    broken = Tier.objects.create(name="negative burst", requests_per_period=5, failure_mode="closed")
    _, secret = ApiKey.create_key(name="negative burst", tier=broken)
    with connection.cursor() as cursor:  # written around every guard (rolled back with the test)
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND pg_get_constraintdef(oid) LIKE %s",
            [Tier._meta.db_table, "%burst%"],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE {Tier._meta.db_table} DROP CONSTRAINT "{name}"')
        cursor.execute(f"UPDATE {Tier._meta.db_table} SET burst = -1 WHERE id = %s", [broken.pk])
    key_cache.clear()
    response = Client().get("/ok/", headers=auth(secret))
    assert response.status_code == 503
    assert "burst is -1" in next(m.msg for m in run_checks(databases=["default"]) if m.id == "scaleops.E207")


@throttled
@pytest.mark.django_db
def test_path_overrides_do_not_apply_to_an_invalid_tier():
    _, secret = _invalid_tier("open", {"requests_per_period": 0})
    client = Client()
    # /strict/ allows 2 a minute to valid tiers; an invalid open tier is not limited anywhere.
    assert [client.get("/strict/", headers=auth(secret)).status_code for _ in range(4)] == [200] * 4


@throttled
@pytest.mark.django_db
def test_an_invalid_anonymous_tier_follows_its_failure_mode():
    _invalid_tier("closed", {"requests_per_period": 0}, name="broken anonymous")
    with override_settings(SCALEOPS_THROTTLE_ANONYMOUS_TIER="broken anonymous"):
        response = Client().get("/ok/")
    assert response.status_code == 503


@pytest.mark.django_db
def test_django_ratelimit_glue_follows_an_invalid_tiers_failure_mode():
    from django.test import RequestFactory

    from django_scaleops.ratelimit.ratelimit_glue import tier_rate

    _, open_secret = _invalid_tier("open", {"period_seconds": 0})
    _, closed_secret = _invalid_tier("closed", {"period_seconds": 0})
    factory = RequestFactory()
    assert tier_rate("g", factory.get("/", HTTP_AUTHORIZATION=f"Api-Key {open_secret}")) is None
    assert tier_rate("g", factory.get("/", HTTP_AUTHORIZATION=f"Api-Key {closed_secret}")) == "0/1s"


# ---- revocation through QuerySet methods


def _stale_instance(keys: list[tuple[ApiKey, str]]) -> list[ResolvedKey]:
    """Warm this process's cache for ``keys`` and return the entries: another instance's view."""
    client = Client()
    for _, secret in keys:
        assert client.get("/ok/", headers=auth(secret)).status_code == 200
    return [key_cache.get(api_key.prefix) for api_key, _ in keys]


@throttled
@pytest.mark.django_db
def test_queryset_revoke_takes_effect_on_every_instance_at_once():
    keys = [make_key("Standard") for _ in range(3)]
    kept, kept_secret = make_key("Standard")
    stale = _stale_instance(keys)
    ids = [api_key.pk for api_key, _ in keys]
    assert ApiKey.objects.filter(pk__in=ids).revoke() == 3
    assert ApiKey.objects.filter(pk__in=ids).revoke() == 0  # already revoked: untouched
    for entry in stale:  # an instance that has not heard of it: the Redis marker refuses it
        key_cache.put(entry.prefix, entry)
    client = Client()
    for _, secret in keys:
        response = client.get("/ok/", headers=auth(secret))
        assert response.status_code == 401
        assert "revoked" in json.loads(response.content)["detail"]
    assert client.get("/ok/", headers=auth(kept_secret)).status_code == 200
    assert ApiKey.objects.filter(pk__in=ids, revoked_at__isnull=False).count() == 3
    assert kept.pk not in ApiKey.objects.filter(revoked_at__isnull=False).values_list("pk", flat=True)


@throttled
@pytest.mark.django_db
def test_manager_revoke_takes_keys_or_ids_and_revokes_nothing_unnamed():
    (first, first_secret), (second, second_secret) = make_key(), make_key()
    _stale_instance([(first, first_secret), (second, second_secret)])
    assert ApiKey.objects.revoke() == 0
    assert ApiKey.objects.revoke(first, second.pk) == 2
    client = Client()
    assert client.get("/ok/", headers=auth(first_secret)).status_code == 401
    assert client.get("/ok/", headers=auth(second_secret)).status_code == 401


@throttled
@pytest.mark.django_db
def test_your_own_update_then_publish_key_changes_is_as_fast():
    keys = [make_key("Standard") for _ in range(2)]
    stale = _stale_instance(keys)
    ids = [api_key.pk for api_key, _ in keys]
    ApiKey.objects.filter(pk__in=ids).update(revoked_at=timezone.now())
    publish_key_changes(ids)
    for entry in stale:
        key_cache.put(entry.prefix, entry)
    client = Client()
    assert {client.get("/ok/", headers=auth(secret)).status_code for _, secret in keys} == {401}
    # Un-revoking the same way clears the markers; this process reloads the rows at once.
    ApiKey.objects.filter(pk__in=ids).update(revoked_at=None)
    publish_key_changes(ApiKey.objects.filter(pk__in=ids))
    assert {client.get("/ok/", headers=auth(secret)).status_code for _, secret in keys} == {200}
    assert not any(redis_connection().exists(revoked_key(key_identity(pk))) for pk in ids)


# ---- checks


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("SCALEOPS_THROTTLE_AUTH_FAILURE_RATE", "lots", "scaleops.E209"),
        ("SCALEOPS_THROTTLE_STATUS_RATE", "1/fortnight", "scaleops.E209"),
        ("SCALEOPS_THROTTLE_KEY_CACHE_SIZE", 0, "scaleops.E002"),
        ("SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE", -1, "scaleops.E002"),
        ("SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL", 0, "scaleops.E002"),
        ("SCALEOPS_THROTTLE_ROLLUP_LOCK_TTL", 0, "scaleops.E002"),
    ],
)
def test_checks_reject_bad_abuse_settings(name, value, check_id):
    from django_scaleops.checks import check_settings
    from django_scaleops.ratelimit.checks import check_throttle_settings

    with override_settings(**{name: value}):
        found = [(m.id, m.msg) for m in check_throttle_settings() + check_settings()]
    assert [i for i, _ in found] == [check_id]
    assert name in found[0][1]


@throttled
@pytest.mark.django_db
def test_a_bad_failure_rate_at_run_time_means_no_limit_not_a_500():
    client = Client()
    with override_settings(SCALEOPS_THROTTLE_AUTH_FAILURE_RATE="lots"):
        assert {client.get("/ok/", headers=auth(unknown_key())).status_code for _ in range(FAILURES + 2)} == {401}


@pytest.mark.django_db
def test_the_admin_page_of_a_key_on_an_invalid_tier_is_not_a_500(admin_client):
    tier, _ = _invalid_tier("closed", {"requests_per_period": 0})
    api_key = ApiKey.objects.get(tier=tier)
    assert admin_client.get(f"/admin/scaleops/apikey/{api_key.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/scaleops/tier/{tier.pk}/change/").status_code == 200
