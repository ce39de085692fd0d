from __future__ import annotations

from django.urls import path

from django_scaleops.ratelimit.views import rate_limit_status

app_name = "scaleops_ratelimit"
urlpatterns = [path("status/", rate_limit_status, name="status")]
