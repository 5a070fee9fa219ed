"""In a real browser, with a real worker: a risk user runs a backtest of a draft from the
editor, watches its progress and sees the actions whose decision would flip."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD
from tests.ledger.conftest import World
from tests.ledger.conftest import ledger_world as ledger_world
from tests.ledger.test_backtest import _actions, _draft

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_backtest__risk_runs_it_from_the_editor__sees_flips(
    page: Page,
    live_server: Any,
    ledger_world: World,
    celery_worker: str,
) -> None:
    world = ledger_world
    # Given five recorded refunds and a saved draft that moves the limits both ways
    actions = _actions(world)
    _draft(world, world.refunds)
    sign_in(page, live_server, "bob", PASSWORD)

    # When bob opens the draft and runs a backtest over the last 1,000 actions
    page.goto(f"{live_server.url}/books/refunds/draft/")
    page.locator("#backtest-limit").fill("1000")
    page.get_by_role("button", name="Run backtest").click()

    # Then the panel polls until the worker is done and shows both sides and the flips
    result = page.locator("#backtest-result")
    expect(result).to_have_attribute("data-state", "done")
    expect(page.get_by_test_id("flip-total")).to_have_text("3")
    counts = page.locator("#backtest-counts")
    expect(counts.locator("tbody tr").nth(0)).to_contain_text("active v1")
    flips = page.locator("#backtest-flips tbody tr")
    expect(flips).to_have_count(3)
    expect(result).to_contain_text("allow->hold: 1")
    expect(result).to_contain_text("hold->allow: 1")

    # And each flip links to that action's flight recorder
    page.locator("#backtest-flips").get_by_role("link").nth(1).click()
    expect(page).to_have_url(f"{live_server.url}/audit/flight-recorder/?action={actions[2].pk}")
