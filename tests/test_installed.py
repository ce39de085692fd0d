"""The smoke subset run against the installed wheel (tests/run_installed.py) as well as in the main suite.

It covers what an installed copy can lose that an editable one cannot: where the package comes
from, its templates and migrations, every management command, the admin flow and the middleware
on the example API as a user copies and runs the example project.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command, get_commands
from django.template.loader import get_template

import django_scaleops
from tests.outside import ADMIN_FLOW, project_env, run, scratch_services

pytestmark = pytest.mark.installed

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(django_scaleops.__file__).resolve().parent
EXPECT_INSTALLED = os.environ.get("SCALEOPS_EXPECT_INSTALLED")

# Every command the app ships, with arguments that make a harmless, complete run on the example.
COMMANDS: dict[str, list[str]] = {
    "ensure_partitions": [],
    "validate_partitions": [],
    "partition_info": [],
    "archive_partitions": ["--dry-run"],
    "restore_partition": ["chat.Message", "--list"],
    "replica_status": [],
    "pgbouncer_status": [],
    "pgbouncer_config": ["--dry-run"],
    "create_api_key": ["smoke", "--tier", "Standard"],
    "rollup_rate_limit_usage": ["--dry-run"],
    "warm_cache": ["--list"],
    "scaleops_sample": ["--dry-run"],
}


def test_the_package_comes_from_where_this_run_expects():
    if EXPECT_INSTALLED:
        assert PACKAGE_DIR.is_relative_to(Path(EXPECT_INSTALLED).resolve()), PACKAGE_DIR
        source = os.environ.get("SCALEOPS_SOURCE_TREE")
        assert source and not any(Path(p or ".").resolve() == Path(source) for p in sys.path)
    else:
        assert PACKAGE_DIR == REPO / "django_scaleops", "not the checkout's package in the editable run"


@pytest.mark.django_db
def test_templates_and_migrations_are_there():
    for name in ("scaleops/apikey_created.html", "scaleops/dashboard/dashboard.html"):
        template: Any = get_template(name)
        assert template.origin.name.startswith(str(PACKAGE_DIR)), name
    assert (PACKAGE_DIR / "dashboard" / "grafana.json").exists()
    assert (PACKAGE_DIR / "py.typed").exists()
    call_command("makemigrations", "scaleops", "--check", "--dry-run", verbosity=0)


def test_every_command_of_the_app_has_a_smoke_run():
    ours = {name for name, app in get_commands().items() if app == "django_scaleops"}
    assert ours == set(COMMANDS), "add the new command to COMMANDS with arguments for a smoke run"


def test_the_example_project_as_a_user_copies_and_runs_it(tmp_path: Path):
    project = tmp_path / "example"
    project.mkdir()
    shutil.copytree(REPO / "example_project", project / "example_project", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "manage.py", project / "manage.py")
    with scratch_services("example") as urls:
        # A password, as production has (trust auth ignores it): pgbouncer_config derives SCRAM from it.
        urls["DATABASE_URL"] = urls["DATABASE_URL"].replace("://postgres@", "://postgres:example-only@", 1)
        env = project_env(
            **urls,
            DJANGO_SETTINGS_MODULE="example_project.settings",
            DJANGO_DEBUG="0",  # production: JSON logs, no debug pages
            EXAMPLE_ARCHIVE_DIR=str(tmp_path / "archive"),
        )
        manage = ["manage.py"]
        run([*manage, "migrate"], cwd=project, env=env)
        run(
            [*manage, "seed_demo_data", "--users", "5", "--conversations", "12", "--messages", "300"],
            cwd=project,
            env=env,
        )
        for name, args in COMMANDS.items():
            run([*manage, name, *args], cwd=project, env=env)

        (project / "admin_flow.py").write_text(ADMIN_FLOW)
        flow = run(["admin_flow.py"], cwd=project, env=env)
        secret = json.loads(flow.stdout.strip().splitlines()[-1])["secret"]

        (project / "api_calls.py").write_text(API_CALLS)
        calls = run(["api_calls.py", secret], cwd=project, env=env)
        seen = json.loads(calls.stdout.strip().splitlines()[-1])
    if EXPECT_INSTALLED:
        assert Path(seen["package"]).is_relative_to(Path(EXPECT_INSTALLED).resolve()), seen["package"]
    first = seen["first"]
    assert first["status"] == 200 and first["encoding"] == "gzip", first
    assert first["request_id"] and first["etag"] and "Standard" in (first["policy"] or ""), first
    assert seen["again"]["status"] == 304, seen["again"]
    assert seen["unknown_key"]["status"] in (401, 403), seen["unknown_key"]


# Calls the example API through its whole middleware stack with the key the admin made.
API_CALLS = """
import json, sys
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
import django_scaleops

client = Client()
key = {"HTTP_X_API_KEY": sys.argv[1]}

def seen(response):
    return {
        "status": response.status_code,
        "encoding": response.get("Content-Encoding"),
        "etag": response.get("ETag"),
        "request_id": response.get("X-Request-ID"),
        "policy": response.get("RateLimit-Policy"),
    }

first = client.get("/api/conversations/", HTTP_ACCEPT_ENCODING="gzip", **key)
again = client.get("/api/conversations/", HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=first["ETag"], **key)
unknown = client.get("/api/conversations/", HTTP_X_API_KEY="sops_notakey000_" + "x" * 43)
print(json.dumps({"package": django_scaleops.__file__, "first": seen(first), "again": seen(again),
                  "unknown_key": seen(unknown)}))
"""
