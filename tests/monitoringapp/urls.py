from __future__ import annotations

from django.urls import include, path

from tests.monitoringapp import views

urlpatterns = [
    path("ops/", include("django_scaleops.monitoring.urls")),
    path("styles/sync", views.sync_styles),
    path("styles/async", views.async_styles),
    path("n-plus-one", views.n_plus_one),
    path("sized", views.sized),
    path("cached/sized", views.sized),
    path("async/sized", views.async_sized),
    path("async/n-plus-one", views.async_n_plus_one),
    path("streamed", views.streamed),
]
