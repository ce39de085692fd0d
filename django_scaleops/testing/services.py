"""Start and control throwaway PostgreSQL, streaming replica, Redis and PgBouncer servers.

One launcher serves the test suite, ``make demo`` and the benchmarks. Everything lives in one
temporary folder on free loopback ports and is described by ``services.json`` there, so any
process that knows the folder (``SCALEOPS_SERVICES_DIR``) can stop, restart or slow down a
service, and a reaper process tears the whole set down when its owner dies, however it dies.

Command line::

    python -m django_scaleops.testing.services run -- pytest -x
    python -m django_scaleops.testing.services start      # prints the env, keeps running
    python -m django_scaleops.testing.services stop DIR

When ``DATABASE_URL``, ``REPLICA_URL``, ``REDIS_URL`` and ``PGBOUNCER_URL`` are all set already,
nothing is started and those are used.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# Re-exported: callers of the launcher have always imported these from here.
from django_scaleops.testing.processes import RunAs as RunAs
from django_scaleops.testing.processes import ServiceError as ServiceError
from django_scaleops.testing.processes import free_ports as free_ports
from django_scaleops.testing.processes import require_binary
from django_scaleops.testing.processes import wait_for_port as wait_for_port

if TYPE_CHECKING:
    from django_scaleops.testing.redis_cluster import RedisCluster

EXTERNAL_URL_VARS = ("DATABASE_URL", "REPLICA_URL", "REDIS_URL", "PGBOUNCER_URL")
SERVICES_DIR_VAR = "SCALEOPS_SERVICES_DIR"
MANIFEST = "services.json"
DIR_PREFIX = "scaleops-services-"
DATABASE_NAME = "scaleops"
SUPERUSER = "postgres"
# Seconds pg_ctl waits for a server to accept connections.
START_TIMEOUT = 180


# --------------------------------------------------------------------------- discovery


def find_postgres_bindir() -> Path:
    """Locate the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup).

    ``PG_BINDIR`` wins; then Debian's ``/usr/lib/postgresql/<version>/bin`` (newest first),
    the RHEL and Homebrew layouts, and finally ``PATH``.
    """
    explicit = os.environ.get("PG_BINDIR")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    patterns = (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
    )
    for pattern in patterns:
        candidates.extend(sorted((Path(p) for p in glob.glob(pattern)), key=_version_key, reverse=True))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup", "postgres")):
            return bindir
    raise ServiceError(
        "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found. Install the "
        "'postgresql' package (Debian/Ubuntu) or set PG_BINDIR to the folder holding them."
    )


def _version_key(path: Path) -> tuple[int, ...]:
    digits = "".join(ch if ch.isdigit() else " " for ch in str(path))
    return tuple(int(part) for part in digits.split()) or (0,)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- process helpers


# --------------------------------------------------------------------------- services


@dataclass
class Manifest:
    """What ``services.json`` records: enough for any process to control the set."""

    root: str
    bindir: str
    uid: int
    gid: int
    owner_pid: int
    primary_port: int
    replica_port: int
    redis_port: int
    pgbouncer_port: int
    # Started on demand (``Services.redis_cluster()``, ``Services.add_replica()``), recorded here
    # so teardown and the reaper stop them too.
    redis_cluster_ports: list[int] = field(default_factory=list)
    redis_cluster_bus_ports: list[int] = field(default_factory=list)
    redis_ha_cluster_ports: list[int] = field(default_factory=list)
    redis_ha_cluster_bus_ports: list[int] = field(default_factory=list)
    extra_replica_ports: list[int] = field(default_factory=list)


class PostgresServer:
    """A PostgreSQL data directory under the services folder, controlled with pg_ctl."""

    def __init__(self, services: Services, name: str, port: int) -> None:
        self.services = services
        self.name = name
        self.port = port
        self.datadir = services.root / name

    @property
    def url(self) -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE_NAME}"

    def _pg_ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        pg_ctl = str(self.services.bindir / "pg_ctl")
        command = [pg_ctl, "-D", str(self.datadir), *args]
        return self.services.run_as.run(command, cwd=self.services.root, check=check, timeout=timeout)

    def write_config(self, extra: Mapping[str, str] | None = None) -> None:
        """(Re)write the include file holding our settings; ``extra`` adds or overrides."""
        params = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.services.root}'",
            "max_connections": "300",
            # Throwaway data: durability costs start-up time and buys nothing.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "hot_standby": "on",
            # A standby query that conflicts with replay (a test's open read while the primary
            # truncates) is cancelled after 5 s, not PostgreSQL's 30: replay never stalls a suite.
            "max_standby_streaming_delay": "5s",
            "wal_receiver_status_interval": "1s",
            # A standby stopped for a while (the bulk benchmark stops it during a million-row
            # insert) must find the WAL it missed when it starts again, not a removed segment.
            "wal_keep_size": "2GB",
            "timezone": "'UTC'",
        }
        params.update(extra or {})
        body = "".join(f"{key} = {value}\n" for key, value in params.items())
        include = self.datadir / "scaleops.conf"
        include.write_text(body)
        self.services.run_as.chown(include)
        main_conf = self.datadir / "postgresql.conf"
        text = main_conf.read_text()
        if "include_if_exists = 'scaleops.conf'" not in text:
            main_conf.write_text(text + "\ninclude_if_exists = 'scaleops.conf'\n")

    def start(self) -> None:
        logfile = self.services.root / f"{self.name}.log"
        # Waiting is all a long start costs; failing one costs a test (a standby's crash recovery
        # on a loaded runner can pass a minute).
        self._pg_ctl("-l", str(logfile), "-w", "-t", str(START_TIMEOUT), "start", timeout=START_TIMEOUT + 10)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is pg_ctl's: smart, fast or immediate."""
        if self.is_running():
            if mode == "immediate":
                self._restartpoint()
            self._pg_ctl("-m", mode, "-w", "-t", "60", "stop", check=False)
        pid = _read_pid(self.datadir / "postmaster.pid")
        if pid and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        pid = _read_pid(self.datadir / "postmaster.pid")
        return bool(pid and _pid_alive(pid))

    def _restartpoint(self, wait: float = 5.0) -> None:
        """Before a standby is stopped like a crash: a checkpoint on the primary, replayed here,
        then a restartpoint, so its next start replays seconds of WAL, not minutes.

        A standby starts from its last restartpoint, and restartpoints follow the primary's
        checkpoints (every 5 minutes by default): after a busy part of the suite one start passed
        pg_ctl's 60 s wait on a loaded 2-core runner. Best effort: a standby that is paused,
        delayed or cut off is stopped all the same. (A checkpoint every 30 s on every server
        instead cost the bulk benchmark's COPY into chat_message about 15%.)
        """
        primary = self.services.primary
        if primary is self:
            return
        with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
            if self.sql("SELECT pg_is_in_recovery()") != "t" or not primary.is_running():
                return
            primary.sql("CHECKPOINT")
            target = primary.sql("SELECT pg_current_wal_lsn()")
            deadline = time.monotonic() + wait
            while self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") != "t":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.sql("CHECKPOINT")

    def reload(self) -> None:
        self._pg_ctl("reload")

    def promote(self) -> None:
        """Promote this standby to a primary (a new timeline); returns once it accepts writes."""
        self._pg_ctl("-w", "-t", "60", "promote")

    def set_apply_delay(self, delay: str | None) -> None:
        """Delay (e.g. ``"200ms"``) or, with None, undelay WAL replay on a standby."""
        extra = {"recovery_min_apply_delay": f"'{delay}'"} if delay else {}
        self.write_config(extra)
        if self.is_running():  # a stopped one reads it when it starts
            self.reload()

    def sql(self, statement: str, dbname: str = DATABASE_NAME) -> str:
        """Run one statement through psql and return its unaligned output."""
        psql = str(self.services.bindir / "psql")
        args = [psql, "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", dbname]
        return self.services.run_as.run([*args, "-c", statement], cwd=self.services.root).strip()


