"""The proof of one engagement: engaged at T, what was running at T and how it ended, what
started after T (must be none), what the gate blocked since, what it is holding back.

"Running at T" and "started after T" compare `started_at` with `engaged_at`, both from the
database's clock (see coverage.py). The window ends when the switch is released: an action
started after a release was allowed to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from apps.actions.models import Action, Status
from apps.killswitches.coverage import in_scope
from apps.killswitches.models import KillSwitch

LIST_MAX = 100


@dataclass(frozen=True)
class InFlight:
    action_id: str
    agent: str
    tool: str
    subject: str
    started_at: datetime
    status: str
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action_id,
            "agent": self.agent,
            "tool": self.tool,
            "subject": self.subject,
            "started_at": self.started_at.isoformat(),
            "status": self.status,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


@dataclass(frozen=True)
class Proof:
    switch: KillSwitch
    until: datetime | None  # released_at, or None while engaged
    running_at_engage: list[InFlight]
    running_at_engage_count: int
    started_after: int
    started_after_ids: list[str]
    blocked_since: int
    held_back: int  # queued in scope now, not started (while engaged)
    checked_at: datetime = field(default_factory=timezone.now)

    @property
    def holds(self) -> bool:
        return self.started_after == 0

    @property
    def still_running(self) -> int:
        return sum(1 for item in self.running_at_engage if item.status == Status.RUNNING)

    def as_dict(self) -> dict[str, Any]:
        switch = self.switch
        return {
            "switch": switch.pk,
            "scope": switch.scope,
            "target": switch.target,
            "kind": switch.kind,
            "reason": switch.reason,
            "engaged_by": switch.engaged_by,
            "engaged_at": switch.engaged_at.isoformat(),
            "released_at": switch.released_at.isoformat() if switch.released_at else None,
            "released_by": switch.released_by,
            "running_at_engage": {
                "count": self.running_at_engage_count,
                "actions": [item.as_dict() for item in self.running_at_engage],
            },
            "started_after_engage": self.started_after,
            "started_after_engage_actions": self.started_after_ids,
            "blocked_since_engage": self.blocked_since,
            "held_back": self.held_back,
            "holds": self.holds,
            "checked_at": self.checked_at.isoformat(),
        }


def switch_proof(switch: KillSwitch) -> Proof:
    engaged_at = switch.engaged_at
    until = switch.released_at
    scope = in_scope(switch.scope, switch.target)
    actions = Action.objects.filter(scope)

    # Started before T and not finished before T (or not finished at all).
    running = actions.filter(started_at__lt=engaged_at).filter(
        Q(finished_at__isnull=True) | Q(finished_at__gte=engaged_at)
    )
    after = actions.filter(started_at__gte=engaged_at)
    blocked = actions.filter(status=Status.BLOCKED, created_at__gte=engaged_at)
    if until is not None:
        after = after.filter(started_at__lt=until)
        blocked = blocked.filter(created_at__lt=until)
    in_flight = [
        InFlight(
            action_id=str(row["pk"]),
            agent=row["agent__slug"],
            tool=row["tool__slug"],
            subject=row["subject"],
            started_at=row["started_at"] or engaged_at,
            status=row["status"],
            finished_at=row["finished_at"],
        )
        for row in running.order_by("started_at").values(
            "pk", "agent__slug", "tool__slug", "subject", "started_at", "status", "finished_at"
        )[:LIST_MAX]
    ]
    after_ids = [str(pk) for pk in after.order_by("started_at").values_list("pk", flat=True)[:20]]
    held = actions.filter(status=Status.QUEUED).count() if until is None else 0
    return Proof(
        switch=switch,
        until=until,
        running_at_engage=in_flight,
        running_at_engage_count=len(in_flight) if len(in_flight) < LIST_MAX else running.count(),
        started_after=len(after_ids) if len(after_ids) < 20 else after.count(),
        started_after_ids=after_ids,
        blocked_since=blocked.count(),
        held_back=held,
    )
