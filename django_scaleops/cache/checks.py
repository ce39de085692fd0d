"""System checks for the cache (IDs scaleops.E3xx)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string

from django_scaleops.conf import conf

REDIS_BACKENDS = ("django_redis.cache.RedisCache",)


def check_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    alias: object = conf.SCALEOPS_CACHE_ALIAS
    backend = settings.CACHES.get(alias, {}).get("BACKEND") if isinstance(alias, str) else None
    if backend is None:
        messages.append(
            Error(
                f"SCALEOPS_CACHE_ALIAS names {alias!r}, which is not in CACHES.",
                hint=f"Use one of {sorted(settings.CACHES)} or add a django-redis cache under that alias.",
                id="scaleops.E301",
            )
        )
    elif backend not in REDIS_BACKENDS:
        messages.append(
            Error(
                f"The cache {alias!r} uses {backend!r}; cached querysets need django-redis (they run Lua).",
                hint='Set its BACKEND to "django_redis.cache.RedisCache".',
                id="scaleops.E302",
            )
        )
    for name in (
        "SCALEOPS_CACHE_DEFAULT_TIMEOUT",
        "SCALEOPS_CACHE_LEASE_TIMEOUT_MS",
        "SCALEOPS_CACHE_LEASE_WAIT_MS",
        "SCALEOPS_CACHE_L1_MAX_ENTRIES",
    ):
        value = getattr(conf, name)
        if isinstance(value, int) and value <= 0:
            messages.append(
                Error(f"{name} must be positive, not {value!r}.", hint="Use a number above 0.", id="scaleops.E303")
            )
    for name in (
        "SCALEOPS_CACHE_STALE_GRACE",
        "SCALEOPS_CACHE_XFETCH_BETA",
        "SCALEOPS_CACHE_L1_TIMEOUT",
        "SCALEOPS_CACHE_RETRY_AFTER",
        "SCALEOPS_CACHE_STATS_FLUSH_SECONDS",
    ):
        value = getattr(conf, name)
        if isinstance(value, int | float) and value < 0:
            messages.append(
                Error(f"{name} must not be negative, not {value!r}.", hint="Use 0 or more.", id="scaleops.E303")
            )
    dependencies: object = conf.SCALEOPS_CACHE_DEPENDENCIES
    if isinstance(dependencies, dict):
        for source, dependents in dependencies.items():
            bad = [
                label
                for label in [source, *(dependents if isinstance(dependents, list | tuple) else [dependents])]
                if not _is_model_label(label)
            ]
            if bad or not isinstance(dependents, list | tuple):
                messages.append(
                    Error(
                        f"SCALEOPS_CACHE_DEPENDENCIES {source!r}: {dependents!r} names no installed model {bad!r}.",
                        hint='Map "app_label.Model" to a list of "app_label.Model" labels.',
                        id="scaleops.E304",
                    )
                )
    fill: object = conf.SCALEOPS_CACHE_FILL_USING
    if isinstance(fill, str) and fill not in settings.DATABASES:
        messages.append(
            Error(
                f"SCALEOPS_CACHE_FILL_USING names {fill!r}, which is not in DATABASES.",
                hint=f"Use one of {sorted(settings.DATABASES)}, or None to let the router decide.",
                id="scaleops.E306",
            )
        )
    hook = conf.SCALEOPS_CACHE_FRESHNESS_HOOK
    if isinstance(hook, str):
        try:
            if not callable(import_string(hook)):
                raise ImportError(f"{hook} is not callable")
        except ImportError as exc:
            messages.append(
                Error(
                    f"SCALEOPS_CACHE_FRESHNESS_HOOK {hook!r} cannot be imported: {exc}",
                    hint="Give the dotted path of a callable(tables, using) -> bool.",
                    id="scaleops.E305",
                )
            )
    return messages


def _is_model_label(label: Any) -> bool:
    if not isinstance(label, str):
        return False
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return False
    return True
