"""What the app does at start-up for the read-replica router: checks and receivers."""

from __future__ import annotations

from django.core.checks import register

from django_scaleops.db import checks, receivers


def ready() -> None:
    register(checks.check_router)
    receivers.connect()
