"""Fill the chat tables with realistic demo data: users, conversations, messages, recipients."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from django_scaleops.progress import ProgressBar
from example_project.chat.models import Conversation, ConversationMessage, Message, MessageRecipient

# MessageRecipient rows as tuples, in this order (batch_create's fields=).
RECIPIENT_FIELDS = ["message_id", "recipient_id", "status", "delivered_at", "read_at", "created_at"]
WORDS = [
    "ok",
    "thanks",
    "see",
    "you",
    "tomorrow",
    "meeting",
    "moved",
    "to",
    "three",
    "can",
    "you",
    "send",
    "the",
    "file",
    "lunch?",
    "running",
    "late",
    "call",
    "me",
    "when",
    "free",
    "great",
    "news",
    "shipped",
    "the",
    "release",
    "review",
    "please",
]


class Command(BaseCommand):
    help = "Create demo users, conversations and messages spread over the last --days days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=50)
        parser.add_argument("--conversations", type=int, default=200)
        parser.add_argument("--messages", type=int, default=20_000)
        parser.add_argument("--days", type=int, default=90, help="spread messages over this many days")
        parser.add_argument("--batch-size", type=int, default=2_000)
        parser.add_argument("--seed", type=int, default=42, help="random seed, for repeatable data")
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        users, conversations, messages = options["users"], options["conversations"], options["messages"]
        if users < 2 or conversations < 1 or messages < 0 or options["days"] < 1 or options["batch_size"] < 1:
            raise CommandError(
                "need --users >= 2, --conversations >= 1, --messages >= 0, --days >= 1, --batch-size >= 1"
            )
        rng = random.Random(options["seed"])
        db = options["database"]
        now = timezone.now()
        start = now - timedelta(days=options["days"])
        User = get_user_model()
        if apps.is_installed("django_scaleops"):
            # Partitions for the whole span first, so the history does not pile up in the
            # default partitions (see docs/partitioning.md).
            call_command("ensure_partitions", since=start.isoformat(), database=db, stdout=self.stdout)

        with transaction.atomic(using=db):
            first_new = User.objects.using(db).count()
            people = User.objects.using(db).bulk_create(
                User(username=f"demo{first_new + i}", email=f"demo{first_new + i}@example.com") for i in range(users)
            )
            user_ids = [u.pk for u in people]
            convs = Conversation.objects.using(db).bulk_create(
                Conversation(title=f"Conversation {i}", created_by_id=rng.choice(user_ids), created_at=start)
                for i in range(conversations)
            )
            members: dict[int, list[int]] = {}
            through = Conversation.participants.through
            links = []
            for conv in convs:
                members[conv.pk] = rng.sample(user_ids, k=min(len(user_ids), rng.randint(2, 8)))
                links += [through(conversation_id=conv.pk, user_id=uid) for uid in members[conv.pk]]
            through.objects.using(db).bulk_create(links)
        self.stdout.write(f"{users} users, {conversations} conversations")

        span = (now - start).total_seconds()
        last_at: dict[int, Any] = {}
        with ProgressBar(self.stdout, messages, label="messages") as bar:
            for offset in range(0, messages, options["batch_size"]):
                count = min(options["batch_size"], messages - offset)
                # Sorted times so ids grow with created_at, as in a live service.
                times = sorted(start + timedelta(seconds=rng.random() * span) for _ in range(count))
                placed = [(rng.choice(convs).pk, at) for at in times]
                with transaction.atomic(using=db):
                    # Messages need their keys (the other rows point at them): INSERT ... RETURNING,
                    # which sets each instance's pk.
                    sent = [
                        Message(
                            sender_id=rng.choice(members[conv_id]),
                            body=" ".join(rng.choices(WORDS, k=rng.randint(3, 25))),
                            created_at=at,
                        )
                        for conv_id, at in placed
                    ]
                    Message.objects.using(db).batch_create(sent, returning=True)
                    # The rest as tuples by binary COPY: the fast road.
                    ConversationMessage.objects.using(db).batch_create(
                        ((conv_id, m.pk, at) for m, (conv_id, at) in zip(sent, placed, strict=True)),
                        fields=["conversation_id", "message_id", "created_at"],
                    )
                    MessageRecipient.objects.using(db).batch_create(
                        (
                            row
                            for m, (conv_id, _) in zip(sent, placed, strict=True)
                            for row in self._recipients(rng, m, members[conv_id], now)
                        ),
                        fields=RECIPIENT_FIELDS,
                    )
                for conv_id, at in placed:
                    last_at[conv_id] = max(at, last_at.get(conv_id, at))
                bar.advance(count)

        with transaction.atomic(using=db):
            for conv_id, at in last_at.items():
                Conversation.objects.using(db).filter(pk=conv_id).update(last_message_at=at)
        self.stdout.write(self.style.SUCCESS(f"Seeded {messages} messages in {conversations} conversations."))

    @staticmethod
    def _recipients(rng: random.Random, message: Message, members: list[int], now: Any) -> Iterator[tuple[Any, ...]]:
        """Delivery rows of one message (all members but its sender), as RECIPIENT_FIELDS tuples."""
        for uid in members:
            if uid == message.sender_id:
                continue
            delivered = message.created_at + timedelta(seconds=rng.randint(1, 120))
            read = delivered + timedelta(minutes=rng.randint(1, 600))
            status = MessageRecipient.Status.SENT
            if delivered < now and rng.random() < 0.95:
                status = (
                    MessageRecipient.Status.READ
                    if read < now and rng.random() < 0.8
                    else MessageRecipient.Status.DELIVERED
                )
            yield (
                message.pk,
                uid,
                status,
                delivered if status != MessageRecipient.Status.SENT else None,
                read if status == MessageRecipient.Status.READ else None,
                message.created_at,
            )
