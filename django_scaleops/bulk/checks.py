"""System checks of the bulk operations (IDs E7xx / W7xx).

Batch sizes and retries are declared with their minimums in conf and checked by
django_scaleops.checks.check_settings; here, the database the bulk managers write to.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from django_scaleops.checks import models_with_queryset, postgres_problem, write_alias


def check_bulk_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The bulk operations need PostgreSQL where they write (their settings are checked with all others)."""
    return _check_database()


def _check_database() -> list[CheckMessage]:
    """COPY, temporary tables and keyset batches are PostgreSQL: a bulk manager elsewhere is an error."""
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
