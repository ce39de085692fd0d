"""The sdist and the wheel carry what the package reads at run time, and metadata that matches what we test."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import trove_classifiers

pytestmark = pytest.mark.units  # no server: also runs under tests.settings_units (make test-units)

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "django_scaleops"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist, and a wheel built from that sdist (as `python -m build` does), so both are checked."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], check=True, capture_output=True)
    return out


def wheel_of(dist: Path) -> zipfile.ZipFile:
    (wheel,) = dist.glob("*.whl")
    return zipfile.ZipFile(wheel)


def metadata_of(dist: Path):
    wheel = wheel_of(dist)
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(wheel.read(name).decode()), wheel


def package_files() -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    }


def test_the_wheel_holds_every_file_of_the_package_and_nothing_else(dist: Path):
    shipped = {n for n in wheel_of(dist).namelist() if n.startswith("django_scaleops/")}
    assert package_files() - shipped == set(), "files of the package missing from the wheel"
    assert shipped - package_files() == set(), "files in the wheel that the package does not have"
    assert "django_scaleops/templates/scaleops/apikey_created.html" in shipped


def test_the_sdist_holds_the_package_tests_docs_and_license(dist: Path):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for required in ("LICENSE", "README.md", "CHANGELOG.md", "setup.cfg", "pyproject.toml", "MANIFEST.in"):
        assert required in names
    assert package_files() <= names
    assert any(name.startswith("tests/") for name in names)
    assert any(name.startswith("docs/") for name in names)
    assert not any("__pycache__" in name for name in names)


def test_twine_accepts_both_files(dist: Path):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def tox_matrix() -> tuple[set[str], set[str]]:
    """Django and Python versions tox.ini runs."""
    tox = configparser.ConfigParser()
    tox.read(REPO / "tox.ini")
    envlist = tox["tox"]["envlist"]
    pythons = set()
    for py in re.findall(r"py(\{[\d,]+\}|\d+)", envlist):
        for version in py.strip("{}").split(","):
            pythons.add(f"{version[0]}.{version[1:]}")
    djangos = set(re.findall(r"Django>=(\d+\.\d+),", tox["testenv"]["deps"]))
    return djangos, pythons


def test_classifiers_are_real_and_name_the_versions_tox_tests(dist: Path):
    metadata, _ = metadata_of(dist)
    classifiers = metadata.get_all("Classifier")
    assert classifiers and set(classifiers) <= trove_classifiers.classifiers
    djangos, pythons = tox_matrix()
    assert djangos == {"5.2", "6.1"} and pythons == {"3.11", "3.12", "3.13"}
    named_djangos = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Framework :: Django :: ")}
    named_pythons = {
        c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert named_djangos == djangos
    assert named_pythons == pythons
    assert metadata["Requires-Python"] == ">=3.11"


def test_license_urls_extras_and_the_pytest_plugin(dist: Path):
    metadata, wheel = metadata_of(dist)
    names = wheel.namelist()
    assert any(re.search(r"\.dist-info/(licenses/)?LICENSE$", n) for n in names), "no license file in the wheel"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    assert {"Documentation", "Changelog", "Source", "Issues"} <= set(urls)
    extras = set(metadata.get_all("Provides-Extra"))
    install = (REPO / "README.md").read_text().split("## Quick start in your project", 1)[1]
    documented = set(re.findall(r"\[(\w+)\]", install.split("```", 3)[1]))
    assert documented and documented <= extras, documented - extras
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    points = configparser.ConfigParser()
    points.read_string(wheel.read(entry_points).decode())
    assert points["pytest11"]["django_scaleops"] == "django_scaleops.testing.pytest_plugin"
