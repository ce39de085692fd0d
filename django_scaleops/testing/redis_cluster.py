"""A throwaway Redis Cluster of three masters, started on demand by the launcher.

``Services.redis_cluster()`` starts it the first time a test asks and records it in
``services.json``, so teardown and the reaper stop it with the rest of the set. Each master lives
in its own folder under ``<services root>/redis-cluster/`` with its ``nodes.conf``, so a killed
master restarted on the same port rejoins with its node id and slots (its keys are gone: no
persistence). Without replicas (``redis_cluster()``), a killed master's slots stay unavailable
until ``restart()``; ``cluster-require-full-coverage no`` keeps the other masters serving
meanwhile. With one replica per master (``redis_cluster(replicas=1)``, a separate cluster in
``redis-cluster-ha/``), a killed master's replica takes over after the node timeout, and the old
master restarted comes back as a replica.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django_scaleops.testing.processes import RunAs, require_binary, wait_for_port

CLUSTER_DIR = "redis-cluster"
HA_CLUSTER_DIR = "redis-cluster-ha"
SLOTS = 16384
# How long a master may be silent before the others mark it failed: short, so a test that kills
# one sees the cluster react (and recover) in a couple of seconds, not PostgreSQL-style 15 s.
NODE_TIMEOUT_MS = 2000


class ClusterError(RuntimeError):
    """The cluster could not be started, changed or reached."""


@dataclass(frozen=True)
class ClusterNode:
    """One master: its client port, its cluster bus port and its folder."""

    port: int
    bus_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.folder / "redis.pid"

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        pid = self.pid()
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        # A killed daemon is nobody's child: until init reaps it, it lingers as a zombie.
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True  # no procfs (macOS): kill(0) is all we know
        return stat.rsplit(")", 1)[1].split()[0] != "Z"


class RedisCluster:
    """Three Redis masters joined into one cluster, on loopback ports of the services set.

    Args:
        root: the launcher's folder; the cluster lives in a folder of its own there.
        run_as: who runs the servers (the launcher's user).
        ports: the masters' client ports.
        bus_ports: their cluster bus ports (``cluster-port``; not ``port + 10000``, which may
            be taken or out of range for the ephemeral ports the launcher picks).
        replicas: replicas per master; ``ports`` then holds masters and replicas (3 * (1 + replicas)).
    """

    def __init__(self, root: Path, run_as: RunAs, ports: list[int], bus_ports: list[int], replicas: int = 0) -> None:
        self.run_as = run_as
        self.replicas = replicas
        self.root = root / (HA_CLUSTER_DIR if replicas else CLUSTER_DIR)
        self.nodes = [
            ClusterNode(port, bus, self.root / f"node-{port}") for port, bus in zip(ports, bus_ports, strict=True)
        ]

    # ---- what clients need

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """One startup node (``redis://127.0.0.1:P/0``): a cluster client discovers the others."""
        return self.nodes[0].url

    # ---- lifecycle

    def start(self) -> None:
        """Start the masters, join them (all slots assigned) and wait for ``cluster_state:ok``."""

        require_binary("redis-cli", "redis-tools")
        self.root.mkdir(exist_ok=True)
        self.run_as.chown(self.root)
        for node in self.nodes:
            node.folder.mkdir(exist_ok=True)
            self.run_as.chown(node.folder)
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            self._wait_for_port(node)
        self._cli(
            "--cluster", "create", *(node.address for node in self.nodes),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
        )  # fmt: skip
        self.wait_ok()
        if self.replicas:
            self.wait_replicas_online()

    def wait_replicas_online(self, timeout: float = 15.0) -> None:
        """Wait until there are 3 masters and each has its replicas attached and in sync."""
        deadline = time.monotonic() + timeout
        while True:
            masters = self.masters()
            if len(masters) == len(self.nodes) // (1 + self.replicas) and all(
                self._online_replicas(master) >= self.replicas for master in masters
            ):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the replicas of the cluster on {self.urls} are not in sync after {timeout:.0f}s")
            time.sleep(0.05)

    def _online_replicas(self, master: ClusterNode) -> int:
        info = self.command(master, "INFO", "replication")
        return sum(1 for line in info.splitlines() if line.startswith("slave") and "state=online" in line)

    def stop(self) -> None:
        """Stop every master (SIGKILL: nothing to save). Safe to call twice."""
        for node in self.nodes:
            self._kill(node)

    def kill(self, node: ClusterNode | int) -> None:
        """SIGKILL a node. A master without replicas: its slots fail until ``restart``; with a
        replica: the replica takes over after the node timeout (``wait_ok`` waits for it)."""
        self._kill(self._node(node))

    def pause(self, node: ClusterNode | int) -> None:
        """SIGSTOP a master: it hangs rather than dies (``resume`` it, or ``restart`` it)."""
        pid = self._node(node).pid()
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def resume(self, node: ClusterNode | int) -> None:
        pid = self._node(node).pid()
        if pid:
            os.kill(pid, signal.SIGCONT)

    def restart(self, node: ClusterNode | int, *, timeout: float = 15.0) -> None:
        """Start a killed master again on its port (same node id and slots, no keys) and wait
        until every master sees the cluster ``ok``."""
        target = self._node(node)
        self._kill(target)
        self._start_node(target)
        self._wait_for_port(target)
        self.wait_ok(timeout=timeout)

    def wait_failover(self, old_master: ClusterNode | int, timeout: float = 15.0) -> None:
        """After ``kill`` of a master with a replica: wait until the replica has taken its slots
        (the others agree it failed after the node timeout) and the cluster is ``ok``."""
        old = self._node(old_master)
        deadline = time.monotonic() + timeout
        while self.slot_counts().get(old.port, 0):
            if time.monotonic() > deadline:
                raise ClusterError(f"no replica took over the slots of {old.address} within {timeout:.0f}s")
            time.sleep(0.05)
        self.wait_ok(timeout=max(1.0, deadline - time.monotonic()))

    def heal(self) -> None:
        """Restart whatever node is not running and resume paused ones (after a test that broke one)."""
        for node in self.nodes:
            pid = node.pid()
            if pid and node.is_running():
                os.kill(pid, signal.SIGCONT)
            else:
                self._start_node(node)
                self._wait_for_port(node)
        self.wait_ok()
        if self.replicas:
            self.wait_replicas_online()

    def reshard(self, from_node: ClusterNode | int, to_node: ClusterNode | int, slots: int) -> None:
        """Move ``slots`` hash slots (with their keys) from one master to another, as an operator
        would with ``redis-cli --cluster reshard``. Clients see ``ASK``/``MOVED`` meanwhile."""
        source, target = self._node(from_node), self._node(to_node)
        self._cli(
            "--cluster", "reshard", source.address,
            "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
            "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "100",
            timeout=120,
        )  # fmt: skip
        self.wait_ok()

    def rebalance(self) -> None:
        """Spread the slots evenly over the masters again, masters left empty by ``reshard`` too
        (``redis-cli --cluster rebalance --cluster-use-empty-masters``)."""
        viewer = next(node for node in self.nodes if node.is_running())
        self._cli("--cluster", "rebalance", viewer.address, "--cluster-use-empty-masters", "--cluster-yes", timeout=120)
        self.wait_ok()

    # ---- looking at it

    def info(self, node: ClusterNode | int = 0) -> dict[str, str]:
        """``CLUSTER INFO`` of one master, as a dict."""
        text = self.command(node, "CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def node_id(self, node: ClusterNode | int) -> str:
        return self.command(node, "CLUSTER", "MYID")

    def masters(self) -> list[ClusterNode]:
        """The running nodes that say they are masters (``ROLE``; a promoted replica included)."""
        return [
            node
            for node in self.nodes
            if node.is_running() and self.command(node, "ROLE").splitlines()[:1] == ["master"]
        ]

    def slot_ranges(self) -> Iterator[tuple[int, int, int]]:
        """``(port, first slot, last slot)`` of each range a master serves, from the first running
        node's ``CLUSTER NODES``; slots being migrated or imported (``[...]``) are left out."""
        viewer = next(node for node in self.nodes if node.is_running())
        for line in self.command(viewer, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                if not part.startswith("["):
                    first, _, last = part.partition("-")
                    yield port, int(first), int(last or first)

    def slot_counts(self) -> dict[int, int]:
        """How many slots each node (by port) serves."""
        counts = {node.port: 0 for node in self.nodes}
        for port, first, last in self.slot_ranges():
            counts[port] = counts.get(port, 0) + last - first + 1
        return counts

    def owner_of(self, key: str) -> ClusterNode:
        """The master serving ``key``'s slot now."""
        slot = int(self.command(0, "CLUSTER", "KEYSLOT", key))
        for port, first, last in self.slot_ranges():
            if first <= slot <= last:
                return self._node(port)
        raise ClusterError(f"no master serves slot {slot} of {key!r}")

    def command(self, node: ClusterNode | int, *args: str) -> str:
        """Run one command on one master through ``redis-cli`` and return its raw output."""
        target = self._node(node)
        return self._cli("-p", str(target.port), *args).strip()

    def wait_ok(self, timeout: float = 15.0) -> None:
        """Wait until every running master reports ``cluster_state:ok`` with all slots assigned."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                if not node.is_running():
                    continue
                try:
                    info = self.info(node)
                except ClusterError:
                    info = {}
                states.append(info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(SLOTS))
            if all(states):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster on {self.urls} is not ok after {timeout:.0f}s")
            time.sleep(0.05)

    # ---- internals

    def _node(self, node: ClusterNode | int) -> ClusterNode:
        if isinstance(node, ClusterNode):
            return node
        if 0 <= node < len(self.nodes):
            return self.nodes[node]
        for candidate in self.nodes:
            if candidate.port == node:
                return candidate
        raise ClusterError(f"no master with index or port {node}")

    def _start_node(self, node: ClusterNode) -> None:
        self.run_as.run(
            [
                require_binary("redis-server", "redis-server"),
                "--port", str(node.port),
                "--cluster-port", str(node.bus_port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.folder / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-require-full-coverage", "no",
                "--save", "",
                "--appendonly", "no",
                # A replica's first sync starts at once, not after Redis's 5 s wait for others.
                "--repl-diskless-sync-delay", "0",
                "--daemonize", "yes",
                "--pidfile", str(node.pidfile),
                "--logfile", str(node.folder / "redis.log"),
                "--dir", str(node.folder),
            ],
            cwd=node.folder,
        )  # fmt: skip

    def _wait_for_port(self, node: ClusterNode) -> None:

        wait_for_port(node.port, timeout=10)

    def _kill(self, node: ClusterNode) -> None:
        pid = node.pid()
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while node.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        # The daemon is not our child, but a pidfile of a dead one must not name a reused pid.
        with contextlib.suppress(OSError):
            node.pidfile.unlink()

    def _cli(self, *args: str, timeout: float = 30) -> str:

        proc = subprocess.run(
            [require_binary("redis-cli", "redis-tools"), "-h", "127.0.0.1", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or proc.stdout.startswith(("ERR", "[ERR]", "Could not connect")):
            raise ClusterError(f"redis-cli {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout
