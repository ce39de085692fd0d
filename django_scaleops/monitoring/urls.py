"""Include in the project's URLconf: ``path("ops/", include("django_scaleops.monitoring.urls"))``."""

from __future__ import annotations

from django.urls import path

from django_scaleops.monitoring import views

app_name = "scaleops_monitoring"

urlpatterns = [
    path("metrics/queries", views.query_metrics, name="query-metrics"),
    path("metrics", views.prometheus_metrics, name="prometheus"),
    path("health/", views.readiness, name="health"),
    path("health/live", views.liveness, name="liveness"),
]
