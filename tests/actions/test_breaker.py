"""The circuit breaker's states, claimed by conditional updates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.actions.breaker import circuit_allows, circuit_failure, circuit_success
from apps.actions.models import ToolCircuit
from tests.factories import make_tool

pytestmark = pytest.mark.django_db


def test_breaker__failures_reach_threshold__opens_and_refuses() -> None:
    tool = make_tool()
    tool.breaker_failure_threshold = 2
    assert circuit_failure(tool, "503") is False
    assert circuit_allows(tool) is True
    assert circuit_failure(tool, "503 again") is True
    circuit = ToolCircuit.objects.get(tool=tool)
    assert (circuit.state, circuit.consecutive_failures, circuit.last_error) == (
        "open",
        2,
        "503 again",
    )
    assert circuit_allows(tool) is False


def test_breaker__cooled_down__exactly_one_probe_then_success_closes() -> None:
    tool = make_tool()
    ToolCircuit.objects.create(
        tool=tool,
        state="open",
        consecutive_failures=5,
        opened_at=timezone.now() - timedelta(hours=1),
    )
    assert circuit_allows(tool) is True  # the probe
    assert circuit_allows(tool) is False  # everyone else waits for it
    circuit_success(tool)
    assert ToolCircuit.objects.get(tool=tool).state == "closed"
    assert circuit_allows(tool) is True


def test_breaker__probe_never_reported__given_up_after_cooldown() -> None:
    # Given a half-open circuit whose probe's worker died an hour ago
    tool = make_tool()
    circuit = ToolCircuit.objects.create(tool=tool, state="half_open", consecutive_failures=5)
    ToolCircuit.objects.filter(pk=circuit.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    # When workers ask, one gets a new probe and the others still wait
    assert circuit_allows(tool) is True
    assert circuit_allows(tool) is False


def test_breaker__fresh_half_open__refuses() -> None:
    tool = make_tool()
    ToolCircuit.objects.create(tool=tool, state="half_open", consecutive_failures=5)
    assert circuit_allows(tool) is False
