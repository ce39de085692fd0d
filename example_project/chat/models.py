"""A messaging service's tables: the shape django-scaleops is built for.

A ``Message`` is written once by its sender; ``ConversationMessage`` places it in a conversation
(a message forwarded to two conversations has two rows); ``MessageRecipient`` tracks delivery
to each recipient. Every table carries ``created_at``: the partitioning key of later releases.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Conversation(models.Model):
    title = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    participants = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="conversations", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["-last_message_at"], name="conversation_recent_idx")]

    def __str__(self) -> str:
        return self.title


class Message(models.Model):
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages_sent")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["sender", "-created_at"], name="message_sender_recent_idx"),
            models.Index(fields=["created_at"], name="message_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Message {self.pk} from {self.sender_id}"


class ConversationMessage(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="entries")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="placements")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "message"], name="conversation_message_unique"),
        ]
        # The hot path: the newest messages of one conversation, paged by created_at.
        indexes = [models.Index(fields=["conversation", "-created_at"], name="convmsg_recent_idx")]

    def __str__(self) -> str:
        return f"Message {self.message_id} in conversation {self.conversation_id}"


class MessageRecipient(models.Model):
    class Status(models.TextChoices):
        SENT = "sent"
        DELIVERED = "delivered"
        READ = "read"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENT)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "recipient"], name="message_recipient_unique"),
        ]
        indexes = [
            # "Unread messages of a user" without scanning read ones.
            models.Index(
                fields=["recipient", "-created_at"],
                name="recipient_unread_idx",
                condition=models.Q(read_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"Message {self.message_id} to {self.recipient_id}: {self.status}"
