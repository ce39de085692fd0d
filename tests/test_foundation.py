"""The app itself: settings object, system checks, URL helpers, progress bar."""

from __future__ import annotations

import ast
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


@override_settings(SCALEOPS_MONITOR_SLOW_QUERY_MS="100")
def test_wrong_type_is_an_error_naming_the_value():
    messages = [m for m in scaleops_messages() if m.id == "scaleops.E001"]
    assert len(messages) == 1
    assert "SCALEOPS_MONITOR_SLOW_QUERY_MS" in messages[0].msg
    assert "'100'" in messages[0].msg


@override_settings(SCALEOPS_MONITOR_HEALTH_WINDOW=True)
def test_a_bool_is_not_a_number():
    assert "scaleops.E001" in [m.id for m in scaleops_messages()]


@override_settings(SCALEOPS_MONITOR_SLOW_QUERY_MS="100")
def test_a_value_of_the_wrong_type_reads_as_the_default():
    default = Settings.declared()["SCALEOPS_MONITOR_SLOW_QUERY_MS"].default
    value = conf.SCALEOPS_MONITOR_SLOW_QUERY_MS
    assert value == default


PACKAGE = Path(__file__).resolve().parent.parent / "django_scaleops"
SETTINGS_DOC = PACKAGE.parent / "docs" / "settings.md"
CHECK_ID = re.compile(r"scaleops\.[EW]\d{3}")
# What a check returns; each is built with the ID of the one problem it reports.
MESSAGE_CLASSES = {"CheckMessage", "Debug", "Info", "Warning", "Error", "Critical"}


def check_id_sites():
    """Every check message built in the package: its ID -> [(file:line, class name)]."""
    sites: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if callee not in MESSAGE_CLASSES:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            given = next((keyword.value for keyword in node.keywords if keyword.arg == "id"), None)
            # A literal at the call site, so that this test sees which problem each ID names.
            assert isinstance(given, ast.Constant) and isinstance(given.value, str), f"{where}: id must be a literal"
            sites.setdefault(given.value, []).append((where, callee))
    return sites


def test_every_check_id_names_one_problem():
    sites = check_id_sites()
    assert sites, "no check message found: the scan is broken"
    shared = {check_id: [where for where, _ in found] for check_id, found in sites.items() if len(found) > 1}
    assert shared == {}, "a check ID is used at more than one call site (for more than one problem)"
    for check_id, [(where, callee)] in sites.items():
        assert CHECK_ID.fullmatch(check_id), f"{where}: {check_id!r} is not scaleops.E### or scaleops.W###"
        expected = "Error" if check_id.startswith("scaleops.E") else "Warning"
        assert callee == expected, f"{where}: {check_id} is built as {callee}, not {expected}"


def test_every_check_id_is_documented_once():
    used = set(check_id_sites())
    documented = re.findall(r"^\| `(scaleops\.[EW]\d{3})`", SETTINGS_DOC.read_text(), re.M)
    assert len(documented) == len(set(documented)), "an ID is documented twice"
    assert used - set(documented) == set(), "check IDs used in code but missing from docs/settings.md"
    assert set(documented) - used == set(), "check IDs documented in docs/settings.md but never used"


def test_the_package_mentions_only_check_ids_that_exist():
    used = set(check_id_sites())
    for path in PACKAGE.rglob("*.py"):
        stale = set(CHECK_ID.findall(path.read_text())) - used
        assert stale == set(), f"{path.name} mentions retired or unknown check IDs"


def documented_settings():
    """Setting name -> its cells (type, default, limits, meaning) in docs/settings.md."""
    rows = {}
    for line in SETTINGS_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`SCALEOPS_[A-Z0-9_]+`", cells[0]):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} is documented twice"
            rows[name] = cells[1:]
    return rows


def test_every_setting_is_documented_with_its_limits():
    rows = documented_settings()
    declared = Settings.declared()
    assert set(rows) == set(declared)
    for name, setting in declared.items():
        limits = rows[name][2]
        if setting.limits():
            assert limits == setting.limits() or limits.startswith(setting.limits() + "; "), name
        else:
            # Free text allowed where a capability's own check enforces it, e.g. "a rate that parses (`E209`)".
            assert not limits or re.search(r"\(`[EW]\d{3}`\)$", limits), name


def test_every_renamed_setting_is_documented_with_its_old_name():
    text = SETTINGS_DOC.read_text()
    for old, new in Settings.renamed().items():
        assert re.search(rf"^\| `{old}` \| `{new}`", text, re.M), f"{old} -> {new} is not in Renamed settings"


def test_setting_names_follow_the_pattern():
    areas = {"LOG", "APM", "ROUTER", "PARTITION", "THROTTLE", "BULK", "CACHE", "MONITOR", "HTTP", "PGBOUNCER"}
    areas.add("DASHBOARD")
    for name in Settings.declared():
        assert re.fullmatch(r"SCALEOPS_[A-Z0-9]+_[A-Z0-9_]+", name), name
        assert name.split("_")[1] in areas, f"{name}: unknown area"
        # "Which cache alias" is spelt one way: <AREA>_CACHE_ALIAS (the cache's own: SCALEOPS_CACHE_ALIAS).
        assert not re.search(r"_(REDIS_)?CACHE$", name), f"{name}: a cache alias is named *_CACHE_ALIAS"
