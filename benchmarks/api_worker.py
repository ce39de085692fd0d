"""Benchmark worker: serves rounds of example-API requests through Django's WSGI handler.

Each stdin line is a count of requests, optionally followed by ``cpu``. The answer is requests per
second of wall-clock time, or with ``cpu`` requests per second of this process's CPU time: on a busy
machine the wall clock mostly measures the neighbours, the CPU time what a request costs here.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

import django

django.setup()

from django.test import Client  # noqa: E402

from example_project.chat.models import Conversation  # noqa: E402


def main() -> None:
    client = Client()
    conversation = Conversation.objects.order_by("id").values_list("id", flat=True).first()
    url = f"/api/conversations/{conversation}/messages/?limit=50"
    for line in sys.stdin:
        count_text, _, clock_name = line.partition(" ")
        count = int(count_text)
        clock = time.process_time if clock_name.strip() == "cpu" else time.perf_counter
        started = clock()
        for _ in range(count):
            response = client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"unexpected status {response.status_code}")
        print(count / (clock() - started), flush=True)


if __name__ == "__main__":
    main()
