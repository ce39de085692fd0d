"""Write ``pgbouncer.ini`` and ``userlist.txt`` from Django's ``DATABASES``.

One ``[databases]`` entry per PostgreSQL server (primary and replicas alike), transaction
pooling by default, pools sized by :func:`calculate_pool_size`. Passwords reach only
``userlist.txt``, and only as SCRAM or md5 verifiers; nothing here prints them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import connections

from django_scaleops.conf import conf
from django_scaleops.pgbouncer.aliases import POOL_MODES
from django_scaleops.pgbouncer.sizing import PoolRecommendation

AUTH_TYPES = ("scram-sha-256", "md5")
SCRAM_ITERATIONS = 4096
# Keys PgBouncer accepts unquoted in [databases]; anything else is double-quoted.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ConfigError(ValueError):
    """DATABASES cannot be turned into a PgBouncer configuration; the message says why."""


@dataclass(frozen=True)
class ServerEntry:
    """One ``[databases]`` line: the name clients use, and the server behind it."""

    name: str
    alias: str
    host: str
    port: str
    dbname: str
    user: str

    def line(self) -> str:
        params = {"host": self.host or "localhost", "port": self.port or "5432", "dbname": self.dbname}
        body = " ".join(f"{key}={_connstring_value(value)}" for key, value in params.items())
        return f"{_ini_key(self.name)} = {body}"


@dataclass(frozen=True)
class GeneratedConfig:
    """The two files' text, and what a reader of the command's output needs to know."""

    ini: str
    userlist: str
    entries: tuple[ServerEntry, ...]
    users: tuple[str, ...]

    def write(self, directory: Path, *, ini_name: str = "pgbouncer.ini") -> tuple[Path, Path]:
        """Write both files; the userlist is created private (mode 0600) before any secret is written."""
        directory.mkdir(parents=True, exist_ok=True)
        ini_path, userlist_path = directory / ini_name, directory / "userlist.txt"
        fd = os.open(userlist_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.userlist)
        ini_path.write_text(self.ini)
        return ini_path, userlist_path


def server_aliases(requested: Iterable[str] | None = None) -> list[str]:
    """PostgreSQL aliases to put behind PgBouncer: those asked for, or every alias that is not
    itself declared as going through PgBouncer."""
    pooled = set(conf.SCALEOPS_PGBOUNCER_ALIASES)
    if requested:
        names = list(requested)
        unknown = [name for name in names if name not in connections.settings]
        if unknown:
            raise ConfigError(f"unknown database aliases: {', '.join(unknown)}")
        return names
    return [
        alias
        for alias, params in connections.settings.items()
        if "postgresql" in str(params.get("ENGINE", "")) and alias not in pooled
    ]


def server_entries(aliases: Iterable[str]) -> list[ServerEntry]:
    """One entry per distinct server+database; a second server with the same database name
    (a replica) is named ``<name>_<alias>``."""
    entries: list[ServerEntry] = []
    seen: set[tuple[str, str, str, str]] = set()
    for alias in aliases:
        params: Mapping[str, Any] = connections[alias].settings_dict
        if "postgresql" not in str(params.get("ENGINE", "")):
            raise ConfigError(f"alias {alias!r} is not a PostgreSQL database ({params.get('ENGINE')})")
        dbname = str(params.get("NAME") or "")
        if not dbname:
            raise ConfigError(f"alias {alias!r} has no NAME")
        key = (str(params.get("HOST") or ""), str(params.get("PORT") or ""), dbname, str(params.get("USER") or ""))
        if key in seen:
            continue
        seen.add(key)
        taken = {entry.name for entry in entries}
        name = dbname if dbname not in taken else f"{dbname}_{alias}"
        entries.append(ServerEntry(name, alias, key[0], key[1], dbname, key[3]))
    if not entries:
        raise ConfigError("no PostgreSQL alias to put behind PgBouncer")
    return entries


def scram_secret(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """A PostgreSQL-format SCRAM-SHA-256 verifier (RFC 5802 / 7677) for ``password``."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def md5_secret(user: str, password: str) -> str:
    """PostgreSQL's md5 verifier: ``md5`` + md5(password + user)."""
    return "md5" + hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()


