"""Run django-scaleops as a user does: a project outside this tree, driven through subprocesses.

The subprocesses use this interpreter (``sys.executable``), so in the installed-wheel run they
import the installed package, and in the editable run the checkout.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

# Variables of this run that must not leak into a user's project.
PRIVATE_VARS = ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
SERVICE_VARS = ("DATABASE_URL", "REPLICA_URL", "REDIS_URL", "PGBOUNCER_URL", "PGBOUNCER_ADMIN_URL")

# Logs in to the admin as a new superuser, adds a key on the Standard tier and opens its page;
# prints one JSON line. Run with the project's settings module.
ADMIN_FLOW = """
import json, re, time
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()  # "testserver" in ALLOWED_HOSTS; request errors raise here
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django_scaleops.models import ApiKey, Tier

User = get_user_model()
User.objects.create_superuser("ops", "ops@example.com", "ops-password-for-tests")
if "replica" in settings.DATABASES:
    # Made outside a request, so read-your-writes does not follow it: wait for the standby, as a
    # person between createsuperuser and the login page does.
    deadline = time.monotonic() + 15
    while not User.objects.using("replica").filter(username="ops").exists():
        assert time.monotonic() < deadline, "the standby never replayed the new user"
        time.sleep(0.02)
client = Client()
# Through the login form, as a person does: the session write then goes through every middleware.
login = client.post("/admin/login/?next=/admin/", {"username": "ops", "password": "ops-password-for-tests"})
assert login.status_code == 302 and login["Location"] == "/admin/", login.status_code
form = client.get("/admin/scaleops/apikey/add/")
assert form.status_code == 200, form.status_code
tier = Tier.objects.get(name="Standard")
# The tier picker is an autocomplete: it fills from this JSON endpoint.
picker = client.get(
    "/admin/autocomplete/", {"app_label": "scaleops", "model_name": "apikey", "field_name": "tier", "term": "Stand"}
)
assert picker.status_code == 200, picker.status_code
assert [r["id"] for r in picker.json()["results"]] == [str(tier.pk)], picker.json()
# Checks outside a request read the primary: read-your-writes follows requests, not this script.
keys = ApiKey.objects.using("default")
before = keys.count()
created = client.post(
    "/admin/scaleops/apikey/add/", {"name": "from-admin", "tier": tier.pk, "owner": "", "expires_at": ""}
)
assert created.status_code == 200, created.status_code
html = created.content.decode()
assert "<title>API key created" in html, html[:500]
secret = re.search(r"<code[^>]*>(sops_[^<]+)</code>", html).group(1)
key = keys.get(name="from-admin")
assert keys.count() == before + 1
assert secret not in repr(keys.filter(pk=key.pk).values().get()), "the secret was stored"
page = client.get(f"/admin/scaleops/apikey/{key.pk}/change/")
assert page.status_code == 200, page.status_code
print(json.dumps({"pk": key.pk, "tier": key.tier.name, "secret": secret}))
"""


def project_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in PRIVATE_VARS}
    env.update(extra)
    return env


def run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``cwd``; a failure shows everything the process printed."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env if env is not None else project_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"python {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def start_project(parent: Path, name: str = "mysite") -> Path:
    """``django-admin startproject NAME`` in ``parent``, untouched."""
    project = parent / name
    project.mkdir()
    run(["-m", "django", "startproject", name, "."], cwd=project)
    return project


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


@contextlib.contextmanager
def scratch_services(prefix: str) -> Iterator[dict[str, str]]:
    """The launcher's servers with a new database (and an empty Redis database) of our own.

    Yields the service URLs pointing at them. The database replicates to the standby and is
    reached through PgBouncer too; it is dropped at the end.
    """
    if not all(os.environ.get(var) for var in SERVICE_VARS):
        pytest.skip("needs the launcher's service URLs")
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    redis_url = _with_path(os.environ["REDIS_URL"], "/7")
    redis.Redis.from_url(redis_url).flushdb()
    urls = {
        "DATABASE_URL": _with_path(os.environ["DATABASE_URL"], f"/{name}"),
        "REPLICA_URL": _with_path(os.environ["REPLICA_URL"], f"/{name}"),
        "PGBOUNCER_URL": _with_path(os.environ["PGBOUNCER_URL"], f"/{name}"),
        "PGBOUNCER_ADMIN_URL": os.environ["PGBOUNCER_ADMIN_URL"],
        "REDIS_URL": redis_url,
    }
    try:
        _wait_for_standby(urls["REPLICA_URL"])
        yield urls
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        redis.Redis.from_url(redis_url).flushdb()


def _wait_for_standby(url: str, timeout: float = 15.0) -> None:
    """CREATE DATABASE reaches the standby a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
