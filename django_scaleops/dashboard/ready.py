"""What the app does at start-up for the dashboard: the sampling hook and the call-site recorder."""

from __future__ import annotations

from django.core.signals import request_finished

from django_scaleops.dashboard import sampler, sites


def ready() -> None:
    # The receiver returns at once unless SCALEOPS_DASHBOARD_SAMPLE is on (one setting read).
    request_finished.connect(sampler.sample_after_request, dispatch_uid="scaleops-dashboard-sample")
    sites.install()
