"""Managers and querysets of django-scaleops, importable from one place."""

from __future__ import annotations

from django_scaleops.bulk import BulkManager, BulkQuerySet

__all__ = ["BulkManager", "BulkQuerySet"]
