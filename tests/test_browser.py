"""The admin and the operations dashboard in a real browser: Debian's Chromium, driven by Playwright.

Fixtures (browser, live server, logged-in page, screenshots) are in tests/browser_helpers.py; every
test leaves a screenshot under ``$SCALEOPS_ARTIFACTS_DIR`` (default ``tests/artifacts/``).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import override_settings
from playwright.sync_api import Locator, expect

from django_scaleops.models import ApiKey, Tier
from django_scaleops.testing.services import Services
from tests.browser_helpers import VIEWPORT, BrowserPage, LiveSite, chromium_path
from tests.router_helpers import fresh_routing, router_settings, wait_for_replay

pytest_plugins = ["tests.browser_helpers"]
pytestmark = pytest.mark.browser

KEY = re.compile(r"sops_[a-z0-9]{12}_[A-Za-z0-9_-]{43}")
DASHBOARD = "/admin/scaleops/dashboard/"
PGBOUNCER_ALIASES = {"pgbouncer": {"pool_mode": "transaction", "direct": "default"}}
PANELS = ["queries", "replicas", "pgbouncer", "ratelimit", "cache", "partitions"]
README_SCREENSHOT_HEIGHT = 1400
SCREENSHOT_FOR_README = Path(__file__).resolve().parent.parent / "docs" / "images" / "dashboard.png"
# The seeded tiers (data migration 0002); transactional tests flush them, so each test recreates them.
TIERS = [("Free", 10, 2, "closed"), ("Standard", 100, 20, "local"), ("Professional", 1000, 100, "open")]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(url: str, key: str | None = None) -> Answer:
    """A plain HTTP client, outside the browser: what an API consumer sends."""
    request = urllib.request.Request(url, headers={"Authorization": f"Api-Key {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers.items()), error.read())


def make_tiers() -> dict[str, Tier]:
    return {
        name: Tier.objects.get_or_create(
            name=name,
            defaults={"requests_per_period": limit, "period_seconds": 60, "burst": burst, "failure_mode": mode},
        )[0]
        for name, limit, burst, mode in TIERS
    }


# ---- the browser itself


def test_without_chromium_the_tests_fail_with_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without the chromium package
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        chromium_path()


# ---- the admin


def test_login_through_the_admin_form(page: BrowserPage, admin_user: Any) -> None:
    # Anonymous: the admin sends the browser to its login page, styled and free of script errors.
    page.open("/admin/")
    assert "/admin/login/" in page.page.url
    page.assert_admin_styled()
    page.page.fill("#id_username", admin_user.username)
    page.page.fill("#id_password", "wrong password")
    page.page.click("#login-form [type=submit]")
    page.settle()
    assert "/admin/login/" in page.page.url
    assert page.page.locator(".errornote").is_visible()

    page.page.fill("#id_password", "correct horse battery staple")
    page.page.click("#login-form [type=submit]")
    page.settle()
    assert page.page.url == page.site("/admin/")
    assert admin_user.username in (page.page.text_content("#user-tools") or "")
    page.assert_admin_styled()
    page.screenshot("admin-index")


def pick_tier(page: BrowserPage, label: str) -> list[str]:
    """Choose ``label`` in the tier field with the widget the page renders; returns the offered labels."""
    p = page.page
    if "admin-autocomplete" in (p.get_attribute("#id_tier", "class") or ""):
        # autocomplete_fields: select2, filled by the admin's autocomplete view when opened.
        container = p.locator(".field-tier .select2-container")
        assert container.count() == 1, "the tier picker was not initialised (the admin's JavaScript did not run)"
        container.locator(".select2-selection").click()
        results = p.locator(".select2-results__options")
        expect(results.locator(".select2-results__option").first).to_be_visible()
        expect(results.locator(".loading-results")).to_have_count(0)  # "Searching…" until the view answers
        options = results.locator(".select2-results__option[role=option]")
        offered = options.all_inner_texts()
        options.filter(has_text=re.compile(rf"^{re.escape(label)}")).click()
        assert label in p.locator(".field-tier .select2-selection__rendered").inner_text()
    else:
        texts = [text.strip() for text in p.locator("#id_tier option").all_inner_texts()]
        offered = [text for text in texts if text.strip("-")]  # not the empty choice, "---------"
        p.select_option("#id_tier", label=next(text for text in offered if text.startswith(label)))
    return offered


def test_api_key_created_used_and_revoked_in_the_admin(admin_page: BrowserPage, live_site: LiveSite) -> None:
    tiers = make_tiers()
    page = admin_page
    p = page.page

    page.open("/admin/scaleops/apikey/add/")
    page.assert_admin_styled()
    p.fill("#id_name", "browser partner")
    offered = pick_tier(page, "Standard")
    # The database is the oracle: every tier, in the admin's order, and nothing else.
    assert offered == [str(tier) for tier in Tier.objects.all()]
    assert p.input_value("#id_tier") == str(tiers["Standard"].pk)
    page.screenshot("add-form")

    p.click("input[name=_save]")
    page.settle()
    assert "created" in p.inner_text("#content h1")
    shown = KEY.findall(p.inner_text("#content"))
    assert len(shown) == 1, "the page must show the new key exactly once"
    secret = shown[0]
    page.screenshot("secret-shown")
    api_key = ApiKey.objects.get(name="browser partner")
    assert api_key.tier == tiers["Standard"]
    assert secret.startswith(f"sops_{api_key.prefix}_")
    assert secret[-43:] not in (api_key.hashed_key, api_key.prefix)

    # The key works: the status endpoint reports its quota, the throttle middleware counts it.
    status = http_get(live_site("/api/rate-limit/status/"), secret)
    assert status.status == 200, status.body
    assert status.json()["key"]["name"] == "browser partner"
    assert status.json()["tier"]["name"] == "Standard"
    listed = http_get(live_site("/api/conversations/"), secret)
    assert listed.status == 200, listed.body
    assert listed.headers["RateLimit-Policy"].startswith('"Standard";q=100;w=60')
    assert re.match(r'"Standard";r=\d+;t=\d+', listed.headers["RateLimit"])

    # Revoke it with the changelist's action, as an operator would.
    page.open("/admin/scaleops/apikey/")
    p.check(f"input.action-select[value='{api_key.pk}']")
    p.select_option("select[name=action]", "revoke_keys")
    p.click("button[name=index]")
    page.settle()
    assert "Revoked 1 key(s)." in p.inner_text(".messagelist")
    assert "revoked" in p.locator("#result_list tbody tr").first.inner_text()
    page.screenshot("revoked")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None

    for path in ("/api/conversations/", "/api/rate-limit/status/"):
        refused = http_get(live_site(path), secret)
        assert refused.status == 401, (path, refused.status, refused.body)
        assert refused.headers["WWW-Authenticate"].startswith("Api-Key")
        assert secret not in refused.body.decode()


# ---- the operations dashboard (django_scaleops/dashboard/)


@pytest.fixture
def dashboard(live_site: LiveSite) -> Iterator[str]:
    """Every panel configured (router, PgBouncer alias, query monitor), on a history of its own.

    Request it after ``admin_page``: the login reads the user on the primary, before the router.
    """
    from django_scaleops.dashboard.sampler import History
    from django_scaleops.monitoring import aggregate
    from django_scaleops.monitoring.monitor import monitor
    from django_scaleops.pgbouncer.metrics import clear_metrics_cache

    tag = uuid.uuid4().hex[:8]
    with (
        router_settings(),
        fresh_routing(),
        override_settings(
            SCALEOPS_DASHBOARD_REDIS_PREFIX=f"test-browser-dash-{tag}",
            SCALEOPS_MONITOR_ENABLED=True,
            SCALEOPS_MONITOR_REDIS_PREFIX=f"test-browser-qm-{tag}",
            SCALEOPS_PGBOUNCER_ALIASES=PGBOUNCER_ALIASES,
        ),
    ):
        # The session and the user are read on the replica now: it must have replayed them.
        wait_for_replay()
        monitor.reset()
        clear_metrics_cache()
        yield tag
        try:
            History.default().clear()
            aggregate.clear(aggregate.redis_client(), f"test-browser-qm-{tag}")
        except Exception:  # a test that stopped a server restarted it; a leftover prefix is harmless
            pass
    monitor.reset()
    clear_metrics_cache()


def panel(page: BrowserPage, name: str) -> Locator:
    return page.page.locator(f"section.scaleops-panel#panel-{name}")


def is_unavailable(section: Locator) -> bool:
    return "scaleops-unavailable" in (section.get_attribute("class") or "").split()


def sample_history(now: float) -> None:
    """One point of every series for the minute of ``now`` (the sampler keeps one a minute)."""
    from django_scaleops.dashboard import sampler
    from django_scaleops.monitoring.monitor import monitor

    monitor.flush()  # this process's query figures, into the fleet totals the sampler reads
    result = sampler.sample(now=now)
    assert result.written, result.reason


def generate_traffic(site: LiveSite) -> None:
    """Queries, rate-limited requests with keys and cached reads against the live server, sampled
    the minute before, during and after, so that gauges have three points and counters two."""
    from django.contrib.auth import get_user_model

    from django_scaleops.monitoring.monitor import monitor
    from example_project.chat.models import Conversation

    now = time.time()
    sample_history(now - 120)  # the first sample sets the counters' baseline
    tiers = make_tiers()
    user = get_user_model().objects.create_user("traffic")
    conversations = [Conversation.objects.create(title=f"traffic {n}", created_by=user) for n in range(3)]
    _, standard = ApiKey.create_key(name="traffic standard", tier=tiers["Standard"])
    _, free = ApiKey.create_key(name="traffic free", tier=tiers["Free"])
    wait_for_replay()  # the keys are looked up, and the conversations read, on the replica
    for _ in range(3):
        assert http_get(site("/api/conversations/"), standard).status == 200
        for conversation in conversations:  # cached reads: the first misses, the others hit
            answer = http_get(site(f"/api/conversations/{conversation.pk}/"), standard)
            assert answer.status == 200, answer.body
    # A Free key holds 12 back to back (10 + burst 2): the rest are limited.
    answers = [http_get(site("/api/conversations/"), free).status for _ in range(16)]
    assert answers.count(429) >= 1, answers
    sample_history(now - 60)
    monitor.flush()
    out = StringIO()
    call_command("scaleops_sample", stdout=out)  # this minute's point, as cron would write it
    assert "wrote" in out.getvalue(), out.getvalue()


# The first chart's axis text, first series' stroke and the colour behind them (the nearest
# ancestor with an opaque background), as the browser computes them.
CHART_COLOURS_JS = """svg => {
    const opaque = c => c && c !== 'transparent' && !/rgba\\(.*,\\s*0\\)$/.test(c);
    let node = svg, background = null;
    while (node && !opaque(background)) {
        background = getComputedStyle(node).backgroundColor;
        node = node.parentElement;
    }
    return {
        text: getComputedStyle(svg.querySelector('text')).fill,
        series: getComputedStyle(svg.querySelector('[data-points]')).stroke,
        background: opaque(background) ? background : 'rgb(255, 255, 255)',
    };
}"""


def luminance(css: str) -> float:
    red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", css)[:3])

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast(one: str, other: str) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def assert_charts_readable_in_both_themes(page: BrowserPage) -> None:
    """Axis text at WCAG's 4.5:1 and the first series at 3:1 on the light and the dark admin theme."""
    backgrounds = {}
    for scheme in ("light", "dark"):
        # The admin follows the system's scheme unless its toggle chose one ("auto" is the default).
        page.page.emulate_media(color_scheme=scheme)
        page.page.evaluate("localStorage.setItem('theme', 'auto')")
        page.open(DASHBOARD)
        colours = page.page.locator("svg.scaleops-chart").first.evaluate(CHART_COLOURS_JS)
        backgrounds[scheme] = colours["background"]
        assert contrast(colours["text"], colours["background"]) >= 4.5, (scheme, colours)
        assert contrast(colours["series"], colours["background"]) >= 3.0, (scheme, colours)
        page.screenshot(f"dashboard-{scheme}", full_page=False)
    assert backgrounds["light"] != backgrounds["dark"], f"the page did not switch theme: {backgrounds}"
    page.page.emulate_media(color_scheme="light")


