"""In a real browser: a risk user edits a draft, meets a validation error, fixes it, publishes
and reads the diff to the previous version; a supervisor cannot reach the editor."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.accounts.roles import Role
from apps.books.models import BookVersion
from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD
from tests.factories import make_agent, make_published_book, make_tool, make_workflow

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BROKEN = """@id("no-weekend-refunds")
@message("No refunds run at weekends")
forbid (principal, action == Action::"execute", resource)
when { context.wekday > 5 };"""


def test_book_editor__edit_validate_fix_publish__diff_shows_change(
    page: Page, live_server: Any, user_for: Any
) -> None:
    # Given a refunds workflow with a published v1 written by bob (risk)
    bob = user_for(Role.RISK)
    make_tool()
    make_agent(owner=user_for(Role.ADMIN))
    make_published_book(workflow=make_workflow(), author=bob)
    sign_in(page, live_server, "bob", PASSWORD)

    # When he opens a draft from v1 and raises the review-free limit
    page.locator("#main-nav").get_by_role("link", name="Decision Books").click()
    page.get_by_role("link", name="refunds", exact=True).click()
    page.get_by_role("button", name="Start a draft from v1").click()
    page.locator("#id_tool__issue_refund__auto_cap").fill("75.00")
    # Then the compiled Cedar beside the form follows the edit
    expect(page.locator("#compiled-cedar")).to_contain_text("context.amount > 7500")

    # When he adds a raw policy with a typo and validates
    page.locator("#id_raw_policies").fill(BROKEN)
    page.get_by_role("button", name="Validate").click()
    # Then the error names the section, line, policy and cause
    problems = page.get_by_test_id("problems")
    expect(problems).to_contain_text("raw line 1 · no-weekend-refunds")
    expect(problems).to_contain_text("wekday")

    # And publishing the broken draft is refused, with v1 still active
    page.locator("#id_change_note").fill("Raise the review-free limit; no refunds at weekends")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("Not published")
    assert BookVersion.objects.get(status="published").number == 1

    # When he fixes the typo, validates and publishes
    page.locator("#id_raw_policies").fill(BROKEN.replace("wekday", "weekday"))
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_test_id("problems-ok")).to_be_visible()
    page.locator("#id_change_note").fill("Raise the review-free limit; no refunds at weekends")
    page.get_by_role("button", name="Publish").click()

    # Then v2 is active and the diff to v1 shows what changed
    expect(page.get_by_role("status")).to_contain_text("refunds v2 published and active")
    diff = page.locator("#version-diff")
    expect(diff.locator(".diff-remove").first).to_contain_text("without review up to 50.00 EUR")
    expect(diff.locator(".diff-add").first).to_contain_text("without review up to 75.00 EUR")
    expect(diff).to_contain_text('@id("no-weekend-refunds")')
    assert BookVersion.objects.get(status="published").number == 2


def test_book_editor__supervisor__refused(page: Page, live_server: Any, user_for: Any) -> None:
    bob = user_for(Role.RISK)
    make_tool()
    make_published_book(workflow=make_workflow(), author=bob)
    user_for(Role.SUPERVISOR)
    sign_in(page, live_server, "alice", PASSWORD)
    expect(page.locator("#main-nav")).not_to_contain_text("Decision Books")
    page.goto(f"{live_server.url}/books/refunds/draft/")
    expect(page.get_by_test_id("denied-message")).to_have_text("This page needs the risk role.")
