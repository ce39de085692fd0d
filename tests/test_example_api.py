"""The example messaging API answers JSON, validates input and writes all four tables."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from example_project.chat.models import Conversation, ConversationMessage, Message, MessageRecipient

pytestmark = [pytest.mark.django_db, pytest.mark.installed]


@pytest.fixture
def conversation():
    User = get_user_model()
    alice, bob, carol = (User.objects.create(username=name) for name in ("alice", "bob", "carol"))
    conv = Conversation.objects.create(title="Launch", created_by=alice)
    conv.participants.set([alice, bob, carol])
    return conv


def post_message(client: Client, conv: Conversation, payload: object, content_type: str = "application/json"):
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return client.post(f"/api/conversations/{conv.pk}/messages/", body, content_type=content_type)


def test_create_then_list_and_stats(client: Client, conversation: Conversation):
    sender = conversation.created_by_id
    created = post_message(client, conversation, {"sender": sender, "body": "hello"})
    assert created.status_code == 201
    message_id = created.json()["id"]
    assert Message.objects.filter(pk=message_id, sender_id=sender).exists()
    assert ConversationMessage.objects.filter(conversation=conversation, message_id=message_id).count() == 1
    assert MessageRecipient.objects.filter(message_id=message_id).count() == 2

    listing = client.get(f"/api/conversations/{conversation.pk}/messages/?limit=10")
    assert listing.status_code == 200
    assert listing["Content-Type"] == "application/json"
    assert [m["id"] for m in listing.json()["messages"]] == [message_id]

    detail = client.get(f"/api/conversations/{conversation.pk}/").json()
    assert detail["message_count"] == 1
    assert len(detail["participants"]) == 3
    assert detail["last_message_at"] == created.json()["created_at"]

    stats = client.get(f"/api/messages/{message_id}/delivery/").json()
    assert stats == {"message": message_id, "recipients": 2, "sent": 2, "delivered": 0, "read": 0}


def test_keyset_pagination(client: Client, conversation: Conversation):
    sender = conversation.created_by_id
    ids = [post_message(client, conversation, {"sender": sender, "body": f"m{i}"}).json()["id"] for i in range(5)]
    first = client.get(f"/api/conversations/{conversation.pk}/messages/?limit=3").json()
    assert [m["id"] for m in first["messages"]] == ids[::-1][:3]
    second = client.get(
        f"/api/conversations/{conversation.pk}/messages/", {"limit": 3, "before": first["next_before"]}
    ).json()
    assert [m["id"] for m in second["messages"]] == ids[::-1][3:]
    assert second["next_before"] is None


@pytest.mark.parametrize(
    ("payload", "content_type", "error"),
    [
        ("{not json", "application/json", "not valid JSON"),
        ("[1, 2]", "application/json", "JSON object"),
        ({"sender": "1", "body": "x"}, "application/json", "sender must be"),
        ({"sender": True, "body": "x"}, "application/json", "sender must be"),
        ({"sender": None, "body": "x"}, "application/json", "sender must be"),
        ({"body": "x"}, "application/json", "sender must be"),
        ("sender=1&body=x", "application/x-www-form-urlencoded", "as JSON"),
    ],
)
def test_bad_message_input_is_a_clear_400(client, conversation, payload, content_type, error):
    response = post_message(client, conversation, payload, content_type)
    assert response.status_code == 400
    assert error in response.json()["error"]
    assert not Message.objects.exists()


def test_body_and_sender_rules(client, conversation):
    sender = conversation.created_by_id
    assert "body" in post_message(client, conversation, {"sender": sender, "body": "  "}).json()["error"]
    assert post_message(client, conversation, {"sender": sender, "body": "x" * 10_001}).status_code == 400
    outsider = get_user_model().objects.create(username="mallory")
    refused = post_message(client, conversation, {"sender": outsider.pk, "body": "hi"})
    assert "not a participant" in refused.json()["error"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=abc", "limit=-1", "before=yesterday", "before=2026-13-45T00:00:00"]
)
def test_bad_paging_is_a_clear_400(client, conversation, query):
    response = client.get(f"/api/conversations/{conversation.pk}/messages/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]


def test_missing_objects_are_404(client):
    assert client.get("/api/conversations/999999/").status_code == 404
    assert client.get("/api/messages/999999/delivery/").status_code == 404


def test_seed_demo_data_fills_every_table_and_reports_progress():
    out = StringIO()
    call_command("seed_demo_data", users=5, conversations=3, messages=250, batch_size=100, stdout=out)
    assert Message.objects.count() == 250
    assert ConversationMessage.objects.count() == 250
    recipients = MessageRecipient.objects.count()
    assert recipients >= 250  # every conversation has at least one other participant
    assert all(c.last_message_at is not None for c in Conversation.objects.all() if c.entries.exists())
    output = out.getvalue()
    assert "100% 250/250" in output
    assert "Seeded 250 messages" in output


def test_seed_demo_data_rejects_nonsense():
    with pytest.raises(CommandError, match="--users"):
        call_command("seed_demo_data", users=1, stdout=StringIO())
