"""The runtime's pages: runs (on-call), one run, model budgets (finance), escalations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.roles import Role
from apps.runtime.budgets import budget_reserve, budget_settle
from apps.runtime.models import DemoTraffic, ModelCall, Run, Step
from tests.runtime.conftest import Flow, make_flow

pytestmark = pytest.mark.django_db


@pytest.fixture
def flow(user_for: Any) -> Flow:
    return make_flow(user_for, book={"monthly_budget_cents": 100})


def a_run(flow: Flow, **fields: Any) -> Run:
    if fields.get("state") == "failed":
        fields.setdefault("finished_at", timezone.now())
    run = Run.objects.create(
        workflow=flow.workflow, agent=flow.agent, subject="order:1003", **fields
    )
    Step.objects.create(run=run, index=0, name="triage", time_budget_seconds=5, state="succeeded")
    ModelCall.objects.create(
        workflow=flow.workflow, agent=flow.agent, run=run, task="classify_request",
        tier="frontier", provider="deterministic", model="rules-v1", input_tokens=120,
        output_tokens=30, cost_cents=Decimal("0.27"), pii_counts={"email": 1}, pii_masked=1,
        escalation="pii: small -> frontier",
    )  # fmt: skip
    return run


def test_runs__oncall__lists_runs_steps_and_attention(client_for: Any, flow: Flow) -> None:
    ok = a_run(flow, state="succeeded", cost_cents=Decimal("0.27"))
    bad = a_run(flow, state="failed", error="step triage failed: boom", escalated_to=flow.owner)
    response = client_for(Role.ONCALL).get("/runtime/")
    html = response.content.decode()
    assert response.status_code == 200
    assert str(ok.pk) in html
    assert str(bad.pk) in html
    assert "Needs attention" in html
    assert "step triage failed: boom" in html
    assert "triage: succeeded" in html


def test_runs__htmx__returns_the_partial(client_for: Any, flow: Flow) -> None:
    a_run(flow, state="waiting")
    response = client_for(Role.ONCALL).get("/runtime/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="runs-state"')
    assert "<html" not in html


def test_runs__bad_filter__error_next_to_the_field(client_for: Any, flow: Flow) -> None:
    response = client_for(Role.ONCALL).get("/runtime/?state=exploded")
    assert response.status_code == 200
    assert "Select a valid choice. exploded is not one of the available choices." in (
        response.content.decode()
    )


def test_runs__filter_by_state(client_for: Any, flow: Flow) -> None:
    ok = a_run(flow, state="succeeded")
    bad = a_run(flow, state="failed")
    html = client_for(Role.ONCALL).get("/runtime/?state=failed").content.decode()
    assert f'data-run="{bad.pk}"' in html
    assert f'data-run="{ok.pk}"' not in html


def test_run_detail__shows_model_calls(client_for: Any, flow: Flow) -> None:
    run = a_run(flow, state="succeeded")
    response = client_for(Role.ONCALL).get(f"/runtime/runs/{run.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "pii: small -&gt; frontier" in html
    assert "deterministic / rules-v1" in html
    assert client_for(Role.ONCALL).get(f"/runtime/runs/{flow.book.pk:08d}/").status_code == 404
    assert client_for(Role.FINANCE).get(f"/runtime/runs/{run.pk}/").status_code == 403


def test_budgets__finance__shows_use_and_the_soft_alert(client_for: Any, flow: Flow) -> None:
    reservation = budget_reserve(
        workflow=flow.workflow, agent=flow.agent, book=flow.book, amount=Decimal(90)
    )
    budget_settle(reservation, actual=Decimal(85))
    response = client_for(Role.FINANCE).get("/runtime/budgets/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "passed its soft limit (80%)" in html
    assert "85.0%" in html
    # On-call sees the same alert on the runs page
    assert "Budget alerts" in client_for(Role.ONCALL).get("/runtime/").content.decode()


def test_escalations__shows_only_my_failed_runs(client_for: Any, flow: Flow, user_for: Any) -> None:
    mine = a_run(flow, state="failed", error="step triage failed: mine", escalated_to=flow.owner)
    a_run(
        flow, state="failed", error="step triage failed: theirs", escalated_to=user_for(Role.ONCALL)
    )
    html = client_for(Role.RISK).get("/runtime/escalations/").content.decode()
    assert mine.error in html
    assert "theirs" not in html


def test_demo_traffic__pause_and_resume_from_the_page(
    client_for: Any, settings: Any, flow: Flow
) -> None:
    settings.DEMO_TRAFFIC = True
    client = client_for(Role.ONCALL)
    assert "Pause demo traffic" in client.get("/runtime/").content.decode()
    client.post("/runtime/demo-traffic/", {"traffic": "off"})
    state = DemoTraffic.objects.get()
    assert state.paused
    assert state.paused_by == "dana"
    response = client.post("/runtime/demo-traffic/", {"traffic": "sideways"}, follow=True)
    assert "traffic: expected on or off" in response.content.decode()
    assert (
        client_for(Role.FINANCE).post("/runtime/demo-traffic/", {"traffic": "on"}).status_code
        == 403
    )
