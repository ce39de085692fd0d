"""``with_cache`` and ``@cached_function``: cache-aside for any computation, not only querysets."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar

from django_scaleops.cache import l1
from django_scaleops.cache.backend import RedisUnavailable, gate
from django_scaleops.cache.core import Entry, fetch_through, timeout_or_default
from django_scaleops.cache.encoding import UnkeyableValue, encode
from django_scaleops.cache.invalidation import bump_stamps
from django_scaleops.cache.keys import ALL_TABLES, Target, digest, entry_key, stamp_key, tables_of

P = ParamSpec("P")
R = TypeVar("R")


def _stamps(tables: Iterable[str], *extra: str) -> list[str]:
    return [stamp_key(ALL_TABLES), *sorted(stamp_key(t) for t in set(tables)), *extra]


def _entry(key: object, timeout: int | None, depends_on: Iterable[Target], prefix: str | None) -> Entry:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a cache key must be a non-empty string, not {key!r}")
    tables = tables_of(depends_on)
    return Entry(
        base=entry_key("k", digest(key)),
        stamps=_stamps(tables),
        timeout=timeout_or_default(timeout),
        prefix=prefix or key.split(":", 1)[0],
        tables=frozenset(tables),
    )


def with_cache(
    key: str,
    fetch: Callable[[], R],
    timeout: int | None = None,
    *,
    depends_on: Iterable[Target] = (),
    prefix: str | None = None,
) -> R:
    """The cached result of ``fetch()`` under ``key``, with leases, XFetch and the L1 tier.

    Args:
        key: any string; it is hashed, so user input is safe in it.
        fetch: computes the value on a miss (called at most once across concurrent callers).
        timeout: seconds the value stays fresh (``SCALEOPS_CACHE_DEFAULT_TIMEOUT`` when None).
        depends_on: models, labels or tables whose committed writes invalidate the value.
        prefix: the statistics prefix (default: the key up to its first ``:``).
    """
    return fetch_through(_entry(key, timeout, depends_on, prefix), fetch)


def invalidate_key(key: str, *, depends_on: Iterable[Target] = ()) -> None:
    """Drop the value ``with_cache(key, ..., depends_on=...)`` stored (same ``depends_on``)."""
    _delete(_entry(key, 1, depends_on, None))


def _delete(entry: Entry) -> None:
    l1.tier.drop_key(entry.base)
    channel = l1.channel() if l1.enabled() else ""
    with contextlib.suppress(RedisUnavailable):
        gate.delete(entry.stamps, entry.base, channel, json.dumps({"key": entry.base}))


# Names of the functions decorated so far: the system check reads it to tell whether the
# project uses the cache (an unsuitable cache backend is then an error, not a warning).
declared_names: set[str] = set()


class CachedFunction(Generic[P, R]):
    """A function whose results are cached per arguments; see :func:`cached_function`."""

    def __init__(
        self,
        func: Callable[P, R],
        timeout: int | None,
        key: Callable[..., str] | None,
        depends_on: Iterable[Target],
        prefix: str | None,
        version: int | str,
    ) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.timeout = timeout
        self.key_builder = key
        self.name = prefix or f"{func.__module__}.{func.__qualname__}"
        self.version = version
        self.tables = frozenset(tables_of(depends_on))
        try:
            parameters = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):  # builtins without a signature
            parameters = []
        self._parameters = tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        declared_names.add(self.name)

    def _default_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """A hash of the call's arguments; an argument that cannot be keyed is named in the error."""
        names = list(self._parameters[: len(args)])
        names += [f"#{i + 1}" for i in range(len(names), len(args))]
        hasher = hashlib.blake2b(digest_size=20)
        hasher.update(encode((self.name, self.version, len(args))))
        for name, value in [*zip(names, args, strict=True), *sorted(kwargs.items())]:
            try:
                hasher.update(encode(value))
            except UnkeyableValue as exc:
                raise UnkeyableValue(
                    f"{self.name}: argument {name!r} cannot be keyed ({exc}). Pass plain values (str, numbers,"
                    " dates, UUIDs, model instances, lists, dicts) or give @cached_function a key= function."
                ) from None
            if name in kwargs:
                hasher.update(encode(name))
        return hasher.hexdigest()

    @property
    def function_stamp(self) -> str:
        return stamp_key(f"fn:{self.name}")

    def entry(self, *args: P.args, **kwargs: P.kwargs) -> Entry:
        if self.key_builder is not None:
            part: Any = self.key_builder(*args, **kwargs)
            try:
                key = digest(self.name, self.version, part)
            except UnkeyableValue as exc:
                raise UnkeyableValue(f"{self.name}: the key= function returned a value that {exc}") from None
        else:
            key = self._default_key(args, kwargs)
        return Entry(
            base=entry_key("f", key),
            stamps=_stamps(self.tables, self.function_stamp),
            timeout=timeout_or_default(self.timeout),
            prefix=self.name,
            tables=self.tables,
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return fetch_through(self.entry(*args, **kwargs), lambda: self.func(*args, **kwargs))

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Drop the result for these arguments; with no arguments, drop every cached result."""
        if args or kwargs:
            _delete(self.entry(*args, **kwargs))
        else:
            bump_stamps([self.function_stamp])

    def uncached(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)


def cached_function(
    timeout: int | None = None,
    *,
    key: Callable[..., str] | None = None,
    depends_on: Iterable[Target] = (),
    prefix: str | None = None,
    version: int | str = 1,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Cache a function's results per arguments (``createCachedFunction`` of the seed).

    Args:
        timeout: seconds a result stays fresh.
        key: builds the key part from the call's arguments (default: the arguments themselves,
            encoded losslessly with their types; a value that cannot be keyed safely, such as an
            arbitrary object, raises ``UnkeyableValue`` naming the argument).
        depends_on: models, labels or tables whose committed writes invalidate every result.
        prefix: the name in keys and statistics (default: module and qualified name).
        version: change it when the function's output format changes.

    The decorated function gains ``invalidate(*args, **kwargs)`` and ``uncached(...)``.
    """
    timeout_or_default(timeout)  # a bad timeout fails at decoration, not at the first call

    def decorate(func: Callable[P, R]) -> CachedFunction[P, R]:
        return CachedFunction(func, timeout, key, depends_on, prefix, version)

    return decorate
