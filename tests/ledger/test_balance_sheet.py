"""The Autonomy Balance Sheet reconciles with the raw records, to the cent, before, during and
after the daily rollup; its CSV is exactly its table; a bad month gets a clear 400."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.ledger.rollups import cost_rollup
from apps.ledger.selectors import balance_sheet, month_parse, to_major
from apps.reviews.models import ReviewDecision, ReviewItem
from apps.runtime.models import ModelCall
from tests.ledger.conftest import World, add_action, add_cost, add_review

pytestmark = pytest.mark.django_db

MARCH = datetime(2025, 3, 1, tzinfo=UTC)
APRIL = datetime(2025, 4, 1, tzinfo=UTC)
OUTCOMES = [
    ("succeeded", "allow"),
    ("succeeded", "hold"),
    ("failed", "allow"),
    ("rolled_back", "allow"),
    ("rejected", "hold"),
    ("expired", "hold"),
    ("denied", "deny"),
    ("pending_review", "hold"),
]


def _generate(world: World, rng: random.Random, *, start: datetime, days: int, events: int) -> None:
    """Cost events of six-decimal cents, actions of every outcome and decided reviews, at random
    moments over `days` days from `start` (some just either side of a month's edges)."""
    flows = [world.refunds, world.invoices]
    for _ in range(events):
        at = start + timedelta(seconds=rng.randrange(days * 86_400))
        cents = Decimal(rng.randrange(1, 5_000_000)) / Decimal(1_000_000) * rng.choice([1, 10, 100])
        add_cost(world, workflow=rng.choice(flows), at=at, cents=cents)
    for index in range(events // 3):
        at = start + timedelta(seconds=rng.randrange(days * 86_400))
        status, decision = OUTCOMES[index % len(OUTCOMES)]
        action = add_action(
            world, workflow=rng.choice(flows), status=status, decision=decision, at=at
        )
        if decision == "hold" and status != "pending_review":
            verdict = {"rejected": "reject"}.get(status, rng.choice(["approve", "edit_approve"]))
            add_review(
                world,
                action,
                outcome=verdict,
                claimed_at=at + timedelta(minutes=rng.randrange(1, 90)),
                minutes=rng.randrange(1, 3_000) / 100,
            )


def _expected(
    world: World, month_start: datetime, month_end: datetime
) -> dict[str, dict[str, Any]]:
    """The month's figures per workflow, from the raw rows, summed here in Python."""
    expected: dict[str, dict[str, Any]] = {}
    for flow in (world.refunds, world.invoices):
        calls = [
            c
            for c in ModelCall.objects.filter(workflow=flow)
            if month_start <= c.created_at < month_end
        ]
        actions = [
            a
            for a in Action.objects.filter(workflow=flow)
            if month_start <= a.created_at < month_end
        ]
        executed = {"running", "succeeded", "failed", "rolled_back", "rollback_failed"}
        items = [
            i
            for i in ReviewItem.objects.filter(workflow=flow, state="decided")
            if i.closed_at and month_start <= i.closed_at < month_end
        ]
        edits = [
            d
            for d in ReviewDecision.objects.filter(item__workflow=flow, verdict="edit_approve")
            if month_start <= d.created_at < month_end
        ]
        review_seconds = sum(
            (
                (i.closed_at - i.claimed_at).total_seconds()
                for i in items
                if i.closed_at and i.claimed_at
            ),
            0.0,
        )
        auto_ok = [a for a in actions if a.status == "succeeded" and a.decision == "allow"]
        successes = sum(1 for a in actions if a.status == "succeeded")
        spend = sum((c.cost_cents for c in calls), Decimal(0))
        expected[flow.slug] = {
            "calls": len(calls),
            "spend": spend,
            "autonomous": sum(1 for a in actions if a.status in executed and a.decision == "allow"),
            "after_review": sum(
                1 for a in actions if a.status in executed and a.decision == "hold"
            ),
            "rejected": sum(1 for a in actions if a.status == "rejected"),
            "expired": sum(1 for a in actions if a.status == "expired"),
            "rolled_back": sum(1 for a in actions if a.status == "rolled_back"),
            "successful": successes,
            "saved": world.books[flow.slug].baseline_minutes * len(auto_ok),
            "review_minutes": (Decimal(str(review_seconds)) / 60).quantize(Decimal("0.01")),
            "edits": len(edits),
            "per_success": spend / successes if successes else None,
        }
    return expected


def _assert_reconciles(world: World) -> None:
    sheet = balance_sheet(month_parse("2025-03"))
    expected = _expected(world, MARCH, APRIL)
    for row in sheet.rows:
        want = expected[row.workflow.slug]
        assert row.model_calls == want["calls"]
        assert row.model_spend_cents == want["spend"]  # exact: six decimals of a cent
        assert to_major(row.model_spend_cents) == (want["spend"] / 100).quantize(Decimal("0.01"))
        assert row.autonomous == want["autonomous"]
        assert row.after_review == want["after_review"]
        assert row.rejected == want["rejected"]
        assert row.expired == want["expired"]
        assert row.rolled_back == want["rolled_back"]
        assert row.successful == want["successful"]
        assert row.time_saved_minutes == want["saved"]
        assert row.review_minutes == want["review_minutes"]
        assert row.edits == want["edits"]
        assert row.rework == want["rejected"] + want["rolled_back"] + want["edits"]
        assert row.cost_per_success_cents == want["per_success"]
    refunds = next(row for row in sheet.rows if row.workflow.slug == "refunds")
    assert refunds.budget_cents == Decimal(500_000)
    assert refunds.budget_left_cents == Decimal(500_000) - expected["refunds"]["spend"]


def test_balance_sheet__generated_month__reconciles_to_the_cent_through_the_rollup(
    world: World,
) -> None:
    # Given a month of generated records, with days either side of it
    rng = random.Random(8)
    _generate(world, rng, start=MARCH - timedelta(days=3), days=36, events=1_500)
    assert ModelCall.objects.filter(created_at__gte=MARCH, created_at__lt=APRIL).count() > 1_000

    # Then the sheet read from the raw records alone reconciles
    _assert_reconciles(world)

    # When the rollup folds the days up to mid-month and more events arrive after it
    report = cost_rollup(now=datetime(2025, 3, 20, 12, tzinfo=UTC))
    assert report.rolled_until == datetime(2025, 3, 19).date()
    _generate(world, rng, start=datetime(2025, 3, 19, tzinfo=UTC), days=16, events=300)
    # Then rollup + live tail still reconciles
    _assert_reconciles(world)

    # When the rollup runs again past the month (and once more: it is idempotent)
    cost_rollup(now=datetime(2025, 4, 10, tzinfo=UTC))
    cost_rollup(now=datetime(2025, 4, 10, tzinfo=UTC))
    # Then the month comes from the rollup only, and still reconciles
    _assert_reconciles(world)


def test_balance_sheet__late_event_in_a_reopened_day__is_counted(world: World) -> None:
    # Given a rollup up to 19 March, and an event stamped 18 March recorded afterwards
    add_cost(
        world, workflow=world.refunds, at=datetime(2025, 3, 10, tzinfo=UTC), cents=Decimal("1.5")
    )
    cost_rollup(now=datetime(2025, 3, 20, 12, tzinfo=UTC))
    add_cost(
        world,
        workflow=world.refunds,
        at=datetime(2025, 3, 18, 23, tzinfo=UTC),
        cents=Decimal("2.25"),
    )
    # When the next rollup runs the day after
    cost_rollup(now=datetime(2025, 3, 21, 12, tzinfo=UTC))
    # Then the late event is in the month's spend
    row = next(
        r for r in balance_sheet(month_parse("2025-03")).rows if r.workflow.slug == "refunds"
    )
    assert row.model_spend_cents == Decimal("3.75")
    assert row.model_calls == 2


def test_balance_sheet_csv__is_exactly_the_table(world: World, client_for: Any) -> None:
    # Given a month with records
    _generate(world, random.Random(3), start=MARCH, days=31, events=300)
    client = client_for(Role.FINANCE)
    # When finance opens the page and downloads the CSV
    page = client.get("/ledger/?month=2025-03")
    response = client.get("/ledger/balance-sheet.csv?month=2025-03")
    # Then the CSV has the table's header and rows, cell for cell
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="balance-sheet-2025-03.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    table = page.context["table"]
    assert rows[0] == [column.title for column in table.headers]
    assert rows[1:] == [[value for value, _ in cells] for cells in table.rows]
    assert [row[0] for row in rows[1:]] == ["invoices", "refunds"]
    # And the spend column is the raw records' sum, rounded to the cent
    spend_column = rows[0].index("Model spend")
    raw = sum(
        (
            c.cost_cents
            for c in ModelCall.objects.filter(
                workflow=world.refunds, created_at__gte=MARCH, created_at__lt=APRIL
            )
        ),
        Decimal(0),
    )
    assert Decimal(rows[2][spend_column]) == (raw / 100).quantize(Decimal("0.01"))
    html = page.content.decode()
    assert f">{rows[2][spend_column]}<" in html


@pytest.mark.parametrize("month", ["2025-13", "March", "2025-3-1", "99-01", "2025-00"])
def test_balance_sheet__bad_month__400_naming_the_field(client_for: Any, month: str) -> None:
    client = client_for(Role.FINANCE)
    for path in ("/ledger/", "/ledger/balance-sheet.csv"):
        response = client.get(path, {"month": month})
        assert response.status_code == 400
        assert "month: expected a month as YYYY-MM" in response.content.decode()


def test_balance_sheet__empty_month__says_so(client_for: Any, world: World) -> None:
    response = client_for(Role.FINANCE).get("/ledger/?month=2024-01")
    assert response.status_code == 200
    assert "Nothing was recorded in January 2024" in response.content.decode()


def test_balance_sheet__charts__are_plotly_figures_in_json_script(
    world: World, client_for: Any
) -> None:
    add_cost(world, workflow=world.refunds, at=timezone.now(), cents=Decimal("12.5"))
    html = client_for(Role.FINANCE).get("/ledger/").content.decode()
    for chart in ("spend-chart", "outcome-chart", "cost-trend-chart"):
        assert f'<script id="{chart}" type="application/json">' in html
        assert f'data-figure="{chart}"' in html
    assert "plotly-4.1.1.min.js" in html


def test_balance_sheet_csv__other_roles__refused(client_for: Any) -> None:
    for role in (Role.RISK, Role.ONCALL, Role.SUPERVISOR):
        assert client_for(role).get("/ledger/balance-sheet.csv").status_code == 403
