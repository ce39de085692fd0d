"""Django system checks. IDs by area: E0xx/W0xx settings, E1xx router, E2xx throttling,
E3xx cache, E4xx partitions, E5xx PgBouncer, E6xx HTTP, E7xx bulk.

Adding the app to a project breaks nothing: a capability whose server is missing (PostgreSQL,
a django-redis cache) gets a warning naming what to configure, and an error only once the
project switches that capability on (its middleware, manager, model base class or router).
The helpers below tell both apart for each capability's own checks.
"""

from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.db import models

from django_scaleops.conf import PREFIX, Settings


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Flag misspelt ``SCALEOPS_*`` names and values of the wrong type."""
    declared = Settings.declared()
    messages: list[CheckMessage] = []
    for name in sorted(n for n in dir(settings) if n.startswith(PREFIX)):
        setting = declared.get(name)
        if setting is None:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f"Did you mean {close[0]}?" if close else "See docs/settings.md for the settings that exist."
            messages.append(
                Warning(f"{name} is not a django-scaleops setting and is ignored.", hint=hint, id="scaleops.W001")
            )
            continue
        value = getattr(settings, name)
        if not setting.is_valid(value):
            expected = " or ".join(
                t.__name__ for t in (setting.types if isinstance(setting.types, tuple) else (setting.types,))
            )
            messages.append(
                Error(
                    f"{name} must be {expected}, not {type(value).__name__} ({value!r}).",
                    hint=f"{setting.doc} Default: {setting.default!r}.",
                    id="scaleops.E001",
                )
            )
    return messages


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


def models_with_queryset(queryset_class: type[models.QuerySet[Any]]) -> list[type[models.Model]]:
    """Installed models with a manager built on ``queryset_class`` (or a subclass of it)."""
    from django.apps import apps

    def built_on(manager: object) -> bool:
        made_by = getattr(manager, "_queryset_class", None)  # set by Manager.from_queryset()
        return isinstance(made_by, type) and issubclass(made_by, queryset_class)

    return [model for model in apps.get_models() if any(built_on(m) for m in model._meta.managers)]


def write_alias(model: type[models.Model]) -> str:
    from django.db import router

    return router.db_for_write(model) or "default"
