"""``/metrics/queries`` (JSON), ``/metrics`` (Prometheus), ``/health/`` and ``/health/live``.

None is public by default: a caller needs a staff session or ``Authorization: Bearer <token>``
matching ``SCALEOPS_MONITOR_TOKEN``. Their own queries are not sampled, and they mark the request
(``request.scaleops_exempt``) so request logging can skip it.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

from django_scaleops.conf import conf
from django_scaleops.monitoring import health, prometheus
from django_scaleops.monitoring.monitor import monitor, unmonitored
from django_scaleops.monitoring.report import current_stats, query_report

View = Callable[[HttpRequest], HttpResponse]


def _authorized(request: HttpRequest) -> bool | None:
    """True when allowed; None when no credentials came (401); False when they do not suffice (403)."""
    token = conf.SCALEOPS_MONITOR_TOKEN
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            return hmac.compare_digest(credentials.strip().encode(), token.encode())
        return False
    user: Any = getattr(request, "user", None)  # absent without AuthenticationMiddleware
    if user is None or not user.is_authenticated:
        return None
    return bool(user.is_active and user.is_staff)


def protected(view: View) -> View:
    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        request.scaleops_exempt = True  # type: ignore[attr-defined]
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse({"error": "method not allowed"}, status=405)
            response["Allow"] = "GET, HEAD"
        else:
            allowed = _authorized(request)
            if allowed is None:
                response = JsonResponse({"error": "authentication required"}, status=401)
                response["WWW-Authenticate"] = 'Bearer realm="scaleops"'
            elif not allowed:
                response = JsonResponse({"error": "forbidden"}, status=403)
            else:
                with unmonitored():
                    response = view(request)
        add_never_cache_headers(response)
        return response

    return wrapper


@protected
def query_metrics(request: HttpRequest) -> HttpResponse:
    return JsonResponse(query_report())


@protected
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    stats, scope = current_stats()
    report = query_report(stats, scope)
    return HttpResponse(prometheus.render(report, stats.aliases), content_type=prometheus.CONTENT_TYPE)


@protected
def liveness(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "alive", "time": time.time()})


@protected
def readiness(request: HttpRequest) -> HttpResponse:
    result = health.readiness()
    local = monitor.snapshot()
    queries, slow = local.window_counts(time.time(), conf.SCALEOPS_MONITOR_HEALTH_WINDOW)
    result["queries"] = {
        "status": health.classify(
            queries,
            slow,
            min_sample=conf.SCALEOPS_MONITOR_HEALTH_MIN_SAMPLE,
            degraded=conf.SCALEOPS_MONITOR_DEGRADED_SHARE,
            unhealthy=conf.SCALEOPS_MONITOR_UNHEALTHY_SHARE,
        ),
        "scope": "process",
        "queries": queries,
        "slow": slow,
    }
    return JsonResponse(result, status=200 if result["ready"] else 503)
