"""The app itself: settings object, system checks, URL helpers, progress bar."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import OutputWrapper
from django.test import override_settings

from django_scaleops.conf import Settings, conf
from django_scaleops.progress import ProgressBar
from django_scaleops.testing.env import database_from_url, redis_cache_from_url

pytestmark = pytest.mark.units  # no server: also runs under tests.settings_units (make test-units)


def scaleops_messages():
    return [m for m in run_checks() if m.id and m.id.startswith("scaleops.")]


def test_manage_check_is_clean():
    out = StringIO()
    call_command("check", stdout=out)
    assert "no issues" in out.getvalue()


@override_settings(SCALEOPS_NOT_A_REAL_SETTING=1)
def test_unknown_setting_is_flagged():
    messages = scaleops_messages()
    assert [m.id for m in messages] == ["scaleops.W001"]
    assert "SCALEOPS_NOT_A_REAL_SETTING" in messages[0].msg


def test_declared_settings_have_docs_and_valid_defaults():
    for name, setting in Settings.declared().items():
        assert name.startswith("SCALEOPS_")
        assert setting.doc
        assert setting.is_valid(setting.default), name


@override_settings(SCALEOPS_NOT_A_REAL_SETTING=1)
def test_conf_reads_settings_lazily():
    name, setting = next(iter(Settings.declared().items()))
    with override_settings(**{name: setting.default}):
        assert getattr(conf, name) == setting.default


def test_database_from_url():
    entry = database_from_url("postgres://app:p%40ss@db.local:6432/chat?sslmode=require", CONN_MAX_AGE=60)
    assert entry["NAME"] == "chat"
    assert (entry["USER"], entry["PASSWORD"], entry["HOST"], entry["PORT"]) == ("app", "p@ss", "db.local", "6432")
    assert entry["OPTIONS"] == {"sslmode": "require"}
    assert entry["CONN_MAX_AGE"] == 60


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgres://u@h:5432", "not a url"])
def test_database_from_url_rejects_bad_urls(url):
    with pytest.raises(ValueError, match=r"PostgreSQL URL|names no database"):
        database_from_url(url)


def test_redis_cache_from_url():
    assert redis_cache_from_url("redis://127.0.0.1:6380/1")["LOCATION"] == "redis://127.0.0.1:6380/1"
    with pytest.raises(ValueError, match="Redis URL"):
        redis_cache_from_url("http://127.0.0.1")


def test_progress_bar_on_a_pipe_prints_every_tenth():
    out = StringIO()
    with ProgressBar(OutputWrapper(out), total=1000, label="rows") as bar:
        for _ in range(100):
            bar.advance(10)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("rows [")
    assert "  0% 0/1000" in lines[0]
    assert lines[-1].endswith(")") and "100% 1000/1000" in lines[-1]
    assert len(lines) == 11


def test_progress_bar_with_zero_total():
    out = StringIO()
    with ProgressBar(out, total=0) as bar:
        bar.advance(0)
    assert "100% 0/0" in out.getvalue()


@override_settings(SCALEOPS_SLOW_QUERY_MS="100")
def test_wrong_type_is_an_error_naming_the_value():
    messages = [m for m in scaleops_messages() if m.id == "scaleops.E001"]
    assert len(messages) == 1
    assert "SCALEOPS_SLOW_QUERY_MS" in messages[0].msg
    assert "'100'" in messages[0].msg


@override_settings(SCALEOPS_MONITOR_HEALTH_WINDOW=True)
def test_a_bool_is_not_a_number():
    assert "scaleops.E001" in [m.id for m in scaleops_messages()]


@override_settings(SCALEOPS_SLOW_QUERY_MS="100")
def test_a_value_of_the_wrong_type_reads_as_the_default():
    default = Settings.declared()["SCALEOPS_SLOW_QUERY_MS"].default
    value = conf.SCALEOPS_SLOW_QUERY_MS
    assert value == default


def test_every_check_id_is_documented_once():
    root = Path(__file__).resolve().parent.parent
    used = set()
    for path in (root / "django_scaleops").rglob("*.py"):
        used |= set(re.findall(r"scaleops\.[EW]\d{3}", path.read_text()))
    documented = re.findall(r"^\| `(scaleops\.[EW]\d{3})`", (root / "docs" / "settings.md").read_text(), re.M)
    assert len(documented) == len(set(documented)), "an ID is documented twice"
    assert used - set(documented) == set(), "check IDs used in code but missing from docs/settings.md"