class DaemonService:
    """A daemon started with a pidfile in the services folder (Redis, PgBouncer)."""

    name = ""

    def __init__(self, services: Services, port: int) -> None:
        self.services = services
        self.port = port
        self.pidfile = services.root / f"{self.name}.pid"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write whatever files the daemon reads before it starts."""

    def start(self) -> None:
        self.prepare()
        self.services.run_as.run(self.command(), cwd=self.services.root)
        wait_for_port(self.port)

    def stop(self) -> None:
        pid = _read_pid(self.pidfile)
        if not pid or not _pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        # Wait until the port is really released, so a restart can bind it again.
        while time.monotonic() < deadline and _port_open(self.port):
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        pid = _read_pid(self.pidfile)
        return bool(pid and _pid_alive(pid))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RedisServer(DaemonService):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            require_binary("redis-server", "redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "yes",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.services.root / "redis.log"),
            "--dir", str(self.services.root),
        ]  # fmt: skip


class PgBouncerServer(DaemonService):
    """PgBouncer in transaction mode in front of the primary; admin console on the same port."""

    name = "pgbouncer"

    @property
    def url(self) -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE_NAME}"

    @property
    def admin_url(self) -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/pgbouncer"

    def prepare(self) -> None:
        root = self.services.root
        userlist = root / "userlist.txt"
        userlist.write_text(f'"{SUPERUSER}" ""\n')
        ini = root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.services.primary.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {userlist}\n"
            f"admin_users = {SUPERUSER}\n"
            f"stats_users = {SUPERUSER}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 20\n"
            "max_client_conn = 1000\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"pidfile = {self.pidfile}\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
        )
        for path in (userlist, ini):
            self.services.run_as.chown(path)

    def command(self) -> list[str]:
        return [require_binary("pgbouncer", "pgbouncer"), "-d", str(self.services.root / "pgbouncer.ini")]


class Services:
    """The whole set: primary, streaming replica, Redis and PgBouncer."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.root = Path(manifest.root)
        self.bindir = Path(manifest.bindir)
        self.run_as = RunAs(manifest.uid, manifest.gid)
        self.primary = PostgresServer(self, "primary", manifest.primary_port)
        self.replica = PostgresServer(self, "replica", manifest.replica_port)
        self.redis = RedisServer(self, manifest.redis_port)
        self.pgbouncer = PgBouncerServer(self, manifest.pgbouncer_port)

    # ---- the bigger topology, on demand

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        """Serialise changes to ``services.json`` across processes, and re-read it inside."""
        with open(self.root / "services.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.manifest = Manifest(**json.loads((self.root / MANIFEST).read_text()))
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_manifest(self) -> None:
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(asdict(self.manifest), indent=2))
        tmp.replace(self.root / MANIFEST)

    def _cluster(self, replicas: int = 0) -> RedisCluster | None:
        from django_scaleops.testing.redis_cluster import RedisCluster

        manifest = self.manifest
        ports, bus = (
            (manifest.redis_ha_cluster_ports, manifest.redis_ha_cluster_bus_ports)
            if replicas
            else (manifest.redis_cluster_ports, manifest.redis_cluster_bus_ports)
        )
        return RedisCluster(self.root, self.run_as, ports, bus, replicas=replicas) if ports else None

    def redis_cluster(self, replicas: int = 0) -> RedisCluster:
        """The set's Redis Cluster of 3 masters, started on first use by any process.

        ``replicas=1`` is another cluster, with one replica per master (a killed master fails
        over). Puts ``REDIS_CLUSTER_URL`` (one startup node) and ``REDIS_CLUSTER_URLS`` (every
        node, comma-separated) in ``os.environ``, or ``REDIS_CLUSTER_HA_URL(S)`` for ``replicas=1``.
        """
        if replicas not in (0, 1):
            raise ServiceError(f"replicas per master must be 0 or 1, not {replicas!r}")
        with self._manifest_lock():
            cluster = self._cluster(replicas)
            if cluster is None:
                count = 3 * (1 + replicas)
                ports = free_ports(2 * count)
                self._set_cluster_ports(replicas, ports[:count], ports[count:])
                self._write_manifest()  # before starting: a failed start is still torn down
                cluster = self._cluster(replicas)
                assert cluster is not None
                try:
                    cluster.start()
                except BaseException:
                    cluster.stop()
                    self._set_cluster_ports(replicas, [], [])
                    self._write_manifest()
                    raise
        os.environ.update(self._cluster_env())
        return cluster

    def _set_cluster_ports(self, replicas: int, ports: list[int], bus_ports: list[int]) -> None:
        if replicas:
            self.manifest.redis_ha_cluster_ports, self.manifest.redis_ha_cluster_bus_ports = ports, bus_ports
        else:
            self.manifest.redis_cluster_ports, self.manifest.redis_cluster_bus_ports = ports, bus_ports

    @property
    def extra_replicas(self) -> list[PostgresServer]:
        """The standbys ``add_replica()`` started (``replica2``, ``replica3``, ...), in order."""
        return [
            PostgresServer(self, f"replica{number}", port)
            for number, port in enumerate(self.manifest.extra_replica_ports, start=2)
        ]

    def add_replica(self) -> PostgresServer:
        """Start one more streaming standby of the primary (``replica2``, then ``replica3``, ...).

        A fresh ``pg_basebackup`` of the primary as it is now (test databases included), started
        hot on a free port; recorded in ``services.json`` and stopped by teardown. Puts
        ``REPLICA<N>_URL`` in ``os.environ``. Each call adds one: tests that share one ask for it
        through the ``second_replica`` fixture.
        """
        with self._manifest_lock():
            port = free_ports(1)[0]
            self.manifest.extra_replica_ports.append(port)
            self._write_manifest()  # before starting: a failed start is still torn down
            server = self.extra_replicas[-1]
            shutil.rmtree(server.datadir, ignore_errors=True)
            self._basebackup(server.datadir)
            server.write_config()
            server.start()
        os.environ.update(self._extra_replicas_env())
        return server

    def reseed_replica(self) -> None:
        """Replace the (stopped) streaming replica with a fresh ``pg_basebackup`` of the primary, started.

        For a standby stopped while the primary wrote more WAL than it keeps (``wal_keep_size``):
        started again, it would wait forever for segments that are gone.
        """
        self.replica.stop()
        shutil.rmtree(self.replica.datadir, ignore_errors=True)
        self._basebackup(self.replica.datadir)
        self.replica.write_config()
        self.replica.start()

    def _extra_replicas_env(self) -> dict[str, str]:
        return {f"{server.name.upper()}_URL": server.url for server in self.extra_replicas}

    def _cluster_env(self) -> dict[str, str]:
        env = {}
        for replicas, name in ((0, "REDIS_CLUSTER"), (1, "REDIS_CLUSTER_HA")):
            cluster = self._cluster(replicas)
            if cluster is not None:
                env[f"{name}_URL"] = cluster.url
                env[f"{name}_URLS"] = ",".join(cluster.urls)
        return env

    # ---- lifecycle

    @classmethod
    def start(cls, *, owned: bool = True) -> Services:
        """Start a new set in a fresh temporary folder; tear it down again if any step fails.

        An owned set (the default) dies with this process; an unowned one waits for ``stop``.
        """
        reap_stale()
        run_as = RunAs.detect()
        bindir = find_postgres_bindir()
        require_binary("redis-server", "redis-server")
        require_binary("pgbouncer", "pgbouncer")
        root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        os.chmod(root, 0o755)
        run_as.chown(root)
        ports = free_ports(4)
        owner_pid = os.getpid() if owned else 0
        manifest = Manifest(
            str(root), str(bindir), run_as.uid, run_as.gid, owner_pid, ports[0], ports[1], ports[2], ports[3]
        )
        (root / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
        services = cls(manifest)
        if owned:
            services.spawn_reaper()
        try:
            services._boot()
        except BaseException:
            services.teardown()
            raise
        return services

    def _boot(self) -> None:
        initdb = str(self.bindir / "initdb")
        self.run_as.run(
            [
                initdb,
                "-D",
                str(self.primary.datadir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            cwd=self.root,
        )
        self.primary.write_config()
        self.primary.start()
        self.primary.sql(f"CREATE DATABASE {DATABASE_NAME}", dbname="postgres")
        self._basebackup(self.replica.datadir)
        self.replica.write_config()
        self.replica.start()
        self.redis.start()
        self.pgbouncer.start()

    def _basebackup(self, datadir: Path) -> None:
        """A streaming standby of the primary in ``datadir`` (``-R`` writes its primary_conninfo)."""
        basebackup = str(self.bindir / "pg_basebackup")
        self.run_as.run(
            [
                basebackup,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                SUPERUSER,
                "-D",
                str(datadir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            cwd=self.root,
        )

    # ---- replacing the standby (tests of a server replaced behind the same address)

    def clone_primary(self, name: str = "replica-clone") -> PostgresServer:
        """A new standby data directory ``name``, copied from the primary now, for the replica's port.

        Not started: hand it to ``reclone_replica`` later, and the replica is replaced by a server
        that has only what the primary had at this moment.
        """
        clone = PostgresServer(self, name, self.replica.port)
        shutil.rmtree(clone.datadir, ignore_errors=True)
        self._basebackup(clone.datadir)
        clone.write_config()
        return clone

    def reclone_replica(self, clone: PostgresServer | None = None, *, config: Mapping[str, str] | None = None) -> None:
        """Replace the standby by another server on the same port, as a re-cloned standby would be.

        Stops it, deletes its data directory, puts ``clone`` (from ``clone_primary``) or a fresh
        copy of the primary in its place and starts it. The new server has the primary's system
        identifier and timeline, but is another server (another start time, its own replay
        position). ``config`` adds settings to the new server's, as ``write_config`` does.
        """
        self.replica.stop("immediate")
        shutil.rmtree(self.replica.datadir)
        if clone is None:
            self._basebackup(self.replica.datadir)
        else:
            clone.datadir.rename(self.replica.datadir)
        self.replica.write_config(config)
        self.replica.start()

    @classmethod
    def attach(cls, root: str | os.PathLike[str]) -> Services:
        """Control a set another process started."""
        data = json.loads((Path(root) / MANIFEST).read_text())
        return cls(Manifest(**data))

    def teardown(self) -> None:
        """Stop everything and delete the folder. Safe to call twice, from any process."""
        with contextlib.suppress(Exception):  # what was started on demand since this object was made
            self.manifest = Manifest(**json.loads((self.root / MANIFEST).read_text()))
        for replicas in (0, 1):
            with contextlib.suppress(Exception):
                cluster = self._cluster(replicas)
                if cluster is not None:
                    cluster.stop()
        for service in (self.pgbouncer, self.redis):
            with contextlib.suppress(Exception):
                service.stop()
        for server in (*self.extra_replicas, self.replica, self.primary):
            with contextlib.suppress(Exception):
                if server.datadir.exists():
                    server.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def spawn_reaper(self) -> None:
        """A detached watcher that tears the set down once this process is gone."""
        subprocess.Popen(
            [sys.executable, "-m", "django_scaleops.testing.services", "reap", str(self.root)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    # ---- what clients need

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.primary.url,
            "REPLICA_URL": self.replica.url,
            "REDIS_URL": self.redis.url,
            "PGBOUNCER_URL": self.pgbouncer.url,
            "PGBOUNCER_ADMIN_URL": self.pgbouncer.admin_url,
            SERVICES_DIR_VAR: str(self.root),
            **self._cluster_env(),
            **self._extra_replicas_env(),
        }


def reap_stale() -> None:
    """Tear down owned sets whose owner and reaper both died (e.g. the machine was reset)."""
    for manifest_path in glob.glob(os.path.join(tempfile.gettempdir(), DIR_PREFIX + "*", MANIFEST)):
        with contextlib.suppress(Exception):
            services = Services.attach(Path(manifest_path).parent)
            owner = services.manifest.owner_pid
            if owner and not _pid_alive(owner):
                services.teardown()


def reap(root: str) -> None:
    """Wait for the owner of ``root`` to exit, then tear its services down."""
    with contextlib.suppress(FileNotFoundError):
        services = Services.attach(root)
        while _pid_alive(services.manifest.owner_pid) and services.root.exists():
            time.sleep(0.5)
        services.teardown()


def external_env() -> dict[str, str] | None:
    """The user's own service URLs, when all of them are set."""
    if all(os.environ.get(var) for var in EXTERNAL_URL_VARS):
        return {var: os.environ[var] for var in EXTERNAL_URL_VARS}
    return None


_started: Services | None = None


def ensure_services() -> dict[str, str]:
    """Make sure service URLs are in ``os.environ``, starting a set for this process if needed.

    Used by settings modules so a bare ``pytest`` works: the set is torn down at exit, and by
    the reaper if the process is killed.
    """
    global _started
    if external_env() is not None or os.environ.get(SERVICES_DIR_VAR):
        return {var: os.environ[var] for var in (*EXTERNAL_URL_VARS, SERVICES_DIR_VAR) if var in os.environ}
    if _started is None:
        _started = Services.start()
        atexit.register(_started.teardown)
        os.environ.update(_started.env())
    return _started.env()


def stop_started_services() -> None:
    """Tear down the set ``ensure_services`` started in this process, if it started one."""
    global _started
    if _started is None:
        return
    for var in _started.env():
        os.environ.pop(var, None)
    _started.teardown()
    _started = None


@contextlib.contextmanager
def running_services() -> Iterator[dict[str, str]]:
    """Context manager: the environment of a set that exists for the block (or the user's own)."""
    existing = external_env()
    if existing is not None:
        yield existing
        return
    services = Services.start()
    try:
        yield services.env()
    finally:
        services.teardown()


# --------------------------------------------------------------------------- command line


def _cmd_run(command: list[str]) -> int:
    if not command:
        raise SystemExit("usage: services run -- COMMAND [ARGS...]")
    started = time.monotonic()
    with running_services() as env:
        print(f"services ready in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        child = subprocess.Popen(command, env={**os.environ, **env})
        # Ctrl-C reaches the child through the terminal; we wait for it, then tear down.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        terminate = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        try:
            return child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, terminate)


def _cmd_start() -> int:
    services = Services.start(owned=False)
    for key, value in services.env().items():
        print(f"export {key}={value}")
    print(f"# stop with: python -m django_scaleops.testing.services stop {services.root}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m django_scaleops.testing.services")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start the services, run a command with their URLs, tear down")
    run.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("start", help="start a set and print its environment (stop it yourself)")
    stop = sub.add_parser("stop", help="tear down a set started with 'start'")
    stop.add_argument("root")
    reaper = sub.add_parser("reap", help=argparse.SUPPRESS)
    reaper.add_argument("root")
    args = parser.parse_args(argv)
    try:
        if args.action == "run":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            return _cmd_run(command)
        if args.action == "start":
            return _cmd_start()
        if args.action == "stop":
            Services.attach(args.root).teardown()
            return 0
        reap(args.root)
        return 0
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