def test_admin_index_links_to_the_dashboard(admin_page: BrowserPage) -> None:
    page = admin_page
    link = page.page.locator(f"#content-main a[href='{DASHBOARD}']")
    assert link.count() >= 1, "the admin index has no link to the dashboard"
    link.first.click()
    page.settle()
    assert page.page.url == page.site(DASHBOARD)
    page.assert_admin_styled()
    for name in PANELS:
        assert panel(page, name).count() == 1, f"no {name} panel"


def test_dashboard_is_for_staff_only(page: BrowserPage, live_site: LiveSite) -> None:
    page.open(DASHBOARD)  # answered by the login page it redirects to
    assert page.page.url.startswith(live_site(f"/admin/login/?next={DASHBOARD}")), page.page.url
    assert panel(page, "queries").count() == 0


@pytest.mark.django_db(transaction=True, databases=["default", "replica", "pgbouncer"])
def test_dashboard_panels_render_with_data_after_traffic(
    admin_page: BrowserPage, dashboard: str, live_site: LiveSite
) -> None:
    generate_traffic(live_site)
    page = admin_page
    page.open(DASHBOARD)
    page.assert_admin_styled()
    for name in PANELS:
        section = panel(page, name)
        assert section.count() == 1, f"no {name} panel"
        text = section.inner_text()
        assert not is_unavailable(section), f"the {name} panel is unavailable: {text}"
        assert section.locator("svg.scaleops-chart, table").count() >= 1, f"the {name} panel shows no figures"
    points = [
        int(value)
        for value in page.page.locator("svg.scaleops-chart [data-points]").evaluate_all(
            "nodes => nodes.map(n => n.getAttribute('data-points'))"
        )
    ]
    assert points, "no chart draws a series"
    assert max(points) > 1, f"no chart series has more than one point: {points}"
    # A chart is drawn, not only present in the markup: it has a size on the page.
    box = page.page.locator("svg.scaleops-chart").first.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 30, box

    # The limited key is among the top keys, linking to its page in the admin.
    ratelimit = panel(page, "ratelimit")
    link = ratelimit.locator("a", has_text="traffic free").first
    href = link.get_attribute("href")
    page.screenshot("dashboard")
    if os.environ.get("SCALEOPS_UPDATE_SCREENSHOT") == "1":
        # The README's: the top of the page (health summary, first panels), not its whole length.
        SCREENSHOT_FOR_README.parent.mkdir(parents=True, exist_ok=True)
        height = min(README_SCREENSHOT_HEIGHT, page.page.evaluate("document.documentElement.scrollHeight"))
        page.page.screenshot(
            path=str(SCREENSHOT_FOR_README),
            full_page=True,
            clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height},
        )
    assert_charts_readable_in_both_themes(page)
    link.click()
    page.settle()
    free_key = ApiKey.objects.get(name="traffic free")
    assert href == f"/admin/scaleops/apikey/{free_key.pk}/change/"
    assert page.page.url == page.site(href)


