"""The limiter: one Lua script (GCRA as a leaky-bucket meter) per check, one EVALSHA per request.

The bucket stores how full it is (``u``, in millionths of a request) and when that was measured
(``t``, microseconds of the Redis server clock). Storing the level rather than a theoretical
arrival time means a key keeps its used quota when its tier changes: 10 requests on one tier are
10 requests on the next. The bucket drains at ``limit / period`` and holds ``limit + burst``, so
an idle key may send ``limit + burst`` back to back and any window of ``w`` seconds admits at
most ``limit + burst + floor(w * limit / period)``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from redis.commands.core import Script

from django_scaleops.conf import conf
from django_scaleops.ratelimit.policy import FAIL_CLOSED, FAIL_LOCAL, Policy

logger = logging.getLogger("django_scaleops.ratelimit")

UNIT = 1_000_000  # a request, in the bucket's fixed-point unit

# KEYS: bucket hash, usage hash, revocation marker (one hash tag: one Cluster slot).
# ARGV: limit, period seconds, burst, cost (0 = look without consuming), record usage (0/1), usage TTL.
# Returns {status, remaining, retry_after_us, reset_after_us}; status 1 allowed, 0 limited, -1 revoked.
LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1, 0, 0, 0}
end
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[4]) * 1000000
local capacity = (limit + tonumber(ARGV[3])) * 1000000
local state = redis.call('HMGET', KEYS[1], 'u', 't')
local used = tonumber(state[1]) or 0
local last = tonumber(state[2]) or now
if now > last then
  used = used - math.floor((now - last) * limit / period)
  if used < 0 then used = 0 end
end
local status = 1
local retry = 0
if cost > 0 then
  if used + cost <= capacity then
    used = used + cost
    redis.call('HSET', KEYS[1], 'u', string.format('%d', used), 't', string.format('%d', now))
    redis.call('PEXPIRE', KEYS[1], math.ceil(used * period / limit / 1000) + 1000)
  else
    status = 0
    retry = math.ceil((used + cost - capacity) * period / limit)
  end
  if ARGV[5] == '1' then
    local field = string.format('%d', math.floor(now / 60000000)) .. (status == 1 and ':a' or ':l')
    redis.call('HINCRBY', KEYS[2], field, 1)
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
  end
end
return {status, math.floor((capacity - used) / 1000000), retry, math.ceil(used * period / limit)}
"""

ALLOWED, LIMITED, REVOKED = 1, 0, -1


@dataclass(frozen=True)
class Decision:
    """The outcome of one check.

    ``degraded`` names the failure mode used when Redis could not be asked (else None).
    """

    allowed: bool
    policy: Policy
    remaining: int
    retry_after: float
    reset_after: float
    revoked: bool = False
    degraded: str | None = None


class Stats:
    """Per-process counters, published through ``django_scaleops.metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def incr(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.counts)


stats = Stats()


class CircuitBreaker:
    """After a Redis error, skip Redis for a cooldown so a dead server adds no latency per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + float(conf.SCALEOPS_THROTTLE_BREAKER_COOLDOWN)

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0


class LocalLimiter:
    """The same bucket arithmetic in process memory, for tiers in ``local`` mode while Redis is down."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_buckets = max_buckets

    def check(self, identity: str, policy: Policy, cost: int = 1) -> Decision:
        instances = max(1, int(conf.SCALEOPS_THROTTLE_LOCAL_INSTANCES))
        limit = max(1.0, policy.limit / instances)
        capacity = max(1.0, policy.capacity / instances)
        rate = limit / policy.period  # requests drained per second
        now = time.monotonic()
        with self._lock:
            used, last = self._buckets.get(identity, (0.0, now))
            used = max(0.0, used - (now - last) * rate)
            allowed = used + cost <= capacity
            if allowed:
                used += cost
            if len(self._buckets) >= self._max_buckets:
                self._buckets.clear()
            self._buckets[identity] = (used, now)
        retry = 0.0 if allowed else (used + cost - capacity) / rate
        return Decision(
            allowed=allowed,
            policy=policy,
            remaining=int(capacity - used),
            retry_after=retry,
            reset_after=used / rate,
            degraded=FAIL_LOCAL,
        )

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


def bucket_key(identity: str, policy_slot: str = "tier") -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:{{{identity}}}:b:{policy_slot}"


def usage_key(identity: str) -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:{{{identity}}}:u"


def revoked_key(identity: str) -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:{{{identity}}}:r"


def key_identity(api_key_id: int) -> str:
    return f"k{api_key_id}"


def redis_connection() -> Any:
    """The Redis client of the throttle cache: django-redis' own pool, no second one."""
    from django_redis import get_redis_connection

    return get_redis_connection(conf.SCALEOPS_THROTTLE_CACHE)


