"""The pytest plugin from a project outside this tree, with the files docs/testing.md tells users to copy."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.outside import SERVICE_VARS, project_env, run, start_project

pytestmark = pytest.mark.installed

REPO = Path(__file__).resolve().parent.parent

# What the run saw, written where this test can read it after the plugin has torn everything down.
PROBE = """
import json, os
import pytest
from django.db import connections
from django_scaleops.models import ApiKey, Tier


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_probe():
    key, _secret = ApiKey.create_key(name="probe", tier=Tier.objects.get(name="Standard"))
    import time
    deadline = time.monotonic() + 10
    while not ApiKey.objects.using("replica").filter(pk=key.pk).exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        replica_port = cursor.fetchone()[0]
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump({"dir": os.environ.get("SCALEOPS_SERVICES_DIR"), "replica_port": replica_port,
                   "database_url": os.environ["DATABASE_URL"]}, out)
"""


def doc_files() -> dict[str, tuple[str, bool]]:
    """docs/testing.md's copy-paste blocks, by the file named on their first line."""
    text = (REPO / "docs" / "testing.md").read_text()
    section = text[text.index("## In your own project's tests") :]
    files = {}
    for block in re.findall(r"```(?:python|ini)\n(.*?)```", section, re.S):
        first, _, body = block.partition("\n")
        match = re.fullmatch(r"# (\S+)( \(at the end\))?", first)
        assert match, f"a block without a file name: {first!r}"
        files[match.group(1)] = (body, bool(match.group(2)))
    return files


def test_the_documented_set_up_gives_an_outside_project_its_own_servers(tmp_path: Path):
    files = doc_files()
    assert set(files) == {"pytest.ini", "mysite/settings.py", "conftest.py", "test_services.py"}
    project = start_project(tmp_path)
    for name, (body, append) in files.items():
        path = project / name
        path.write_text((path.read_text() + "\n" if append else "") + body)
    (project / "mysite" / "settings.py").write_text(
        (project / "mysite" / "settings.py")
        .read_text()
        .replace("INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "django_scaleops",', 1)
    )
    (project / "test_probe.py").write_text(PROBE)
    probe_out = tmp_path / "probe.json"
    # No URLs and no services folder: the plugin must start its own set.
    env = {k: v for k, v in project_env(PROBE_OUT=str(probe_out)).items() if k not in SERVICE_VARS}
    env.pop("SCALEOPS_SERVICES_DIR", None)

    result = run(["-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=project, env=env, timeout=300)

    assert re.search(r"\b3 passed\b", result.stdout), result.stdout
    seen = json.loads(probe_out.read_text())
    assert seen["dir"] and seen["dir"] != os.environ.get("SCALEOPS_SERVICES_DIR")
    assert f":{seen['replica_port']}/" not in seen["database_url"]  # the standby is its own server
    assert not Path(seen["dir"]).exists(), "the plugin left its servers behind"


def test_the_plugin_is_inert_until_switched_on(tmp_path: Path):
    (tmp_path / "test_nothing.py").write_text(
        "import os\n\ndef test_no_servers():\n    assert 'SCALEOPS_SERVICES_DIR' not in os.environ\n"
    )
    env = {k: v for k, v in project_env().items() if k not in SERVICE_VARS}
    env.pop("SCALEOPS_SERVICES_DIR", None)
    result = run(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:django"], cwd=tmp_path, env=env)
    assert "1 passed" in result.stdout
    helped = run(["-m", "pytest", "--help"], cwd=tmp_path, env=env)
    assert "--scaleops-services" in helped.stdout
