"""What the on-call console shows: switches and circuit breakers."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.actions.models import ToolCircuit
from apps.killswitches.models import KillSwitch


def engaged_switches() -> QuerySet[KillSwitch]:
    return KillSwitch.objects.filter(released_at__isnull=True).order_by("-engaged_at")


def recent_switches(limit: int = 20) -> list[KillSwitch]:
    return list(
        KillSwitch.objects.exclude(released_at__isnull=True).order_by("-released_at")[:limit]
    )


def circuits() -> QuerySet[ToolCircuit]:
    """Every tool's breaker, open ones first."""
    return ToolCircuit.objects.select_related("tool").order_by("state", "tool__slug")
