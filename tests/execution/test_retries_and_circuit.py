"""When the system of record fails: transient failures are retried with backoff and then handed
to the escalation owner; a permanent refusal is not retried; repeated failures open the tool's
circuit, which holds new work for a person until a probe after the cool-down closes it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.actions.execution import action_execute
from apps.actions.models import Action, Status, ToolCircuit
from apps.audit.selectors import flight_record
from apps.sandbox.models import FaultMode, Order
from apps.sandbox.selectors import refunds_for
from apps.sandbox.services import faults_set
from tests.execution.conftest import (
    ROOMY_ORDER,
    SMALL_ORDER,
    SandboxRequest,
    World,
    calls_with,
    propose_refund,
    wait_for_status,
)

pytestmark = pytest.mark.django_db(transaction=True)

UNAVAILABLE = "system of record answered 503"


def tool_settings(world: World, **values: int) -> None:
    for name, value in values.items():
        setattr(world.tool, name, value)
    world.tool.save()


def run_until_done(action: Action) -> None:
    """Execute the action in this process as the task does, retrying at once (no backoff)."""
    for _ in range(20):
        if action_execute(action_id=action.pk).retry_after is None:
            return
    raise AssertionError(f"action {action.pk} still running after 20 attempts")


@pytest.mark.usefixtures("celery_worker")
def test_execute__sandbox_failing__retried_with_backoff_then_failed_and_escalated(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given a sandbox answering 503 to everything, and a tool allowed two retries
    tool_settings(world, max_retries=2)
    faults_set(mode=FaultMode.FAILING)

    # When refund-bot's 30.00 EUR refund is run by the worker
    action = wait_for_status(
        propose_refund(world, amount_cents=3_000), Status.FAILED, Status.SUCCEEDED
    )

    # Then it was tried three times, waiting longer each time, and failed with the error kept
    assert action.status == Status.FAILED
    assert action.attempts == 3
    assert calls_with(sandbox_requests, f"esc-{action.pk}") == 3
    assert action.error == f"{UNAVAILABLE} (after 3 attempt(s))"
    assert action.started_at is not None
    assert action.finished_at is not None
    # (backoff: 0.5 s then 1 s, each with +-20 % jitter, so at least 1.2 s in all)
    assert action.finished_at - action.started_at >= timedelta(seconds=1.2)
    # ... handed to the book's escalation owner, and nothing refunded
    assert action.escalated_to == world.owner
    assert not refunds_for(ROOMY_ORDER).exists()
    failed = flight_record(action_id=str(action.pk)).get(verb="action.failed")
    assert failed.payload["error"] == action.error
    assert failed.payload["escalated_to"] == world.owner.pk
    # ... and the breaker counted the failures without opening (its threshold is 5)
    circuit = ToolCircuit.objects.get(tool=world.tool)
    assert (circuit.state, circuit.consecutive_failures) == (ToolCircuit.State.CLOSED, 3)


@pytest.mark.usefixtures("own_queue")
def test_execute__refund_above_balance__fails_at_once_without_retry_and_escalated(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given a 30.00 EUR refund of an order that holds only 10.00 EUR (the policy allows it)
    action = propose_refund(world, amount_cents=3_000, order_id=SMALL_ORDER)
    assert action.status == Status.QUEUED

    # When it is executed
    outcome = action_execute(action_id=action.pk)

    # Then the sandbox's 422 fails it at once: one call, no retry, the reason kept
    assert outcome.status == Status.FAILED
    assert outcome.retry_after is None
    action.refresh_from_db()
    assert action.status == Status.FAILED
    assert calls_with(sandbox_requests, f"esc-{action.pk}") == 1
    assert action.attempts == 1
    assert action.error == (
        "refused with 422: amount_cents: 3000 exceeds the refundable balance of order 1001 "
        "(1000 of 1000 EUR) (field amount_cents)"
    )
    assert action.escalated_to == world.owner
    assert Order.objects.get(pk=SMALL_ORDER).refunded_cents == 0
    # ... and a refusal says nothing about the downstream's health: the breaker ignores it
    assert not ToolCircuit.objects.filter(tool=world.tool, consecutive_failures__gt=0).exists()


def open_circuit(world: World) -> list[Action]:
    """Two refunds failing once each (threshold 2, no retries): the second opens the circuit."""
    tool_settings(world, breaker_failure_threshold=2, max_retries=0, breaker_cooldown_seconds=60)
    faults_set(mode=FaultMode.FAILING)
    failed = []
    for _ in range(2):
        action = propose_refund(world, amount_cents=1_000)
        run_until_done(action)
        action.refresh_from_db()
        failed.append(action)
    return failed


@pytest.mark.usefixtures("own_queue")
def test_circuit__threshold_failures__opens_and_holds_new_proposals(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given a tool whose circuit opens after 2 consecutive failures, and a failing sandbox
    # When two refunds fail one after the other
    first, second = open_circuit(world)

    # Then both failed and went to the escalation owner, and the circuit is open, saying why
    assert [first.status, second.status] == [Status.FAILED, Status.FAILED]
    assert [first.escalated_to, second.escalated_to] == [world.owner, world.owner]
    circuit = ToolCircuit.objects.get(tool=world.tool)
    assert circuit.state == ToolCircuit.State.OPEN
    assert circuit.consecutive_failures == 2
    assert circuit.last_error == UNAVAILABLE
    assert circuit.opened_at is not None

    # When refund-bot proposes a refund the policy allows
    held = propose_refund(world, amount_cents=1_000)

    # Then a person decides it (the escalation owner), and the sandbox is not called
    assert held.status == Status.PENDING_REVIEW
    assert held.decision == "hold"
    assert held.reasons == [
        {"policy": "circuit-open", "message": f"issue_refund is failing: {UNAVAILABLE}"}
    ]
    assert held.escalated_to == world.owner
    assert held.queued_at is None
    assert calls_with(sandbox_requests, f"esc-{held.pk}") == 0


@pytest.mark.usefixtures("own_queue")
def test_circuit__after_cooldown__one_probe_succeeds_and_closes_it(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given an open circuit whose cool-down has passed, and a sandbox that works again
    open_circuit(world)
    ToolCircuit.objects.filter(tool=world.tool).update(
        opened_at=timezone.now() - timedelta(seconds=61)
    )
    faults_set(mode=FaultMode.HEALTHY)

    # When refund-bot proposes a refund and it is executed
    probe = propose_refund(world, amount_cents=1_000)
    assert probe.status == Status.QUEUED
    run_until_done(probe)

    # Then that one call went through, succeeded and closed the circuit
    probe.refresh_from_db()
    assert probe.status == Status.SUCCEEDED
    assert calls_with(sandbox_requests, f"esc-{probe.pk}") == 1
    circuit = ToolCircuit.objects.get(tool=world.tool)
    assert circuit.state == ToolCircuit.State.CLOSED
    assert circuit.consecutive_failures == 0
    assert circuit.opened_at is None
    # ... so the next refund runs without a person
    after = propose_refund(world, amount_cents=1_000)
    assert after.status == Status.QUEUED


@pytest.mark.usefixtures("own_queue")
def test_circuit__after_cooldown__failed_probe_reopens_it_and_next_is_not_called(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given an open circuit whose cool-down has passed, and a sandbox still failing
    open_circuit(world)
    ToolCircuit.objects.filter(tool=world.tool).update(
        opened_at=timezone.now() - timedelta(seconds=61)
    )
    # ... and two refunds let through after the cool-down
    probe = propose_refund(world, amount_cents=1_000)
    other = propose_refund(world, amount_cents=1_000)
    assert [probe.status, other.status] == [Status.QUEUED, Status.QUEUED]

    # When both are executed, one after the other
    run_until_done(probe)
    run_until_done(other)

    # Then only the first was sent, as the probe; its failure opened the circuit again
    assert calls_with(sandbox_requests, f"esc-{probe.pk}") == 1
    assert calls_with(sandbox_requests, f"esc-{other.pk}") == 0
    circuit = ToolCircuit.objects.get(tool=world.tool)
    assert circuit.state == ToolCircuit.State.OPEN
    assert circuit.opened_at is not None
    assert circuit.opened_at > timezone.now() - timedelta(seconds=30)
    # ... and both went to the escalation owner with their reason
    probe.refresh_from_db()
    other.refresh_from_db()
    assert probe.status == other.status == Status.FAILED
    assert probe.error == f"{UNAVAILABLE} (after 1 attempt(s))"
    assert other.error == f"circuit open for issue_refund: not called ({UNAVAILABLE})"
    assert probe.escalated_to == other.escalated_to == world.owner
