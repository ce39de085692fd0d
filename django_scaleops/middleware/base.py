"""Deprecated path: moved to ``django_scaleops.hybrid``."""

from __future__ import annotations

from django_scaleops.moved import moved

__getattr__ = moved(__name__, "django_scaleops.hybrid")
