"""Helpers for running django-scaleops (and projects using it) against real services."""
