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
    if conf.SCALEOPS_CACHE_ENABLED:
        problem = redis_cache_problem(alias)
        if problem is not None:
            messages.append(_alias_error(alias, problem))
    else:
        users = cache_users()
        if users:
            messages.append(
                Warning(
                    f"{', '.join(users[:5])}{', ...' if len(users) > 5 else ''} cache their reads, but the cache is"
                    " off (SCALEOPS_CACHE_ENABLED is False): every cached read goes to the database.",
                    hint="Set SCALEOPS_CACHE_ENABLED = True (with a django-redis cache) to use the cache.",
                    id="scaleops.W303",
                )
            )
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


def _alias_error(alias: object, problem: str) -> CheckMessage:
    """The cache is switched on but its alias is missing or not django-redis."""
    missing = not isinstance(alias, str) or alias not in settings.CACHES
    message = f"The cache is on (SCALEOPS_CACHE_ENABLED) but {problem}: cached reads need django-redis (they run Lua)."
    hint = _cache_hint(alias) + " Or set SCALEOPS_CACHE_ENABLED = False."
    if missing:
        return Error(message, hint=hint, id="scaleops.E301")
    return Error(message, hint=hint, id="scaleops.E302")


def cache_users() -> list[str]:
    """What asks for the cache explicitly: models with a cached manager, then decorated functions.

    ``ScaleOpsManager`` does not count: every ``PartitionedModel`` has it, cache or not.
    """
    from django_scaleops.cache.functions import declared_names
    from django_scaleops.cache.querysets import CachedQuerySet

    asking = models_with_queryset(CachedQuerySet, where=lambda queryset: queryset.asks_for_cache)
    return sorted(model._meta.label for model in asking) + sorted(declared_names)


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
