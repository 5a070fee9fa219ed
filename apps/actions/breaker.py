"""The circuit breaker of each tool. After N consecutive failures it opens: calls are refused
without touching the system of record until the cool-down has passed; then one call probes, and
its outcome closes or re-opens the circuit. Updates are conditional, so concurrent workers agree
on one probe."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from apps.actions.models import ToolCircuit
from apps.registry.models import Tool


def circuit_allows(tool: Tool) -> bool:
    """May a call go to this tool now? Claims the probe when the cool-down has passed. A probe
    that never reported back (its worker died) is given up after another cool-down, so that a
    half-open circuit cannot stay stuck."""
    circuit, _ = ToolCircuit.objects.get_or_create(tool=tool)
    if circuit.state == ToolCircuit.State.CLOSED:
        return True
    cooled = timezone.now() - timedelta(seconds=tool.breaker_cooldown_seconds)
    if circuit.state == ToolCircuit.State.HALF_OPEN:
        # updated_at moves with every claim, so only one worker wins a stale probe.
        claimed = ToolCircuit.objects.filter(
            pk=circuit.pk, state=ToolCircuit.State.HALF_OPEN, updated_at__lte=cooled
        ).update(state=ToolCircuit.State.HALF_OPEN, updated_at=timezone.now())
        return claimed == 1
    claimed = ToolCircuit.objects.filter(
        pk=circuit.pk, state=ToolCircuit.State.OPEN, opened_at__lte=cooled
    ).update(state=ToolCircuit.State.HALF_OPEN, updated_at=timezone.now())
    return claimed == 1


def circuit_refusing(tool: Tool) -> ToolCircuit | None:
    """The tool's circuit while it is open and cooling down, else None. Once the cool-down has
    passed, work is let through again so that one call can probe: holding it all at the gate
    would keep the circuit open for ever."""
    cooling_since = timezone.now() - timedelta(seconds=tool.breaker_cooldown_seconds)
    return ToolCircuit.objects.filter(
        Q(opened_at__isnull=True) | Q(opened_at__gt=cooling_since),
        tool=tool,
        state=ToolCircuit.State.OPEN,
    ).first()


def circuit_success(tool: Tool) -> None:
    ToolCircuit.objects.filter(tool=tool).exclude(
        state=ToolCircuit.State.CLOSED, consecutive_failures=0
    ).update(state=ToolCircuit.State.CLOSED, consecutive_failures=0, opened_at=None)


def circuit_failure(tool: Tool, error: str) -> bool:
    """Count a failure; returns True when this failure opened (or re-opened) the circuit."""
    circuit, _ = ToolCircuit.objects.get_or_create(tool=tool)
    ToolCircuit.objects.filter(pk=circuit.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=error[:2000]
    )
    opened = ToolCircuit.objects.filter(
        Q(state=ToolCircuit.State.HALF_OPEN)
        | Q(
            state=ToolCircuit.State.CLOSED, consecutive_failures__gte=tool.breaker_failure_threshold
        ),
        pk=circuit.pk,
    ).update(state=ToolCircuit.State.OPEN, opened_at=timezone.now())
    return opened == 1


def circuit_open_error(tool: Tool) -> str:
    circuit = ToolCircuit.objects.filter(tool=tool).first()
    return circuit.last_error if circuit else ""
