"""A user's first ten minutes: `startproject`, add the app, follow the README's quick start.

Each project lives outside this tree and runs in subprocesses with this interpreter, so the
installed-wheel run (tests/run_installed.py) tries the package exactly as `pip install` gives it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from tests.outside import ADMIN_FLOW, project_env, run, scratch_services, start_project

pytestmark = pytest.mark.installed

REPO = Path(__file__).resolve().parent.parent
SERVER_WARNINGS = ("scaleops.W203", "scaleops.W405", "scaleops.W702")
PARTITION_COMMANDS = (
    ["ensure_partitions"],
    ["ensure_partitions", "--dry-run"],
    ["validate_partitions"],
    ["partition_info"],
    ["archive_partitions", "--dry-run"],
    ["restore_partition", "notes.Note", "--list"],
)


def manage(project: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    return run(["manage.py", *args], cwd=project, env=env, check=check)


def add_to_settings(project: Path, code: str) -> None:
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + code + "\n")


@pytest.fixture
def stock(tmp_path: Path) -> Path:
    """A stock `startproject` (SQLite, LocMem cache) with django_scaleops added, nothing else."""
    project = start_project(tmp_path)
    add_to_settings(project, 'INSTALLED_APPS += ["django_scaleops"]')
    return project


def test_adding_the_app_to_a_stock_project_breaks_nothing(stock: Path):
    checked = manage(stock, "check")
    output = checked.stdout + checked.stderr
    assert "ERRORS" not in output
    for warning in SERVER_WARNINGS:  # each capability that needs a server says which
        assert warning in output, output
    assert "django-redis" in output and "PostgreSQL" in output
    assert "scaleops.W30" not in output  # the cache is off unless asked for: nothing to warn about

    manage(stock, "migrate")
    tiers = manage(stock, "shell", "-c", "from django_scaleops.models import Tier; print(Tier.objects.count())")
    assert int(tiers.stdout.strip().splitlines()[-1]) >= 4

    created = manage(stock, "create_api_key", "from-cli", "--tier", "Standard")
    assert re.search(r"sops_\S+", created.stdout)

    (stock / "admin_flow.py").write_text(ADMIN_FLOW)
    flow = run(["admin_flow.py"], cwd=stock, env=project_env(DJANGO_SETTINGS_MODULE="mysite.settings"))
    result = json.loads(flow.stdout.strip().splitlines()[-1])
    assert result["tier"] == "Standard" and result["secret"].startswith("sops_")
    assert "Traceback" not in flow.stderr and "could not publish" not in flow.stderr


def test_sqlite_with_a_redis_cache_warns_only_about_postgresql(stock: Path):
    with scratch_services("sqlite_redis") as urls:
        add_to_settings(
            stock,
            "import os\n"
            'CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": os.environ["REDIS_URL"]}}',
        )
        env = project_env(REDIS_URL=urls["REDIS_URL"])
        checked = manage(stock, "check", env=env)
        found = set(re.findall(r"scaleops\.[EW]\d{3}", checked.stdout + checked.stderr))
        assert found == {"scaleops.W405", "scaleops.W702"}, checked.stderr
        manage(stock, "migrate", env=env)
        (stock / "admin_flow.py").write_text(ADMIN_FLOW)
        flow = run(["admin_flow.py"], cwd=stock, env={**env, "DJANGO_SETTINGS_MODULE": "mysite.settings"})
        assert json.loads(flow.stdout.strip().splitlines()[-1])["tier"] == "Standard"
        revoke = manage(
            stock,
            "shell",
            "-c",
            "from django.utils import timezone\n"
            "from django_scaleops.models import ApiKey\n"
            "key = ApiKey.objects.get(name='from-admin')\n"
            "key.revoked_at = timezone.now()\n"
            "key.save()",
            env=env,
        )
        assert "could not publish" not in revoke.stderr
        assert redis.Redis.from_url(urls["REDIS_URL"]).keys("scaleops:rl:*:r"), "the revocation never reached Redis"


def test_partition_and_usage_commands_on_sqlite_say_what_they_need(stock: Path):
    for command in PARTITION_COMMANDS:
        result = manage(stock, *command, check=False)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "needs PostgreSQL" in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = manage(stock, "rollup_rate_limit_usage", check=False)
    assert result.returncode == 1 and "Redis" in result.stderr and "Traceback" not in result.stderr


NOTES_APP = 'INSTALLED_APPS += ["notes"]'
SWITCHED_ON = {
    "throttle middleware": (
        'MIDDLEWARE.insert(1, "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware")',
        "",
        "scaleops.E202",
    ),
    "DRF throttle": (
        'REST_FRAMEWORK = {"DEFAULT_THROTTLE_CLASSES": ["django_scaleops.ratelimit.drf.ApiKeyTierThrottle"]}',
        "",
        "scaleops.E202",
    ),
    "router": ('DATABASE_ROUTERS = ["django_scaleops.routers.PrimaryReplicaRouter"]', "", "scaleops.E104"),
    "cached manager": (
        NOTES_APP + "\nSCALEOPS_CACHE_ENABLED = True",
        "from django_scaleops.cache import CachedManager\n\nclass Note(models.Model):\n    objects = CachedManager()\n",
        "scaleops.E302",
    ),
    "cached function": (
        NOTES_APP + "\nSCALEOPS_CACHE_ENABLED = True",
        "from django_scaleops.cache import cached_function\n\n"
        "@cached_function(timeout=60)\ndef note_count() -> int:\n    return 0\n",
        "scaleops.E302",
    ),
    "partitioned model": (
        NOTES_APP,
        "from django_scaleops.partitioning import PartitionedModel\n\n"
        "class Note(PartitionedModel):\n    created_at = models.DateTimeField()\n\n"
        "    class Partitioning:\n        interval = 'month'\n",
        "scaleops.E405",
    ),
    "bulk manager": (
        NOTES_APP,
        "from django_scaleops.bulk import BulkManager\n\nclass Note(models.Model):\n    objects = BulkManager()\n",
        "scaleops.E702",
    ),
}


@pytest.mark.parametrize("what", list(SWITCHED_ON))
def test_switching_a_capability_on_without_its_server_is_an_error(stock: Path, what: str):
    setting, models_code, error = SWITCHED_ON[what]
    add_to_settings(stock, setting)
    if models_code:
        app = stock / "notes"
        app.mkdir()
        (app / "__init__.py").write_text("")
        (app / "models.py").write_text("from django.db import models\n\n" + models_code)
    result = manage(stock, "check", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert error in result.stderr, result.stderr


def test_a_cached_manager_while_the_cache_is_off_is_a_warning_not_an_error(stock: Path):
    add_to_settings(stock, 'INSTALLED_APPS += ["notes"]')
    app = stock / "notes"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text(
        "from django.db import models\nfrom django_scaleops.cache import CachedManager\n\n"
        "class Note(models.Model):\n    objects = CachedManager()\n"
    )
    checked = manage(stock, "check")
    assert "scaleops.W303" in checked.stderr and "notes.Note" in checked.stderr
    assert "scaleops.E30" not in checked.stderr
    manage(stock, "migrate")


# ---- the README's quick start, step 2, on PostgreSQL (primary + standby) and Redis


def readme_quick_start() -> list[str]:
    """The python blocks of the README's quick start, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start in your project") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def as_settings_code(block: str) -> str:
    """Fill the README's `...` placeholders with what `startproject` wrote."""
    code = block.replace("[..., ", "[*INSTALLED_APPS, ")
    code = re.sub(
        r"^ *\.\.\.,.*$",
        '    *[m for m in MIDDLEWARE if m != "django.middleware.security.SecurityMiddleware"],',
        code,
        flags=re.M,
    )
    assert "..." not in code, "the README's quick start has a placeholder this test cannot fill"
    return code


