"""One keep/drop decision per request, derived from its request ID, shared by Sentry and Datadog.

The decision is a keyed hash of the request ID (and the path): both vendors, and every service
that sees the same ``X-Request-ID`` and shares the key, keep the same requests. The key is a
server secret (``SCALEOPS_APM_SAMPLING_SECRET``, or one derived from ``SECRET_KEY``), so a client
that picks its own request IDs cannot pick which requests are traced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from django_scaleops.conf import conf
from django_scaleops.context import is_safe_request_id, new_request_id
from django_scaleops.derived_keys import derived_key

# Where the request ID chosen before Django's middleware runs (by the Sentry sampler) is kept, in
# the WSGI environ or the ASGI scope, so the correlation middleware reuses it.
ENVIRON_KEY = "scaleops.request_id"
_SCALE = float(1 << 64)


def sample_rate() -> float:
    rate = conf.SCALEOPS_APM_SAMPLE_RATE
    if rate is None:
        return 1.0 if settings.DEBUG else 0.1
    return float(rate)


def is_excluded(path: str) -> bool:
    return path.startswith(tuple(conf.SCALEOPS_APM_EXCLUDE_PATHS))


def sampling_key() -> bytes:
    """The hash key: from ``SCALEOPS_APM_SAMPLING_SECRET``, else derived from ``SECRET_KEY``."""
    secret = conf.SCALEOPS_APM_SAMPLING_SECRET or str(getattr(settings, "SECRET_KEY", ""))
    # A key of its own, so the decision reveals nothing about SECRET_KEY itself.
    return derived_key(secret, "django-scaleops apm sampling")


def keep(request_id: str, rate: float, key: bytes | None = None) -> bool:
    """True for a stable ``rate`` share of request IDs (a keyed 64-bit hash compared to the rate)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, key=sampling_key() if key is None else key).digest()
    return int.from_bytes(digest, "big") / _SCALE < rate


def should_sample(request_id: str, path: str = "") -> bool:
    """The shared decision: never for excluded paths (health, metrics), else by request ID."""
    if path and is_excluded(path):
        return False
    return keep(request_id, sample_rate())


def header_meta_keys() -> list[str]:
    return ["HTTP_" + name.upper().replace("-", "_") for name in conf.SCALEOPS_LOG_REQUEST_ID_HEADERS]


def request_id_from_meta(meta: Mapping[str, Any]) -> str:
    """The request ID for a WSGI environ / ``request.META``: a chosen one, a safe header, or a new one."""
    chosen = meta.get(ENVIRON_KEY)
    if isinstance(chosen, str):
        return chosen
    for key in header_meta_keys():
        value = meta.get(key)
        if isinstance(value, str) and is_safe_request_id(value):
            return value
    return new_request_id()


def request_id_from_scope(scope: Mapping[str, Any]) -> str:
    """The same for an ASGI scope (headers are raw bytes pairs)."""
    chosen = scope.get(ENVIRON_KEY)
    if isinstance(chosen, str):
        return str(chosen)
    wanted = [name.lower().encode("latin-1") for name in conf.SCALEOPS_LOG_REQUEST_ID_HEADERS]
    headers = dict(scope.get("headers") or ())
    for name in wanted:
        raw = headers.get(name)
        if raw is not None:
            value: str = bytes(raw).decode("latin-1")
            if is_safe_request_id(value):
                return value
    return new_request_id()
