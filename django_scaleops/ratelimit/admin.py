"""Admin for rate-limit tiers and API keys: the secret of a new key is shown once, never stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from django_scaleops.ratelimit.analytics import get_analytics
from django_scaleops.ratelimit.bucket import limiter
from django_scaleops.ratelimit.models import ApiKey, ApiKeyUsage, Tier
from django_scaleops.ratelimit.redis_keys import key_identity

CHART_MINUTES = 60

if TYPE_CHECKING:
    TierAdminBase = admin.ModelAdmin[Tier]
    ApiKeyAdminBase = admin.ModelAdmin[ApiKey]
    ApiKeyUsageAdminBase = admin.ModelAdmin[ApiKeyUsage]
else:  # ModelAdmin is generic only in the stubs
    TierAdminBase = ApiKeyAdminBase = ApiKeyUsageAdminBase = admin.ModelAdmin


@admin.register(Tier)
class TierAdmin(TierAdminBase):
    list_display = ["name", "requests_per_period", "period_seconds", "burst", "failure_mode", "expose_headers"]
    search_fields = ["name"]


@admin.register(ApiKey)
class ApiKeyAdmin(ApiKeyAdminBase):
    list_display = ["name", "masked", "tier", "owner", "status", "created_at", "last_used_at", "expires_at"]
    list_filter = ["tier", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    autocomplete_fields = ["tier"]
    raw_id_fields = ["owner"]
    actions = ["revoke_keys", "reset_buckets"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:  # type: ignore[override]
        if obj is None:
            return ["name", "owner", "tier", "expires_at"]
        return [
            "name",
            "masked",
            "owner",
            "tier",
            "expires_at",
            "status",
            "created_at",
            "last_used_at",
            "revoked_at",
            "live_quota",
            "usage_chart",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        return ["masked", "status", "created_at", "last_used_at", "revoked_at", "live_quota", "usage_chart"]

    @admin.display(description="key")
    def masked(self, obj: ApiKey) -> str:
        return obj.masked

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        if obj.is_revoked:
            return "revoked"
        return "expired" if obj.is_expired else "active"

    @admin.display(description="remaining quota (live)")
    def live_quota(self, obj: ApiKey) -> str:
        policy = obj.tier.policy()
        decision = limiter.check(key_identity(obj.pk), policy, cost=0)
        if decision.degraded:
            return f"unknown: Redis is unreachable ({policy.failure_mode} mode applies)"
        return (
            f"{decision.remaining} of {policy.capacity} "
            f"({policy.limit}/{policy.period}s + burst {policy.burst}); full again in {decision.reset_after:.0f} s"
        )

    @admin.display(description=f"usage, last {CHART_MINUTES} minutes")
    def usage_chart(self, obj: ApiKey) -> str:
        until = datetime.now(tz=UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        points = get_analytics(obj, until - timedelta(minutes=CHART_MINUTES), until)
        if not points:
            return "no requests"
        peak = max(p.allowed + p.limited for p in points) or 1
        bars = format_html_join(
            "",
            '<div title="{} UTC: {} allowed, {} limited" style="display:inline-block;width:6px;margin-right:1px;'
            'vertical-align:bottom"><div style="height:{}px;background:#ba2121"></div>'
            '<div style="height:{}px;background:#417690"></div></div>',
            (
                (
                    p.minute.strftime("%H:%M"),
                    p.allowed,
                    p.limited,
                    round(60 * p.limited / peak),
                    round(60 * p.allowed / peak),
                )
                for p in points
            ),
        )
        total_allowed = sum(p.allowed for p in points)
        total_limited = sum(p.limited for p in points)
        return format_html(
            '<div style="height:62px">{}</div><div>{} allowed, {} limited (blue allowed, red limited)</div>',
            bars,
            total_allowed,
            total_limited,
        )

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            # Kept on the request only, to render once; never in the session, messages or the database.
            request._scaleops_new_secret = obj.assign_new_secret()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        secret = getattr(request, "_scaleops_new_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        response = TemplateResponse(
            request,
            "scaleops/apikey_created.html",
            {
                **self.admin_site.each_context(request),
                "api_key": obj,
                "secret": secret,
                "opts": self.opts,
                "change_url": reverse("admin:scaleops_apikey_change", args=[obj.pk]),
                "changelist_url": reverse("admin:scaleops_apikey_changelist"),
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys (refused at once)")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key.revoke()
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)

    @admin.action(description="Reset the rate-limit bucket of selected keys")
    def reset_buckets(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        try:
            for api_key in queryset:
                limiter.reset(key_identity(api_key.pk))
        except Exception as exc:
            self.message_user(request, f"Could not reach Redis: {type(exc).__name__}.", messages.ERROR)
            return
        self.message_user(request, f"Reset {queryset.count()} bucket(s).", messages.SUCCESS)


@admin.register(ApiKeyUsage)
class ApiKeyUsageAdmin(ApiKeyUsageAdminBase):
    list_display = ["api_key", "minute", "allowed", "limited"]
    list_filter = ["api_key__tier"]
    date_hierarchy = "minute"
    raw_id_fields = ["api_key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
