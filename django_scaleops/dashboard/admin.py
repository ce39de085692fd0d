"""The dashboard's page: the changelist of the unmanaged ``Dashboard`` model.

The admin's own machinery gives it the URL (``/admin/scaleops/dashboard/``), the link on the
admin index, the login redirect and the permission check (staff with ``scaleops.view_dashboard``;
superusers have it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from django_scaleops.dashboard import panels
from django_scaleops.dashboard.models import Dashboard

if TYPE_CHECKING:
    DashboardAdminBase = admin.ModelAdmin[Dashboard]
else:  # ModelAdmin is generic only in the stubs
    DashboardAdminBase = admin.ModelAdmin


@admin.register(Dashboard)
class DashboardAdmin(DashboardAdminBase):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.scaleops_exempt = True  # type: ignore[attr-defined]  # no request log line per refresh
        context = {
            **self.admin_site.each_context(request),
            "title": "Operations dashboard",
            "opts": self.model._meta,
            **panels.build(request.GET.get("range", "1h")),
            **(extra_context or {}),
        }
        response = TemplateResponse(request, "scaleops/dashboard/dashboard.html", context)
        add_never_cache_headers(response)
        return response
