"""System checks of the query monitor (IDs scaleops.E65x / W65x)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from django_scaleops.conf import conf


def check_monitoring(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    degraded, unhealthy = conf.SCALEOPS_MONITOR_DEGRADED_SHARE, conf.SCALEOPS_MONITOR_UNHEALTHY_SHARE
    if not 0 < degraded <= unhealthy < 1:
        messages.append(
            Error(
                f"SCALEOPS_MONITOR_DEGRADED_SHARE ({degraded!r}) and SCALEOPS_MONITOR_UNHEALTHY_SHARE "
                f"({unhealthy!r}) must satisfy 0 < degraded <= unhealthy < 1.",
                hint="The defaults are 0.05 and 0.10 (5% and 10% of queries slow).",
                id="scaleops.E651",
            )
        )
    for name in ("SCALEOPS_SLOW_QUERY_MS", "SCALEOPS_MONITOR_HEALTH_WINDOW", "SCALEOPS_MONITOR_MAX_FINGERPRINTS"):
        value = getattr(conf, name)
        if isinstance(value, int | float) and value <= 0:
            messages.append(Error(f"{name} must be positive, not {value!r}.", id="scaleops.E652"))
    cache = conf.SCALEOPS_MONITOR_REDIS_CACHE
    if conf.SCALEOPS_MONITOR_ENABLED and cache:
        backend = settings.CACHES.get(cache, {}).get("BACKEND", "")
        if not backend.startswith("django_redis."):
            messages.append(
                Warning(
                    f"SCALEOPS_MONITOR_REDIS_CACHE names {cache!r}, which is not a django-redis cache "
                    f"({backend or 'not in CACHES'}): each worker process will report only its own queries.",
                    hint="Name a django_redis.cache.RedisCache alias, or set it to None to keep figures per process.",
                    id="scaleops.W651",
                )
            )
    token = conf.SCALEOPS_MONITOR_TOKEN
    if token is not None and len(token) < 24:
        messages.append(
            Warning(
                "SCALEOPS_MONITOR_TOKEN is shorter than 24 characters; it guards the metrics and health endpoints.",
                hint="Use secrets.token_urlsafe(32) and keep it out of the code (read it from the environment).",
                id="scaleops.W652",
            )
        )
    return messages
