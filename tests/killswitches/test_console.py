"""The on-call console shows engaged switches and every tool's circuit breaker."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import Status, ToolCircuit
from apps.killswitches.models import KillSwitch, RollbackRun
from apps.killswitches.rollback import rollback_perform
from tests.factories import make_tool
from tests.killswitches.conftest import Desk, executed, propose

pytestmark = pytest.mark.django_db


def test_console__open_circuit_and_engaged_switch__both_shown(client_for: Any) -> None:
    # Given an open circuit on issue_refund and an engaged switch on refund-bot
    ToolCircuit.objects.create(
        tool=make_tool(),
        state=ToolCircuit.State.OPEN,
        consecutive_failures=5,
        opened_at=timezone.now(),
        last_error="system of record answered 503",
    )
    KillSwitch.objects.create(
        scope="agent",
        target="refund-bot",
        reason="refund loop on order 1003",
        engaged_by="dana",
        engaged_at=timezone.now(),
    )
    # When on-call opens the console
    html = client_for(Role.ONCALL).get("/oncall/").content.decode()
    # Then both are there, with the error and the reason
    assert '<span class="badge badge-bad">open</span>' in html
    assert "system of record answered 503" in html
    assert "agent: refund-bot" in html
    assert "refund loop on order 1003" in html


def test_console__htmx_refresh__returns_only_the_state(client_for: Any) -> None:
    response = client_for(Role.ONCALL).get("/oncall/", headers={"HX-Request": "true"})
    html = response.content.decode().strip()
    assert html.startswith('<div id="console-state"')
    assert "<html" not in html


# --- engage, release, drain and rollback from the console ---------------------------------


def confirmed_set(step_html: str, prefix: str) -> dict[str, str]:
    """The hidden field by which a drain or rollback confirmation sends back its set."""
    found = re.search(rf'name="{prefix}-expected" value="([^"]*)"', step_html)
    assert found, "the confirmation step carries no set"
    return {f"{prefix}-expected": found.group(1)}


ENGAGE = {
    "engage-scope": "agent",
    "engage-target": "refund-bot",
    "engage-reason": "refund loop on order 1042",
}


def test_engage__first_post__confirmation_step_and_nothing_engaged(
    desk: Desk, client_for: Any
) -> None:
    # Given a queued refund of refund-bot
    propose(desk)
    # When on-call fills in the form and submits it once
    response = client_for(Role.ONCALL).post("/oncall/engage/", ENGAGE)
    # Then a confirmation says what will stop, and nothing is engaged yet
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="confirm"' in html
    assert "<strong>1</strong> queued" in html
    assert 'name="confirm" value="yes"' in html
    assert not KillSwitch.objects.exists()


def test_engage__confirmed__engaged_and_proof_page_shown(desk: Desk, client_for: Any) -> None:
    client = client_for(Role.ONCALL)
    response = client.post("/oncall/engage/", ENGAGE | {"confirm": "yes"})
    switch = KillSwitch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/oncall/switches/{switch.pk}/"
    assert (switch.engaged_by, switch.engaged_via) == ("dana", "console")
    propose(desk)
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="started-after">0<' in page
    assert 'data-testid="blocked-since">1<' in page
    # And the console shows it with its proof
    console = client.get("/oncall/").content.decode()
    assert "1 kill switch engaged" in console
    assert f'data-testid="switch-{switch.pk}"' in console


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"engage-reason": ""}, "reason", "say why"),
        ({"engage-target": "ghost-bot"}, "target", "no agent &#x27;ghost-bot&#x27; is registered"),
        ({"engage-scope": "planet"}, "scope", "Select a valid choice"),
    ],
)
def test_engage__bad_input__error_next_to_the_field(
    desk: Desk, client_for: Any, changes: dict[str, str], field: str, message: str
) -> None:
    response = client_for(Role.ONCALL).post(
        "/oncall/engage/", ENGAGE | changes | {"confirm": "yes"}
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert f'<div class="field-error" id="id_engage-{field}-error">' in html
    assert message in html
    assert not KillSwitch.objects.exists()


def test_engage__without_csrf_token__refused(desk: Desk, user_for: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_for(Role.ONCALL))
    response = client.post("/oncall/engage/", ENGAGE | {"confirm": "yes"})
    assert response.status_code == 403
    assert not KillSwitch.objects.exists()


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.RISK, Role.FINANCE, Role.ADMIN])
def test_engage__other_roles__403(desk: Desk, client_for: Any, role: Role) -> None:
    response = client_for(role).post("/oncall/engage/", ENGAGE | {"confirm": "yes"})
    assert response.status_code == 403
    assert not KillSwitch.objects.exists()


def test_release__confirmed__released_and_resumed_count_said(desk: Desk, client_for: Any) -> None:
    client = client_for(Role.ONCALL)
    client.post("/oncall/engage/", ENGAGE | {"confirm": "yes"})
    switch = KillSwitch.objects.get()
    url = f"/oncall/switches/{switch.pk}/release/"
    # A release needs a reason, next to the field
    missing = client.post(url, {"release-reason": "", "confirm": "yes"})
    assert missing.status_code == 422
    assert 'id="id_release-reason-error"' in missing.content.decode()
    # The first post asks for confirmation
    step = client.post(url, {"release-reason": "fixed"})
    assert 'data-testid="confirm"' in step.content.decode()
    assert KillSwitch.objects.get().engaged
    # Confirmed: released
    done = client.post(url, {"release-reason": "fixed", "confirm": "yes"}, follow=True)
    assert "Kill switch on agent: refund-bot released." in done.content.decode()
    assert not KillSwitch.objects.get().engaged
    assert propose(desk).status == Status.QUEUED


def test_drain__confirmed__report_page_lists_each_action(desk: Desk, client_for: Any) -> None:
    held = propose(desk, amount_cents=30_000)
    client = client_for(Role.ONCALL)
    form = {
        "drain-scope": "agent",
        "drain-target": "refund-bot",
        "drain-mode": "hand_over",
        "drain-reason": "incident 7",
    }
    step = client.post("/oncall/drain/", form).content.decode()
    assert "0 queued and 1 held action(s)" in step
    confirmed = form | confirmed_set(step, "drain") | {"confirm": "yes"}
    done = client.post("/oncall/drain/", confirmed, follow=True)
    html = done.content.decode()
    assert str(held.pk)[:10] in html
    assert "handed over" in html
    assert "bob, the escalation owner" in html


def test_rollback__confirmed__progress_page_polls_until_finished(
    desk: Desk, client_for: Any
) -> None:
    executed(desk, order_id="1001")
    ticket = executed(desk, tool="close_ticket", ticket_id="T-4")
    client = client_for(Role.ONCALL)
    form = {
        "rollback-scope": "agent",
        "rollback-target": "refund-bot",
        "rollback-count": "2",
        "rollback-reason": "bad refunds",
    }
    step = client.post("/oncall/rollback/", form).content.decode()
    assert "irreversible: by hand" in step
    response = client.post(
        "/oncall/rollback/", form | confirmed_set(step, "rollback") | {"confirm": "yes"}
    )
    run = RollbackRun.objects.get()
    assert response["Location"] == f"/oncall/rollbacks/{run.pk}/"
    # While it waits for a worker, the progress polls
    waiting = client.get(response["Location"], headers={"HX-Request": "true"})
    assert 'hx-trigger="every 1s"' in waiting.content.decode()
    assert "Waiting for a worker" in waiting.content.decode()
    # Once done, the report shows each action and stops polling
    rollback_perform(run_id=run.pk)
    html = client.get(response["Location"], headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in html
    assert "Finished: 2 of 2 handled." in html
    assert "manual remediation" in html
    assert "rolled back" in html
    assert str(ticket.pk)[:10] in html


def test_rollback__bad_count__error_next_to_the_field(desk: Desk, client_for: Any) -> None:
    response = client_for(Role.ONCALL).post(
        "/oncall/rollback/",
        {"rollback-scope": "agent", "rollback-target": "refund-bot", "rollback-count": "0",
         "rollback-reason": "x"},
    )  # fmt: skip
    assert response.status_code == 422
    assert "between 1 and 500, got 0" in response.content.decode()


def test_console__open_slo_alerts__shown(client_for: Any) -> None:
    from apps.ledger.models import SloAlert
    from tests.factories import make_workflow

    client = client_for(Role.ONCALL)
    assert "No SLO is breached." in client.get("/oncall/").content.decode()
    now = timezone.now()
    SloAlert.objects.create(
        workflow=make_workflow(),
        slo="approval_rate",
        kind=SloAlert.Kind.BREACH,
        value=0.4,
        target=0.8,
        window_start=now,
        window_end=now,
        message="refunds approval rate 40 % below its 80 % target",
    )
    page = client.get("/oncall/").content.decode()
    assert 'data-testid="slo-alerts"' in page
    assert "refunds approval rate 40 % below its 80 % target" in page
