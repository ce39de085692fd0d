"""Test-only models for the cache tests (no migrations: Django creates the tables)."""

from __future__ import annotations

from django.db import models

from django_scaleops.cache import CachedManager


class Author(models.Model):
    name = models.CharField(max_length=100)

    objects = CachedManager()

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=200)
    pages = models.IntegerField(default=100)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")

    objects = CachedManager()

    def __str__(self) -> str:
        return self.title


class Probe(models.Model):
    """One row; reading it through ``cacheapp_probe()`` counts database-side evaluations."""

    value = models.IntegerField(default=0)

    objects = CachedManager()

    def __str__(self) -> str:
        return f"probe {self.value}"
