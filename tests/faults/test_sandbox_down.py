"""The system of record down (its port refuses connections) or slow (answers after the tool's
timeout), with a real worker: the failures open the tool's circuit, the work falls back to the
escalation owner, nothing more is sent to the broken system while the circuit is open, and once
the system is back the first call after the cool-down probes it and closes the circuit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from apps.actions.models import Action, Status, ToolCircuit
from apps.reviews.models import ReviewItem
from apps.sandbox.models import FaultMode
from apps.sandbox.selectors import effect_count
from apps.sandbox.services import faults_set
from tests.execution.conftest import (
    SandboxRequest,
    World,
    calls_with,
    propose_refund,
    wait_for_status,
)
from tests.faults.conftest import Relay

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

COOLDOWN_SECONDS = 2
# A healthy call answers well within the tool's timeout, however busy the machine; a slow
# system answers well after it, so that every call to it times out.
TOOL_TIMEOUT_SECONDS = 5.0
SLOW_DELAY_MS = 10_000


@pytest.fixture
def relayed(world: World) -> Iterator[Relay]:
    """issue_refund reaches the sandbox through a relay that can be stopped (the system down)."""
    relay = Relay(upstream_port=urlsplit(world.sandbox_url).port or 80)
    relay.start()
    world.tool.endpoint_url = f"http://127.0.0.1:{relay.port}/sandbox/refunds"
    world.tool.timeout_seconds = TOOL_TIMEOUT_SECONDS
    world.tool.max_retries = 1
    world.tool.breaker_failure_threshold = 2
    world.tool.breaker_cooldown_seconds = COOLDOWN_SECONDS
    world.tool.save()
    try:
        yield relay
    finally:
        relay.stop()


def break_system(mode: str, relay: Relay) -> str:
    """Make the system of record fail in `mode`; the error the worker will see."""
    if mode == "down":
        relay.stop()
        return "connection failed: refused or unreachable"
    faults_set(mode=FaultMode.SLOW, delay_ms=SLOW_DELAY_MS)
    return f"timed out after {TOOL_TIMEOUT_SECONDS:g}s"


def repair_system(mode: str, relay: Relay) -> None:
    if mode == "down":
        relay.start()
    else:
        faults_set(mode=FaultMode.HEALTHY)


def attempts_of(world: World) -> int:
    return sum(Action.objects.filter(tool=world.tool).values_list("attempts", flat=True))


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_system_of_record_broken__circuit_opens_work_falls_back_then_probe_closes_it(
    world: World, relayed: Relay, sandbox_requests: list[SandboxRequest], mode: str
) -> None:
    # Given the system of record broken
    error = break_system(mode, relayed)
    assert not ToolCircuit.objects.filter(tool=world.tool).exclude(state="closed").exists()

    # When refund-bot's allowed refund is run by the worker (one retry allowed)
    first = wait_for_status(
        propose_refund(world, amount_cents=1_000), Status.FAILED, Status.SUCCEEDED
    )

    # Then both attempts failed, which opened the circuit, and the refund fell back to the
    # book's escalation owner with the error attached
    assert first.status == Status.FAILED
    assert first.attempts == 2
    assert first.error.startswith(error), first.error
    assert first.escalated_to == world.owner
    fallback = ReviewItem.objects.get(action=first)
    assert (fallback.kind, fallback.state, fallback.error) == ("fallback", "open", first.error)
    circuit = ToolCircuit.objects.get(tool=world.tool)
    assert circuit.state == ToolCircuit.State.OPEN

    # When refund-bot proposes two more refunds while the circuit is open
    held = [propose_refund(world, amount_cents=1_000) for _ in range(2)]

    # Then a person decides them (the escalation owner), and nothing more is sent: no new
    # attempt, no new request reaching the system
    requests_so_far = len(sandbox_requests)
    time.sleep(1.0)  # (time for a worker to have picked anything up, had anything been sent)
    for action in held:
        action.refresh_from_db()
        assert action.status == Status.PENDING_REVIEW
        assert action.reasons[0]["policy"] == "circuit-open"
        assert action.escalated_to == world.owner
        assert action.queued_at is None
    assert attempts_of(world) == 2
    assert len(sandbox_requests) == requests_so_far
    if mode == "slow":
        # (a slow system may still apply a call its caller gave up on: both attempts carried
        # the action's idempotency key, so at most one refund, and the owner is told to check)
        assert calls_with(sandbox_requests, f"esc-{first.pk}") == 2
        assert effect_count(f"esc-{first.pk}") <= 1
    else:
        assert effect_count(f"esc-{first.pk}") == 0
    assert all(effect_count(f"esc-{action.pk}") == 0 for action in held)

    # When the system is back and the cool-down has passed
    repair_system(mode, relayed)
    opened_at = ToolCircuit.objects.get(tool=world.tool).opened_at
    assert opened_at is not None
    time.sleep(max(opened_at.timestamp() + COOLDOWN_SECONDS + 0.2 - time.time(), 0))

    # Then the next refund is let through, probes the system, succeeds and closes the circuit
    probe = wait_for_status(
        propose_refund(world, amount_cents=1_000), Status.SUCCEEDED, Status.FAILED
    )
    assert probe.status == Status.SUCCEEDED
    assert probe.attempts == 1
    circuit = ToolCircuit.objects.get(tool=world.tool)
    assert (circuit.state, circuit.consecutive_failures) == (ToolCircuit.State.CLOSED, 0)
    # ... and the refund after it runs on its own, without a person
    after = wait_for_status(
        propose_refund(world, amount_cents=1_000), Status.SUCCEEDED, Status.FAILED
    )
    assert after.status == Status.SUCCEEDED
    assert [effect_count(f"esc-{action.pk}") for action in (probe, after)] == [1, 1]
