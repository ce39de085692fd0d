"""Pages tested in a real browser: Debian's Chromium driven by Playwright, against a live server.

A pytest plugin module (``pytest_plugins = ["tests.browser_helpers"]`` in a test module) with:

- ``browser``: one Chromium for the test module, never a downloaded one. Missing Chromium fails the
  test with the command that installs it (CI installs it, so a skip would hide a broken setup).
- ``live_server_thread`` / ``live_site``: a live server on the real test databases (every alias;
  transactional tests, so it sees committed rows), serving static files through the staticfiles
  finders so the admin has its CSS and JavaScript, with the API-key throttle middleware in front
  like a deployment.
- ``page``: a fresh browser context per test; JavaScript errors and failed static files are
  recorded, and a screenshot is saved for every test (``-failed`` when it failed) under
  ``$SCALEOPS_ARTIFACTS_DIR`` (default ``tests/artifacts/``).
- ``admin_page``: ``page`` logged in as a staff superuser through the admin login form.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test import override_settings
from django.test.testcases import LiveServerThread
from playwright.sync_api import (
    Browser,
    Page,
    Playwright,
    Response,
    ViewportSize,
    sync_playwright,
)

ARTIFACTS_VAR = "SCALEOPS_ARTIFACTS_DIR"
DEFAULT_ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
INSTALL_CHROMIUM = "apt-get install chromium"
THROTTLE_MIDDLEWARE = "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"
# The test settings have no STATIC_URL (and no staticfiles app): the live server serves the apps'
# static folders here, and each browser test renders its pages with this STATIC_URL.
STATIC_URL = "/static/"
STATIC_TYPES = {"stylesheet", "script", "font", "image"}
ASYNC_UNSAFE_VAR = "DJANGO_ALLOW_ASYNC_UNSAFE"
ADMIN_USERNAME = "browser-admin"
ADMIN_PASSWORD = "correct horse battery staple"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Kept on the item so the page fixture knows, in its teardown, whether the test failed.
    report: pytest.TestReport = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


def artifacts_dir() -> Path:
    """Where screenshots go: ``$SCALEOPS_ARTIFACTS_DIR``, else ``tests/artifacts/``."""
    path = Path(os.environ.get(ARTIFACTS_VAR) or DEFAULT_ARTIFACTS)
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_name(nodeid: str) -> str:
    """``tests/test_browser.py::test_x[a b]`` -> ``test_browser-test_x-a_b``: a file name."""
    name = nodeid.split("/")[-1].replace(".py::", "-").replace("::", "-")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            f"Chromium is not installed, and the browser tests need it: {INSTALL_CHROMIUM}",
            pytrace=False,
        )
    return path


@dataclass
class PageWatch:
    """What went wrong in the browser: uncaught JavaScript errors and static files that failed."""

    errors: list[str] = field(default_factory=list)
    broken_static: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        page.on("response", self._response)

    def _response(self, response: Response) -> None:
        if response.request.resource_type in STATIC_TYPES and response.status >= 400:
            self.broken_static.append(f"{response.status} {response.url}")

    def assert_clean(self) -> None:
        assert self.errors == [], f"JavaScript errors: {self.errors}"
        assert self.broken_static == [], f"static files that did not load: {self.broken_static}"


@dataclass
class LiveSite:
    """The live server of one browser test."""

    url: str

    def __call__(self, path: str) -> str:
        return self.url + path


@dataclass
class BrowserPage:
    """A Playwright page with its watch, and helpers that check every page opened."""

    page: Page
    site: LiveSite
    watch: PageWatch
    name: str

    def open(self, path: str) -> Response:
        """Go to ``path`` on the live site and check it loaded cleanly (2xx, no JavaScript error)."""
        response = self.page.goto(self.site(path))
        assert response is not None, f"no response for {path}"
        assert response.ok, f"GET {path} answered {response.status}"
        self.page.wait_for_load_state("load")
        self.watch.assert_clean()
        return response

    def settle(self) -> None:
        """After a click that navigates: wait for the page, then check it."""
        self.page.wait_for_load_state("load")
        self.watch.assert_clean()

    def screenshot(self, label: str, *, full_page: bool = True) -> Path:
        path = artifacts_dir() / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_admin_styled(self) -> None:
        """The admin's stylesheet applied: a computed style, not just the <link> tag."""
        styled = self.page.evaluate(
            """() => {
                const sheets = [...document.styleSheets].filter(s => s.href && s.href.includes('/admin/css/'));
                const rules = s => { try { return s.cssRules.length; } catch (e) { return 0; } };
                const loaded = sheets.filter(s => rules(s) > 0);
                const header = document.querySelector('#header');
                const style = header ? getComputedStyle(header) : null;
                return {
                    sheets: sheets.map(s => s.href),
                    loaded: loaded.length,
                    headerBackground: style ? style.backgroundColor : null,
                    primary: getComputedStyle(document.documentElement).getPropertyValue('--primary').trim(),
                };
            }"""
        )
        assert styled["loaded"] > 0, f"no admin stylesheet loaded: {styled}"
        # base.css defines the theme's variables and gives the header its background colour.
        assert styled["primary"], f"the admin's CSS variables are missing: {styled}"
        assert styled["headerBackground"] not in (None, "rgba(0, 0, 0, 0)", "transparent"), styled


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    """Playwright's sync API, for one test module.

    It keeps an asyncio loop marked running on this thread while it is started, which Django's
    async-safety check takes for async code: the test's own ORM calls (and the database flush of
    transactional tests) would raise ``SynchronousOnlyOperation``. So the check is off, and
    Playwright started, only for the module, never for the rest of the suite; the live server's
    threads run no loop and keep the check.
    """
    previous = os.environ.get(ASYNC_UNSAFE_VAR)
    os.environ[ASYNC_UNSAFE_VAR] = "true"
    try:
        with sync_playwright() as playwright:
            yield playwright
    finally:
        if previous is None:
            del os.environ[ASYNC_UNSAFE_VAR]
        else:
            os.environ[ASYNC_UNSAFE_VAR] = previous


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, one for all the module's tests (fails, not skips, when it is not installed)."""
    executable = chromium_path()
    browser = playwright_instance.chromium.launch(executable_path=executable, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def live_server_thread(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServerThread]:
    """A live server for the module's tests, on the test databases (every alias, mirrors too).

    Its WSGI handler and middleware are built once, at start, with the throttle middleware in
    front (as a deployment would have it) and static files served by the staticfiles finders
    (what pytest-django's ``live_server`` does only when ``django.contrib.staticfiles`` is
    installed, which the test settings do not).
    """
    from django.db import connections

    # Django's test setup, then tests/conftest.py, re-point the mirror aliases ("replica",
    # "pgbouncer") at the test database on this thread's connections only; the server's threads
    # open their own from the configured settings, which still name the real database.
    configured = {alias: connections.settings[alias] for alias in connections}
    with django_db_blocker.unblock():
        for alias in configured:
            connections.settings[alias] = connections[alias].settings_dict
    with override_settings(STATIC_URL=STATIC_URL, MIDDLEWARE=[THROTTLE_MIDDLEWARE, *settings.MIDDLEWARE]):
        thread = LiveServerThread("localhost", static_handler=StaticFilesHandler)
        thread.daemon = True
        thread.start()
        thread.is_ready.wait()
    try:
        if thread.error:
            raise thread.error
        yield thread
    finally:
        thread.terminate()
        connections.settings.update(configured)


@pytest.fixture
def live_site(transactional_db: None, live_server_thread: LiveServerThread) -> Iterator[LiveSite]:
    """The live server for one test: committed rows (transactional), pages with their static files."""
    from django_scaleops.ratelimit import guard, limiter
    from django_scaleops.ratelimit.callers import tier_cache
    from django_scaleops.ratelimit.resolver import key_cache

    # Every request comes from this address; other tests' failed authentications must not count.
    guard.forget("127.0.0.1")
    key_cache.clear()
    tier_cache.clear()
    limiter.breaker.reset()
    with override_settings(STATIC_URL=STATIC_URL):
        yield LiveSite(f"http://{live_server_thread.host}:{live_server_thread.port}")
    key_cache.clear()
    tier_cache.clear()


@pytest.fixture
def page(browser: Browser, live_site: LiveSite, request: pytest.FixtureRequest) -> Iterator[BrowserPage]:
    """A fresh browser context; a screenshot of where it ended is saved for every test."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    context.set_default_timeout(10_000)
    raw = context.new_page()
    watch = PageWatch()
    watch.attach(raw)
    name = artifact_name(request.node.nodeid)
    for stale in artifacts_dir().glob(f"{glob.escape(name)}-*.png"):  # a previous run's
        stale.unlink()
    browser_page = BrowserPage(raw, live_site, watch, name)
    yield browser_page
    reports = request.node.stash.get(_reports_key, {})
    failed = any(report.failed for report in reports.values())
    try:
        if failed:
            with contextlib.suppress(Exception):  # the page may be what broke: keep the test's own error
                browser_page.screenshot("failed")
        else:
            browser_page.screenshot("end")
    finally:
        context.close()


@pytest.fixture
def admin_user(transactional_db: None, django_user_model: Any) -> Any:
    """A staff superuser, committed so that the live server sees it."""
    return django_user_model.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", ADMIN_PASSWORD)


def log_in(page: BrowserPage, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> None:
    """Log in through the admin's own login form, as a person would."""
    page.open("/admin/login/?next=/admin/")
    page.assert_admin_styled()
    page.page.fill("#id_username", username)
    page.page.fill("#id_password", password)
    page.page.click("#login-form [type=submit]")
    page.settle()
    assert page.page.url == page.site("/admin/"), f"login did not reach the admin index: {page.page.url}"
    assert username in (page.page.text_content("#user-tools") or "")


@pytest.fixture
def admin_page(page: BrowserPage, admin_user: Any) -> BrowserPage:
    """``page``, logged in as a staff superuser through the admin login form."""
    log_in(page)
    return page
