"""A ready-made ``LOGGING`` dict: JSON lines in production, readable lines in development."""

from __future__ import annotations

from typing import Any


def build_logging(
    *,
    debug: bool = False,
    json: bool | None = None,
    level: str = "INFO",
    loggers: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``LOGGING`` setting that sends every logger to stdout through our masking formatters.

    Args:
        debug: pass ``DEBUG``; picks readable output when ``json`` is not given.
        json: force JSON (``True``) or readable (``False``) output.
        level: the root level.
        loggers: extra per-logger entries merged over ours (e.g. ``{"django.db.backends": {"level": "DEBUG"}}``).

    Returns:
        A dict for ``LOGGING = build_logging(debug=DEBUG)`` in ``settings.py``.
    """
    use_json = (not debug) if json is None else json
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "django_scaleops.logging.filters.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "django_scaleops.logging.formatter.JsonFormatter"},
            "readable": {"()": "django_scaleops.logging.formatter.ReadableFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json" if use_json else "readable",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's default config gives "django" its own handlers; send it to the root instead.
            "django": {"handlers": [], "level": level, "propagate": True},
            "django.server": {"handlers": [], "level": level, "propagate": True},
            "django_scaleops": {"handlers": [], "level": level, "propagate": True},
        },
    }
    for name, entry in (loggers or {}).items():
        config["loggers"][name] = {**config["loggers"].get(name, {"propagate": True}), **entry}
    return config
