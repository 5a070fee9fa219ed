"""Draining a scope: its queued and held work is cancelled, or handed to people.

cancel     queued -> cancelled; held (pending_review) -> cancelled, its review item withdrawn.
hand_over  held actions stay held and their items go to the escalation owner of the book that
           governed them; queued ones become cancelled with a fallback item for that owner (a
           person approving it runs the action again).

The actions are chosen once, before anything is done: work arriving during the drain is not
touched. When on-call confirmed a set (the console always does; the API and the command when
given one), the drain runs only if the actions chosen are exactly that set
(apps/killswitches/confirmation.py). Each action is then handled in its own transaction with
its row locked, and re-checked: a worker claiming it at that moment, or a supervisor deciding
it, wins or loses cleanly, and the report says which."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from apps.actions.models import Action, Status
from apps.actions.states import Actor, IllegalTransition, transition
from apps.audit.services import audit_record
from apps.killswitches.confirmation import confirmed_check
from apps.killswitches.coverage import in_scope
from apps.killswitches.models import DrainRun
from apps.killswitches.switches import SwitchInvalid, actor_name, reason_check, scope_check
from apps.reviews.items import review_hand_over, review_open, review_withdraw

logger = logging.getLogger(__name__)

DRAINABLE = (Status.QUEUED, Status.PENDING_REVIEW)


@dataclass(frozen=True)
class DrainPlan:
    """The actions a drain of a scope would touch now, oldest first."""

    actions: list[Action]

    @property
    def queued(self) -> int:
        return sum(1 for action in self.actions if action.status == Status.QUEUED)

    @property
    def held(self) -> int:
        return sum(1 for action in self.actions if action.status == Status.PENDING_REVIEW)

    @property
    def total(self) -> int:
        return len(self.actions)

    @property
    def ids(self) -> list[str]:
        return [str(action.pk) for action in self.actions]


def drain_mode_check(mode: str) -> str:
    mode = (mode or "").strip().lower().replace("-", "_")
    if mode not in DrainRun.Mode.values:
        raise SwitchInvalid(
            f"unknown mode {mode!r}; choose cancel or hand_over (hand it to people)", "mode"
        )
    return mode


def drain_candidates(*, scope: str, target: str) -> list[Action]:
    """The queued and held actions of the scope, oldest first (the id breaks ties)."""
    return list(
        Action.objects.filter(in_scope(scope, target), status__in=DRAINABLE)
        .select_related("agent", "tool")
        .order_by("created_at", "id")
    )


def drain_preview(*, scope: str, target: str) -> DrainPlan:
    """What a drain of this scope would touch now (the set to show for confirmation)."""
    scope, target = scope_check(scope, target)
    return DrainPlan(drain_candidates(scope=scope, target=target))


def drain_run(
    *,
    scope: str,
    target: str = "",
    mode: str,
    reason: str,
    actor: Actor,
    expected: Sequence[str] | None = None,
) -> DrainRun:
    """Drain the scope's queued and held work. `expected`: the ids on-call confirmed; when
    given, the drain runs only if the actions chosen now are exactly those (in any order);
    otherwise SetChanged, and nothing is done."""
    scope, target = scope_check(scope, target)
    mode = drain_mode_check(mode)
    reason = reason_check(reason)
    candidates = drain_candidates(scope=scope, target=target)
    confirmed_check(
        expected=expected, current=candidates, verb="drain", done="drained", ordered=False
    )
    with transaction.atomic():
        run = DrainRun.objects.create(
            scope=scope,
            target=target,
            mode=mode,
            reason=reason,
            requested_by=actor_name(actor),
            created_at=timezone.now(),
        )
        audit_record(
            actor=actor,
            verb="drain.started",
            target=run,
            data={
                "scope": scope,
                "target": target,
                "mode": mode,
                "reason": reason,
                "actions": [str(action.pk) for action in candidates],
                "confirmed": expected is not None,
            },
        )
    report = [_drain_one(action.pk, run=run, actor=actor) for action in candidates]
    with transaction.atomic():
        run.report = report
        run.finished_at = timezone.now()
        run.save(update_fields=["report", "finished_at"])
        counts: dict[str, int] = {}
        for entry in report:
            counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        audit_record(actor=actor, verb="drain.finished", target=run, data={"outcomes": counts})
    logger.warning("drain %s of %s (%s): %s", run.pk, run.where, mode, counts)
    return run


def _drain_one(action_id: UUID, *, run: DrainRun, actor: Actor) -> dict[str, Any]:
    note = f"drained by on-call: {run.reason}"
    with transaction.atomic():
        action = (
            Action.objects.select_for_update(of=("self",))
            .select_related("agent", "tool", "workflow", "book_version")
            .get(pk=action_id)
        )
        entry: dict[str, Any] = {
            "action": str(action.pk),
            "agent": action.agent.slug,
            "tool": action.tool.slug,
            "subject": action.subject,
            "was": action.status,
        }
        owner = action.escalation_owner_id
        data = {"drain": run.pk, "mode": run.mode, "reason": run.reason}
        try:
            if action.status == Status.PENDING_REVIEW and run.mode == DrainRun.Mode.HAND_OVER:
                item = review_hand_over(action, to_user_id=owner, actor=actor, note=note)
                if item is None:
                    return entry | {"outcome": "skipped", "detail": "no open review item"}
                return entry | {
                    "outcome": "handed_over",
                    "detail": _owner_text(owner, "held for"),
                }
            if action.status == Status.PENDING_REVIEW:
                transition(
                    action, Status.CANCELLED, actor=actor, data=data, finished_at=timezone.now()
                )
                review_withdraw(action, actor=actor, note=note)
                return entry | {"outcome": "cancelled", "detail": "review item withdrawn"}
            if action.status == Status.QUEUED:
                transition(
                    action, Status.CANCELLED, actor=actor, data=data, finished_at=timezone.now()
                )
                if run.mode == DrainRun.Mode.CANCEL:
                    return entry | {"outcome": "cancelled", "detail": "never started"}
                review_open(action, "fallback", error=note, escalate=True, actor=actor)
                return entry | {
                    "outcome": "handed_over",
                    "detail": "cancelled; " + _owner_text(owner, "a fallback item for"),
                }
        except IllegalTransition as exc:
            return entry | {"outcome": "skipped", "detail": f"now {exc.current}"}
        return entry | {"outcome": "skipped", "detail": f"now {action.status}"}


def _owner_text(owner_id: int | None, what: str) -> str:
    if owner_id is None:
        return f"{what} the review queue (the book names no escalation owner)"
    name = User.objects.filter(pk=owner_id).values_list("username", flat=True).first()
    return f"{what} {name or owner_id}, the escalation owner"