@pytest.mark.services
@pytest.mark.django_db(transaction=True, databases=["default", "replica", "pgbouncer"])
def test_pgbouncer_panel_unavailable_while_pgbouncer_is_stopped(
    admin_page: BrowserPage, dashboard: str, services: Services
) -> None:
    from django_scaleops.pgbouncer.metrics import clear_metrics_cache

    page = admin_page
    page.open(DASHBOARD)
    assert not is_unavailable(panel(page, "pgbouncer")), panel(page, "pgbouncer").inner_text()
    services.pgbouncer.stop()
    try:
        clear_metrics_cache()
        page.open(DASHBOARD)
        down = panel(page, "pgbouncer")
        assert is_unavailable(down)
        assert "unavailable" in down.inner_text().lower()
        page.screenshot("pgbouncer-stopped")
        for name in PANELS:
            if name != "pgbouncer":
                section = panel(page, name)
                assert section.count() == 1, f"no {name} panel while PgBouncer is stopped"
                assert not is_unavailable(section), f"{name}: {section.inner_text()}"
    finally:
        services.pgbouncer.start()
        clear_metrics_cache()
        connections["pgbouncer"].close()  # the restart dropped it: later tests would get a dead one
    page.open(DASHBOARD)  # back on the next load
    assert not is_unavailable(panel(page, "pgbouncer")), panel(page, "pgbouncer").inner_text()