class Limiter:
    """Checks requests against policies in Redis, degrading per policy when Redis fails."""

    def __init__(self) -> None:
        self.breaker = CircuitBreaker()
        self.local = LocalLimiter()
        self._script: Script | None = None

    def _run(self, keys: list[str], args: list[int | str]) -> list[int]:
        client = redis_connection()
        if self._script is None:
            self._script = client.register_script(LUA)
        # Script.__call__ sends EVALSHA and falls back to loading the script on NOSCRIPT.
        result: list[int] = self._script(keys=keys, args=args, client=client)
        return result

    def check(
        self,
        identity: str,
        policy: Policy,
        *,
        slot: str = "tier",
        cost: int = 1,
        record_usage: bool = False,
    ) -> Decision:
        """Consume ``cost`` requests of ``identity``'s bucket (``cost=0`` only looks). Never raises."""
        if self.breaker.is_open:
            return self._degraded(identity, policy, slot, cost, reason="circuit open")
        keys = [bucket_key(identity, slot), usage_key(identity), revoked_key(identity)]
        args: list[int | str] = [
            policy.limit,
            policy.period,
            policy.burst,
            cost,
            "1" if record_usage else "0",
            int(conf.SCALEOPS_THROTTLE_USAGE_TTL),
        ]
        try:
            status, remaining, retry_us, reset_us = self._run(keys, args)
        except Exception as exc:  # any Redis failure degrades; the limiter never turns it into a 500
            self.breaker.trip()
            return self._degraded(identity, policy, slot, cost, reason=type(exc).__name__)
        decision = Decision(
            allowed=status == ALLOWED,
            policy=policy,
            remaining=max(0, int(remaining)),
            retry_after=retry_us / 1e6,
            reset_after=reset_us / 1e6,
            revoked=status == REVOKED,
        )
        stats.incr("revoked" if decision.revoked else "allowed" if decision.allowed else "limited")
        return decision

    def _degraded(self, identity: str, policy: Policy, slot: str, cost: int, *, reason: str) -> Decision:
        stats.incr(f"degraded_{policy.failure_mode}")
        # The identity is a key id or an IP, never a secret.
        logger.warning(
            "rate limiter degraded (%s): %s mode for %s on policy %s",
            reason,
            policy.failure_mode,
            identity,
            policy.name,
        )
        if policy.failure_mode == FAIL_LOCAL:
            return self.local.check(f"{identity}:{slot}", policy, cost)
        cooldown = float(conf.SCALEOPS_THROTTLE_BREAKER_COOLDOWN)
        closed = policy.failure_mode == FAIL_CLOSED
        return Decision(
            allowed=not closed,
            policy=policy,
            remaining=0 if closed else policy.capacity,
            retry_after=cooldown if closed else 0.0,
            reset_after=0.0,
            degraded=policy.failure_mode,
        )

    def reset(self, identity: str) -> None:
        """Empty every bucket of ``identity`` (the admin's "reset bucket")."""
        client = redis_connection()
        pattern = bucket_key(identity, "*")
        keys = list(client.scan_iter(match=pattern, count=100))
        if keys:
            client.delete(*keys)

    def mark_revoked(self, identity: str, *, revoked: bool, ttl: int) -> None:
        """Set or clear the marker the script checks, so other instances refuse a revoked key at once."""
        client = redis_connection()
        if revoked:
            client.set(revoked_key(identity), "1", ex=ttl)
        else:
            client.delete(revoked_key(identity))


limiter = Limiter()


def retry_seconds(decision: Decision) -> int:
    """Whole seconds for Retry-After: never 0 for a refusal."""
    return max(1, math.ceil(decision.retry_after))
