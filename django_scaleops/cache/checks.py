"""System checks for the cache (IDs scaleops.E3xx / W3xx).

Timeouts, leases and sizes are declared with their ranges in conf and checked by
django_scaleops.checks.check_settings; here, the aliases and names the settings point at.
"""

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
        messages.append(_alias_message(alias, problem, cache_users()))
    dependencies: object = conf.SCALEOPS_CACHE_DEPENDENCIES
    if isinstance(dependencies, dict):
        for source, dependents in dependencies.items():
            if not isinstance(dependents, list | tuple):
                messages.append(
                    Error(
                        f"SCALEOPS_CACHE_DEPENDENCIES[{source!r}] is {dependents!r}, not a list of model labels.",
                        hint=f'Map "app_label.Model" to a list: {{{source!r}: [{dependents!r}]}}.',
                        id="scaleops.E307",
                    )
                )
                continue
            bad = [label for label in [source, *dependents] if not _is_model_label(label)]
            if bad:
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


def _alias_message(alias: object, problem: str, users: list[str]) -> CheckMessage:
    """The cache alias is missing or not django-redis: an error once something uses the cache."""
    missing = not isinstance(alias, str) or alias not in settings.CACHES
    hint = _cache_hint(alias)
    unused = " Or set SCALEOPS_CACHE_ENABLED = False if you do not use them."
    used = (
        f"Cached querysets need a django-redis cache (they run Lua), but {problem}; "
        f"used by {', '.join(users[:5])}{', ...' if len(users) > 5 else ''}."
    )
    idle = (
        f"Cached querysets and @cached_function need a django-redis cache, but {problem}. "
        "Nothing uses them yet; until then they would read the database every time."
    )
    if users and missing:
        return Error(used, hint=hint, id="scaleops.E301")
    if users:
        return Error(used, hint=hint, id="scaleops.E302")
    if missing:
        return Warning(idle, hint=hint + unused, id="scaleops.W301")
    return Warning(idle, hint=hint + unused, id="scaleops.W302")


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
