"""Per-key, per-minute usage: counted inside the limiter's Lua call, rolled up into ApiKeyUsage."""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import router, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce, Greatest

from django_scaleops.conf import conf
from django_scaleops.ratelimit.redis_keys import key_identity, redis_connection, usage_key
from django_scaleops.redis_cluster.client import is_cluster

logger = logging.getLogger("django_scaleops.ratelimit")


@dataclass(frozen=True)
class UsagePoint:
    minute: datetime
    allowed: int
    limited: int


def _minute(epoch_minute: int) -> datetime:
    return datetime.fromtimestamp(epoch_minute * 60, tz=UTC)


def _parse(raw: dict[bytes, bytes]) -> dict[int, list[int]]:
    """``{b"29000000:a": b"3"}`` -> ``{29000000: [allowed, limited]}``."""
    minutes: dict[int, list[int]] = {}
    for field, count in raw.items():
        minute, _, kind = field.decode().partition(":")
        slot = minutes.setdefault(int(minute), [0, 0])
        slot[0 if kind == "a" else 1] += int(count)
    return minutes


def live_usage(api_key_id: int) -> dict[int, list[int]]:
    """Counts still in Redis (not rolled up yet), by epoch minute."""
    raw: dict[bytes, bytes] = redis_connection().hgetall(usage_key(key_identity(api_key_id)))
    return _parse(raw)


@dataclass(frozen=True)
class RollupResult:
    keys: int
    minutes: int
    requests: int
    skipped: bool = False  # another run held the lock: nothing was read or written


class RollupLockLost(RuntimeError):
    """The run's lock expired or was taken over: the batch in flight was rolled back, counts stay in Redis."""


# KEYS: lock. ARGV: token, ttl ms. Extends the lock only while it is still ours.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: usage hash. ARGV: field, count, field, count, ... Takes away exactly what was rolled up
# (a field that grew meanwhile keeps the rest) and removes the fields left at zero.
_SUBTRACT = """
for i = 1, #ARGV, 2 do
  local left = redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1]))
  if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
"""

ROLLUP_BATCH = 200  # keys per transaction (and per lock check and Redis pipeline)


class RollupLock:
    """One rollup at a time across every host: a Redis lock with a random token.

    Taken with ``SET NX PX``; a daemon thread renews it every third of
    ``SCALEOPS_THROTTLE_ROLLUP_LOCK_TTL`` while the run lives, so only a run that died (or hung
    longer than the TTL) loses it. Each batch checks, just before its commit, that the lock is
    still this run's: a run that lost it rolls the batch back instead of committing rows another
    run may be counting too.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.key = f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:rollup:lock"
        self.token = secrets.token_hex(16)
        self.ttl_ms = max(1000, int(conf.SCALEOPS_THROTTLE_ROLLUP_LOCK_TTL) * 1000)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._renewer = threading.Thread(target=self._renew, name="scaleops-rollup-lock", daemon=True)
        self._renewer.start()
        return True

    def held(self) -> bool:
        """Whether the lock is still this run's (and extend it): one Redis round trip."""
        return bool(self._extend(keys=[self.key], args=[self.token, self.ttl_ms], client=self.client))

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.held():
                    return  # lost: the next batch's check sees it and rolls back
            except Exception as exc:  # Redis hiccup: try again next period, the TTL still runs
                logger.warning("could not renew the usage rollup lock: %s", type(exc).__name__)

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self._release(keys=[self.key], args=[self.token], client=self.client)
        except Exception as exc:  # it expires by itself
            logger.warning("could not release the usage rollup lock: %s", type(exc).__name__)


