"""The example API with django-scaleops installed vs bare Django, requests/s in one run.

Both configurations serve the same database; each runs in its own worker process (the
settings differ only by WITH_SCALEOPS) and the rounds alternate. Run with ``make bench``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Worker, compare, own_database, wait_for_replay

REQUESTS_PER_ROUND = 300


def prepare() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django
    from django.core.management import call_command

    django.setup()
    from example_project.chat.models import Conversation, Message

    call_command("migrate", interactive=False, verbosity=0)
    # Other benchmarks may have filled the chat tables without conversations: seed unless both exist.
    # Read the primary: the standby may not have replayed the migrations yet (it lags after the
    # benchmarks before this one); the workers read through the router once it has.
    if Message.objects.using("default").count() < 5_000 or not Conversation.objects.using("default").exists():
        with open(os.devnull, "w") as quiet:
            call_command("seed_demo_data", messages=5_000, conversations=20, stdout=quiet)
    wait_for_replay()


def main() -> None:
    prepare()
    ours = Worker("api_worker.py", {"EXAMPLE_SCALEOPS": "1"})
    bare = Worker("api_worker.py", {"EXAMPLE_SCALEOPS": "0"})
    try:
        for worker in (ours, bare):
            worker.round(50)  # warm-up: imports, connections, URL resolver
        compare(
            f"Example API, GET messages of a conversation ({REQUESTS_PER_ROUND} requests a round, in-process WSGI)",
            lambda: ours.round(REQUESTS_PER_ROUND),
            lambda: bare.round(REQUESTS_PER_ROUND),
            unit="req/s",
            ours_name="with django-scaleops",
            peer_name="bare Django",
        )
    finally:
        ours.close()
        bare.close()


if __name__ == "__main__":
    own_database("example_api")
    main()
