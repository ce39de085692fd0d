"""Test models of the bulk operations (tables created by Django, except the partitioned one)."""

from __future__ import annotations

from django.db import models
from django.db.models import Func, Q, Value
from django.utils import timezone

from django_scaleops.bulk import BulkManager


class Item(models.Model):
    sku = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    quantity = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    tags = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BulkManager()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(quantity__gte=0), name="bulkapp_item_quantity_gte_0")]

    def __str__(self) -> str:
        return self.sku


class IsolationProbe(models.Model):
    """Each row records the isolation level of the transaction that inserted it."""

    label = models.CharField(max_length=20)
    isolation = models.TextField(db_default=Func(Value("transaction_isolation"), function="current_setting"))

    objects = BulkManager()

    def __str__(self) -> str:
        return self.label


class Owner(models.Model):
    name = models.CharField(max_length=40)
    active = models.BooleanField(default=True)

    objects = BulkManager()

    def __str__(self) -> str:
        return self.name


class Pet(models.Model):
    owner = models.ForeignKey(Owner, on_delete=models.CASCADE, related_name="pets")
    name = models.CharField(max_length=40)

    objects = BulkManager()

    def __str__(self) -> str:
        return self.name


class Animal(models.Model):
    name = models.CharField(max_length=40)

    objects = BulkManager()

    def __str__(self) -> str:
        return self.name


class Dog(Animal):
    """Multi-table inheritance: rows span two tables."""

    breed = models.CharField(max_length=40)


class Event(models.Model):
    """A table partitioned by range of ``created_at``; created with raw DDL by the tests."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    kind = models.CharField(max_length=20)
    amount = models.IntegerField()

    objects = BulkManager()

    class Meta:
        managed = False
        db_table = "bulkapp_event"

    def __str__(self) -> str:
        return f"{self.kind} {self.pk}"


class Mood(models.Model):
    """A column of a PostgreSQL enum type, which psycopg cannot dump in binary: COPY goes as text."""

    name = models.CharField(max_length=20)
    mood = models.CharField(max_length=10)

    objects = BulkManager()

    class Meta:
        managed = False
        db_table = "bulkapp_mood"

    def __str__(self) -> str:
        return f"{self.name}: {self.mood}"


MOOD_DDL = """
DO $$ BEGIN CREATE TYPE bulkapp_mood_kind AS ENUM ('happy', 'sad'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE IF NOT EXISTS bulkapp_mood (
    id bigserial PRIMARY KEY, name varchar(20) NOT NULL, mood bulkapp_mood_kind NOT NULL
);
"""

PARTITIONED_DDL = """
CREATE TABLE IF NOT EXISTS bulkapp_event (
    id bigserial NOT NULL,
    created_at timestamptz NOT NULL,
    kind varchar(20) NOT NULL,
    amount integer NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE IF NOT EXISTS bulkapp_event_2024 PARTITION OF bulkapp_event
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE IF NOT EXISTS bulkapp_event_2025 PARTITION OF bulkapp_event
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
"""
