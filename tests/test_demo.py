"""The demo a newcomer clicks through: the start page, the demo superuser, demo_traffic, gunicorn with
DEBUG=0 serving the admin's static files, HEAD on the API, and scripts/ensure-servers.sh."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from django_scaleops.models import ApiKey
from django_scaleops.testing.services import free_ports, wait_for_port
from example_project.chat.models import Conversation
from tests.outside import project_env, run, scratch_services

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ensure-servers.sh"
WORKERS = ("--workers", "1", "--threads", "4")  # one process: its figures are the server's
SERVICE_VARS = ("DATABASE_URL", "REPLICA_URL", "REDIS_URL", "PGBOUNCER_URL", "PGBOUNCER_ADMIN_URL")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if tag in ("link", "script") and (found.get("href") or found.get("src")):
            self.assets.append(str(found.get("href") or found.get("src")))


def parse(html: str) -> Links:
    links = Links()
    links.feed(html)
    return links


@pytest.fixture
def conversation() -> Conversation:
    User = get_user_model()
    alice, bob = (User.objects.create(username=name) for name in ("alice", "bob"))
    conv: Conversation = Conversation.objects.create(title="Launch", created_by=alice)
    conv.participants.set([alice, bob])
    return conv


def post_message(client: Client, conv: Conversation, body: str = "hello") -> int:
    response = client.post(
        f"/api/conversations/{conv.pk}/messages/",
        json.dumps({"sender": conv.created_by_id, "body": body}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


# --------------------------------------------------------------------------- the start page


@pytest.mark.django_db
def test_start_page_links_everything_and_every_link_answers(admin_client: Client, conversation: Conversation):
    message_id = post_message(admin_client, conversation)
    page = admin_client.get("/")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    links = parse(html)
    assert not [a for a in links.assets if "//" in a], "no CDN: nothing loaded from another site"
    expected = {
        "/api/conversations/",
        f"/api/conversations/{conversation.pk}/",
        f"/api/conversations/{conversation.pk}/messages/?limit=5",
        f"/api/messages/{message_id}/delivery/",
        "/admin/",
        "/admin/scaleops/dashboard/",
        "/metrics",
        "/metrics/queries",
        "/health/",
        "/api/rate-limit/status/",
    }
    assert expected <= set(links.hrefs), expected - set(links.hrefs)
    answers = {href: admin_client.get(href).status_code for href in links.hrefs}
    broken = {href: status for href, status in answers.items() if status == 404 or status >= 500}
    assert not broken, broken
    # One line on each link.
    assert html.count('class="what"') == len(links.hrefs)


@pytest.mark.django_db
def test_start_page_without_data_says_how_to_seed(client: Client):
    page = client.get("/")
    assert page.status_code == 200
    assert "seed_demo_data" in page.content.decode()
    assert "/api/messages/" not in page.content.decode()


# --------------------------------------------------------------------------- HEAD in-process


@pytest.mark.django_db
def test_api_views_answer_head_like_get(client: Client, conversation: Conversation):
    message_id = post_message(client, conversation)
    for path in (
        "/api/conversations/",
        f"/api/conversations/{conversation.pk}/",
        f"/api/conversations/{conversation.pk}/messages/?limit=5",
        f"/api/messages/{message_id}/delivery/",
    ):
        got = client.get(path)
        head = client.head(path)
        assert (got.status_code, head.status_code) == (200, 200), path
        assert head.content == b"", path
        assert head["Content-Type"] == got["Content-Type"]
    assert client.put(f"/api/conversations/{conversation.pk}/").status_code == 405


# --------------------------------------------------------------------------- the demo superuser


@pytest.mark.django_db
def test_demo_superuser_prints_its_password_once_and_keeps_it(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    first = StringIO()
    call_command("demo_superuser", stdout=first)
    found = re.search(r"Admin login: demo / (\S+)", first.getvalue())
    assert found, first.getvalue()
    password = found.group(1)
    assert len(password) >= 16 and first.getvalue().count(password) == 1
    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser and user.is_staff
    client = Client()
    login = client.post("/admin/login/?next=/admin/", {"username": "demo", "password": password})
    assert login.status_code == 302 and login["Location"] == "/admin/"

    again = StringIO()
    call_command("demo_superuser", stdout=again)
    assert password not in again.getvalue()
    assert "changepassword demo" in again.getvalue()
    user.refresh_from_db()
    assert user.check_password(password), "a second run changed the password"
    assert get_user_model().objects.filter(username="demo").count() == 1
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert password not in logged


@pytest.mark.django_db
def test_each_demo_superuser_gets_another_password():
    shown = []
    for name in ("demo-a", "demo-b"):
        out = StringIO()
        call_command("demo_superuser", username=name, stdout=out)
        shown.append(out.getvalue().split(" / ")[1].split()[0])
    assert shown[0] != shown[1]


# --------------------------------------------------------------------------- demo_traffic, no server


@pytest.mark.django_db
def test_demo_traffic_dry_run_sends_and_changes_nothing(conversation: Conversation):
    post_message(Client(), conversation)
    keys = ApiKey.objects.count()
    out = StringIO()
    # Port 9 (discard) on loopback: nothing may be sent anyway.
    call_command("demo_traffic", url="http://127.0.0.1:9", dry_run=True, requests=50, stdout=out)
    text = out.getvalue()
    assert "Nothing was sent" in text and "50 requests" in text
    assert "Free" in text and "slow" in text
    assert ApiKey.objects.count() == keys


@pytest.mark.django_db
def test_demo_traffic_says_what_to_do_without_a_server_or_data(conversation: Conversation):
    (port,) = free_ports(1)
    Conversation.objects.all().delete()
    with pytest.raises(CommandError, match="seed_demo_data"):
        call_command("demo_traffic", url=f"http://127.0.0.1:{port}", stdout=StringIO())
    User = get_user_model()
    alice = User.objects.get(username="alice")
    Conversation.objects.create(title="Again", created_by=alice)
    keys = ApiKey.objects.count()
    with pytest.raises(CommandError, match="nothing answers"):
        call_command("demo_traffic", url=f"http://127.0.0.1:{port}", stdout=StringIO())
    assert ApiKey.objects.count() == keys
    with pytest.raises(CommandError, match="--url"):
        call_command("demo_traffic", url="ftp://example.com", stdout=StringIO())


# --------------------------------------------------------------------------- gunicorn, DEBUG=0


@dataclass
class Served:
    base: str
    port: int
    env: dict[str, str]
    token: str
    log: Path

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def figures(self) -> dict[str, Any]:
        status, _, body = self.get("/metrics/queries", {"Authorization": f"Bearer {self.token}"})
        assert status == 200, (status, body[:300], self.tail())
        report: dict[str, Any] = json.loads(body)
        return report

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The example under gunicorn with DEBUG=0, on its own database, on a free loopback port."""
    tmp = tmp_path_factory.mktemp("demo")
    with scratch_services("demo") as urls:
        token = secrets.token_urlsafe(16)
        env = project_env(
            **urls,
            DJANGO_SETTINGS_MODULE="example_project.settings",
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
            SCALEOPS_MONITOR_TOKEN=token,
            EXAMPLE_STATIC_ROOT=str(tmp / "static"),
            EXAMPLE_ARCHIVE_DIR=str(tmp / "archive"),
        )
        run(["manage.py", "migrate"], cwd=ROOT, env=env)
        run(
            ["manage.py", "seed_demo_data", "--users", "6", "--conversations", "8", "--messages", "200"],
            cwd=ROOT,
            env=env,
        )
        run(["manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, env=env)
        (port,) = free_ports(1)
        log = tmp / "gunicorn.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "example_project.wsgi", "--bind", f"127.0.0.1:{port}", *WORKERS],
                cwd=ROOT,
                env={**env, "HOME": str(tmp)},  # gunicorn's control socket goes under HOME: one per server
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(port, timeout=30)
            yield Served(f"http://127.0.0.1:{port}", port, env, token, log)
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_gunicorn_with_debug_off_serves_the_admin_static_files(served: Served):
    status, headers, body = served.get("/static/admin/css/base.css")
    assert status == 200, served.tail()
    assert headers["content-type"].startswith("text/css") and b"body" in body
    status, _, page = served.get("/admin/login/")
    assert status == 200
    links = parse(page.decode())
    assert "/static/admin/css/base.css" in links.assets
    for asset in links.assets:
        assert served.get(asset)[0] == 200, asset
    # No debug page with DEBUG=0: a missing page is a plain 404.
    status, _, missing = served.get("/no-such-page/")
    assert status == 404 and b"Traceback" not in missing and b"URLconf" not in missing


def test_demo_superuser_logs_in_through_gunicorn_and_the_key_form_has_its_scripts(served: Served):
    first = run(["manage.py", "demo_superuser", "--username", "ops-demo"], cwd=ROOT, env=served.env)
    password = re.search(r"Admin login: ops-demo / (\S+)", first.stdout)
    assert password, first.stdout
    assert (first.stdout + first.stderr).count(password.group(1)) == 1, "the password was logged"
    second = run(["manage.py", "demo_superuser", "--username", "ops-demo"], cwd=ROOT, env=served.env)
    assert password.group(1) not in second.stdout + second.stderr

    # Made outside a request: the standby has it a moment later, as for a person reading the login.
    deadline = time.monotonic() + 15
    with psycopg.connect(served.env["REPLICA_URL"]) as replica:
        while not replica.execute("SELECT 1 FROM auth_user WHERE username = 'ops-demo'").fetchone():
            assert time.monotonic() < deadline, "the standby never replayed the user"
            time.sleep(0.05)

    status, headers, page = served.get("/admin/login/")
    cookie = headers["set-cookie"].split(";")[0]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.decode())
    assert csrf
    form = urllib.parse.urlencode(
        {"username": "ops-demo", "password": password.group(1), "csrfmiddlewaretoken": csrf.group(1), "next": "/admin/"}
    )
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    connection.request(
        "POST",
        "/admin/login/?next=/admin/",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    response = connection.getresponse()
    response.read()
    assert response.status == 302 and response.getheader("Location") == "/admin/", served.tail()
    session = "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [])
    connection.close()

    status, _, add_form = served.get("/admin/scaleops/apikey/add/", {"Cookie": session})
    assert status == 200
    assets = parse(add_form.decode()).assets
    # The tier picker: the admin's autocomplete widget and Select2, served by WhiteNoise.
    assert any(a.endswith("admin/js/autocomplete.js") for a in assets), assets
    assert any("select2" in a for a in assets), assets
    for asset in assets:
        assert served.get(asset, {"Cookie": session})[0] == 200, asset


def test_head_on_the_api_and_a_conditional_head(served: Served):
    conversations = json.loads(served.get("/api/conversations/")[2])["conversations"]
    path = f"/api/conversations/{conversations[0]['id']}/"
    status, headers, body = served.get(path)
    assert status == 200 and body and headers.get("etag"), headers
    status, head_headers, head_body = served.get(path, method="HEAD")
    assert (status, head_body) == (200, b"")
    assert head_headers.get("etag") == headers["etag"]
    status, _, again = served.get(path, {"If-None-Match": headers["etag"]}, method="HEAD")
    assert (status, again) == (304, b"")
    status, _, _ = served.get("/api/conversations/", method="HEAD")
    assert status == 200


def test_demo_traffic_moves_queries_limits_and_cache_hits(served: Served):
    before = served.figures()
    done = run(
        ["manage.py", "demo_traffic", "--url", served.base, "--requests", "60", "--rate", "0", "--progress", "0"],
        cwd=ROOT,
        env=served.env,
    )
    after = served.figures()
    assert "60 requests" in done.stdout, done.stdout

    def limiter(report: dict[str, Any], name: str) -> int:
        counts = report["sources"]["ratelimit"]
        return int(counts.get(name, 0)) + (int(counts.get("allowed_from_lease", 0)) if name == "allowed" else 0)

    def cache_hits(report: dict[str, Any]) -> int:
        totals = report["sources"]["cache"]["totals"]
        return int(totals["hits"]) + int(totals["l1_hits"])

    moved = {
        "queries": after["queries"] - before["queries"],
        "slow": after["slow"] - before["slow"],
        "allowed": limiter(after, "allowed") - limiter(before, "allowed"),
        "limited": limiter(after, "limited") - limiter(before, "limited"),
        "cache hits": cache_hits(after) - cache_hits(before),
    }
    # 60 calls: 18 with the Free key (12 fit its bucket), 3 slow queries, 3 writes, 39 cached reads.
    assert moved["queries"] >= 60, moved
    assert moved["slow"] >= 3, moved
    assert moved["allowed"] >= 20 and moved["limited"] >= 3, moved
    assert moved["cache hits"] >= 5, moved
    assert re.search(r"(\d+) limited \(429\)", done.stdout), done.stdout
    assert not [line for line in done.stderr.splitlines() if "failed" in line], done.stderr


# --------------------------------------------------------------------------- scripts/ensure-servers.sh


def script_env(path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*SERVICE_VARS, "PG_BINDIR", "VENV", "SCALEOPS_NO_INSTALL")}
    return {**env, "PATH": path, **extra}


def ensure(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def bare(tmp_path: Path) -> tuple[Path, Path]:
    """An empty PATH folder and an empty root for the fixed folders: nothing installed."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "root").mkdir()
    return tmp_path / "bin", tmp_path / "root"


def test_ensure_servers_check_names_what_is_missing_and_installs_nothing(bare: tuple[Path, Path]):
    bindir, root = bare
    log = bindir.parent / "calls"
    stub(bindir, "apt-get", f'echo "apt-get $*" >> {log}')
    env = script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root))
    checked = ensure(env, "--check")
    assert checked.returncode == 1
    out = checked.stdout
    assert "missing: PostgreSQL server" in out and "redis-server" in out and "pgbouncer" in out
    assert "apt-get install -y postgresql redis-server pgbouncer" in out
    assert not log.exists(), "--check ran the package manager"
    # SCALEOPS_NO_INSTALL=1 makes the default mode a check too.
    assert ensure({**env, "SCALEOPS_NO_INSTALL": "1"}).returncode == 1
    assert not log.exists()


def test_ensure_servers_without_a_package_manager_stops_with_what_to_install(bare: tuple[Path, Path]):
    bindir, root = bare
    result = ensure(script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root)))
    assert result.returncode == 1
    assert "missing: PostgreSQL server" in result.stdout
    assert "package manager" in result.stdout and "PG_BINDIR" in result.stdout
    assert "installed" not in result.stdout


def test_ensure_servers_is_silent_when_everything_is_there():
    result = ensure(script_env(os.environ["PATH"]), "--check")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert ensure(script_env(os.environ["PATH"])).stdout == ""


def test_ensure_servers_finds_what_the_launcher_finds(bare: tuple[Path, Path]):
    bindir, root = bare
    pg = root / "usr" / "lib" / "postgresql" / "17" / "bin"
    pg.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "pg_basebackup"):
        stub(pg, tool, "exit 0")
    env = script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root))
    assert "PostgreSQL" in ensure(env, "--check").stdout, "postgres itself is missing"
    stub(pg, "postgres", "exit 0")
    stub(bindir, "redis-server", "exit 0")
    (root / "usr" / "sbin").mkdir()
    stub(root / "usr" / "sbin", "pgbouncer", "exit 0")  # Debian's place, off PATH
    result = ensure(env, "--check")
    assert (result.returncode, result.stdout) == (0, ""), result.stdout
    # PG_BINDIR is honoured, as the launcher does.
    other = bindir.parent / "pg"
    pg.rename(other)
    assert "PostgreSQL" in ensure(env, "--check").stdout
    assert ensure({**env, "PG_BINDIR": str(other)}, "--check").returncode == 0


def test_ensure_servers_installs_with_sudo_apt_get_and_checks_again(bare: tuple[Path, Path]):
    """A stand-in apt-get (no real package is installed) that puts the binaries where Debian does."""
    bindir, root = bare
    log = bindir.parent / "calls"
    pg = root / "usr" / "lib" / "postgresql" / "17" / "bin"
    stub(bindir, "sudo", f'echo "sudo $*" >> {log}\nexec "$@"')
    (bindir / "env").symlink_to("/usr/bin/env")
    stub(
        bindir,
        "apt-get",
        f'echo "apt-get $*" >> {log}\n'
        f'case "$1" in install) /bin/mkdir -p {pg} {root}/usr/sbin {root}/usr/bin\n'
        f"  for t in initdb pg_ctl pg_basebackup postgres; do : > {pg}/$t; done\n"
        f"  : > {root}/usr/bin/redis-server; : > {root}/usr/sbin/pgbouncer;; esac",
    )
    result = ensure(script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installing with apt-get: postgresql redis-server pgbouncer" in result.stdout
    assert "installed" in result.stdout.splitlines()[-2]
    calls = log.read_text().splitlines()
    assert "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq" in calls
    assert any(c.startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y") for c in calls), calls
    # Everything there now: a second run does nothing at all.
    log.unlink()
    again = ensure(script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root)))
    assert (again.returncode, again.stdout) == (0, "") and not log.exists()


def test_ensure_servers_that_cannot_install_stops_with_the_command(bare: tuple[Path, Path]):
    bindir, root = bare
    stub(bindir, "apt-get", "exit 100")  # e.g. no network
    stub(bindir, "sudo", 'exec "$@"')
    (bindir / "env").symlink_to("/usr/bin/env")
    result = ensure(script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root)))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].strip() == (
        "sudo apt-get update && sudo apt-get install -y postgresql redis-server pgbouncer"
    )


def test_ensure_servers_checks_nothing_with_the_users_own_servers(bare: tuple[Path, Path]):
    bindir, root = bare
    urls = {var: "postgres://elsewhere/db" for var in SERVICE_VARS}
    result = ensure(script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root), **urls), "--check")
    assert (result.returncode, result.stdout) == (0, "")


def test_ensure_servers_asks_for_venv_before_the_first_make(bare: tuple[Path, Path], tmp_path: Path):
    bindir, root = bare
    stub(bindir, "python3", "exit 1")  # a Python without ensurepip (Debian without python3-venv)
    stub(bindir, "apt-get", "exit 0")
    env = script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root), VENV=str(tmp_path / "venv"), PYTHON="python3")
    assert "python3-venv" in ensure(env, "--check").stdout
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".installed").touch()
    assert "python3-venv" not in ensure(env, "--check").stdout


def test_the_makefile_runs_the_script_before_the_servers_start():
    makefile = (ROOT / "Makefile").read_text()
    for target, servers in (("test", "test-servers"), ("demo", "servers")):
        line = re.search(rf"^{target}:(.*)$", makefile, re.MULTILINE)
        assert line and line.group(1).split()[0] == servers, target
    assert "ensure-servers.sh --tests" in makefile
    assert "sh scripts/ensure-servers.sh" in makefile


def test_ensure_servers_for_the_suite_also_wants_chromium_and_promtool(bare: tuple[Path, Path]):
    bindir, root = bare
    stub(bindir, "apt-get", "exit 0")
    for name in ("redis-server", "pgbouncer"):
        stub(bindir, name, "exit 0")
    pg = root / "usr" / "lib" / "postgresql" / "17" / "bin"
    pg.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "postgres"):
        stub(pg, tool, "exit 0")
    env = script_env(str(bindir), ENSURE_SERVERS_ROOT=str(root))
    assert ensure(env, "--check").returncode == 0, "the demo does not need a browser"
    checked = ensure(env, "--check", "--tests")
    assert checked.returncode == 1
    assert "Chromium" in checked.stdout and "promtool" in checked.stdout
    assert "apt-get install -y chromium prometheus" in checked.stdout
    # With the user's own servers only the suite's tools are asked for.
    urls = {var: "postgres://elsewhere/db" for var in SERVICE_VARS}
    own = ensure({**env, **urls, "PATH": str(bindir)}, "--check", "--tests")
    assert "PostgreSQL" not in own.stdout and "chromium" in own.stdout
    stub(bindir, "chromium", "exit 0")
    stub(bindir, "promtool", "exit 0")
    assert ensure(env, "--check", "--tests").returncode == 0
