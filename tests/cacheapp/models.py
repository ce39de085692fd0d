"""Test-only models for the cache tests (no migrations: Django creates the tables)."""

from __future__ import annotations

from django.db import models

from django_scaleops.bulk import BulkQuerySet
from django_scaleops.cache import CachedManager, CachedQuerySet


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


class DocQuerySet(BulkQuerySet["Doc"], CachedQuerySet["Doc"]):  # type: ignore[override]
    """Bulk operations and cached reads on one model, as a user combines them."""


class Doc(models.Model):
    """Columns of every kind a cache key must tell apart: JSON, binary, text, numeric, datetime."""

    title = models.CharField(max_length=200, default="")
    meta = models.JSONField(default=dict)
    blob = models.BinaryField(default=b"")
    amount = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    at = models.DateTimeField(null=True)
    author = models.ForeignKey(Author, null=True, on_delete=models.SET_NULL, related_name="docs")

    objects = models.Manager.from_queryset(DocQuerySet)()

    def __str__(self) -> str:
        return self.title


class DocProxy(Doc):
    """Same table, same SQL, another class: must not share entries with Doc."""

    class Meta:
        proxy = True


class Price(models.Model):
    """A decimal primary key: "1.5" and Decimal("1.50") name the same row."""

    code = models.DecimalField(max_digits=8, decimal_places=2, primary_key=True)
    label = models.CharField(max_length=40, default="")

    objects = CachedManager()

    def __str__(self) -> str:
        return self.label
