"""Where the limiter keeps its state in Redis: key names (one hash tag per caller) and the client."""

from __future__ import annotations

from typing import Any

from django_scaleops.conf import conf


def bucket_key(identity: str, policy_slot: str = "tier") -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:{{{identity}}}:b:{policy_slot}"


def usage_key(identity: str) -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:{{{identity}}}:u"


def revoked_key(identity: str) -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:{{{identity}}}:r"


def key_identity(api_key_id: int) -> str:
    return f"k{api_key_id}"


def ip_identity(ip: str) -> str:
    return f"ip:{ip}"


def redis_connection() -> Any:
    """The Redis client of the throttle cache: django-redis' own pool, no second one."""
    from django_redis import get_redis_connection

    return get_redis_connection(conf.SCALEOPS_THROTTLE_CACHE_ALIAS)
