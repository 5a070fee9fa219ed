"""SLOs on crafted data: the measures, a breach raising ONE audited alert however often it is
checked or the page viewed, week-on-week regressions, resolution; the page's access."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.ledger.models import SloAlert
from apps.ledger.slos import slo_check, slo_dashboard
from apps.runtime.models import Run, Step
from tests.ledger.conftest import World, add_action, add_review

pytestmark = pytest.mark.django_db


def _reviews(world: World, now: Any, *, days_ago: float, outcomes: list[tuple[str, str]]) -> None:
    for kind, outcome in outcomes:
        at = now - timedelta(days=days_ago)
        action = add_action(
            world, workflow=world.refunds, status="succeeded",
            decision="allow" if kind == "spot_check" else "hold", at=at,
        )  # fmt: skip
        add_review(world, action, kind=kind, outcome=outcome, claimed_at=at, minutes=5)


def _week_of_breach(world: World, now: Any) -> None:
    # Last week: all ten approved. This week: 5 approved, 1 edited, 3 rejected, 1 spot check
    # rejected -> approval 6/10 = 60 % (target >= 80 %), override 2/10 = 20 % (max 20 %).
    _reviews(world, now, days_ago=10, outcomes=[("hold", "approve")] * 10)
    _reviews(
        world, now, days_ago=1,
        outcomes=[("hold", "approve")] * 5 + [("hold", "edit_approve")] + [("hold", "reject")] * 3
        + [("spot_check", "reject")],
    )  # fmt: skip


def test_slo_measures__crafted_week__values_and_targets(world: World) -> None:
    now = timezone.now()
    _week_of_breach(world, now)
    # Two allowed actions this week beside the 9 held: human-in-loop 9 / 11
    add_action(
        world,
        workflow=world.refunds,
        status="succeeded",
        decision="allow",
        at=now - timedelta(hours=2),
    )
    # Steps of 100 ms x 19 and one of 2 s: p95 = 100 + 0.05 * ... interpolated by percentile_cont
    run = Run.objects.create(workflow=world.refunds, agent=world.agent)
    for index in range(20):
        started = now - timedelta(hours=3, minutes=index)
        Step.objects.create(
            run=run, index=index, name="decide", state="succeeded", time_budget_seconds=5,
            started_at=started,
            finished_at=started + timedelta(milliseconds=2000 if index == 0 else 100),
        )  # fmt: skip
    rows = {row.spec.measure: row for row in slo_dashboard(now)[1].rows}  # invoices, refunds
    assert rows["approval_rate"].value == pytest.approx(0.6)
    assert rows["approval_rate"].target == 0.8
    assert rows["approval_rate"].breached
    assert rows["override_rate"].value == pytest.approx(0.2)
    assert not rows["override_rate"].breached  # at its maximum, not above
    assert rows["human_in_loop_rate"].value == pytest.approx(9 / 11)
    # percentile_cont(0.95) over nineteen 100s and one 2000: 100 + 0.05 * 1900 = 195 ms
    assert rows["latency_p95_ms"].value == pytest.approx(195.0)
    # The trend: last week's approval (100 %) just before this week's
    assert rows["approval_rate"].trend[-2:] == [pytest.approx(1.0), pytest.approx(0.6)]


def test_slo_breach__checked_and_viewed_again__one_alert_audited_once(
    world: World, client_for: Any
) -> None:
    # Given a week whose approval rate breaches its SLO and fell 40 points from last week
    now = timezone.now()
    _week_of_breach(world, now)
    client = client_for(Role.ONCALL)
    # When the check runs three times and on-call opens the page twice
    opened = slo_check(now)
    slo_check(now)
    client.get("/ledger/slos/")
    slo_check(now + timedelta(minutes=1))
    page = client.get("/ledger/slos/")
    # Then one breach alert and the two regressions (approval and override), once each
    assert {(a.slo, a.kind) for a in opened} == {
        ("approval_rate", "breach"),
        ("approval_rate", "regression"),
        ("override_rate", "regression"),
    }
    assert SloAlert.objects.count() == 3
    assert AuditEvent.objects.filter(verb="slo.breached").count() == 1
    assert AuditEvent.objects.filter(verb="slo.regressed").count() == 2
    # And the page shows them
    html = page.content.decode()
    assert "refunds: Approval rate 60.0% is below its minimum 80.0% (last 7 days)" in html
    assert html.count('data-kind="breach"') == 1


def test_slo_breach__back_within_target__resolved_and_audited(world: World) -> None:
    now = timezone.now()
    _week_of_breach(world, now)
    slo_check(now)
    # When twenty more approvals come in this week (26 of 30 approved: 87 %)
    _reviews(world, now, days_ago=0.5, outcomes=[("hold", "approve")] * 20)
    slo_check(now)
    breach = SloAlert.objects.get(kind="breach")
    assert breach.state == SloAlert.State.RESOLVED
    assert AuditEvent.objects.filter(verb="slo.resolved", target_id=str(breach.pk)).count() == 1
    # And a new breach later opens a new alert
    _reviews(world, now, days_ago=0.2, outcomes=[("hold", "reject")] * 30)
    slo_check(now)
    assert SloAlert.objects.filter(kind="breach", state="open").count() == 1
    assert SloAlert.objects.filter(kind="breach").count() == 2


def test_slo_page__open_to_oncall_only(world: World, client_for: Any) -> None:
    assert client_for(Role.ONCALL).get("/ledger/slos/").status_code == 200
    for role in (Role.FINANCE, Role.RISK, Role.SUPERVISOR):
        assert client_for(role).get("/ledger/slos/").status_code == 403


def test_slo_alerts_tag__renders_open_alerts(world: World) -> None:
    from django.template import Context, Template

    now = timezone.now()
    _week_of_breach(world, now)
    slo_check(now)
    html = Template("{% load ledger %}{% slo_alerts %}").render(Context({}))
    assert "refunds: Approval rate 60.0% is below its minimum" in html
