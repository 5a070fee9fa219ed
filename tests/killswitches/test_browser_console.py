"""In a real browser: on-call pauses refund-bot from the console, sees its new proposals
blocked, rolls back its last 3 refunds and sees the sandbox orders restored. The refunds run
through a real Celery worker against the sandbox over HTTP, and so does their undo."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.actions.models import Action, Status
from apps.killswitches.models import KillSwitch
from apps.sandbox.models import Order, Refund
from tests.browser.conftest import browser, page, sign_in  # noqa: F401 (fixtures)
from tests.conftest import PASSWORD
from tests.execution.conftest import (  # noqa: F401 (fixtures)
    World,
    propose_refund,
    sandbox_url,
    wait_for_status,
    world,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]

# (order, refund in cents): each within the review-free 50.00 EUR, each order refundable
REFUNDS = [("1003", 3_000), ("1004", 2_500), ("1005", 4_000)]


def test_oncall__pause_refund_bot_then_roll_back_last_3__orders_restored(
    page: Page,  # noqa: F811
    live_server: Any,
    world: World,  # noqa: F811
    user_for: Any,
) -> None:
    from apps.accounts.roles import Role

    # Given refund-bot has refunded three orders
    totals = {order.pk: order.total_cents for order in Order.objects.all()}
    done = []
    for order_id, cents in REFUNDS:
        action = propose_refund(world, amount_cents=cents, order_id=order_id)
        done.append(wait_for_status(action, Status.SUCCEEDED, Status.FAILED))
    assert [action.status for action in done] == [Status.SUCCEEDED] * 3, [a.error for a in done]
    for order_id, cents in REFUNDS:
        assert Order.objects.get(pk=order_id).refundable_cents == totals[order_id] - cents
    user_for(Role.ONCALL)

    # When dana, on call, pauses refund-bot from the console
    sign_in(page, live_server, "dana", PASSWORD)
    page.goto(f"{live_server.url}/oncall/")
    expect(page.get_by_test_id("banner")).to_have_text("All clear: no kill switch is engaged.")
    page.get_by_label("Scope", exact=True).first.select_option("agent")
    page.locator("#id_engage-target").fill("refund-bot")
    page.locator("#id_engage-reason").fill("refunds to the wrong orders")
    page.get_by_role("button", name="Engage kill switch…").click()
    # ... confirming on the next step
    expect(page.get_by_test_id("confirm")).to_contain_text("of agent refund-bot")
    page.get_by_role("button", name="Engage kill switch", exact=True).click()

    # Then the switch is engaged, with its proof
    expect(page.get_by_role("heading", name="Kill switch on agent: refund-bot")).to_be_visible()
    expect(page.get_by_test_id("started-after")).to_have_text("0")
    switch = KillSwitch.objects.get()
    assert switch.engaged_by == "dana"

    # When refund-bot proposes again, it is blocked, and the proof page shows it by itself
    blocked = propose_refund(world, amount_cents=1_000, order_id="1006")
    assert blocked.status == Status.BLOCKED
    expect(page.get_by_test_id("blocked-since")).to_have_text("1")

    # When she rolls back its last 3 refunds from the console
    page.goto(f"{live_server.url}/oncall/")
    expect(page.get_by_test_id("banner")).to_have_text("1 kill switch engaged")
    page.locator("#id_rollback-target").fill("refund-bot")
    page.locator("#id_rollback-count").fill("3")
    page.locator("#id_rollback-reason").fill("refunds to the wrong orders")
    page.get_by_role("button", name="Roll back…").click()
    expect(page.locator("#rollback-plan tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Roll back 3 actions").click()

    # Then she sees it progress to the end, each refund undone, newest first
    expect(page.get_by_test_id("rollback-status")).to_have_text("Finished: 3 of 3 handled.")
    rows = page.locator("#rollback-report tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("order:1005")
    expect(rows.nth(0)).to_contain_text("rolled back")
    expect(rows.nth(0)).to_contain_text("order 1005: 74.20 of 74.20 EUR refundable again")
    expect(rows.nth(1)).to_contain_text("order 1004: 48.00 of 48.00 EUR refundable again")
    expect(rows.nth(2)).to_contain_text("order 1003: 39.50 of 39.50 EUR refundable again")

    # And the sandbox orders are restored
    for order_id, _ in REFUNDS:
        assert Order.objects.get(pk=order_id).refundable_cents == totals[order_id]
    assert set(Refund.objects.values_list("status", flat=True)) == {Refund.Status.REVERSED}
    assert {Action.objects.get(pk=a.pk).status for a in done} == {Status.ROLLED_BACK}
