"""System checks for logging and APM settings (IDs scaleops.E01x / W01x).

Types, the sample rate's range, the vendors and the tracing modes are declared in conf and
checked by django_scaleops.checks.check_settings.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from django_scaleops.checks import middleware_paths
from django_scaleops.conf import conf

MIDDLEWARE_PATH = "django_scaleops.logging.middleware.CorrelationIdMiddleware"
SDK_MODULES = {"sentry": ("sentry_sdk", "sentry"), "datadog": ("ddtrace", "datadog")}


def check_observability(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for vendor in conf.SCALEOPS_APM_ENABLED:
        if importlib.util.find_spec(SDK_MODULES[vendor][0]) is None:
            messages.append(
                Warning(
                    f"SCALEOPS_APM_ENABLED names {vendor!r} but {SDK_MODULES[vendor][0]} is not installed.",
                    hint=f"pip install 'django-scaleops[{SDK_MODULES[vendor][1]}]', or remove it.",
                    id="scaleops.W010",
                )
            )
    if "sentry" in conf.SCALEOPS_APM_ENABLED and not conf.SCALEOPS_APM_SENTRY_DSN:
        messages.append(
            Warning(
                "Sentry is enabled but SCALEOPS_APM_SENTRY_DSN is empty, so Sentry stays off.",
                hint="Set SCALEOPS_APM_SENTRY_DSN to your project's DSN.",
                id="scaleops.W011",
            )
        )
    level = conf.SCALEOPS_LOG_REQUEST_LEVEL
    if not isinstance(logging.getLevelName(str(level).upper()), int):
        messages.append(
            Error(
                f"SCALEOPS_LOG_REQUEST_LEVEL {level!r} is not a logging level.",
                hint='Use "DEBUG", "INFO", "WARNING" or "ERROR".',
                id="scaleops.E012",
            )
        )
    for pattern in conf.SCALEOPS_LOG_MASK_EXTRA_PATTERNS:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            messages.append(
                Error(
                    f"SCALEOPS_LOG_MASK_EXTRA_PATTERNS has a pattern that does not compile: {pattern!r} ({exc}).",
                    hint="Each entry is a Python regular expression; the whole match is masked.",
                    id="scaleops.E013",
                )
            )
    for header in conf.SCALEOPS_LOG_REQUEST_ID_HEADERS:
        if not re.fullmatch(r"[A-Za-z0-9-]+", str(header)):
            messages.append(
                Error(
                    f"SCALEOPS_LOG_REQUEST_ID_HEADERS has an invalid header name {header!r}.",
                    hint='Header names such as "X-Request-ID".',
                    id="scaleops.E014",
                )
            )
    tracing = conf.SCALEOPS_APM_REQUEST_TRACING
    middleware = middleware_paths()
    if conf.SCALEOPS_APM_ENABLED and tracing == "sampled" and MIDDLEWARE_PATH not in middleware:
        messages.append(
            Warning(
                "APM is enabled but CorrelationIdMiddleware is not in MIDDLEWARE: no request is traced,"
                " and request errors do not reach Sentry.",
                hint=f"Add {MIDDLEWARE_PATH!r} at the top of MIDDLEWARE.",
                id="scaleops.W013",
            )
        )
    if MIDDLEWARE_PATH in middleware and middleware.index(MIDDLEWARE_PATH) != 0:
        messages.append(
            Warning(
                "CorrelationIdMiddleware is not first in MIDDLEWARE: what runs before it logs without the request ID.",
                hint=f"Move {MIDDLEWARE_PATH!r} to the top of MIDDLEWARE.",
                id="scaleops.W012",
            )
        )
    secret = conf.SCALEOPS_APM_SAMPLING_SECRET
    if secret is not None and len(secret) < 32:
        messages.append(
            Warning(
                "SCALEOPS_APM_SAMPLING_SECRET is shorter than 32 characters: clients could learn which request"
                " IDs are traced.",
                hint="Use secrets.token_urlsafe(32), read from the environment; None derives it from SECRET_KEY.",
                id="scaleops.W014",
            )
        )
    return messages
