"""Settings, URLs and WSGI app of the rate-limit throughput benchmark (served by gunicorn).

``BENCH_RATELIMIT_MODE`` picks the configuration of one server:
``bare`` (plain view), ``ours`` (plain view + ApiKeyThrottleMiddleware), ``ours-noleases`` (the
same with leases off: one Redis call every request), ``ping`` (one Redis PING a request, the
floor of any limiter that asks Redis every request), ``drf-bare`` (DRF APIView, no throttle) and
``drf`` (the same APIView with a SimpleRateThrottle on the same Redis).
"""

from __future__ import annotations

import os
from typing import Any

from example_project.settings import *  # noqa: F403

MODE = os.environ.get("BENCH_RATELIMIT_MODE", "bare")
DEBUG = False
ROOT_URLCONF = "benchmarks.ratelimit_site"
MIDDLEWARE = {
    "ours": ["django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"],
    "ours-noleases": ["django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"],
    # The floor of any limiter that asks Redis once a request: one PING, nothing else.
    "ping": ["benchmarks.ratelimit_site.redis_ping_middleware"],
}.get(MODE, [])
# "ours-noleases": every request asks Redis (the bench key's limit is high enough to lease).
SCALEOPS_THROTTLE_LEASE_MAX = 0 if MODE == "ours-noleases" else 32
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
}
LOGGING = {"version": 1, "disable_existing_loggers": False}

# Below: URLs and the WSGI app (this module is also ROOT_URLCONF).
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import include, path  # noqa: E402


def redis_ping_middleware(get_response: Any) -> Any:
    from django_redis import get_redis_connection

    client = get_redis_connection("default")

    def middleware(request: HttpRequest) -> HttpResponse:
        client.ping()
        response: HttpResponse = get_response(request)
        return response

    return middleware


def ping(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"pong": True})


def _drf_view() -> Any:
    from rest_framework.response import Response
    from rest_framework.throttling import SimpleRateThrottle
    from rest_framework.views import APIView

    class KeyThrottle(SimpleRateThrottle):  # type: ignore[misc]
        # As high as our bench tier: every request is admitted, so we measure the throttle's cost.
        rate = "1000000000/min"

        def get_cache_key(self, request: object, view: object) -> str:
            return f"bench-drf-{request.META.get('HTTP_X_API_KEY', '')[:17]}"  # type: ignore[attr-defined]

    class Ping(APIView):  # type: ignore[misc]
        throttle_classes = [KeyThrottle] if MODE == "drf" else []

        def get(self, request: object) -> Response:
            return Response({"pong": True})

    return Ping.as_view()


# Set up Django first: the chat URLs import models.
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.ratelimit_site"
application = get_wsgi_application()

urlpatterns = [
    path("ping/", _drf_view() if MODE.startswith("drf") else ping),
    # A realistic view: the example API's newest messages of a conversation (database reads).
    path("api/", include("example_project.chat.urls")),
]
