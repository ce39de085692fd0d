"""ScaleOpsManager: bulk operations, cached reads and partition keys on one manager."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from django_scaleops.bulk import BulkQuerySet
from django_scaleops.cache import CachedQuerySet
from django_scaleops.managers import ScaleOpsManager, ScaleOpsQuerySet
from django_scaleops.partitioning.querysets import PartitionedQuerySet
from example_project.chat.models import Message, MessageRecipient
from tests.cacheapp.helpers import clean_cache  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache")]

SENT = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def partitions():
    call_command("ensure_partitions", since="2026-10-01T00:00:00Z", now="2026-12-01T00:00:00Z", verbosity=0)


def test_partitioned_models_get_the_combined_manager():
    assert isinstance(Message.objects, ScaleOpsManager)
    assert issubclass(ScaleOpsQuerySet, BulkQuerySet)
    assert issubclass(ScaleOpsQuerySet, CachedQuerySet)
    assert issubclass(ScaleOpsQuerySet, PartitionedQuerySet)


def test_batch_create_fills_the_partition_key_from_the_parent_as_bulk_create_does():
    users = get_user_model().objects.bulk_create(get_user_model()(username=f"u{i}") for i in range(3))
    message = Message.objects.create(sender=users[0], body="hi", created_at=SENT)
    # No created_at on the children: they take the message's, lazily, a chunk at a time.
    rows = (MessageRecipient(message=message, recipient=user) for user in users[1:])
    result = MessageRecipient.objects.batch_create(rows)
    assert result.rows_done == 2
    assert set(MessageRecipient.objects.values_list("created_at", flat=True)) == {SENT}
    MessageRecipient.objects.bulk_create([MessageRecipient(message=message, recipient=users[0])])
    assert MessageRecipient.objects.filter(recipient=users[0]).get().created_at == SENT


def test_cached_reads_and_bulk_writes_on_one_manager(django_assert_num_queries):
    sender = get_user_model().objects.create(username="s")
    Message.objects.batch_create([Message(sender=sender, body="one", created_at=SENT)])
    assert [m.body for m in Message.objects.filter(sender=sender).cached(60)] == ["one"]
    with django_assert_num_queries(0):
        Message.objects.filter(sender=sender).cached(60)
    Message.objects.batch_create([Message(sender=sender, body="two", created_at=SENT)])
    assert sorted(m.body for m in Message.objects.filter(sender=sender).cached(60)) == ["one", "two"]
