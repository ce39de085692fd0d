"""Keep the in-process key cache and the Redis revocation markers in step with the database."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_delete, post_save

from django_scaleops.checks import redis_cache_problem
from django_scaleops.conf import conf
from django_scaleops.ratelimit.callers import tier_cache
from django_scaleops.ratelimit.gcra import key_identity, limiter
from django_scaleops.ratelimit.resolver import key_cache

logger = logging.getLogger("django_scaleops.ratelimit")


def _marker_ttl() -> int:
    # Long enough for every instance's cached copy of the key to expire and reload as revoked.
    return max(60, int(float(conf.SCALEOPS_THROTTLE_KEY_CACHE_TTL) * 4))


def api_key_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    key_cache.evict(instance.prefix)
    if redis_cache_problem(conf.SCALEOPS_THROTTLE_CACHE) is not None:
        return  # no Redis limiter configured (check scaleops.W203): no other instance to tell
    revoked = instance.revoked_at is not None or kwargs.get("signal") is post_delete
    try:
        limiter.mark_revoked(key_identity(instance.pk), revoked=revoked, ttl=_marker_ttl())
    except Exception as exc:  # Redis down: this instance already refuses; others within the cache TTL
        logger.warning("could not publish revocation of key %s to Redis: %s", instance.pk, type(exc).__name__)


def tier_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    key_cache.clear()
    tier_cache.clear()


def connect() -> None:
    from django.core.signals import setting_changed

    from django_scaleops.models import ApiKey, Tier
    from django_scaleops.ratelimit.callers import forget_rules
    from django_scaleops.ratelimit.gcra import limiter

    setting_changed.connect(forget_rules, dispatch_uid="scaleops_throttle_rules")
    setting_changed.connect(limiter.forget_client, dispatch_uid="scaleops_throttle_client")

    post_save.connect(api_key_changed, sender=ApiKey, dispatch_uid="scaleops_apikey_saved")
    post_delete.connect(api_key_changed, sender=ApiKey, dispatch_uid="scaleops_apikey_deleted")
    post_save.connect(tier_changed, sender=Tier, dispatch_uid="scaleops_tier_saved")
    post_delete.connect(tier_changed, sender=Tier, dispatch_uid="scaleops_tier_deleted")
