"""What the app does at start-up for the read-replica router: checks and receivers."""

from __future__ import annotations

from django.core.checks import register

from django_scaleops import wrappers
from django_scaleops.replicas import checks, failover, receivers


def ready() -> None:
    register(checks.check_router)
    wrappers.provide("router", failover.wrapper_for, failover.track_writes, failover.retry_elsewhere)
    receivers.connect()
