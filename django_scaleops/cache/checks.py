"""System checks for the cache (IDs scaleops.E3xx)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from django_scaleops.checks import models_with_queryset, redis_cache_problem
from django_scaleops.conf import conf


def check_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    alias: object = conf.SCALEOPS_CACHE_ALIAS
    problem = redis_cache_problem(alias) if conf.SCALEOPS_CACHE_ENABLED else None
    if problem is not None:
        users = cache_users()
        missing = isinstance(alias, str) and alias not in settings.CACHES
        if users:
            messages.append(
                Error(
                    f"Cached querysets need a django-redis cache (they run Lua), but {problem}; "
                    f"used by {', '.join(users[:5])}{', ...' if len(users) > 5 else ''}.",
                    hint=_cache_hint(alias),
                    id="scaleops.E301" if missing else "scaleops.E302",
                )
            )
        else:
            messages.append(
                Warning(
                    f"Cached querysets and @cached_function need a django-redis cache, but {problem}. "
                    "Nothing uses them yet; until then they would read the database every time.",
                    hint=_cache_hint(alias) + " Or set SCALEOPS_CACHE_ENABLED = False if you do not use them.",
                    id="scaleops.W301" if missing else "scaleops.W302",
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


def cache_users() -> list[str]:
    """What switches the cache on: models with a cached manager, then decorated functions."""
    from django_scaleops.cache.functions import declared_names
    from django_scaleops.cache.querysets import CachedQuerySet

    return [model._meta.label for model in models_with_queryset(CachedQuerySet)] + sorted(declared_names)


def _cache_hint(alias: object) -> str:
    return (
        f'Set CACHES[{alias!r}]["BACKEND"] to "django_redis.cache.RedisCache" with a Redis 6.2+ LOCATION,'
        " or point SCALEOPS_CACHE_ALIAS at such a cache."
    )


def _is_model_label(label: Any) -> bool:
    if not isinstance(label, str):
        return False
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return False
    return True
