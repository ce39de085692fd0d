"""Django system checks. IDs by area: E0xx/W0xx settings, E1xx router, E2xx throttling,
E3xx cache, E4xx partitions, E5xx PgBouncer, E6xx HTTP."""

from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

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
