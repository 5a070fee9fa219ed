"""The governed action path end to end: the gate decides, a real Celery worker (Redis, the test
database) executes, the sandbox answers over HTTP, and on-call rolls back through the API."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.actions.models import Status
from apps.sandbox.models import IdempotencyRecord, Order, Refund
from apps.sandbox.selectors import effect_count, refunds_for
from tests.execution.conftest import (
    RAN_ONCE,
    ROOMY_ORDER,
    ROOMY_ORDER_TOTAL,
    SandboxRequest,
    World,
    propose_refund,
    trail_of,
    wait_for_status,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def test_refund_30_eur__allowed__succeeds_once_with_result_and_trail(world: World) -> None:
    # Given refund-bot, a published book (review-free up to 50.00 EUR) and a healthy sandbox
    # When it proposes a 30.00 EUR refund with confidence 0.9
    action = propose_refund(world, amount_cents=3_000)
    assert action.status == Status.QUEUED

    # Then the worker runs it to the end
    action = wait_for_status(action, Status.SUCCEEDED, Status.FAILED)
    assert action.status == Status.SUCCEEDED, action.error
    # ... with the sandbox's answer recorded
    refunds = list(refunds_for(ROOMY_ORDER))
    assert len(refunds) == 1
    assert action.result is not None
    assert action.result["refund_id"] == refunds[0].pk
    assert action.result["amount_cents"] == 3_000
    assert action.result["order"]["refundable_cents"] == ROOMY_ORDER_TOTAL - 3_000
    assert refunds[0].idempotency_key == f"esc-{action.pk}"
    assert refunds[0].action_ref == str(action.pk)
    assert effect_count(f"esc-{action.pk}") == 1
    # ... and each step of it in the audit trail, in order
    assert trail_of(action) == RAN_ONCE


def test_refund_300_eur__above_review_free_cap__held_and_sandbox_untouched(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given the same book, which lets refunds above 50.00 EUR run only after review
    # When refund-bot proposes 300.00 EUR
    action = propose_refund(world, amount_cents=30_000)

    # Then it waits for a person, and nothing was queued or sent to the sandbox
    assert action.status == Status.PENDING_REVIEW
    assert action.decision == "hold"
    assert {"issue_refund-review-above-5000"} <= {reason["policy"] for reason in action.reasons}
    assert action.queued_at is None
    verbs = trail_of(action)
    assert verbs == ["action.proposed", "action.pending_review"]
    assert not refunds_for(ROOMY_ORDER).exists()
    assert not IdempotencyRecord.objects.exists()
    assert sandbox_requests == []


def test_refund_3000_eur__above_hard_cap__denied_with_policy_message(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given the same book, whose hard cap is 500.00 EUR
    # When refund-bot proposes 3,000.00 EUR
    action = propose_refund(world, amount_cents=300_000)

    # Then it is denied, naming the policy and its message, and nothing reaches the sandbox
    assert action.status == Status.DENIED
    assert action.decision == "deny"
    assert {
        "policy": "issue_refund-never-above-50000",
        "message": "issue_refund above 500.00 EUR is never allowed",
    } in action.reasons
    assert not Refund.objects.exists()
    assert sandbox_requests == []


def test_rollback_api__oncall__restores_order_and_rolls_back(world: World, client_for: Any) -> None:
    # Given a 30.00 EUR refund executed by the worker
    action = wait_for_status(
        propose_refund(world, amount_cents=3_000), Status.SUCCEEDED, Status.FAILED
    )
    assert action.status == Status.SUCCEEDED, action.error
    assert Order.objects.get(pk=ROOMY_ORDER).refundable_cents == ROOMY_ORDER_TOTAL - 3_000

    # When on-call rolls it back through the API
    response = client_for(Role.ONCALL).post(f"/api/v1/actions/{action.pk}/rollback")

    # Then the answer shows it rolled back, and the sandbox has the money back on the order
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == Status.ROLLED_BACK
    assert body["rolled_back_at"] is not None
    order = Order.objects.get(pk=ROOMY_ORDER)
    assert order.refundable_cents == ROOMY_ORDER_TOTAL
    assert order.status == Order.Status.PAID
    refund = refunds_for(ROOMY_ORDER).get()
    assert refund.status == Refund.Status.REVERSED
    assert refund.reversed_by_key == f"esc-{action.pk}-undo"
    action.refresh_from_db()
    assert action.status == Status.ROLLED_BACK
    assert action.undo_result is not None
    assert action.undo_result["changed"] is True
    assert trail_of(action)[-1] == ("action.rolled_back")
