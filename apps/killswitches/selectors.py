"""What the on-call console shows: switches with their proof, quarantined agents, circuit
breakers, drains and rollbacks, and the incident history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from apps.actions.models import ToolCircuit
from apps.killswitches.models import DrainRun, KillSwitch, RollbackRun
from apps.killswitches.proof import Proof, switch_proof
from apps.registry.models import Agent


def engaged_switches() -> QuerySet[KillSwitch]:
    return KillSwitch.objects.filter(released_at__isnull=True).order_by("-engaged_at")


def recent_switches(limit: int = 20) -> list[KillSwitch]:
    return list(
        KillSwitch.objects.exclude(released_at__isnull=True).order_by("-released_at")[:limit]
    )


def switches_listed(*, engaged: bool | None, limit: int) -> list[KillSwitch]:
    if engaged is True:
        return list(engaged_switches()[:limit])
    if engaged is False:
        return recent_switches(limit)
    found = list(engaged_switches()[:limit])
    return found + recent_switches(limit - len(found)) if len(found) < limit else found


def engaged_with_proof() -> list[Proof]:
    return [switch_proof(switch) for switch in engaged_switches()]


def circuits() -> QuerySet[ToolCircuit]:
    """Every tool's breaker, open ones first."""
    return ToolCircuit.objects.select_related("tool").order_by("state", "tool__slug")


def open_circuits() -> list[ToolCircuit]:
    return [circuit for circuit in circuits() if circuit.state != ToolCircuit.State.CLOSED]


@dataclass(frozen=True)
class Quarantined:
    agent: Agent
    switch: KillSwitch | None  # the firewall's switch, when the firewall put it there


def quarantined_agents() -> list[Quarantined]:
    agents = list(Agent.objects.filter(status=Agent.Status.QUARANTINED).order_by("slug"))
    switches = {
        switch.target: switch
        for switch in engaged_switches().filter(kind=KillSwitch.Kind.QUARANTINE, scope="agent")
    }
    return [Quarantined(agent, switches.get(agent.slug)) for agent in agents]


@dataclass(frozen=True)
class Incident:
    at: datetime
    what: str  # engaged, released, quarantined, drained, rolled back
    where: str
    who: str
    detail: str
    link: str  # "switch", "drain" or "rollback", with `ref`
    ref: int


def incident_history(limit: int = 30) -> list[Incident]:
    """Engagements, releases, quarantines, drains and rollbacks, newest first."""
    events: list[Incident] = []
    for switch in KillSwitch.objects.order_by("-engaged_at")[:limit]:
        quarantine = switch.kind == KillSwitch.Kind.QUARANTINE
        events.append(
            Incident(
                at=switch.engaged_at,
                what="quarantined" if quarantine else "engaged",
                where=switch.where,
                who=switch.engaged_by,
                detail=switch.reason,
                link="switch",
                ref=switch.pk,
            )
        )
        if switch.released_at is not None:
            events.append(
                Incident(
                    at=switch.released_at,
                    what="released",
                    where=switch.where,
                    who=switch.released_by,
                    detail=switch.release_reason,
                    link="switch",
                    ref=switch.pk,
                )
            )
    for drain in DrainRun.objects.order_by("-created_at")[:limit]:
        events.append(
            Incident(
                at=drain.created_at,
                what=f"drained ({drain.get_mode_display()})",
                where=drain.where,
                who=drain.requested_by,
                detail=f"{len(drain.report)} action(s): {drain.reason}",
                link="drain",
                ref=drain.pk,
            )
        )
    for run in RollbackRun.objects.order_by("-created_at")[:limit]:
        events.append(
            Incident(
                at=run.created_at,
                what="rolled back" if run.state == RollbackRun.State.FINISHED else "rolling back",
                where=run.where,
                who=run.requested_by,
                detail=f"last {run.count}: {run.reason}",
                link="rollback",
                ref=run.pk,
            )
        )
    events.sort(key=lambda event: event.at, reverse=True)
    return events[:limit]
