"""Real-browser fixtures: Debian's Chromium driven by Playwright (which cannot download its own
browsers here), against Django's live server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect, sync_playwright

# The live sandbox world of the execution tests, for pages that run actions end to end.
from tests.execution.conftest import sandbox_url, world  # noqa: F401 (fixtures)

# The ceiling of every wait in a page (an element, a navigation, an expect): pages that wait on a
# worker or draw charts take seconds on a busy machine, and a wait ends as soon as its condition
# holds, so only a failing test ever waits this long. (Playwright's own defaults, 30 s for
# actions and 5 s for expect, are speed assumptions.)
TIMEOUT_MS = 90_000

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or ""
    if not path:
        pytest.fail("Chromium not found: install Debian's chromium or set CHROMIUM_PATH")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module.

    Playwright's sync API keeps an event loop running in this thread while it is open, and
    Django refuses ORM calls under a running loop. The ORM calls the browser tests make between
    steps are plain synchronous calls, so they are allowed for the module's lifetime only; the
    loop is closed before any other module runs.
    """
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_FLAGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def new_page(browser: Browser) -> Page:
    """A page in a context of its own, with the generous timeouts."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    return context.new_page()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = new_page(browser)
    context = page.context
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # Failed loads are judged below by resource type: a test may open a page it expects to
        # be refused, but a missing script or stylesheet is always a defect.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            errors.append(f"{response.status} for {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", on_response)
    yield page
    context.close()
    # Any script error, CSP violation or failed subresource fails the test that caused it.
    assert errors == [], f"browser errors: {errors}"


def sign_in(page: Page, live_server: Any, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
