"""Test what users install: build the wheel, install it (not editable) in a fresh virtualenv, and run
the ``installed`` smoke subset from a copy of the tests that has no source tree beside it.

    python tests/run_installed.py [PYTEST ARGS...]

`make test` runs it after the main suite, under the same services (their URLs are inherited).
The tests check, through ``SCALEOPS_EXPECT_INSTALLED``, that the package came from the virtualenv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What the smoke run needs beside the package: the tests, the example project and the pytest config.
COPIED = ("tests", "example_project", "manage.py", "setup.cfg", "README.md", "docs")


def main(pytest_args: list[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="scaleops-installed-") as scratch:
        root = Path(scratch)
        dist = root / "dist"
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (wheel,) = dist.glob("*.whl")
        shipped = sorted(n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("django_scaleops/"))
        print(f"built {wheel.name}: {len(shipped)} files; not Python:", flush=True)
        for name in shipped:
            if not name.endswith(".py"):
                print(f"  {name}", flush=True)

        env_dir = root / "venv"
        venv.create(env_dir, with_pip=True)
        python = str(env_dir / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", f"{wheel}[dev]"], check=True)

        project = root / "project"
        project.mkdir()
        for name in COPIED:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(
                    source, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts")
                )
            else:
                shutil.copy2(source, project / name)
        site_packages = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["SCALEOPS_EXPECT_INSTALLED"] = site_packages
        env["SCALEOPS_SOURCE_TREE"] = str(REPO)
        print(f"wheel installed in a fresh virtualenv ({time.monotonic() - started:.0f}s); smoke tests:", flush=True)
        result = subprocess.run(
            [python, "-m", "pytest", "-m", "installed", "-p", "no:cacheprovider", *pytest_args],
            cwd=project,
            env=env,
        )
        return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
