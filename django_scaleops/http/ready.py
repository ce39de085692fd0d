"""What the app does at start-up for compression and conditional GET: the middleware-order checks."""

from __future__ import annotations

from django.core.checks import register

from django_scaleops.http.checks import check_http


def ready() -> None:
    register(check_http)
