"""Which vendors our setup started. Plain flags, so checks on the hot path cost one attribute read."""

from __future__ import annotations

sentry_active = False
datadog_active = False
# Our own request tracing (SCALEOPS_APM_REQUEST_TRACING = "sampled") runs for at least one vendor.
request_tracing = False


def any_active() -> bool:
    return sentry_active or datadog_active
