"""A second process for the L1 test: reads a value through with_cache + L1 on each request.

Protocol: a line "get" → prints the value (read from the file named by L1_SOURCE on a miss);
"stats" → prints the L1 hit count; "live" → prints whether the invalidation channel is live.
"""

from __future__ import annotations

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.test.utils import override_settings  # noqa: E402

from django_scaleops.cache import l1, stats, with_cache  # noqa: E402

override_settings(SCALEOPS_CACHE_L1_TIMEOUT=60).enable()
SOURCE = os.environ["L1_SOURCE"]


def read_source() -> str:
    with open(SOURCE) as handle:
        return handle.read()


for line in sys.stdin:
    command = line.strip()
    if command == "get":
        print(with_cache("l1-test:value", read_source, 60, depends_on=["cacheapp_book"]), flush=True)
    elif command == "stats":
        print(int(stats.snapshot()["totals"]["l1_hits"]), flush=True)
    elif command == "live":
        print(l1.usable(), flush=True)
