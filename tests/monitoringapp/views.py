from __future__ import annotations

import json

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from tests.monitoringapp.models import Probe
from tests.monitoringapp.styles import arun_query_styles, run_query_styles, statement_count


def sync_styles(request: HttpRequest) -> HttpResponse:
    with CaptureQueriesContext(connection) as captured:
        run_query_styles()
    return JsonResponse({"captured": statement_count(captured)})


async def async_styles(request: HttpRequest) -> HttpResponse:
    await arun_query_styles()
    return JsonResponse({"ok": True})


def n_plus_one(request: HttpRequest) -> HttpResponse:
    ids = list(Probe.objects.values_list("id", flat=True)[:12])
    names = [Probe.objects.get(pk=pk).name for pk in ids]  # the N+1 the hint is for
    return JsonResponse({"names": names})


def sized(request: HttpRequest) -> HttpResponse:
    """A JSON (or other type) body of exactly ``size`` bytes, optionally with headers."""
    size = int(request.GET.get("size", "2048"))
    content_type = request.GET.get("type", "application/json")
    body = json.dumps({"pad": ""}).encode()
    body = json.dumps({"pad": "x" * (size - len(body))}).encode()
    assert len(body) == size
    response = HttpResponse(body, content_type=content_type)
    if "cc" in request.GET:
        response["Cache-Control"] = request.GET["cc"]
    if "lm" in request.GET:
        response["Last-Modified"] = request.GET["lm"]
    if "cookie" in request.GET:
        response.set_cookie("seen", "1")
    if "vary" in request.GET:
        response["Vary"] = request.GET["vary"]
    return response


async def async_sized(request: HttpRequest) -> HttpResponse:
    return sized(request)


async def async_n_plus_one(request: HttpRequest) -> HttpResponse:
    names = []
    async for pk in Probe.objects.values_list("id", flat=True)[:12]:
        names.append((await Probe.objects.aget(pk=pk)).name)
    return JsonResponse({"names": names})


def streamed(request: HttpRequest) -> StreamingHttpResponse:
    chunks = (json.dumps({"row": i, "pad": "y" * 100}).encode() + b"\n" for i in range(50))
    return StreamingHttpResponse(chunks, content_type="application/x-ndjson+json")
