"""The example's home page: one link to each thing worth a look, with a line on what it shows."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from .models import Conversation, Message


@dataclass(frozen=True)
class Link:
    href: str
    what: str
    label: str = ""  # the href when empty

    @property
    def text(self) -> str:
        return self.label or self.href


def api_links() -> list[Link]:
    """The API's read endpoints, on the newest conversation and message when there are some."""
    links = [Link("/api/conversations/", "the 50 most recently active conversations")]
    conversation = Conversation.objects.order_by("-last_message_at", "-id").only("id").first()
    if conversation is not None:
        base = f"/api/conversations/{conversation.pk}/"
        links += [
            Link(base, "one conversation: participants and message count (a cached read)"),
            Link(f"{base}messages/?limit=5", "its newest messages, keyset-paged (POST here adds one)"),
        ]
    message = Message.objects.order_by("-id").values_list("id", flat=True).first()
    if message is not None:
        links.append(Link(f"/api/messages/{message}/delivery/", "a message's delivery counts (a cached function)"))
    links.append(Link("/api/demo/slow-query/?ms=150", "a deliberately slow query, for the slow-query figures"))
    return links


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    sections = [
        ("The messaging API (JSON)", api_links()),
        (
            "Operations",
            [
                Link(
                    "/admin/scaleops/dashboard/",
                    "the dashboard: queries, replicas, PgBouncer, limits, cache, partitions",
                ),
                Link("/metrics/queries", "query counts, percentiles and slow fingerprints, as JSON"),
                Link("/metrics", "every figure in Prometheus' text format"),
                Link("/health/", "readiness: database, replicas, Redis, PgBouncer, partitions"),
                Link("/api/rate-limit/status/", "an API key's own quota (send it: Authorization: Api-Key ...)"),
            ],
        ),
        (
            "Admin",
            [
                Link("/admin/", "the Django admin (make demo prints a login)"),
                Link("/admin/scaleops/apikey/", "API keys: create one (its secret is shown once), revoke one"),
                Link("/admin/scaleops/tier/", "rate-limit tiers: requests per period, burst, behaviour without Redis"),
            ],
        ),
    ]
    context = {
        "sections": sections,
        "has_data": len(sections[0][1]) > 2,
        "base_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "chat/home.html", context)