def rollup_usage(*, dry_run: bool = False, now: datetime | None = None) -> RollupResult:
    """Move completed minutes from Redis into ApiKeyUsage and set ``last_used_at``.

    The current minute stays in Redis (it is still counting). Rows are added to, not replaced.
    Counters leave Redis only after the commit of the rows they went into, and only by the
    amounts rolled up (at-least-once: a run that dies between its commit and that removal
    leaves them to be counted again). Runs take a lock (``RollupLock``): a run that finds it held
    skips (``skipped=True``), so overlapping runs never count the same counters twice. Must not
    be called inside a transaction (each batch commits before its counters are removed).
    """
    current = int((now or datetime.now(tz=UTC)).timestamp() // 60)
    client = redis_connection()
    if dry_run:
        return _totals(_completed(client, current))
    lock = RollupLock(client)
    if not lock.acquire():
        logger.info("usage rollup skipped: another run holds the lock")
        return RollupResult(0, 0, 0, skipped=True)
    try:
        # Read under the lock: no other run can be between its read and its removal now.
        pending = _completed(client, current)
        for start in range(0, len(pending), ROLLUP_BATCH):
            _commit_batch(client, lock, pending[start : start + ROLLUP_BATCH])
    finally:
        lock.release()
    return _totals(pending)


def _completed(client: Any, current: int) -> list[tuple[int, dict[int, list[int]]]]:
    """(key id, {minute: [allowed, limited]}) of every key with completed minutes in Redis."""
    from django_scaleops.ratelimit.models import ApiKey

    key_ids = list(ApiKey._base_manager.using(router.db_for_write(ApiKey)).values_list("pk", flat=True))
    pipe = client.pipeline(transaction=False)
    for key_id in key_ids:
        pipe.hgetall(usage_key(key_identity(key_id)))
    pending = []
    for key_id, raw in zip(key_ids, pipe.execute(), strict=True):
        done = {m: c for m, c in _parse(raw).items() if m < current}
        if done:
            pending.append((key_id, done))
    return pending


def _totals(pending: list[tuple[int, dict[int, list[int]]]]) -> RollupResult:
    return RollupResult(
        keys=len(pending),
        minutes=sum(len(done) for _, done in pending),
        requests=sum(a + b for _, done in pending for a, b in done.values()),
    )


def _commit_batch(client: Any, lock: RollupLock, batch: list[tuple[int, dict[int, list[int]]]]) -> None:
    from django_scaleops.ratelimit.models import ApiKey, ApiKeyUsage

    db = router.db_for_write(ApiKeyUsage)
    # durable: leaving the block is a real commit, so the counters are removed only after it.
    with transaction.atomic(using=db, durable=True):
        for key_id, done in batch:
            for minute, (allowed, limited) in done.items():
                row, created = ApiKeyUsage.objects.using(db).get_or_create(
                    api_key_id=key_id, minute=_minute(minute), defaults={"allowed": allowed, "limited": limited}
                )
                if not created:
                    ApiKeyUsage.objects.using(db).filter(pk=row.pk).update(
                        allowed=F("allowed") + allowed, limited=F("limited") + limited
                    )
            used = [m for m, (allowed, _) in done.items() if allowed]
            if used:
                last = _minute(max(used)) + timedelta(seconds=59)
                # Never moves back (a batch retried after a failure may hold older minutes).
                newest = Greatest(Coalesce("last_used_at", Value(last)), Value(last), output_field=DateTimeField())
                ApiKey._base_manager.using(db).filter(pk=key_id).update(last_used_at=newest)
        if not lock.held():
            raise RollupLockLost("the usage rollup lost its lock; this batch was rolled back, its counts stay in Redis")
    subtract = client.register_script(_SUBTRACT)
    # A Redis Cluster pipeline cannot carry scripts (redis-py refuses EVALSHA there): one call a key.
    pipe = client if is_cluster(client) else client.pipeline(transaction=False)
    for key_id, done in batch:
        args: list[int | str] = []
        for minute, (allowed, limited) in done.items():
            for field, count in ((f"{minute}:a", allowed), (f"{minute}:l", limited)):
                if count:
                    args += [field, count]
        subtract(keys=[usage_key(key_identity(key_id))], args=args, client=pipe)
    if pipe is not client:
        pipe.execute()


def get_analytics(api_key: object, since: datetime, until: datetime) -> list[UsagePoint]:
    """Allowed and limited counts per minute for ``api_key`` (an ApiKey or its id), since <= minute < until.

    Merges rolled-up rows with the counts still in Redis, so the last minutes are included.
    """
    from django_scaleops.ratelimit.models import ApiKeyUsage

    key_id = int(getattr(api_key, "pk", api_key))  # type: ignore[call-overload]
    points: dict[datetime, list[int]] = {}
    rows = ApiKeyUsage.objects.filter(api_key_id=key_id, minute__gte=since, minute__lt=until)
    for row in rows:
        points[row.minute] = [row.allowed, row.limited]
    try:
        live = live_usage(key_id)
    except Exception:  # Redis down: the rolled-up history is still worth showing
        live = {}
    for minute, (allowed, limited) in live.items():
        at = _minute(minute)
        if since <= at < until:
            slot = points.setdefault(at, [0, 0])
            slot[0] += allowed
            slot[1] += limited
    return [UsagePoint(minute, a, b) for minute, (a, b) in sorted(points.items())]
