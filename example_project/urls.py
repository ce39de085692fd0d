from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("example_project.chat.urls")),
    path("api/rate-limit/", include("django_scaleops.ratelimit.urls")),
]
