"""System checks of the bulk operations (IDs E7xx / W7xx)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from django_scaleops.checks import models_with_queryset, postgres_problem, write_alias

# name -> smallest valid value
MINIMUMS = {
    "SCALEOPS_BULK_BATCH_SIZE": 1,
    "SCALEOPS_BULK_CREATE_BATCH_SIZE": 1,
    "SCALEOPS_BULK_MAX_RETRIES": 0,
    "SCALEOPS_BULK_TEMP_TABLE_ROWS": 0,
}


def check_bulk_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Bulk settings must be integers at or above their minimum (types are checked by E001)."""
    messages: list[CheckMessage] = []
    for name, minimum in MINIMUMS.items():
        value = getattr(settings, name, minimum)
        if isinstance(value, int) and not isinstance(value, bool) and value < minimum:
            messages.append(
                Error(
                    f"{name} must be at least {minimum}, not {value!r}.",
                    hint=f"Set {name} to an integer >= {minimum}, or remove it to use the default.",
                    id="scaleops.E701",
                )
            )
    messages += _check_database()
    return messages


def _check_database() -> list[CheckMessage]:
    """COPY, UNNEST and keyset batches are PostgreSQL: a bulk manager elsewhere is an error."""
    from django_scaleops.bulk.queryset import BulkQuerySet

    users = models_with_queryset(BulkQuerySet)
    errors: list[CheckMessage] = []
    for model in users:
        problem = postgres_problem(write_alias(model))
        if problem is not None:
            errors.append(
                Error(
                    f"{model._meta.label} has a bulk manager, whose operations need PostgreSQL, but {problem}.",
                    hint='Use "django.db.backends.postgresql" for that alias, or a plain manager on this model.',
                    obj=model,
                    id="scaleops.E702",
                )
            )
    if users:
        return errors
    problem = postgres_problem("default")
    if problem is None:
        return []
    return [
        Warning(
            f"The bulk operations (batch_create by COPY, batch_update, batch_delete) need PostgreSQL, but {problem}."
            " No model uses a bulk manager yet.",
            hint='Use "django.db.backends.postgresql" before adding BulkManager to a model, or add'
            ' "scaleops.W702" to SILENCED_SYSTEM_CHECKS if you will not use them.',
            id="scaleops.W702",
        )
    ]
