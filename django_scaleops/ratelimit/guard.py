"""Failed authentications per client address, so unknown-key floods cannot reach the database.

Every presented key that fails (malformed, unknown, wrong secret, revoked, expired) spends one
request of the address's own bucket, ``SCALEOPS_THROTTLE_AUTH_FAILURE_RATE`` (default ``20/m``:
20 back to back, then one more every 3 s), in the same Redis script as the tiers. Once the bucket
is empty, the address gets ``429`` with ``Retry-After``:

- before any key lookup, when its key is not in this process's cache (a look at the bucket, which
  spends nothing): no database query, no negative-cache call;
- instead of ``401``, when its key fails from the cache (nothing left to protect but the answer).

A key this process has already verified is never held up by its address's failures. While Redis
is down, the bucket is kept in process (``local`` mode, split by ``SCALEOPS_THROTTLE_LOCAL_INSTANCES``).
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

from django_scaleops.conf import conf
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.decision import Decision, retry_seconds
from django_scaleops.ratelimit.policy import FAIL_LOCAL, Policy, parse_rate
from django_scaleops.ratelimit.redis_keys import bucket_key, ip_identity
from django_scaleops.ratelimit.stats import stats

logger = logging.getLogger("django_scaleops.ratelimit")

SLOT = "authfail"  # the bucket scaleops:rl:{ip:<address>}:b:authfail


class AuthThrottled(Exception):
    """Too many failed authentications from one address: answer 429 with ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed API-key authentications from this address; retry in {retry_after} s.")
        self.retry_after = retry_after


@lru_cache(maxsize=8)
def _policy(rate: str) -> Policy | None:
    try:
        return parse_rate(rate, name="failed authentications", failure_mode=FAIL_LOCAL)
    except ValueError as exc:  # reported by check scaleops.E209; no limit is safer than a 500
        logger.warning("SCALEOPS_THROTTLE_AUTH_FAILURE_RATE is ignored: %s", exc)
        return None


def failure_policy() -> Policy | None:
    rate = conf.SCALEOPS_THROTTLE_AUTH_FAILURE_RATE
    return _policy(rate) if rate else None


def _retry_when_empty(decision: Decision, policy: Policy) -> int:
    """Seconds until an empty bucket has room for one failure again (a look computes no retry)."""
    if decision.degraded is None:
        seconds = decision.reset_after - (policy.capacity - 1) * policy.period / policy.limit
    else:
        seconds = policy.period / policy.limit  # the in-process bucket: at most one drain step
    return max(1, math.ceil(seconds))


def ensure_allowed(address: str) -> None:
    """Raise ``AuthThrottled`` when ``address`` has no failed authentication left (spends nothing)."""
    policy = failure_policy()
    if policy is None:
        return
    decision = limiter.check(ip_identity(address), policy, slot=SLOT, cost=0, counted=False)
    if decision.remaining < 1:
        stats.incr("auth_throttled")
        raise AuthThrottled(_retry_when_empty(decision, policy))


def record_failure(address: str) -> None:
    """Count one failed authentication of ``address``; raise ``AuthThrottled`` when it is one too many."""
    policy = failure_policy()
    if policy is None:
        return
    decision = limiter.check(ip_identity(address), policy, slot=SLOT, counted=False)
    if not decision.allowed:
        stats.incr("auth_throttled")
        raise AuthThrottled(retry_seconds(decision))
    stats.incr("auth_failures")


def forget(address: str) -> None:
    """Empty the failure bucket of ``address`` (tests, or an operator unblocking a client)."""
    identity = ip_identity(address)
    limiter.call(lambda client: client.delete(bucket_key(identity, SLOT)))
    limiter.local.forget(f"{identity}:{SLOT}")
