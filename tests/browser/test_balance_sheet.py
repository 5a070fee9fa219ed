"""In a real browser: finance opens the balance sheet, changes the month, sees the plotly
charts drawn and downloads the CSV of the table."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from apps.accounts.roles import Role
from apps.ledger.selectors import previous_month
from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD
from tests.ledger.conftest import World, add_action, add_cost
from tests.ledger.conftest import ledger_world as ledger_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The moment the test starts, which stays today for the pages it opens (the live server
    runs in this process): a month that ended while the test ran would show the new, empty one
    by default."""
    started = timezone.now()
    real_localdate = timezone.localdate

    def localdate(value: datetime | None = None, timezone: Any = None) -> date:
        return real_localdate(value or started, timezone)

    monkeypatch.setattr(timezone, "localdate", localdate)
    return started


def test_balance_sheet__change_month_see_charts_download_csv(
    page: Page,
    live_server: Any,
    ledger_world: World,
    user_for: Any,
    now: datetime,
) -> None:
    world = ledger_world
    # Given cost and outcomes this month, and a different spend last month
    this_month = timezone.localdate(now).replace(day=1)
    last_month = previous_month(this_month)
    last_month_at = timezone.make_aware(datetime(last_month.year, last_month.month, 10, 12))
    add_cost(world, workflow=world.refunds, at=now, cents=Decimal("1234.5"))
    add_action(world, workflow=world.refunds, status="succeeded", decision="allow", at=now)
    add_cost(world, workflow=world.invoices, at=last_month_at, cents=Decimal("777"))
    add_action(
        world,
        workflow=world.invoices,
        status="rejected",
        decision="hold",
        at=last_month_at + timedelta(hours=1),
    )
    user_for(Role.FINANCE)
    sign_in(page, live_server, "charlie", PASSWORD)

    # When charlie opens the balance sheet
    page.locator("#main-nav").get_by_role("link", name="Balance sheet").click()
    # Then this month's table shows refunds' spend and the charts are drawn by plotly
    table = page.locator("#balance-sheet")
    expect(table).to_contain_text("refunds")
    expect(table).to_contain_text("12.35")
    for chart in ("spend-chart", "outcome-chart", "cost-trend-chart"):
        plot = page.locator(f"#{chart}-plot")
        expect(plot).to_have_attribute("data-drawn", "true")
        expect(plot.locator(".main-svg").first).to_be_visible()
    expect(page.locator("#spend-chart-plot .scatterlayer .trace").first).to_be_attached()

    # When he picks last month
    page.locator("#month-select").select_option(f"{last_month:%Y-%m}")
    page.get_by_role("button", name="Show").click()
    # Then the table and charts are last month's
    expect(page.locator("h1")).to_contain_text(f"{last_month:%B %Y}")
    expect(table).to_contain_text("invoices")
    expect(table).not_to_contain_text("refunds")
    expect(page.locator("#outcome-chart-plot")).to_have_attribute("data-drawn", "true")
    expect(page.locator("#outcome-chart-plot .barlayer .trace").first).to_be_attached()

    # When he downloads the CSV
    with page.expect_download() as info:
        page.get_by_test_id("csv-link").click()
    download = info.value
    # Then it is last month's table
    assert download.suggested_filename == f"balance-sheet-{last_month:%Y-%m}.csv"
    with open(download.path(), encoding="utf-8") as handle:
        rows = list(csv.reader(io.StringIO(handle.read())))
    header = rows[0]
    assert header[:3] == ["Workflow", "Currency", "Autonomous"]
    assert [row[0] for row in rows[1:]] == ["invoices"]
    assert rows[1][header.index("Model spend")] == "7.77"
    assert rows[1][header.index("Rejected")] == "1"
