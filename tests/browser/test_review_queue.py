"""In a real browser, against the live server, a real Celery worker and the HTTP sandbox: a
supervisor filters the queue, opens a held refund, edits the amount, approves with a reason
and watches it succeed without reloading; a second supervisor no longer sees it; a red-zone
item waits for a second person."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from apps.accounts.roles import Role
from apps.actions.models import Action, Status
from apps.books.services import book_publish, draft_create, draft_update
from apps.registry.models import Workflow
from apps.reviews.models import ReviewItem
from apps.sandbox.selectors import refunds_for
from tests.browser.conftest import new_page, sign_in
from tests.conftest import PASSWORD, make_user
from tests.execution.conftest import ROOMY_ORDER, World, propose_refund, wait_for_status
from tests.factories import REFUND_CONTROLS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


def test_review_queue__filter_open_edit_approve__succeeds_without_reload(
    page: Page, browser: Browser, live_server: Any, world: World, user_for: Any
) -> None:
    # Given two held refunds (above the 50.00 EUR review-free cap) and two supervisors
    user_for(Role.SUPERVISOR)
    make_user(Role.SUPERVISOR, "frank")
    held = propose_refund(world, amount_cents=3_500 * 2)  # 70.00 EUR
    other = propose_refund(world, amount_cents=6_000, order_id="1005")
    assert {held.status, other.status} == {Status.PENDING_REVIEW}
    sign_in(page, live_server, "alice", PASSWORD)

    # When alice filters the queue to the refunds workflow, yellow zone
    page.goto(f"{live_server.url}/reviews/")
    page.locator("#id_workflow").select_option("refunds")
    page.locator("#id_zone").select_option("yellow")
    expect(page).to_have_url(f"{live_server.url}/reviews/?workflow=refunds&zone=yellow&kind=&age=")
    expect(page.locator("#queue-items tbody tr")).to_have_count(2)

    # And opens the 70.00 EUR refund
    page.get_by_role("link", name=f"issue_refund · order:{ROOMY_ORDER}").click()
    expect(page.locator("h1")).to_contain_text("70.00 EUR")
    expect(page.locator("#held-by")).to_contain_text("needs a person")

    # And edits the amount to 25.50 EUR and approves with a reason, from the keyboard
    page.keyboard.press("e")
    amount = page.get_by_test_id("param-amount_cents")
    expect(amount).to_be_focused()
    amount.fill("25.50")
    page.locator("#reason-code").select_option("verified")
    marker = page.evaluate("() => (window.__sameDocument = 'yes')")
    page.keyboard.press("Control+Enter")

    # Then the item shows decided, and the refund succeeds in the sandbox without a reload
    expect(page.locator("#item-panel")).to_have_attribute("data-state", "decided")
    expect(page.get_by_test_id("action-status")).to_have_text("succeeded")
    assert page.evaluate("() => window.__sameDocument") == marker
    done = Action.objects.get(pk=held.pk)
    assert done.params["amount_cents"] == 2_550
    assert [r.amount_cents for r in refunds_for(ROOMY_ORDER)] == [2_550]

    # And frank no longer sees it in his queue; the other refund is still there
    frank = new_page(browser)
    sign_in(frank, live_server, "frank", PASSWORD)
    frank.goto(f"{live_server.url}/reviews/")
    rows = frank.locator("#queue-items tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("order:1005")
    frank.context.close()


def test_review_queue__red_zone__second_person_needed(
    page: Page, browser: Browser, live_server: Any, world: World, user_for: Any
) -> None:
    # Given refunds are red zone in a new book version, and a held red refund
    draft = draft_create(workflow=Workflow.objects.get(slug="refunds"), user=world.owner)
    tools = [{**REFUND_CONTROLS["tools"][0], "risk_zone": "red"}]
    draft_update(
        version_id=draft.pk,
        user=world.owner,
        values={**REFUND_CONTROLS, "tools": tools, "escalation_owner_id": world.owner.pk},
    )
    book_publish(version_id=draft.pk, user=world.owner, change_note="refunds are red")
    user_for(Role.SUPERVISOR)
    make_user(Role.SUPERVISOR, "frank")
    held = propose_refund(world, amount_cents=2_000)
    item = ReviewItem.objects.get(action=held)

    # When alice approves it
    sign_in(page, live_server, "alice", PASSWORD)
    page.goto(f"{live_server.url}/reviews/{item.pk}/")
    page.locator("#reason-code").select_option("within-policy")
    page.get_by_role("button", name="Decide").click()

    # Then it waits for a second person, and alice cannot be that person
    expect(page.get_by_test_id("notice")).to_contain_text("Approval 1 of 2")
    expect(page.get_by_test_id("second-approver")).to_be_visible()
    assert Action.objects.get(pk=held.pk).status == Status.PENDING_REVIEW

    # When frank approves it too, it runs
    frank = new_page(browser)
    sign_in(frank, live_server, "frank", PASSWORD)
    frank.goto(f"{live_server.url}/reviews/{item.pk}/")
    expect(frank.locator("#approvals")).to_contain_text("alice")
    frank.locator("#reason-code").select_option("verified")
    frank.get_by_role("button", name="Decide").click()
    expect(frank.get_by_test_id("action-status")).to_have_text("succeeded")
    wait_for_status(held, Status.SUCCEEDED)
    frank.context.close()
