from __future__ import annotations

from django.apps import apps
from django.contrib import admin
from django.urls import include, path

from example_project.chat.pages import home

urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    path("api/", include("example_project.chat.urls")),
    path("api/rate-limit/", include("django_scaleops.ratelimit.urls")),
]

if apps.is_installed("django_scaleops"):
    # /metrics/queries (JSON), /metrics (Prometheus), /health/ (readiness), /health/live
    urlpatterns.append(path("", include("django_scaleops.monitoring.urls")))
