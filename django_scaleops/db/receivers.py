"""Deprecated path: moved to ``django_scaleops.replicas.receivers``."""

from __future__ import annotations

from django_scaleops.moved import moved

__getattr__ = moved(__name__, "django_scaleops.replicas.receivers")
