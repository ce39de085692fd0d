"""Fork safety with Django's native pool: a forked child (gunicorn --preload, prefork workers)
must neither use nor close the sessions it inherited from its parent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The parent opens a pooled connection and keeps it checked out, then forks (as a preloading
# master that touched the database would). Phase two forks while the connection sits idle in
# the pool. Each child reports the backend it gets and exits normally, running its finalisers.
PROBE = textwrap.dedent(
    """
    import json, os, sys, warnings
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings
    settings.SCALEOPS_PGBOUNCER_FORK_GUARD = sys.argv[1] == "1"
    import django
    django.setup()
    from django.db import connections

    params = {k: v for k, v in connections.settings["default"].items() if k != "TEST"}
    params.update(OPTIONS={"pool": {"min_size": 1, "max_size": 1}}, CONN_MAX_AGE=0)  # one session: a lost one shows
    both = connections.configure_settings({"default": connections.settings["default"], "pooled": params})
    connections.settings["pooled"] = both["pooled"]

    def backend_pid():
        with connections["pooled"].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    def in_child():
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with the pool's threads alive
            pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                answer = {"pid": backend_pid()}
            except Exception as exc:
                answer = {"error": type(exc).__name__}
            os.write(write, json.dumps(answer).encode())
            connections.close_all()  # as Django does after a request, Celery at worker start
            sys.exit(0)  # a normal exit: finalisers run in the child
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as pipe:
            return json.loads(pipe.read())

    def parent_pid():
        try:
            return backend_pid()
        except Exception as exc:
            return type(exc).__name__

    report = {"parent": backend_pid()}
    report["checked_out_child"] = in_child()
    report["parent_after_first"] = parent_pid()
    connections["pooled"].close()  # back into the pool, still open
    report["idle_child"] = in_child()
    report["parent_after_second"] = parent_pid()
    from django_scaleops.pgbouncer.forking import close_pools
    close_pools()  # what a gunicorn pre_fork hook calls: nothing left to inherit
    report["pools_after_close"] = sorted(connections["pooled"]._connection_pools)
    print(json.dumps(report))
    """
)


def run_probe(guard: bool) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if guard else "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.django_db(databases=["default"])
def test_forked_children_get_their_own_sessions_and_leave_the_parents_alone():
    report = run_probe(guard=True)
    parent = report["parent"]
    assert isinstance(parent, int)
    for phase in ("checked_out_child", "idle_child"):
        child = report[phase]
        assert isinstance(child, dict) and "pid" in child, report
        assert child["pid"] != parent, f"{phase} reused the parent's session: {report}"
    # The parent's session survived both children, including their exit.
    assert report["parent_after_first"] == parent
    assert report["parent_after_second"] == parent
    assert report["pools_after_close"] == []


@pytest.mark.django_db(databases=["default"])
def test_without_the_guard_a_child_talks_over_the_parents_session():
    report = run_probe(guard=False)
    # What the guard prevents: the child is handed the parent's own PostgreSQL session.
    assert report["checked_out_child"] == {"pid": report["parent"]}, report
