"""Compression + ETag latency for a 10 KB JSON body, ours vs Django's GZip + ConditionalGet,
and response sizes before/after for the example API.

1. Each round runs the response through the middleware pair directly (no server, no database)
   ``ROUNDS_CALLS`` times and reports the p50 in µs: ``CompressionMiddleware`` +
   ``ConditionalGetMiddleware`` (ours) vs ``GZipMiddleware`` + ``ConditionalGetMiddleware``
   (Django's, in Django's recommended order). Both produce a gzip body and an ETag.
2. The example API's GET endpoints through the example project's full middleware stack, with and
   without ``Accept-Encoding: gzip, br``: bytes on the wire, before and after.

Run with ``make bench`` (or under ``python -m django_scaleops.testing.services run --``). About a minute.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ["EXAMPLE_SCALEOPS"] = "1"

from benchmarks.harness import own_database

own_database("http")

import django  # noqa: E402

django.setup()

from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.middleware.gzip import GZipMiddleware  # noqa: E402
from django.middleware.http import ConditionalGetMiddleware as DjangoConditionalGet  # noqa: E402
from django.test import Client, RequestFactory  # noqa: E402

from benchmarks.harness import compare, sized  # noqa: E402
from django_scaleops.http.middleware import CompressionMiddleware, ConditionalGetMiddleware  # noqa: E402

CALLS_PER_ROUND = sized(1_000, 20)
BODY = json.dumps(
    {
        "messages": [
            {"id": i, "sender": i % 7, "body": f"message number {i} in the thread", "read": i % 2 == 0}
            for i in range(150)
        ]
    }
).encode()[:10_240]


def view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="application/json")


REQUEST = RequestFactory().get("/api/things/", HTTP_ACCEPT_ENCODING="gzip, deflate")
OURS = CompressionMiddleware(ConditionalGetMiddleware(view))
DJANGO = GZipMiddleware(DjangoConditionalGet(view))


def p50_us(chain: object) -> float:
    timings = []
    for _ in range(CALLS_PER_ROUND):
        started = time.perf_counter()
        response = chain(REQUEST)  # type: ignore[operator]
        timings.append(time.perf_counter() - started)
    assert response["Content-Encoding"] == "gzip" and response.has_header("ETag")
    return statistics.median(timings) * 1e6


def example_api_sizes() -> None:
    from benchmarks.bench_example_api import prepare
    from example_project.chat.models import Conversation, Message

    prepare()
    conversation = Conversation.objects.order_by("id").values_list("id", flat=True).first()
    message = Message.objects.order_by("id").values_list("id", flat=True).first()
    client = Client()
    paths = [
        "/api/conversations/",
        f"/api/conversations/{conversation}/",
        f"/api/conversations/{conversation}/messages/?limit=50",
        f"/api/conversations/{conversation}/messages/?limit=200",
        f"/api/messages/{message}/delivery/",
    ]
    print("\nExample API response sizes (bytes on the wire), without and with Accept-Encoding")
    print(f"  {'path':<48} {'identity':>9} {'gzip':>9} {'br':>9}   gzip ratio")
    for path in paths:
        raw = client.get(path)
        gz = client.get(path, HTTP_ACCEPT_ENCODING="gzip")
        br = client.get(path, HTTP_ACCEPT_ENCODING="br, gzip")
        assert raw.status_code == gz.status_code == br.status_code == 200
        sizes = [len(raw.content), len(gz.content), len(br.content)]
        print(f"  {path:<48} {sizes[0]:>9,} {sizes[1]:>9,} {sizes[2]:>9,}   {sizes[1] / sizes[0]:.2f}")


def main() -> None:
    print(f"\n10 KB JSON body: {len(BODY):,} bytes")
    for chain in (OURS, DJANGO):
        p50_us(chain)  # warm-up
    compare(
        f"Compression + ETag, p50 latency per response ({CALLS_PER_ROUND:,} responses a round)",
        lambda: p50_us(OURS),
        lambda: p50_us(DJANGO),
        unit="µs",
        higher_is_better=False,
        ours_name="scaleops Compression+CondGet",
        peer_name="Django GZip+ConditionalGet",
    )
    example_api_sizes()


if __name__ == "__main__":
    main()
