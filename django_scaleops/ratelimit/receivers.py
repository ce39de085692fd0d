"""Keep the in-process key cache and the Redis revocation markers in step with the database.

Saving or deleting a key (the admin, ``ApiKey.revoke()``, ``save()``, ``QuerySet.delete()``) sends
signals that end here. ``QuerySet.update()`` and raw SQL send none: use ``ApiKey.objects.revoke()``
or ``.filter(...).revoke()``, or call ``publish_key_changes(ids)`` after your own update.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import router
from django.db.models.signals import post_delete, post_save

from django_scaleops import signals
from django_scaleops.checks import redis_cache_problem
from django_scaleops.conf import conf
from django_scaleops.ratelimit import negative
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.callers import tier_cache
from django_scaleops.ratelimit.redis_keys import key_identity, redis_connection, revoked_key
from django_scaleops.ratelimit.resolver import key_cache

logger = logging.getLogger("django_scaleops.ratelimit")


def _marker_ttl() -> int:
    # Long enough for every instance's cached copy of the key to expire and reload as revoked.
    return max(60, int(float(conf.SCALEOPS_THROTTLE_KEY_CACHE_TTL) * 4))


def publish(changes: Iterable[tuple[int, str | None, bool]]) -> None:
    """Tell this process and every other instance about changed keys: ``(id, prefix, revoked)`` each.

    Evicts the keys from this process's cache and leases, and in one Redis round trip sets (revoked)
    or clears each key's revocation marker, which the limiter's script checks on every instance,
    and drops the prefixes from the shared negative cache (a key just created is known at once).
    """
    changes = list(changes)
    if not changes:
        return
    for _, prefix, _ in changes:
        if prefix:
            key_cache.evict(prefix)
    limiter.leases.forget_many({key_identity(pk) for pk, _, _ in changes})
    if redis_cache_problem(conf.SCALEOPS_THROTTLE_CACHE_ALIAS) is not None:
        return  # no Redis limiter configured (check scaleops.W203): no other instance to tell
    ttl = _marker_ttl()
    try:
        pipe = redis_connection().pipeline(transaction=False)
        for pk, _, revoked in changes:
            if revoked:
                pipe.set(revoked_key(key_identity(pk)), "1", ex=ttl)
            else:
                pipe.delete(revoked_key(key_identity(pk)))
        negative.forget([prefix for _, prefix, _ in changes if prefix], pipe)
        pipe.execute()
    except Exception as exc:  # Redis down: this instance already refuses; others within the cache TTL
        ids = ", ".join(str(pk) for pk, _, _ in changes[:10])
        logger.warning(
            "could not publish changes of %d key(s) (%s) to Redis: %s", len(changes), ids, type(exc).__name__
        )


def publish_key_changes(keys: Iterable[Any], *, using: str | None = None) -> None:
    """Publish keys changed without signals, e.g. by ``QuerySet.update(revoked_at=...)``.

    ``keys`` are ids or ``ApiKey`` instances; list the ids *before* an update that changes what
    your filter matches. Each key's current row (read from the database for writes, so a lagging
    replica cannot undo a revocation) decides: revoked keys are refused on every instance at
    their next request, un-revoked ones accepted again, and every one is reloaded here. An id
    without a row (deleted) is treated as revoked.
    """
    from django_scaleops.ratelimit.models import ApiKey, _key_ids

    ids = _key_ids(keys)
    if not ids:
        return
    db = using or router.db_for_write(ApiKey)
    rows = {
        pk: (prefix, revoked_at)
        for pk, prefix, revoked_at in ApiKey._base_manager.using(db)
        .filter(pk__in=ids)
        .values_list("pk", "prefix", "revoked_at")
    }
    publish((pk, rows[pk][0], rows[pk][1] is not None) if pk in rows else (pk, None, True) for pk in dict.fromkeys(ids))


def api_key_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    revoked = instance.revoked_at is not None or kwargs.get("signal") is post_delete
    publish([(instance.pk, instance.prefix, revoked)])


def api_keys_changed(sender: Any, changes: Iterable[tuple[int, str | None, bool]] = (), **kwargs: Any) -> None:
    """``signals.api_keys_changed`` (``ApiKey.objects.revoke()``): publish what changed."""
    publish(changes)


def tier_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    key_cache.clear()
    tier_cache.clear()


def connect() -> None:
    from django.core.signals import setting_changed

    from django_scaleops.ratelimit.bucket import limiter
    from django_scaleops.ratelimit.callers import forget_rules
    from django_scaleops.ratelimit.models import ApiKey, Tier

    setting_changed.connect(forget_rules, dispatch_uid="scaleops_throttle_rules")
    setting_changed.connect(limiter.forget_client, dispatch_uid="scaleops_throttle_client")

    signals.api_keys_changed.connect(api_keys_changed, sender=ApiKey, dispatch_uid="scaleops_apikeys_changed")
    post_save.connect(api_key_changed, sender=ApiKey, dispatch_uid="scaleops_apikey_saved")
    post_delete.connect(api_key_changed, sender=ApiKey, dispatch_uid="scaleops_apikey_deleted")
    post_save.connect(tier_changed, sender=Tier, dispatch_uid="scaleops_tier_saved")
    post_delete.connect(tier_changed, sender=Tier, dispatch_uid="scaleops_tier_deleted")
