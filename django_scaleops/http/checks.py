"""System checks of the HTTP middleware (IDs scaleops.E60x / W60x).

Sizes, ages and the encodings offered are declared in conf and checked by
django_scaleops.checks.check_settings.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from django_scaleops.checks import middleware_paths
from django_scaleops.conf import conf

DJANGO_GZIP = "django.middleware.gzip.GZipMiddleware"
DJANGO_CONDITIONAL = "django.middleware.http.ConditionalGetMiddleware"
OURS_COMPRESSION = "django_scaleops.http.middleware.CompressionMiddleware"
OURS_CONDITIONAL = "django_scaleops.http.middleware.ConditionalGetMiddleware"


def check_http(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    middleware = middleware_paths()
    position = {path: index for index, path in enumerate(middleware)}
    messages: list[CheckMessage] = []
    if OURS_COMPRESSION in position and DJANGO_GZIP in position:
        messages.append(
            Error(
                f"MIDDLEWARE lists both {DJANGO_GZIP} and {OURS_COMPRESSION}: responses would be compressed twice.",
                hint=f"Remove {DJANGO_GZIP}; {OURS_COMPRESSION} does gzip too.",
                id="scaleops.E601",
            )
        )
    if (
        DJANGO_GZIP in position
        and DJANGO_CONDITIONAL in position
        and position[DJANGO_CONDITIONAL] < position[DJANGO_GZIP]
        and OURS_COMPRESSION not in position
    ):
        messages.append(
            Error(
                f"{DJANGO_CONDITIONAL} is listed above {DJANGO_GZIP}, so it hashes the gzip body, which carries "
                "random padding: the ETag changes on every response and 304 never happens.",
                hint=f"Use {OURS_COMPRESSION} and {OURS_CONDITIONAL} (any order), or list GZip above ConditionalGet.",
                id="scaleops.E602",
            )
        )
    if OURS_CONDITIONAL in position and DJANGO_CONDITIONAL in position:
        messages.append(
            Warning(
                f"MIDDLEWARE lists both {DJANGO_CONDITIONAL} and {OURS_CONDITIONAL}.",
                hint=f"Keep only {OURS_CONDITIONAL}: it also answers HEAD requests.",
                id="scaleops.W601",
            )
        )
    bad_paths = [path for path in conf.SCALEOPS_HTTP_CACHE_PATHS if not str(path).startswith("/")]
    if bad_paths:
        messages.append(
            Error(
                f"SCALEOPS_HTTP_CACHE_PATHS entries must be path prefixes starting with '/': {bad_paths!r}.",
                hint='For example ["/api/public/"].',
                id="scaleops.E605",
            )
        )
    return messages
