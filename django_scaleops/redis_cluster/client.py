"""A django-redis client for ``redis.cluster.RedisCluster``.

django-redis picks its client class by dotted path (``OPTIONS["CLIENT_CLASS"]``); this one keeps
its serializer, compressor, key functions and error policy, and replaces the connection with one
``RedisCluster`` built from every URL in ``LOCATION`` (startup nodes; the client discovers the
rest and follows ``MOVED`` / ``ASK`` itself). The commands that name several keys are sent the
way a cluster can answer them: ``get_many`` per slot, ``delete_many`` split by slot, ``keys``,
``iter_keys``, ``delete_pattern`` and ``clear`` on every master.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django_redis.client.default import DefaultClient, _main_exceptions
from django_redis.exceptions import ConnectionInterrupted
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

# A dead master costs every caller the connect timeout once per retry: few, short retries, so the
# callers' circuit breakers (cache, limiter) take over quickly. REDIS_CLIENT_KWARGS["retry"] overrides.
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = ExponentialWithJitterBackoff(base=0.01, cap=0.1)

CLUSTER_ERRORS: tuple[type[BaseException], ...] = (*_main_exceptions, RedisClusterException)


def is_cluster(client: object) -> bool:
    """True for a ``RedisCluster`` (or its pipeline), as ``get_redis_connection()`` may return."""
    return isinstance(client, RedisCluster)


def slot_prefix(client: object, prefix: str) -> str:
    """``prefix`` as a hash tag on a Redis Cluster (``{prefix}``), so every key under it shares
    one slot and a pipeline of them goes to one node, whole; unchanged elsewhere, or when it has
    a tag of its own."""
    if is_cluster(client) and "{" not in prefix:
        return f"{{{prefix}}}"
    return prefix


class ClusterClient(DefaultClient):  # type: ignore[misc]  # django-redis ships no stubs
    """django-redis' ``DefaultClient`` on a Redis Cluster (``CLIENT_CLASS``).

    ``LOCATION``: one or more ``redis://[user:password@]host:port[/0]`` URLs (a list, or one string
    separated by commas); a cluster has database 0 only. Options read: ``SOCKET_CONNECT_TIMEOUT``,
    ``SOCKET_TIMEOUT``, ``PASSWORD``, ``CONNECTION_POOL_KWARGS`` (per node, e.g. ``max_connections``)
    and ``REDIS_CLIENT_KWARGS`` (given to ``RedisCluster``, e.g. ``read_from_replicas``, ``retry``).
    """

    def __init__(self, server: Any, params: dict[str, Any], backend: BaseCache) -> None:
        super().__init__(server, params, backend)
        self._cluster: RedisCluster | None = None
        self._connect_lock = threading.Lock()

    # ---- the connection

    def get_next_client_index(self, write: bool = True, tried: list[int] | None = None) -> int:
        return 0  # one cluster client; the cluster routes reads and writes by slot

    def get_client(self, write: bool = True, tried: list[int] | None = None) -> RedisCluster:
        cluster = self._cluster
        if cluster is None:
            with self._connect_lock:
                cluster = self._cluster
                if cluster is None:
                    cluster = self._cluster = self.connect()
        return cluster

    def get_client_with_index(self, write: bool = True, tried: list[int] | None = None) -> tuple[RedisCluster, int]:
        return self.get_client(write), 0

    def connect(self, index: int = 0) -> RedisCluster:
        nodes: list[ClusterNode] = []
        credentials: dict[str, Any] = {}
        for url in self._server:
            parts = urlsplit(str(url).strip())
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise ImproperlyConfigured(f"Redis Cluster LOCATION must be redis://host:port URLs, not {url!r}")
            if parts.path.strip("/") not in ("", "0"):
                raise ImproperlyConfigured(f"a Redis Cluster has database 0 only: {url!r}")
            nodes.append(ClusterNode(parts.hostname, parts.port or 6379))  # type: ignore[no-untyped-call]
            if parts.username:
                credentials.setdefault("username", unquote(parts.username))
            if parts.password:
                credentials.setdefault("password", unquote(parts.password))
            if parts.scheme == "rediss":
                credentials["ssl"] = True
        options = self._options
        kwargs: dict[str, Any] = {**credentials, **options.get("CONNECTION_POOL_KWARGS", {})}
        if options.get("PASSWORD"):
            kwargs["password"] = options["PASSWORD"]
        if options.get("SOCKET_CONNECT_TIMEOUT") is not None:
            kwargs["socket_connect_timeout"] = options["SOCKET_CONNECT_TIMEOUT"]
        if options.get("SOCKET_TIMEOUT") is not None:
            kwargs["socket_timeout"] = options["SOCKET_TIMEOUT"]
        kwargs.setdefault("retry", Retry(DEFAULT_BACKOFF, DEFAULT_RETRIES))
        kwargs.update(options.get("REDIS_CLIENT_KWARGS", {}))
        try:
            return RedisCluster(startup_nodes=nodes, **kwargs)
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=None) from exc

    def disconnect(self, index: int = 0, client: Any = None) -> None:
        cluster = client if client is not None else self._cluster
        if cluster is not None:
            cluster.close()
        if client is None or client is self._cluster:
            self._cluster = None

    def do_close_clients(self) -> None:
        self.disconnect()

    # ---- commands that name several keys

    def get_many(self, keys: Collection[str], version: int | None = None, client: Any = None) -> dict[Any, Any]:
        if client is None:
            client = self.get_client(write=False)
        if not keys:
            return {}
        by_made = {self.make_key(k, version=version): k for k in keys}
        try:
            # MGET per slot (one round trip per node): not atomic across slots, as a cache needs not.
            values = client.mget_nonatomic(list(by_made))
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return {by_made[made]: self.decode(v) for made, v in zip(by_made, values, strict=True) if v is not None}

    def set_many(
        self, data: dict[str, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, client: Any = None
    ) -> None:
        if client is None:
            client = self.get_client(write=True)
        try:
            pipeline = client.pipeline()  # a cluster pipeline sends each node its share
            for key, value in data.items():
                self.set(key, value, timeout, version=version, client=pipeline)
            pipeline.execute()
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=client) from exc

    def delete_many(self, keys: Any, version: int | None = None, client: Any = None) -> int:
        if client is None:
            client = self.get_client(write=True)
        made = [self.make_key(k, version=version) for k in keys]
        if not made:
            return 0
        try:
            deleted: int = client.delete(*made)  # redis-py splits DEL by slot
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return deleted

    def delete_pattern(
        self,
        pattern: str,
        version: int | None = None,
        prefix: str | None = None,
        client: Any = None,
        itersize: int | None = None,
    ) -> int:
        if client is None:
            client = self.get_client(write=True)
        made = self.make_pattern(pattern, version=version, prefix=prefix)
        count = 0
        try:
            batch: list[Any] = []
            for key in client.scan_iter(match=made, count=itersize, target_nodes=RedisCluster.PRIMARIES):
                batch.append(key)
                if len(batch) >= 500:
                    count += client.delete(*batch)
                    batch = []
            if batch:
                count += client.delete(*batch)
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return count

    def keys(self, search: str, version: int | None = None, client: Any = None) -> list[Any]:
        if client is None:
            client = self.get_client(write=False)
        made = self.make_pattern(search, version=version)
        try:
            found = client.keys(made, target_nodes=RedisCluster.PRIMARIES)
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return [self.reverse_key(k.decode() if isinstance(k, bytes) else k) for k in found]

    def iter_keys(
        self, search: str, itersize: int | None = None, client: Any = None, version: int | None = None
    ) -> Iterator[str]:
        if client is None:
            client = self.get_client(write=False)
        made = self.make_pattern(search, version=version)
        for item in client.scan_iter(match=made, count=itersize, target_nodes=RedisCluster.PRIMARIES):
            yield self.reverse_key(item.decode() if isinstance(item, bytes) else item)

    def clear(self, client: Any = None) -> None:
        if client is None:
            client = self.get_client(write=True)
        try:
            client.flushdb(target_nodes=RedisCluster.PRIMARIES)
        except CLUSTER_ERRORS as exc:
            raise ConnectionInterrupted(connection=client) from exc
