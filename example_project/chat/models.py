"""A messaging service's tables: the shape django-scaleops is built for.

A ``Message`` is written once by its sender; ``ConversationMessage`` places it in a conversation
(a message forwarded to two conversations has two rows); ``MessageRecipient`` tracks delivery
to each recipient. All four tables are partitioned by month on ``created_at``
(django-scaleops' ``PartitionedModel``; ``manage.py ensure_partitions`` keeps partitions ahead).

Relations to a partitioned table follow one pattern (docs/partitioning.md): a ``ConversationMessage``
or ``MessageRecipient`` row has the ``created_at`` of its message, so the three message tables are
co-partitioned, and a ``PartitionedForeignKey`` on ``(message_id, created_at)`` is the database's
foreign key (Django's ``ForeignKey`` keeps ``db_constraint=False``: it would point at ``id`` alone).
References to a conversation carry no such key (a conversation is older than its messages), so they
are plain ``db_constraint=False`` references that Django's ``on_delete`` maintains.

Ids are time-ordered (``TimeOrderedIdField``, migration 0002): the database computes each from the
row's ``created_at``, so a lookup by id alone visits one partition.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from django_scaleops.partitioning import PartitionedForeignKey, PartitionedModel, TimeOrderedIdField


class MonthlyPartitions:
    interval = "month"
    premake = 3


class Conversation(PartitionedModel):
    id = TimeOrderedIdField()  # carries created_at: a lookup by id visits one partition
    title = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The link table cannot have a database FK to a partitioned table on id alone.
    participants = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="conversations", blank=True, db_constraint=False
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-last_message_at"], name="conversation_recent_idx")]

    class Partitioning(MonthlyPartitions):
        retention = None  # conversations stay; their messages age out

    def __str__(self) -> str:
        return self.title


class Message(PartitionedModel):
    id = TimeOrderedIdField()  # carries created_at: a lookup by id visits one partition
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages_sent")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["sender", "-created_at"], name="message_sender_recent_idx"),
            models.Index(fields=["created_at"], name="message_created_idx"),
        ]

    class Partitioning(MonthlyPartitions):
        retention = 24

    def __str__(self) -> str:
        return f"Message {self.pk} from {self.sender_id}"


class ConversationMessage(PartitionedModel):
    id = TimeOrderedIdField()  # carries created_at: a lookup by id visits one partition
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="entries", db_constraint=False
    )
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="placements", db_constraint=False)
    created_at = models.DateTimeField()  # the message's: filled from it when left empty

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "message", "created_at"], name="conversation_message_unique"
            ),
            PartitionedForeignKey(
                fields=["message", "created_at"],
                to="chat.Message",
                to_fields=["id", "created_at"],
                name="convmsg_message_fk",
            ),
        ]
        # The hot path: the newest messages of one conversation, paged by created_at.
        indexes = [models.Index(fields=["conversation", "-created_at"], name="convmsg_recent_idx")]

    class Partitioning(MonthlyPartitions):
        retention = 24

    def __str__(self) -> str:
        return f"Message {self.message_id} in conversation {self.conversation_id}"


class MessageRecipient(PartitionedModel):
    class Status(models.TextChoices):
        SENT = "sent"
        DELIVERED = "delivered"
        READ = "read"

    id = TimeOrderedIdField()  # carries created_at: a lookup by id visits one partition
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients", db_constraint=False)
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENT)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()  # the message's: filled from it when left empty

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "recipient", "created_at"], name="message_recipient_unique"),
            PartitionedForeignKey(
                fields=["message", "created_at"],
                to="chat.Message",
                to_fields=["id", "created_at"],
                name="recipient_message_fk",
            ),
        ]
        indexes = [
            # "Unread messages of a user" without scanning read ones.
            models.Index(
                fields=["recipient", "-created_at"],
                name="recipient_unread_idx",
                condition=models.Q(read_at__isnull=True),
            ),
        ]

    class Partitioning(MonthlyPartitions):
        retention = 24

    def __str__(self) -> str:
        return f"Message {self.message_id} to {self.recipient_id}: {self.status}"
