"""System checks of the bulk settings (IDs E7xx)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error

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
    return messages
