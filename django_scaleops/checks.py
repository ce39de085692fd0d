"""Django system checks. IDs by area: E0xx/W0xx settings, E1xx router, E2xx throttling,
E3xx cache, E4xx partitions, E5xx PgBouncer, E6xx HTTP, E7xx bulk.

Every ID names one problem: ``tests/test_foundation.py`` asserts that each appears at a single
call site. The values of settings, each against its own declaration in ``conf`` (type, range,
choices), are checked here once for all; each capability's checks module keeps what involves
several settings or other Django settings (middleware order, aliases in DATABASES or CACHES).

Adding the app to a project breaks nothing: a capability whose server is missing (PostgreSQL,
a django-redis cache) gets a warning naming what to configure, and an error only once the
project switches that capability on (its middleware, manager, model base class or router).
The helpers below tell both apart for each capability's own checks.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import models

from django_scaleops.conf import PREFIX, Setting, Settings


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Flag misspelt and old ``SCALEOPS_*`` names, and values of the wrong type, out of range or choices."""
    declared = Settings.declared()
    renamed = Settings.renamed()
    messages: list[CheckMessage] = []
    for name in sorted(n for n in dir(settings) if n.startswith(PREFIX)):
        current = renamed.get(name, name)
        setting = declared.get(current)
        if setting is None:
            close = difflib.get_close_matches(name, [*declared, *renamed], n=1)
            hint = (
                f"Did you mean {renamed.get(close[0], close[0])}?"
                if close
                else "See docs/settings.md for the settings that exist."
            )
            messages.append(
                Warning(f"{name} is not a django-scaleops setting and is ignored.", hint=hint, id="scaleops.W001")
            )
            continue
        if current != name:
            if hasattr(settings, current):
                messages.append(
                    Error(
                        f"Both {name} and {current} are set: {name} is the old name of {current} and is ignored.",
                        hint=f"Remove {name} (value {getattr(settings, name)!r}); keep {current}.",
                        id="scaleops.E004",
                    )
                )
                continue
            messages.append(
                Warning(
                    f"{name} has been renamed {current}; the old name still works for now.",
                    hint=f"Rename it to {current} in your settings (docs/settings.md lists every renamed setting).",
                    id="scaleops.W002",
                )
            )
        messages += _value_messages(name, setting, getattr(settings, name))
    return messages


def _value_messages(name: str, setting: Setting[Any], value: Any) -> list[CheckMessage]:
    fault = setting.fault(value)
    if fault is None:
        return []
    # At run time the value reads as the default (conf.Setting.__get__), so say which.
    hint = f"{setting.doc} Default: {setting.default!r}, used until this is fixed."
    if fault.kind == "type":
        return [Error(f"{name} {fault.text}.", hint=hint, id="scaleops.E001")]
    if fault.kind == "range":
        return [Error(f"{name} {fault.text}.", hint=hint, id="scaleops.E002")]
    return [Error(f"{name} {fault.text}.", hint=hint, id="scaleops.E003")]


DJANGO_REDIS_BACKEND_PREFIX = "django_redis."


def redis_cache_problem(alias: object) -> str | None:
    """Why the ``CACHES`` alias cannot hold our Redis data, or None when it is a django-redis cache."""
    caches = getattr(settings, "CACHES", {})
    if not isinstance(alias, str) or alias not in caches:
        return f"the cache alias {alias!r} is not in CACHES"
    backend = str(caches[alias].get("BACKEND", ""))
    if not backend.startswith(DJANGO_REDIS_BACKEND_PREFIX):
        return f"the cache {alias!r} uses {backend!r}, not django-redis"
    return None


def postgres_problem(alias: str) -> str | None:
    """Why the ``DATABASES`` alias is not PostgreSQL, or None when it is."""
    from django.db import connections

    if alias not in connections:
        return f"the database alias {alias!r} is not in DATABASES"
    connection = connections[alias]  # no connection is opened: vendor comes from the backend class
    if connection.vendor != "postgresql":
        return f"DATABASES[{alias!r}] uses {connection.settings_dict.get('ENGINE')!r} ({connection.vendor})"
    return None


def models_with_queryset(
    queryset_class: type[models.QuerySet[Any]], where: Callable[[Any], bool] = lambda queryset: True
) -> list[type[models.Model]]:
    """Installed models with a manager built on ``queryset_class`` (or a subclass of it, ``where`` true)."""
    from django.apps import apps

    def built_on(manager: object) -> bool:
        made_by = getattr(manager, "_queryset_class", None)  # set by Manager.from_queryset()
        return isinstance(made_by, type) and issubclass(made_by, queryset_class) and where(made_by)

    return [model for model in apps.get_models() if any(built_on(m) for m in model._meta.managers)]


def write_alias(model: type[models.Model]) -> str:
    from django.db import router

    return router.db_for_write(model) or "default"


# Dotted paths that moved, old -> new: still accepted (each old module warns once), and reported
# by scaleops.W003 so settings can be updated.
MOVED_PATHS = {
    "django_scaleops.middleware.correlation.CorrelationIdMiddleware": (
        "django_scaleops.logging.middleware.CorrelationIdMiddleware"
    ),
    "django_scaleops.middleware.throttling.ApiKeyThrottleMiddleware": (
        "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"
    ),
    "django_scaleops.middleware.routing.ReplicaRoutingMiddleware": (
        "django_scaleops.replicas.middleware.ReplicaRoutingMiddleware"
    ),
    "django_scaleops.db.router.PrimaryReplicaRouter": "django_scaleops.routers.PrimaryReplicaRouter",
}


def middleware_paths() -> list[str]:
    """``MIDDLEWARE`` with moved paths read as their new ones, for the capabilities' checks."""
    return [MOVED_PATHS.get(path, path) for path in getattr(settings, "MIDDLEWARE", None) or []]


def check_moved_paths(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Settings that name a path of ours that moved."""
    messages: list[CheckMessage] = []
    for name in ("MIDDLEWARE", "DATABASE_ROUTERS"):
        for path in getattr(settings, name, None) or []:
            if isinstance(path, str) and path in MOVED_PATHS:
                messages.append(
                    Warning(
                        f"{name} lists {path!r}, which moved to {MOVED_PATHS[path]!r}.",
                        hint=f"Use {MOVED_PATHS[path]!r}; the old path still works but will be removed.",
                        id="scaleops.W003",
                    )
                )
    return messages