def test_readme_quick_start_on_postgresql_and_redis(tmp_path: Path):
    blocks = readme_quick_start()
    assert len(blocks) == 3, "the README's quick start changed shape: update this test with it"
    add_app, switch_on, urls = blocks
    project = start_project(tmp_path)
    with scratch_services("stock") as urls_env:
        add_to_settings(project, as_settings_code(add_app))
        add_to_settings(project, as_settings_code(switch_on))
        # The README's example hosts stand for the launcher's servers.
        add_to_settings(
            project,
            "import os\n"
            "from django_scaleops.testing.env import database_from_url\n"
            'for _alias, _var in (("default", "DATABASE_URL"), ("replica", "REPLICA_URL")):\n'
            "    _real = database_from_url(os.environ[_var])\n"
            '    DATABASES[_alias].update({k: _real[k] for k in ("HOST", "PORT", "NAME", "USER", "PASSWORD")})\n'
            'CACHES["default"]["LOCATION"] = os.environ["REDIS_URL"]\n'
            'SCALEOPS_THROTTLE_EXEMPT_PATHS = ["/admin/"]',
        )
        url_file = project / "mysite" / "urls.py"
        url_file.write_text(url_file.read_text() + "\n" + urls)
        env = project_env(**urls_env)

        checked = manage(project, "check", "--database", "default", env=env)
        assert not re.search(r"scaleops\.[EW]\d{3}", checked.stdout + checked.stderr), checked.stderr
        manage(project, "migrate", env=env)
        manage(project, "ensure_partitions", env=env)

        (project / "admin_flow.py").write_text(ADMIN_FLOW)
        flow = run(["admin_flow.py"], cwd=project, env={**env, "DJANGO_SETTINGS_MODULE": "mysite.settings"})
        secret = json.loads(flow.stdout.strip().splitlines()[-1])["secret"]

        # The new key is honoured by the throttle middleware, and the request carries an ID.
        request = (
            "import django; django.setup()\n"
            "from django.test.utils import setup_test_environment; setup_test_environment()\n"
            "from django.test import Client\n"
            "import json, sys\n"
            "client = Client()\n"
            "good = client.get('/health/', HTTP_X_API_KEY=sys.argv[1])\n"
            "bad = client.get('/health/', HTTP_X_API_KEY='sops_notakey_' + 'x' * 43)\n"
            "print(json.dumps({'good': [good.status_code, good.get('RateLimit-Policy'), good.get('X-Request-ID')],"
            " 'bad': bad.status_code}))\n"
        )
        (project / "request.py").write_text(request)
        out = run(["request.py", secret], cwd=project, env={**env, "DJANGO_SETTINGS_MODULE": "mysite.settings"})
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        status, policy, request_id = answer["good"]
        assert status in (200, 401, 403)  # /health/ is for staff or a token; the limiter ran first
        assert policy and "Standard" in policy, answer
        assert request_id, answer
        assert answer["bad"] in (401, 403), answer
