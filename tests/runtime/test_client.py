"""The Python client (clients/python) against the running test server: propose, wait, errors,
and the `governed` decorator with a real worker running the tool against the sandbox."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.registry.models import Agent
from apps.registry.services import agent_key_create
from apps.reviews.models import ReviewItem
from apps.reviews.services import DecisionInput, review_decide

pytestmark = pytest.mark.django_db(transaction=True)

PARAMS = {"order_id": "1005", "currency": "EUR", "reason": "parcel arrived damaged"}
# Ceilings for one request to the live server, and for a wait on a person or the worker: never
# reached on a healthy run, however busy the machine.
REQUEST_TIMEOUT = 60
WAIT_TIMEOUT = 120


@pytest.fixture
def gate(demo_world: str, live_server: Any, client_module: Any, own_queue: str) -> Any:
    key = agent_key_create(agent=Agent.objects.get(slug="refund-bot"), actor="system:test").key
    return client_module.Escapement(live_server.url, key=key, timeout=REQUEST_TIMEOUT)


def test_propose__small_refund__allowed_and_decided(gate: Any) -> None:
    action = gate.propose(
        workflow="refunds",
        tool="issue_refund",
        subject="order:1005",
        params={**PARAMS, "amount_cents": 3000},
        confidence=0.92,
        idempotency_key="client-test-1",
    )
    assert action.decision == "allow"
    assert action.status == "queued"
    assert gate.wait(action.id, until="decided", timeout=2).status == "queued"
    # The same idempotency key answers with the same action
    again = gate.propose(
        workflow="refunds", tool="issue_refund", subject="order:1005",
        params={**PARAMS, "amount_cents": 3000}, confidence=0.92, idempotency_key="client-test-1",
    )  # fmt: skip
    assert again.id == action.id


def test_wait__held_action__times_out_then_sees_the_approval(
    gate: Any, client_module: Any, user_for: Any
) -> None:
    # Given a refund the book holds for a supervisor
    action = gate.propose(
        workflow="refunds", tool="issue_refund", subject="order:1005",
        params={**PARAMS, "amount_cents": 30000}, confidence=0.92,
    )  # fmt: skip
    assert (action.decision, action.status) == ("hold", "pending_review")
    assert "policy" in action.reasons[0]
    # When the agent waits briefly, it is told it is still held
    with pytest.raises(client_module.WaitTimeout) as caught:
        gate.wait(action.id, until="decided", timeout=0.3, interval=0.1)
    assert caught.value.action.status == "pending_review"

    # When a supervisor approves it while the agent waits
    def approve() -> None:
        time.sleep(0.3)
        item = ReviewItem.objects.get(action_id=action.id)
        review_decide(
            item_id=item.pk,
            user=user_for(Role.SUPERVISOR),
            given=DecisionInput("approve", "verified"),
        )

    approver = threading.Thread(target=approve)
    approver.start()
    decided = gate.wait(action.id, until="decided", timeout=WAIT_TIMEOUT, interval=0.1)
    approver.join()
    # Then the wait ends with the approved action on its way
    assert decided.status == "queued"


def test_propose__bad_params__error_names_the_field(gate: Any, client_module: Any) -> None:
    with pytest.raises(client_module.EscapementError) as caught:
        gate.propose(workflow="refunds", tool="issue_refund", params={**PARAMS, "amount_cents": 0})
    assert caught.value.status == 422
    assert caught.value.errors[0]["field"] == "params.amount_cents"


def test_bad_key__401(demo_world: str, live_server: Any, client_module: Any) -> None:
    gate = client_module.Escapement(live_server.url, key="esk_nothere_x")
    with pytest.raises(client_module.EscapementError) as caught:
        gate.get("00000000-0000-0000-0000-000000000000")
    assert caught.value.status == 401


def test_governed__allowed_call__run_by_a_worker_returns_the_result(
    demo_world: str, live_server: Any, client_module: Any, celery_worker: str
) -> None:
    # Given a tool function put behind the gate
    key = agent_key_create(agent=Agent.objects.get(slug="refund-bot"), actor="system:test").key
    gate = client_module.Escapement(live_server.url, key=key, timeout=REQUEST_TIMEOUT)

    def issue_refund_body(order_id: str, amount_cents: int, currency: str, reason: str) -> Any:
        """Refund part of an order."""
        raise AssertionError("the body of a governed function is never run")

    issue_refund = gate.governed(
        workflow="refunds",
        tool="issue_refund",
        subject=lambda params: f"order:{params['order_id']}",
        confidence=0.95,
        timeout=WAIT_TIMEOUT,
    )(issue_refund_body)

    # When the agent calls it for a small refund
    result = issue_refund("1005", 1200, "EUR", "item never arrived")
    # Then the worker ran the refund in the sandbox and the call returns its result
    assert result["amount_cents"] == 1200
    assert Action.objects.get().status == "succeeded"
    # And a refund over the hard cap is refused without running
    with pytest.raises(client_module.ActionNotAllowed, match="deny"):
        issue_refund("1005", 300000, "EUR", "whole order")
