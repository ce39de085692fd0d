"""Send the running example a mix of API traffic, so the dashboard and ``/metrics`` have something to show.

Real HTTP against the served address (``make demo`` serves http://127.0.0.1:8000): the figures move
in the server's processes, where the dashboard reads them. The mix repeats a cycle of 20 calls:

- cached reads (a conversation, a message's delivery counts) on a few hot rows: cache hits;
- fresh reads (conversation list, message pages) and writes (new messages): primary and replica;
- a deliberately slow query (``/api/demo/slow-query/``): the slow-query figures;
- calls with API keys on the Free, Standard and Professional tiers: Free runs out at once and gets
  429s, Professional never does, so the rate-limit figures show both allowed and limited.

The keys are this command's own (``demo traffic (<tier>)``), given a new secret on each run.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser

from example_project.chat.models import Conversation, Message

KEY_TIERS = ("Free", "Standard", "Professional")
KEY_NAME = "demo traffic ({tier})"
HOT_ROWS = 3  # cached reads pick among this many conversations and messages: most are hits

# One cycle: (kind, tier of the API key or None). Calls follow it in order, so a short run
# (--requests 60) is predictable: 30% of calls carry the Free key, which allows 12 at once.
CYCLE: tuple[tuple[str, str | None], ...] = (
    ("detail", None),
    ("list", "Free"),
    ("delivery", None),
    ("messages", "Professional"),
    ("detail", "Free"),
    ("write", None),
    ("delivery", "Standard"),
    ("detail", "Professional"),
    ("list", "Free"),
    ("messages", None),
    ("detail", "Standard"),
    ("delivery", "Free"),
    ("slow", None),
    ("detail", "Professional"),
    ("messages", "Professional"),
    ("delivery", "Free"),
    ("messages", "Standard"),
    ("detail", None),
    ("list", "Free"),
    ("write", "Professional"),
)
WHAT = {
    "detail": "GET a conversation (cached)",
    "delivery": "GET a message's delivery counts (cached function)",
    "list": "GET the conversation list",
    "messages": "GET a page of messages (its conversation is a cached row)",
    "write": "POST a new message (primary; the replica replays it)",
    "slow": "GET /api/demo/slow-query/ (a query over 100 ms)",
}


@dataclass(frozen=True)
class Call:
    kind: str
    method: str
    path: str
    tier: str | None
    body: bytes | None = None


@dataclass
class Rows:
    """The ids the calls use, read once from the database."""

    conversations: list[int]
    hot_conversations: list[int]
    hot_messages: list[int]
    senders: dict[int, list[int]]  # participants of the conversations written to

    @classmethod
    def load(cls) -> Rows:
        recent = list(Conversation.objects.order_by("-last_message_at", "-id").values_list("id", flat=True)[:50])
        if not recent:
            raise CommandError("no conversations yet: run `python manage.py seed_demo_data` first")
        through = Conversation.participants.through
        senders: dict[int, list[int]] = {}
        for conversation_id, user_id in through.objects.filter(conversation_id__in=recent).values_list(
            "conversation_id", "user_id"
        ):
            senders.setdefault(conversation_id, []).append(user_id)
        hot_messages = list(Message.objects.order_by("-id").values_list("id", flat=True)[:HOT_ROWS])
        hot = recent[:HOT_ROWS]
        # Writes go to the other conversations when there are some: the hot rows stay cached.
        writable = [c for c in recent if senders.get(c) and c not in hot] or [c for c in recent if senders.get(c)]
        return cls(recent, hot, hot_messages or [0], {c: sorted(senders[c]) for c in writable})


@dataclass
class Plan:
    rows: Rows
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, index: int) -> Call:
        kind, tier = CYCLE[index % len(CYCLE)]
        with self.lock:  # one Random for every thread
            rng = self.rng
            if kind == "detail":
                return Call(kind, "GET", f"/api/conversations/{rng.choice(self.rows.hot_conversations)}/", tier)
            if kind == "delivery":
                return Call(kind, "GET", f"/api/messages/{rng.choice(self.rows.hot_messages)}/delivery/", tier)
            if kind == "list" or not self.rows.senders:
                return Call("list", "GET", "/api/conversations/", tier)
            if kind == "messages":
                conversation = rng.choice(self.rows.hot_conversations)
                return Call(kind, "GET", f"/api/conversations/{conversation}/messages/?limit=20", tier)
            if kind == "slow":
                return Call(kind, "GET", f"/api/demo/slow-query/?ms={rng.randint(120, 300)}", tier)
            conversation = rng.choice(sorted(self.rows.senders))
            payload = {"sender": rng.choice(self.rows.senders[conversation]), "body": f"demo traffic {index}"}
            path = f"/api/conversations/{conversation}/messages/"
            return Call(kind, "POST", path, tier, json.dumps(payload).encode())


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    statuses: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[tuple[str, str]] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call, status: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.kinds[call.kind] += 1
            if call.tier:
                self.by_tier[(call.tier, "limited" if status == "429" else "allowed")] += 1

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def line(self) -> str:
        with self.lock:
            elapsed = time.monotonic() - self.started
            counts = "  ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
            total = sum(self.statuses.values())
        return f"[{elapsed:4.0f}s] {total:6d} requests ({total / elapsed if elapsed else 0:.1f}/s)  {counts}"


class Command(BaseCommand):
    help = (
        "Send the running example API a mix of reads, cached reads, writes, slow queries and API-key "
        "calls (some rate-limited), so the dashboard and /metrics have figures that move."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the served example (default: %(default)s)")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (default: %(default)s)")
        parser.add_argument("--requests", type=int, default=0, help="stop after this many requests (default: no limit)")
        parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default: 4)")
        parser.add_argument(
            "--rate",
            type=float,
            default=10.0,
            help="requests per second in all, 0 for as fast as possible (default: 10)",
        )
        parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (0: none)")
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would be sent; send nothing, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"].rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommandError(f"--url must be an http(s) address such as http://127.0.0.1:8000, not {url!r}")
        duration, limit, concurrency, rate = (
            options["duration"],
            options["requests"],
            options["concurrency"],
            options["rate"],
        )
        if duration <= 0 or limit < 0 or concurrency < 1 or rate < 0:
            raise CommandError("need --duration > 0, --requests >= 0, --concurrency >= 1 and --rate >= 0")
        rows = Rows.load()
        pace = f"{rate:g} requests/s" if rate else "as fast as it answers"
        stop = f"{limit} requests or {duration:g}s" if limit else f"{duration:g}s"
        if options["dry_run"]:
            self._show_plan(url, stop, pace, concurrency, rows)
            return
        self._check_server(url)
        secrets = self._keys()
        self.stdout.write(f"Traffic to {url} for {stop}, {pace}, {concurrency} at a time (Ctrl-C stops).")
        tally = self._run(url, Plan(rows), secrets, duration, limit, concurrency, rate, options["progress"])
        self._summary(tally)

    # ---- set-up

    def _show_plan(self, url: str, stop: str, pace: str, concurrency: int, rows: Rows) -> None:
        self.stdout.write(f"Dry run: would send traffic to {url} for {stop}, {pace}, {concurrency} at a time.")
        self.stdout.write(f"Rows: {len(rows.conversations)} recent conversations, {len(rows.senders)} writable.")
        kinds = Counter(kind for kind, _ in CYCLE)
        for kind, count in kinds.most_common():
            self.stdout.write(f"  {100 * count // len(CYCLE):3d}%  {WHAT[kind]}")
        tiers = Counter(tier or "no key" for _, tier in CYCLE)
        self.stdout.write(
            "API keys: " + ", ".join(f"{tier} {100 * n // len(CYCLE)}%" for tier, n in tiers.most_common())
        )
        if apps.is_installed("django_scaleops"):
            names = ", ".join(KEY_NAME.format(tier=tier) for tier in KEY_TIERS)
            self.stdout.write(f"Would create or give new secrets to: {names}.")
        self.stdout.write("Nothing was sent and nothing was changed.")

    def _check_server(self, url: str) -> None:
        try:
            with urllib.request.urlopen(f"{url}/", timeout=10) as response:
                response.read()
        except urllib.error.HTTPError:
            return  # something answers: the calls themselves will show what
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(
                f"nothing answers at {url} ({reason}): start the example first (`make demo`, or the "
                "gunicorn command in the README), or give its address with --url"
            ) from None

    def _keys(self) -> dict[str, str]:
        """A secret per tier for this run: the command's own keys, created or given a new secret."""
        if not apps.is_installed("django_scaleops"):
            return {}
        from django_scaleops.models import ApiKey, Tier

        secrets: dict[str, str] = {}
        made: list[str] = []
        for tier in Tier.objects.filter(name__in=KEY_TIERS):
            name = KEY_NAME.format(tier=tier.name)
            key = ApiKey.objects.filter(name=name, tier=tier, revoked_at__isnull=True).first()
            if key is None:
                key, secrets[tier.name] = ApiKey.create_key(name=name, tier=tier)
            else:
                secrets[tier.name] = key.assign_new_secret()
                key.save()
            made.append(key.prefix)
        self._wait_for_replicas(made)
        return secrets

    def _wait_for_replicas(self, prefixes: list[str], timeout: float = 10.0) -> None:
        """The server may look keys up on a replica: start once every replica has them."""
        from django_scaleops.conf import conf
        from django_scaleops.models import ApiKey

        deadline = time.monotonic() + timeout
        for alias in conf.SCALEOPS_ROUTER_REPLICA_ALIASES:
            while ApiKey.objects.using(alias).filter(prefix__in=prefixes).count() < len(prefixes):
                if time.monotonic() > deadline:
                    self.stderr.write(f"replica {alias!r} has not replayed the new keys yet; starting anyway")
                    break
                time.sleep(0.05)

    # ---- the traffic

    def _run(
        self,
        url: str,
        plan: Plan,
        secrets: dict[str, str],
        duration: float,
        limit: int,
        concurrency: int,
        rate: float,
        progress: float,
    ) -> Tally:
        tally = Tally()
        stop = threading.Event()
        next_index = [0]
        index_lock = threading.Lock()
        deadline = tally.started + duration

        def worker() -> None:
            while not stop.is_set():
                with index_lock:
                    index = next_index[0]
                    if limit and index >= limit:
                        return
                    next_index[0] += 1
                if rate:
                    delay = tally.started + index / rate - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                if time.monotonic() >= deadline:
                    return
                call = plan.call(index)
                tally.add(call, send(url, call, secrets))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        last = time.monotonic()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
                if progress and time.monotonic() - last >= progress:
                    last = time.monotonic()
                    self.stdout.write(tally.line())
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C (or the demo's) waits too
            stop.set()
            self.stdout.write("stopping: waiting for the requests in flight")
            for thread in threads:
                thread.join(timeout=15)
        return tally

    def _summary(self, tally: Tally) -> None:
        self.stdout.write(tally.line())
        limited = sum(n for (_, outcome), n in tally.by_tier.items() if outcome == "limited")
        allowed = sum(n for (_, outcome), n in tally.by_tier.items() if outcome == "allowed")
        per_tier = ", ".join(
            f"{tier} {tally.by_tier[(tier, 'allowed')]}/{tally.by_tier[(tier, 'limited')]}" for tier in KEY_TIERS
        )
        self.stdout.write(f"With an API key: {allowed} allowed, {limited} limited (429) [allowed/limited: {per_tier}]")
        self.stdout.write(
            f"Writes: {tally.kinds['write']}, slow queries: {tally.kinds['slow']}, "
            f"cached reads: {tally.kinds['detail'] + tally.kinds['delivery']}"
        )
        failed = tally.statuses["error"] + sum(n for status, n in tally.statuses.items() if status.startswith("5"))
        if failed:
            self.stderr.write(f"{failed} requests failed (5xx or no answer): see the server's log")
        else:
            self.stdout.write(self.style.SUCCESS("Done: see /admin/scaleops/dashboard/ and /metrics."))


def send(base: str, call: Call, secrets: dict[str, str]) -> str:
    """One request; returns its status code as text, or ``"error"`` when nothing answered."""
    headers = {"Accept": "application/json", "User-Agent": "demo_traffic"}
    if call.tier and call.tier in secrets:
        headers["Authorization"] = f"Api-Key {secrets[call.tier]}"
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{base}{call.path}", data=call.body, method=call.method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            response.read()
            return str(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return str(exc.code)
    except (urllib.error.URLError, OSError):
        return "error"
