"""The limiter: one Lua script (GCRA as a leaky-bucket meter), at most one EVALSHA per request.

The bucket stores how full it is (``u``, in millionths of a request) and when that was measured
(``t``, microseconds of the Redis server clock). Storing the level rather than a theoretical
arrival time means a key keeps its used quota when its tier changes: 10 requests on one tier are
10 requests on the next. The bucket drains at ``limit / period`` and holds ``limit + burst``, so
an idle key may send ``limit + burst`` back to back and any window of ``w`` seconds admits at
most ``limit + burst + floor(w * limit / period)``. Large buckets lend a process a few requests
ahead (``Leases``), taken from the bucket first, so the bound holds for leased requests too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.commands.core import Script

from django_scaleops.conf import conf
from django_scaleops.ratelimit.breaker import CircuitBreaker
from django_scaleops.ratelimit.decision import ALLOWED, REVOKED, Decision
from django_scaleops.ratelimit.leases import Lease, Leases, lease_size
from django_scaleops.ratelimit.local import LocalLimiter
from django_scaleops.ratelimit.policy import FAIL_CLOSED, FAIL_LOCAL, Policy
from django_scaleops.ratelimit.redis_keys import bucket_key, redis_connection, revoked_key, usage_key
from django_scaleops.ratelimit.stats import stats

logger = logging.getLogger("django_scaleops.ratelimit")

T = TypeVar("T")

UNIT = 1_000_000  # a request, in the bucket's fixed-point unit

# KEYS: bucket hash, usage hash, revocation marker (one hash tag: one Cluster slot).
# ARGV: limit, period seconds, burst, cost (0 = look without consuming), record usage (0/1), usage TTL,
#       lease (requests to take ahead for this process), refund (unused requests of its last lease),
#       served (requests it admitted from that lease, counted in the usage now).
# Returns {status, remaining, retry_after_us, reset_after_us, leased}; status 1 allowed, 0 limited,
# -1 revoked. A lease is granted only whole and only if the bucket holds it after this request.
LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1, 0, 0, 0, 0}
end
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[4]) * 1000000
local capacity = (limit + tonumber(ARGV[3])) * 1000000
local lease = tonumber(ARGV[7])
local refund = tonumber(ARGV[8]) * 1000000
local state = redis.call('HMGET', KEYS[1], 'u', 't')
local used = tonumber(state[1]) or 0
local last = tonumber(state[2]) or now
if now > last then
  used = used - math.floor((now - last) * limit / period)
end
used = used - refund
if used < 0 then used = 0 end
local status = 1
local retry = 0
local leased = 0
if cost > 0 then
  if used + cost <= capacity then
    if lease > 0 and used + cost + lease * 1000000 <= capacity then
      leased = lease
    end
    used = used + cost + leased * 1000000
  else
    status = 0
    retry = math.ceil((used + cost - capacity) * period / limit)
  end
  if ARGV[5] == '1' then
    local minute = string.format('%d', math.floor(now / 60000000))
    local admitted = tonumber(ARGV[9]) + (status == 1 and 1 or 0)
    if admitted > 0 then redis.call('HINCRBY', KEYS[2], minute .. ':a', admitted) end
    if status == 0 then redis.call('HINCRBY', KEYS[2], minute .. ':l', 1) end
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
  end
end
if (cost > 0 and status == 1) or refund > 0 then
  redis.call('HSET', KEYS[1], 'u', string.format('%d', used), 't', string.format('%d', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(used * period / limit / 1000) + 1000)
end
return {status, math.floor((capacity - used) / 1000000), retry, math.ceil(used * period / limit), leased}
"""

# Seconds between two log lines about the same invalid tier in one process.
INVALID_LOG_INTERVAL = 60.0


