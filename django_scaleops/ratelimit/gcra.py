"""Deprecated: the limiter was split by concern. Import from the modules named below instead."""

from __future__ import annotations

import warnings

from django_scaleops.ratelimit.breaker import CircuitBreaker
from django_scaleops.ratelimit.bucket import LUA, UNIT, Limiter, limiter
from django_scaleops.ratelimit.decision import ALLOWED, LIMITED, REVOKED, Decision, retry_seconds
from django_scaleops.ratelimit.leases import LEASE_SHARE, Lease, Leases, lease_size
from django_scaleops.ratelimit.local import LocalLimiter
from django_scaleops.ratelimit.redis_keys import (
    bucket_key,
    ip_identity,
    key_identity,
    redis_connection,
    revoked_key,
    usage_key,
)
from django_scaleops.ratelimit.stats import Stats, stats

warnings.warn(
    "django_scaleops.ratelimit.gcra is deprecated: import from django_scaleops.ratelimit.bucket (Limiter,"
    " limiter), .decision, .leases, .local, .breaker, .stats or .redis_keys",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "ALLOWED",
    "LEASE_SHARE",
    "LIMITED",
    "LUA",
    "REVOKED",
    "UNIT",
    "CircuitBreaker",
    "Decision",
    "Lease",
    "Leases",
    "Limiter",
    "LocalLimiter",
    "Stats",
    "bucket_key",
    "ip_identity",
    "key_identity",
    "lease_size",
    "limiter",
    "redis_connection",
    "retry_seconds",
    "revoked_key",
    "stats",
    "usage_key",
]
