"""System checks of the query monitor (IDs scaleops.E65x / W65x).

Each setting's own range (shares between 0 and 1, a positive slow threshold, ...) is declared in
conf and checked by django_scaleops.checks.check_settings; here, what involves several settings.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from django_scaleops.conf import conf


def check_monitoring(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    degraded, unhealthy = conf.SCALEOPS_MONITOR_DEGRADED_SHARE, conf.SCALEOPS_MONITOR_UNHEALTHY_SHARE
    if degraded > unhealthy:
        messages.append(
            Error(
                f"SCALEOPS_MONITOR_DEGRADED_SHARE ({degraded!r}) is above SCALEOPS_MONITOR_UNHEALTHY_SHARE "
                f"({unhealthy!r}): health would turn unhealthy before it is ever degraded.",
                hint="Keep degraded <= unhealthy; the defaults are 0.05 and 0.10 (5% and 10% of queries slow).",
                id="scaleops.E651",
            )
        )
    cache = conf.SCALEOPS_MONITOR_CACHE_ALIAS
    if conf.SCALEOPS_MONITOR_ENABLED and cache:
        backend = settings.CACHES.get(cache, {}).get("BACKEND", "")
        if not backend.startswith("django_redis."):
            messages.append(
                Warning(
                    f"SCALEOPS_MONITOR_CACHE_ALIAS names {cache!r}, which is not a django-redis cache "
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