def server_secrets(alias: str, users: Iterable[str]) -> dict[str, str]:
    """The roles' stored verifiers, read from ``pg_authid`` through ``alias`` (superuser only).

    With the server's own SCRAM verifier in the userlist, PgBouncer can also log in to a server
    that asks for SCRAM (its salt and iterations must match the server's).
    """
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", [list(users)])
        return {str(name): str(secret) for name, secret in cursor.fetchall() if secret}


def build_config(
    entries: list[ServerEntry],
    recommendation: PoolRecommendation,
    *,
    auth_type: str = "scram-sha-256",
    pool_mode: str = "transaction",
    listen_addr: str = "127.0.0.1",
    listen_port: int = 6432,
    auth_file: str = "userlist.txt",
    admin_users: Iterable[str] = (),
    stored_secrets: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> GeneratedConfig:
    """Render ``pgbouncer.ini`` and ``userlist.txt`` for ``entries``.

    Passwords come from each entry's alias (``PASSWORD``); ``stored_secrets`` (user -> verifier
    read from the server) win over computed ones. ``extra`` adds or overrides ``[pgbouncer]`` keys.
    """
    if auth_type not in AUTH_TYPES:
        raise ConfigError(f"auth_type must be one of {', '.join(AUTH_TYPES)}, not {auth_type!r}")
    if pool_mode not in POOL_MODES:
        raise ConfigError(f"pool_mode must be one of {', '.join(POOL_MODES)}, not {pool_mode!r}")
    users: dict[str, str] = {}
    for entry in entries:
        if not entry.user:
            raise ConfigError(f"alias {entry.alias!r} has no USER; PgBouncer needs one per userlist line")
        if entry.user in users:
            continue
        users[entry.user] = _secret(entry, auth_type, stored_secrets or {})
    settings: dict[str, str] = {
        "listen_addr": listen_addr,
        "listen_port": str(listen_port),
        "auth_type": auth_type,
        "auth_file": auth_file,
        "pool_mode": pool_mode,
        "default_pool_size": str(recommendation.default_pool_size),
        "reserve_pool_size": str(recommendation.reserve_pool_size),
        "reserve_pool_timeout": "3",
        "max_db_connections": str(recommendation.max_db_connections),
        "max_client_conn": str(recommendation.max_client_conn),
        "server_lifetime": "3600",
        "server_idle_timeout": "600",
        # Django sets no startup options by default; psycopg never sends extra_float_digits,
        # other drivers (JDBC) do, and PgBouncer refuses unknown startup parameters.
        "ignore_startup_parameters": "extra_float_digits",
        "stats_users": ",".join(users),
    }
    admins = list(admin_users)
    if admins:
        settings["admin_users"] = ",".join(admins)
    settings.update(extra or {})
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [f";; Generated by django-scaleops (manage.py pgbouncer_config) on {stamp}."]
    header += [f";; {note}" for note in recommendation.notes]
    lines = [*header, "", "[databases]", *(entry.line() for entry in entries), "", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    userlist = "".join(f"{_quoted(user)} {_quoted(secret)}\n" for user, secret in users.items())
    return GeneratedConfig("\n".join(lines) + "\n", userlist, tuple(entries), tuple(users))


def _secret(entry: ServerEntry, auth_type: str, stored: Mapping[str, str]) -> str:
    stored_secret = stored.get(entry.user, "")
    if auth_type == "scram-sha-256" and stored_secret.startswith("SCRAM-SHA-256$"):
        return stored_secret
    if auth_type == "md5" and stored_secret.startswith("md5"):
        return stored_secret
    password = str(connections[entry.alias].settings_dict.get("PASSWORD") or "")
    if not password:
        raise ConfigError(
            f"alias {entry.alias!r} (user {entry.user!r}) has no PASSWORD, so PgBouncer could not check"
            f" {auth_type} logins; set PASSWORD or copy the stored verifier (--secrets-from ALIAS)"
        )
    return scram_secret(password) if auth_type == "scram-sha-256" else md5_secret(entry.user, password)


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _ini_key(name: str) -> str:
    return name if _PLAIN_NAME.match(name) else _quoted(name)


def _connstring_value(value: str) -> str:
    if value and re.match(r"^[A-Za-z0-9_.\-/:]+$", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
