"""Test models for partitioning: created by migrations that use the partitioning operations."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from django_scaleops.partitioning import PartitionedForeignKey, PartitionedModel


class Event(PartitionedModel):
    """Monthly, with a default partition, three months of retention."""

    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["name", "created_at"], name="event_name_idx")]

    class Partitioning:
        interval = "month"
        premake = 3
        retention = 3


class Reading(PartitionedModel):
    """Quarterly, no default partition."""

    value = models.IntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Partitioning:
        interval = "quarter"
        premake = 2
        default_partition = False


class Ticket(PartitionedModel):
    title = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Partitioning:
        interval = "month"
        premake = 1
        retention = 2


class TicketNote(PartitionedModel):
    """Co-partitioned with its ticket: ``created_at`` is the ticket's, and the database enforces it."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, db_constraint=False, related_name="notes")
    text = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            PartitionedForeignKey(
                fields=["ticket", "created_at"],
                to="partitionapp.Ticket",
                to_fields=["id", "created_at"],
                name="ticketnote_ticket_fk",
            )
        ]

    class Partitioning:
        interval = "month"
        premake = 1
        retention = 2


class LegacyLog(models.Model):
    """A plain table the conversion test creates, fills and converts itself."""

    message = models.CharField(max_length=100, db_index=True)
    created_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "partitionapp_legacylog"

    def __str__(self) -> str:
        return self.message
