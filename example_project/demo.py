"""``make demo``: prepare the example, serve it with gunicorn as production would, and make traffic.

Migrates, makes partitions, seeds once, collects the static files, then serves the example on
``DEMO_ADDRESS`` (127.0.0.1:8000) with gunicorn and ``DEBUG=0`` (WhiteNoise serves the admin's CSS
and JavaScript), creates the demo superuser (its password printed once), prints what to open and a
key per rate-limit tier, and runs ``demo_traffic`` in the background for a while so the dashboard's
charts move. The server's and the traffic's output go to files under ``var/demo/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import django
from django.core.management import call_command

ADDRESS = os.environ.get("DEMO_ADDRESS", "127.0.0.1:8000")
TRAFFIC_SECONDS = 180  # the dashboard's charts have a point a minute
WORKERS = 2
GUNICORN_OPTIONS = ("--workers", str(WORKERS), "--threads", "4", "--graceful-timeout", "5")
BASE_DIR = Path(__file__).resolve().parent.parent
LOG_DIR = BASE_DIR / "var" / "demo"


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    # Served as in production: no debug pages, JSON logs, static files from WhiteNoise.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    host, _, port = ADDRESS.rpartition(":")
    if not _port_free(host, int(port)):
        print(f"demo: {ADDRESS} is taken; serve on another address: DEMO_ADDRESS=127.0.0.1:8001 make demo")
        return 1
    django.setup()
    from example_project.chat.models import Conversation, Message

    call_command("migrate", interactive=False, verbosity=0)
    call_command("ensure_partitions")  # what a cron job runs daily in production
    if not Message.objects.exists():
        call_command("seed_demo_data")
    call_command("collectstatic", interactive=False, verbosity=0)
    conversation = Conversation.objects.order_by("-last_message_at").first()
    assert conversation is not None
    sender = conversation.participants.order_by("id").values_list("id", flat=True).first()
    message = Message.objects.order_by("-id").values_list("id", flat=True).first()

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    server_log = LOG_DIR / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "example_project.wsgi", "--bind", ADDRESS, *GUNICORN_OPTIONS],
        cwd=BASE_DIR,
        stdout=server_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    if not _wait_until_served(server, host, int(port)):
        print(f"demo: gunicorn did not start; the end of {_shown(server_log)}:\n{_tail(server_log)}")
        return 1

    login = StringIO()
    call_command("demo_superuser", stdout=login)
    root = f"http://{ADDRESS}"
    base = f"{root}/api"
    print(
        f"\nThe example messaging service is up: {root}/ (gunicorn, {WORKERS} workers, DEBUG=0).\n\n"
        f"  Start page   {root}/  (links to everything, one line on each)\n"
        f"  Admin        {root}/admin/\n"
        f"               {login.getvalue().strip()}\n"
        f"  Dashboard    {root}/admin/scaleops/dashboard/\n"
        f"  Metrics      {root}/metrics  {root}/metrics/queries  {root}/health/  (as staff)\n"
        "\nThe API:\n"
        f"  curl -s {base}/conversations/\n"
        f"  curl -s {base}/conversations/{conversation.pk}/\n"
        f"  curl -s '{base}/conversations/{conversation.pk}/messages/?limit=5'\n"
        f"  curl -s -X POST -H 'Content-Type: application/json' "
        f"""-d '{{"sender": {sender}, "body": "hello"}}' {base}/conversations/{conversation.pk}/messages/\n"""
        f"  curl -s {base}/messages/{message}/delivery/\n"
        f"{demo_api_keys(base)}",
        flush=True,
    )
    traffic_log = LOG_DIR / "traffic.log"
    traffic = subprocess.Popen(
        [sys.executable, "-m", "django", "demo_traffic", "--url", root, "--duration", str(TRAFFIC_SECONDS)],
        cwd=BASE_DIR,
        stdout=traffic_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    print(
        f"Demo traffic for {TRAFFIC_SECONDS // 60} minutes, in the background (output: {_shown(traffic_log)}); "
        "more with:\n"
        f"  python manage.py demo_traffic --url {root} --duration 300\n"
        f"Server log (JSON lines): {_shown(server_log)}\n"
        "Stop with Ctrl-C: the servers are torn down with it.\n",
        flush=True,
    )
    return _serve_until_stopped(server, traffic, server_log, traffic_log)


def _serve_until_stopped(
    server: subprocess.Popen[bytes], traffic: subprocess.Popen[bytes], server_log: Path, traffic_log: Path
) -> int:
    reported = False
    signal.signal(signal.SIGTERM, _interrupt)  # the launcher passes its SIGTERM on: stop as for Ctrl-C
    try:
        while server.poll() is None:
            time.sleep(0.5)
            if not reported and traffic.poll() is not None:
                reported = True
                last = _tail(traffic_log, 3)
                print(f"Demo traffic finished:\n{last}", flush=True)
        print(f"demo: gunicorn stopped (exit {server.returncode}); the end of its log:\n{_tail(server_log)}")
        failed = 1
    except KeyboardInterrupt:
        failed = 0  # the terminal sent SIGINT to gunicorn and demo_traffic too
    for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signum, signal.SIG_IGN)
    for child in (traffic, server):
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # as Ctrl-C: demo_traffic prints its summary, gunicorn stops
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=15)
        if child.poll() is None:
            child.kill()
    return failed


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo_api_keys(base: str) -> str:
    """One key per rate-limit tier, given a new secret on each run (secrets are never stored)."""
    from django.conf import settings

    if "django_scaleops" not in settings.INSTALLED_APPS:
        return ""
    from django_scaleops.models import ApiKey, Tier

    lines = ["\nAPI keys, one per tier (shown once; manage.py create_api_key makes more):\n"]
    for tier in Tier.objects.all():
        name = f"demo {tier.name}"
        key = ApiKey.objects.filter(name=name, tier=tier, revoked_at__isnull=True).first()
        if key is None:
            _, secret = ApiKey.create_key(name=name, tier=tier)
        else:
            secret = key.assign_new_secret()
            key.save()
        lines.append(f"  {tier.name:<13} curl -si -H 'Authorization: Api-Key {secret}' {base}/rate-limit/status/\n")
    return "".join(lines)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_until_served(server: subprocess.Popen[bytes], host: str, port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is below it (what a person would type)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
