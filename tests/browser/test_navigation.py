"""In a real browser: sign in, see only your pages, open one, sign out."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.accounts.roles import Role
from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_in__supervisor__sees_own_navigation(
    page: Page, live_server: Any, user_for: Any
) -> None:
    # Given a supervisor
    user_for(Role.SUPERVISOR)
    # When she signs in through the login page
    sign_in(page, live_server, "alice", PASSWORD)
    # Then she lands on her home page with exactly her navigation entry
    expect(page.get_by_role("heading", name="Welcome, alice")).to_be_visible()
    nav = page.locator("#main-nav")
    expect(nav.get_by_role("link")).to_have_text(["Review queue"])
    # And htmx (the pinned version) is loaded with the CSRF header on every request
    assert page.evaluate("window.htmx && window.htmx.version") == "2.0.11"
    assert "X-CSRFToken" in (page.locator("body").get_attribute("hx-headers") or "")
    # When she follows it, the page opens and is marked current
    nav.get_by_role("link", name="Review queue").click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    expect(nav.get_by_role("link", name="Review queue")).to_have_attribute("aria-current", "page")
    # And a page of another role says which role is missing
    page.goto(f"{live_server.url}/ledger/")
    expect(page.get_by_test_id("denied-message")).to_have_text("This page needs the finance role.")
    # When she signs out she is back at the login page
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_sign_in__wrong_password__error_shown(page: Page, live_server: Any, user_for: Any) -> None:
    user_for(Role.RISK)
    sign_in(page, live_server, "bob", "not the password")
    expect(page.get_by_role("alert")).to_contain_text(
        "Please enter a correct username and password"
    )
    expect(page.locator("#main-nav")).to_have_count(0)
