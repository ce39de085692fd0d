"""What the app does at start-up for rate limiting: checks, receivers, the metrics source."""

from __future__ import annotations

from django.core.checks import Tags, register

from django_scaleops import metrics
from django_scaleops.ratelimit import checks, prometheus, receivers
from django_scaleops.ratelimit.stats import stats


def ready() -> None:
    register(checks.check_throttle_settings)
    register(checks.check_tiers, Tags.database)
    receivers.connect()
    metrics.register_source("ratelimit", stats.snapshot, families=prometheus.prometheus_families)
