"""Process plumbing shared by the launcher and the servers it starts: who runs them, free loopback
ports, waiting for a port, finding a binary. No import of the launcher, so every server module can
use it."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A service could not be started, stopped or reached."""


def require_binary(name: str, package: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if not found:
        raise ServiceError(f"'{name}' not found: install the '{package}' package.")
    return found


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServiceError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f}s") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class RunAs:
    """Who runs the servers: PostgreSQL and PgBouncer refuse to run as root."""

    uid: int
    gid: int

    @classmethod
    def detect(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls(os.getuid(), os.getgid())
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError(
                "running as root, but there is no 'postgres' user to run PostgreSQL as; "
                "install the 'postgresql' package or run as an ordinary user."
            ) from None
        return cls(entry.pw_uid, entry.pw_gid)

    def run(self, args: list[str], *, cwd: Path, check: bool = True, timeout: float = 60) -> str:
        """Run a command as this user and return its output; raise ServiceError on failure."""
        kwargs: dict[str, Any] = {}
        if self.uid != os.getuid():
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        proc = subprocess.run(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # keep a terminal's Ctrl-C away from the servers
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise ServiceError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return str(proc.stdout)

    def chown(self, path: Path) -> None:
        if self.uid != os.getuid():
            os.chown(path, self.uid, self.gid)
