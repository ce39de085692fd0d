"""Views the router tests drive through the test client (WSGI and ASGI)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from django_scaleops.replicas.lsn import format_lsn
from django_scaleops.replicas.state import current_state
from tests.routerapp.models import Note


def read_note(pk: int) -> Any:
    """The note and the port of the server that answered, or None when that server lacks it."""
    return Note.objects.filter(pk=pk).annotate(port=RawSQL("inet_server_port()", ())).values("body", "port").first()


@csrf_exempt
def notes(request: HttpRequest) -> HttpResponse:
    note = Note.objects.create(body=json.loads(request.body)["body"])
    return JsonResponse({"id": note.pk, "read_back": read_note(note.pk)}, status=201)


def note_detail(request: HttpRequest, pk: int) -> HttpResponse:
    found = read_note(pk)
    return JsonResponse(found, status=200) if found else JsonResponse({"missing": pk}, status=404)


async def whoami(request: HttpRequest) -> HttpResponse:
    state = current_state()
    seen_before = state.min_lsn
    # Interleave with the other requests in flight, then read and look again.
    await asyncio.sleep(float(request.GET.get("sleep", "0")))
    port = await sync_to_async(
        lambda: Note.objects.annotate(port=RawSQL("inet_server_port()", ())).values("port").first()
    )()
    await asyncio.sleep(float(request.GET.get("sleep", "0")))
    state = current_state()
    return JsonResponse(
        {
            "before": format_lsn(seen_before) if seen_before else None,
            "after": format_lsn(state.min_lsn) if state.min_lsn else None,
            "replica": state.replica,
            "port": port["port"] if port else None,
        }
    )
