"""Undo: a succeeded action is rolled back through its tool's undo endpoint, once; an
irreversible tool is refused for remediation by hand; a failing undo is recorded as such."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from apps.accounts.roles import Role
from apps.actions.execution import action_execute, action_rollback
from apps.actions.gate import Proposal, action_propose
from apps.actions.models import Action, Status
from apps.actions.states import IllegalTransition
from apps.audit.selectors import flight_record
from apps.registry.services import agent_key_create
from apps.sandbox.models import Employee, FaultMode, MfaReset, Order, Refund
from apps.sandbox.selectors import effect_count, refunds_for
from apps.sandbox.services import faults_set
from tests.execution.conftest import (
    ROOMY_ORDER,
    ROOMY_ORDER_TOTAL,
    SandboxRequest,
    World,
    calls_with,
    propose_refund,
    trail_of,
)
from tests.factories import make_agent, make_published_book, make_tool, make_workflow
from tests.sandbox.conftest import SANDBOX_TOKEN

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_queue")]


def executed_refund(world: World, amount_cents: int = 3_000) -> Action:
    """A refund of `amount_cents` on the roomy order, proposed and executed (in this process)."""
    action = propose_refund(world, amount_cents=amount_cents)
    action_execute(action_id=action.pk)
    action.refresh_from_db()
    assert action.status == Status.SUCCEEDED, action.error
    return action


def test_rollback__succeeded_refund__order_restored(world: World, user_for: Any) -> None:
    # Given a 30.00 EUR refund that went through
    action = executed_refund(world)
    assert Order.objects.get(pk=ROOMY_ORDER).refundable_cents == ROOMY_ORDER_TOTAL - 3_000
    oncall: User = user_for(Role.ONCALL)

    # When on-call rolls it back
    rolled = action_rollback(action_id=action.pk, actor=oncall)

    # Then the refund is reversed in the sandbox and the order can be refunded in full again
    assert rolled.status == Status.ROLLED_BACK
    refund = refunds_for(ROOMY_ORDER).get()
    assert refund.status == Refund.Status.REVERSED
    assert Order.objects.get(pk=ROOMY_ORDER).refundable_cents == ROOMY_ORDER_TOTAL
    action.refresh_from_db()
    assert action.status == Status.ROLLED_BACK
    assert action.rolled_back_at is not None
    assert action.undo_result is not None
    assert action.undo_result["refund"]["refund_id"] == refund.pk
    # ... and the trail names who did it
    event = flight_record(action_id=str(action.pk)).get(verb="action.rolled_back")
    assert (event.actor_type, event.actor) == ("user", oncall.username)


def test_rollback__twice__second_refused_and_one_undo_effect(
    world: World, client_for: Any, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given a refund that went through and was rolled back through the API
    action = executed_refund(world)
    client = client_for(Role.ONCALL)
    first = client.post(f"/api/v1/actions/{action.pk}/rollback")
    assert first.status_code == 200, first.content

    # When it is rolled back a second time, through the API and through the service
    second = client.post(f"/api/v1/actions/{action.pk}/rollback")
    with pytest.raises(IllegalTransition) as refused:
        action_rollback(action_id=action.pk, actor="system:test")

    # Then both are refused as the action is no longer succeeded
    assert second.status_code == 409
    assert second.json()["detail"] == (
        "Action is rolled_back; only a succeeded action can be rolled back."
    )
    assert refused.value.current == Status.ROLLED_BACK
    # ... and the sandbox was asked to undo once, and undid once
    undo_key = f"esc-{action.pk}-undo"
    assert calls_with(sandbox_requests, undo_key) == 1
    assert effect_count(undo_key) == 1
    assert Order.objects.get(pk=ROOMY_ORDER).refundable_cents == ROOMY_ORDER_TOTAL
    verbs = trail_of(action)
    assert verbs.count("action.rolled_back") == 1


MFA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"employee_id": {"type": "string"}},
    "required": ["employee_id"],
    "additionalProperties": False,
}


@pytest.fixture
def mfa_reset_action(world: World, user_for: Any, sandbox_url: str) -> Action:
    """access-bot's MFA reset of E-101, executed: a tool whose effect cannot be taken back."""
    workflow = make_workflow("access-requests", "Access requests")
    tool = make_tool("reset_mfa", schema=MFA_SCHEMA, amount_param="", risk_zone="green")
    tool.reversible = False
    tool.endpoint_url = f"{sandbox_url}/access/reset-mfa"
    tool.credential_secret = SANDBOX_TOKEN
    tool.save()
    agent = make_agent("access-bot", owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    make_published_book(
        workflow=workflow,
        author=world.owner,
        values={
            "objective": "Reset lost second factors quickly.",
            "tools": [{"tool": "reset_mfa", "risk_zone": "green"}],
            "autonomy_mode": "constrained",
            "currency": "EUR",
        },
    )
    key = agent_key_create(agent=agent, actor="system:test").record
    proposal = Proposal(
        workflow="access-requests",
        tool="reset_mfa",
        params={"employee_id": "E-101"},
        subject="employee:E-101",
        confidence=Decimal("0.95"),
    )
    action = action_propose(key=key, proposal=proposal).action
    assert action.status == Status.QUEUED, action.reasons
    action_execute(action_id=action.pk)
    action.refresh_from_db()
    assert action.status == Status.SUCCEEDED, action.error
    return action


def test_rollback__irreversible_tool__refused_for_manual_remediation(
    mfa_reset_action: Action, client_for: Any, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given an executed MFA reset (the tool is irreversible)
    action = mfa_reset_action

    # When on-call tries to roll it back
    response = client_for(Role.ONCALL).post(f"/api/v1/actions/{action.pk}/rollback")

    # Then it is refused, saying it must be undone by hand, and nothing is called or changed
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "reset_mfa is irreversible: undo it by hand in the system of record"
    )
    assert calls_with(sandbox_requests, f"esc-{action.pk}-undo") == 0
    action.refresh_from_db()
    assert action.status == Status.SUCCEEDED
    assert MfaReset.objects.filter(idempotency_key=f"esc-{action.pk}").count() == 1
    assert Employee.objects.get(pk="E-101").mfa_enrolled is False


def test_rollback__undo_endpoint_failing__rollback_failed_with_error(
    world: World, client_for: Any
) -> None:
    # Given a refund that went through, and then a sandbox answering 503 to everything
    action = executed_refund(world)
    faults_set(mode=FaultMode.FAILING)

    # When on-call rolls it back
    response = client_for(Role.ONCALL).post(f"/api/v1/actions/{action.pk}/rollback")

    # Then the rollback is recorded as failed, with the error, and the refund still stands
    assert response.status_code == 200, response.content
    assert response.json()["status"] == Status.ROLLBACK_FAILED
    assert response.json()["error"] == "system of record answered 503"
    action.refresh_from_db()
    assert action.status == Status.ROLLBACK_FAILED
    assert action.error == "system of record answered 503"
    assert action.rolled_back_at is None
    assert refunds_for(ROOMY_ORDER).get().status == Refund.Status.ISSUED
    assert Order.objects.get(pk=ROOMY_ORDER).refundable_cents == ROOMY_ORDER_TOTAL - 3_000
    event = flight_record(action_id=str(action.pk)).get(verb="action.rollback_failed")
    assert event.payload["error"] == "system of record answered 503"
