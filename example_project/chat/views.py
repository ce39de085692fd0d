"""The example messaging API: small JSON views over the chat tables.

The tables are partitioned by month on ``created_at``, so every query that can carries a
``created_at`` bound, which lets PostgreSQL skip the other partitions. Lookups by id alone (the
URL gives nothing else) take theirs from the id: ids are time-ordered (``TimeOrderedIdField``), so
``filter(pk=...)`` visits one partition. tests/test_partition_pruning.py checks every query here.

Reads that a busy service repeats and whose data changes rarely come from the Redis cache
(``.cached_get()``, ``@cached_function``), invalidated when their tables change: a conversation by
id, its summary and a message's delivery figures. Message pages are read fresh (they change with
every message).

The read views answer HEAD as GET does (the body left out), so a conditional HEAD with the ETag of
an earlier GET gets 304.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

from django_scaleops.cache import cached_function

from .models import Conversation, ConversationMessage, Message, MessageRecipient

MAX_PAGE = 200
MAX_BODY = 10_000
MAX_SLOW_MS = 1_000


class BadRequest(ValueError):
    pass


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _page_params(request: HttpRequest) -> tuple[int, datetime | None]:
    raw_limit = request.GET.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    raw_before = request.GET.get("before")
    before = None
    if raw_before:
        try:
            before = parse_datetime(raw_before)
        except ValueError:
            before = None
        if before is None:
            raise BadRequest("before must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
        if timezone.is_naive(before):
            before = timezone.make_aware(before, UTC)
    return int(raw_limit), before


@require_safe
def conversation_list(request: HttpRequest) -> HttpResponse:
    # No conversation is created in the future: skips the partitions made ahead of time.
    conversations = Conversation.objects.filter(created_at__lte=timezone.now()).order_by("-last_message_at", "-id")[:50]
    return JsonResponse(
        {
            "conversations": [
                {"id": c.pk, "title": c.title, "last_message_at": _iso(c.last_message_at)} for c in conversations
            ]
        }
    )


def _conversation_or_404(conversation_id: int) -> Conversation:
    try:
        # Row-scoped: only a write to this conversation (or an unattributed one) invalidates it.
        conversation: Conversation = Conversation.objects.cached_get(pk=conversation_id, timeout=300)
    except Conversation.DoesNotExist:
        raise Http404("no such conversation") from None
    return conversation


@cached_function(timeout=60, depends_on=[Conversation, Conversation.participants.through, ConversationMessage])
def conversation_summary(conversation_id: int) -> dict[str, Any] | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return None
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "created_at": _iso(conversation.created_at),
        "last_message_at": _iso(conversation.last_message_at),
        "participants": list(conversation.participants.order_by("id").values_list("id", flat=True)),
        "message_count": conversation.entries.filter(created_at__gte=conversation.created_at).count(),
    }


@require_safe
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    summary = conversation_summary(conversation_id)
    if summary is None:
        raise Http404("no such conversation")
    return JsonResponse(summary)


@csrf_exempt  # an API for programs, not browser forms; API keys arrive with the rate-limit release
@require_http_methods(["GET", "HEAD", "POST"])
def conversation_messages(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = _conversation_or_404(conversation_id)
    try:
        if request.method == "POST":
            return _create_message(request, conversation)
        limit, before = _page_params(request)
    except BadRequest as exc:
        return _error(str(exc))
    # A conversation's messages are never older than the conversation.
    entries = ConversationMessage.objects.filter(conversation=conversation, created_at__gte=conversation.created_at)
    if before is not None:
        entries = entries.filter(created_at__lt=before)
    page = list(entries.order_by("-created_at", "-id")[:limit])
    messages = _messages_of(page)
    return JsonResponse(
        {
            "conversation": conversation.pk,
            "messages": [
                {
                    "id": entry.message_id,
                    "sender": messages[entry.message_id].sender_id,
                    "body": messages[entry.message_id].body,
                    "created_at": _iso(entry.created_at),
                }
                for entry in page
            ],
            "next_before": _iso(page[-1].created_at) if len(page) == limit else None,
        }
    )


def _messages_of(page: list[ConversationMessage]) -> dict[int, Message]:
    """The messages of a page, fetched with the page's created_at range (a placement has its
    message's created_at), rather than by a join on id that would visit every partition."""
    if not page:
        return {}
    stamps = [entry.created_at for entry in page]
    found = Message.objects.filter(
        id__in=[entry.message_id for entry in page], created_at__gte=min(stamps), created_at__lte=max(stamps)
    )
    return {message.pk: message for message in found}


def _create_message(request: HttpRequest, conversation: Conversation) -> HttpResponse:
    payload = _json_body(request)
    sender_id = payload.get("sender")
    body = payload.get("body")
    if not isinstance(sender_id, int) or isinstance(sender_id, bool):
        raise BadRequest("sender must be a user id (integer)")
    if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY:
        raise BadRequest(f"body must be a non-empty string of at most {MAX_BODY} characters")
    participants = set(conversation.participants.values_list("id", flat=True))
    if sender_id not in participants:
        raise BadRequest("sender is not a participant of this conversation")
    now = timezone.now()
    with transaction.atomic():
        message = Message.objects.create(sender_id=sender_id, body=body, created_at=now)
        ConversationMessage.objects.create(conversation=conversation, message=message, created_at=now)
        MessageRecipient.objects.bulk_create(
            MessageRecipient(message=message, recipient_id=user_id, created_at=now)
            for user_id in sorted(participants - {sender_id})
        )
        Conversation.objects.filter(pk=conversation.pk, created_at=conversation.created_at).update(last_message_at=now)
    return JsonResponse(
        {"id": message.pk, "conversation": conversation.pk, "sender": sender_id, "created_at": _iso(now)},
        status=201,
    )


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("send the message as JSON (Content-Type: application/json)")
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


@cached_function(timeout=60, depends_on=[Message, MessageRecipient])
def delivery_stats(message_id: int) -> dict[str, Any] | None:
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return None
    counts = dict(
        MessageRecipient.objects.filter(message=message, created_at=message.created_at)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {
        "message": message.pk,
        "recipients": sum(counts.values()),
        **{status: counts.get(status, 0) for status in MessageRecipient.Status.values},
    }


@require_safe
def message_delivery(request: HttpRequest, message_id: int) -> HttpResponse:
    stats = delivery_stats(message_id)
    if stats is None:
        raise Http404("no such message")
    return JsonResponse(stats)


@require_safe
def slow_query(request: HttpRequest) -> HttpResponse:
    """A deliberately slow query (``pg_sleep``), so the demo shows slow queries and their call site.

    ``?ms=150`` by default: above ``SCALEOPS_MONITOR_SLOW_QUERY_MS`` (100), at most one second.
    """
    raw_ms = request.GET.get("ms", "150")
    if not raw_ms.isdigit() or not 1 <= int(raw_ms) <= MAX_SLOW_MS:
        return _error(f"ms must be a whole number from 1 to {MAX_SLOW_MS}")
    alias = router.db_for_read(Message)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [int(raw_ms) / 1000])
    return JsonResponse({"slept_ms": int(raw_ms), "database": alias})
