"""The circuit breaker of each tool, named for the gate and execution: the tool's own threshold
and cool-down (Tool.breaker_failure_threshold, Tool.breaker_cooldown_seconds) over the one
breaker in apps/core/breaker.py. After that many consecutive failures calls to the tool are
refused without touching the system of record until the cool-down has passed; then one call
probes, and its outcome closes or re-opens the circuit."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from apps.actions.models import ToolCircuit
from apps.core.breaker import (
    breaker_allows,
    breaker_failure,
    breaker_last_error,
    breaker_refusing,
    breaker_success,
)
from apps.registry.models import Tool


def circuit_allows(tool: Tool) -> bool:
    """May a call go to this tool now? Claims the probe when the cool-down has passed."""
    return breaker_allows(
        model=ToolCircuit, key={"tool": tool}, cooldown_seconds=tool.breaker_cooldown_seconds
    )


def circuit_refusing(tool: Tool) -> ToolCircuit | None:
    """The tool's circuit while it is open and cooling down, else None (the gate holds new
    work back meanwhile)."""
    return breaker_refusing(
        model=ToolCircuit, key={"tool": tool}, cooldown_seconds=tool.breaker_cooldown_seconds
    )


# `circuit_refusing` written out, for a statement composed by hand (the gate's allow path): a
# row when the circuit of the tool (the first parameter) is open and cooling down since the
# moment given as the second (`circuit_cooling_since`).
CIRCUIT_REFUSING_SQL = (
    "SELECT 1 FROM actions_toolcircuit c WHERE c.tool_id = %s AND c.state = 'open'"
    " AND (c.opened_at IS NULL OR c.opened_at > %s)"
)


def circuit_cooling_since(tool: Tool) -> datetime:
    """An open circuit opened after this moment still refuses."""
    return timezone.now() - timedelta(seconds=tool.breaker_cooldown_seconds)


def circuit_success(tool: Tool) -> None:
    breaker_success(model=ToolCircuit, key={"tool": tool})


def circuit_failure(tool: Tool, error: str) -> bool:
    """Count a failure; returns True when this failure opened (or re-opened) the circuit."""
    return breaker_failure(
        model=ToolCircuit,
        key={"tool": tool},
        error=error,
        threshold=tool.breaker_failure_threshold,
    )


def circuit_open_error(tool: Tool) -> str:
    return breaker_last_error(model=ToolCircuit, key={"tool": tool})
