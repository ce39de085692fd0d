"""``make demo``: migrate, seed once, print what to try, serve the API on 127.0.0.1:8000."""

from __future__ import annotations

import os

import django
from django.core.management import call_command

ADDRESS = "127.0.0.1:8000"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    django.setup()
    from example_project.chat.models import Conversation, Message

    call_command("migrate", interactive=False, verbosity=0)
    call_command("ensure_partitions")  # what a cron job runs daily in production
    if not Message.objects.exists():
        call_command("seed_demo_data")
    conversation = Conversation.objects.order_by("-last_message_at").first()
    assert conversation is not None
    sender = conversation.participants.order_by("id").values_list("id", flat=True).first()
    message = Message.objects.order_by("-id").values_list("id", flat=True).first()
    base = f"http://{ADDRESS}/api"
    print(
        "\nThe example messaging API is up. Try:\n"
        f"  curl -s {base}/conversations/\n"
        f"  curl -s {base}/conversations/{conversation.pk}/\n"
        f"  curl -s '{base}/conversations/{conversation.pk}/messages/?limit=5'\n"
        f"  curl -s -X POST -H 'Content-Type: application/json' "
        f"""-d '{{"sender": {sender}, "body": "hello"}}' {base}/conversations/{conversation.pk}/messages/\n"""
        f"  curl -s {base}/messages/{message}/delivery/\n"
        f"{demo_api_keys(base)}"
        "Stop with Ctrl-C: the servers are torn down with it.\n",
        flush=True,
    )
    call_command("runserver", ADDRESS, use_reloader=False)


def demo_api_keys(base: str) -> str:
    """One fresh key per rate-limit tier (secrets are never stored, so they are new each run)."""
    from django.conf import settings

    if "django_scaleops" not in settings.INSTALLED_APPS:
        return ""
    from django_scaleops.models import ApiKey, Tier

    lines = ["\nAPI keys, one per tier (shown once; manage.py create_api_key makes more):\n"]
    for tier in Tier.objects.all():
        _, secret = ApiKey.create_key(name=f"demo {tier.name}", tier=tier)
        lines.append(f"  {tier.name:<13} curl -si -H 'Authorization: Api-Key {secret}' {base}/rate-limit/status/\n")
    return "".join(lines)


if __name__ == "__main__":
    main()