class Limiter:
    """Checks requests against policies in Redis, degrading per policy when Redis fails."""

    def __init__(self) -> None:
        self.breaker = CircuitBreaker()
        self.local = LocalLimiter()
        self.leases = Leases()
        self._script: Script | None = None
        self._client: Any = None
        self._invalid_logged: dict[str, float] = {}

    def forget_client(self, **kwargs: Any) -> None:
        """``setting_changed`` receiver: CACHES or the throttle cache alias may have changed."""
        self._client = None

    def client(self) -> Any:
        # django-redis hands out the same client (and pool) every time; asking costs a few µs.
        client = self._client
        if client is None:
            client = self._client = redis_connection()
        return client

    def call(self, operation: Callable[[Any], T]) -> T | None:
        """``operation(client)`` for the limiter's side structures, or None while Redis fails.

        Honours and trips the same circuit breaker as the buckets, so a dead Redis costs these
        calls nothing either; callers treat None as "not known".
        """
        if self.breaker.is_open:
            return None
        try:
            return operation(self.client())
        except Exception:  # any Redis failure: the caller falls back, the breaker spares the next ones
            self.breaker.trip()
            return None

    def _run(self, keys: list[str], args: list[int | str]) -> list[int]:
        client = self.client()
        if self._script is None:
            self._script = client.register_script(LUA)
        # Script.__call__ sends EVALSHA and falls back to loading the script on NOSCRIPT.
        result: list[int] = self._script(keys=keys, args=args, client=client)
        return result

    def leased(self, identity: str, policy: Policy, slot: str = "tier", record_usage: bool = False) -> Decision | None:
        """Admit one request from this process's lease of the bucket, if it holds one (no I/O)."""
        decision = self.leases.take(identity, slot, policy, record_usage)
        if decision is not None:
            stats.incr("allowed_from_lease", tier=policy.name)
        return decision

    def check(
        self,
        identity: str,
        policy: Policy,
        *,
        slot: str = "tier",
        cost: int = 1,
        record_usage: bool = False,
        counted: bool = True,
    ) -> Decision:
        """Consume ``cost`` requests of ``identity``'s bucket (``cost=0`` only looks). Never raises.

        For buckets of at least ``LEASE_SHARE`` requests, a check may take up to
        ``SCALEOPS_THROTTLE_LEASE_MAX`` more ahead, which later checks here admit without Redis.
        A policy flagged ``invalid`` (a broken tier row) is never sent to Redis: its failure mode
        decides. ``counted=False`` leaves the allowed/limited metrics alone (internal buckets).
        """
        if policy.invalid is not None:
            return self._invalid(identity, policy, slot, cost)
        if cost == 1:
            leased = self.leased(identity, policy, slot, record_usage)
            if leased is not None:
                return leased
        if self.breaker.is_open:
            return self._degraded(identity, policy, slot, cost, reason="circuit open")
        refund, served = self.leases.settle(identity, slot) if cost > 0 else (0, 0)
        ahead = lease_size(policy) if cost == 1 else 0
        keys = [bucket_key(identity, slot), usage_key(identity), revoked_key(identity)]
        args: list[int | str] = [
            policy.limit,
            policy.period,
            policy.burst,
            cost,
            "1" if record_usage else "0",
            int(conf.SCALEOPS_THROTTLE_USAGE_TTL),
            ahead,
            refund,
            served if record_usage else 0,
        ]
        try:
            status, remaining, retry_us, reset_us, granted = self._run(keys, args)
        except Exception as exc:  # any Redis failure degrades; the limiter never turns it into a 500
            self.breaker.trip()
            return self._degraded(identity, policy, slot, cost, reason=type(exc).__name__)
        if granted > 0:
            expires = time.monotonic() + float(conf.SCALEOPS_THROTTLE_LEASE_SECONDS)
            lease = Lease(policy, int(granted), 0, expires, max(0, int(remaining)), reset_us / 1e6, record_usage)
            self.leases.hold(identity, slot, lease)
        decision = Decision(
            allowed=status == ALLOWED,
            policy=policy,
            remaining=max(0, int(remaining)) + int(granted),
            retry_after=retry_us / 1e6,
            reset_after=reset_us / 1e6,
            revoked=status == REVOKED,
        )
        if counted:
            stats.incr(
                "revoked" if decision.revoked else "allowed" if decision.allowed else "limited", tier=policy.name
            )
        return decision

    def _degraded(self, identity: str, policy: Policy, slot: str, cost: int, *, reason: str) -> Decision:
        stats.incr(f"degraded_{policy.failure_mode}", tier=policy.name)
        # The identity is a key id or an IP, never a secret.
        logger.warning(
            "rate limiter degraded (%s): %s mode for %s on policy %s",
            reason,
            policy.failure_mode,
            identity,
            policy.name,
        )
        return self._fallback(identity, policy, slot, cost)

    def _invalid(self, identity: str, policy: Policy, slot: str, cost: int) -> Decision:
        """A broken tier row (see ``Tier.problem``): its failure mode decides, Redis is not asked."""
        stats.incr("invalid_tier", tier=policy.name)
        stats.incr(f"degraded_{policy.failure_mode}", tier=policy.name)
        now = time.monotonic()
        # One line per tier and process every INVALID_LOG_INTERVAL, not one per request.
        if now >= self._invalid_logged.get(policy.name, 0.0):
            self._invalid_logged[policy.name] = now + INVALID_LOG_INTERVAL
            logger.warning(
                "tier %r is invalid (%s): its requests follow its failure mode %r (e.g. %s), see check scaleops.E207",
                policy.name,
                policy.invalid,
                policy.failure_mode,
                identity,
            )
        return self._fallback(identity, policy, slot, cost)

    def _fallback(self, identity: str, policy: Policy, slot: str, cost: int) -> Decision:
        """The decision of ``policy``'s failure mode, without Redis."""
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
        self.leases.forget(identity)
        client = redis_connection()
        pattern = bucket_key(identity, "*")
        keys = list(client.scan_iter(match=pattern, count=100))
        if keys:
            client.delete(*keys)

    def mark_revoked(self, identity: str, *, revoked: bool, ttl: int) -> None:
        """Set or clear the marker the script checks, so other instances refuse a revoked key at once.

        Other instances refuse it at their next Redis call for it: at once, or within
        ``SCALEOPS_THROTTLE_LEASE_SECONDS`` for a key whose requests they have leased.
        """
        self.leases.forget(identity)
        client = redis_connection()
        if revoked:
            client.set(revoked_key(identity), "1", ex=ttl)
        else:
            client.delete(revoked_key(identity))


limiter = Limiter()
