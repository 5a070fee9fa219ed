"""The one state machine of an action (PRODUCT.md section 4). Every change of status goes
through `transition`, which writes the audit event in the same transaction; a transition the
machine does not have raises and changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from apps.actions.callbacks import callback_schedule
from apps.actions.models import Action, Status
from apps.audit.services import audit_record

TRANSITIONS: Mapping[str, frozenset[str]] = {
    Status.PROPOSED: frozenset(
        {Status.DENIED, Status.OBSERVED, Status.BLOCKED, Status.PENDING_REVIEW, Status.APPROVED}
    ),
    Status.PENDING_REVIEW: frozenset(
        {Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED}
    ),
    Status.APPROVED: frozenset({Status.QUEUED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED}),
    Status.SUCCEEDED: frozenset({Status.ROLLED_BACK, Status.ROLLBACK_FAILED}),
    # A failed undo retried by on-call (apps/actions/execution.py, `action_undo`): it takes
    # effect, or fails again, audited each time.
    Status.ROLLBACK_FAILED: frozenset({Status.ROLLED_BACK, Status.ROLLBACK_FAILED}),
}
TERMINAL = frozenset(
    {
        Status.DENIED,
        Status.OBSERVED,
        Status.BLOCKED,
        Status.REJECTED,
        Status.EXPIRED,
        Status.FAILED,
        Status.CANCELLED,
        Status.ROLLED_BACK,
    }
)

Actor = AbstractBaseUser | AnonymousUser | str | None


class IllegalTransition(Exception):
    def __init__(self, action_id: object, current: str, wanted: str) -> None:
        super().__init__(f"action {action_id} is {current}; it cannot become {wanted}")
        self.current = current
        self.wanted = wanted


def sources_of(target: str) -> frozenset[str]:
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def transition(
    action: Action,
    to: str,
    *,
    actor: Actor,
    data: Mapping[str, Any] | None = None,
    also: Any = None,
    **fields: Any,
) -> Action:
    """Move `action` to status `to`, setting `fields` with it.

    The move is one conditional UPDATE (`WHERE status IN <the states that may lead to to>`,
    and `also` when given), so two workers racing for the same move cannot both win: the loser
    updates no row and gets IllegalTransition with the status it found. `action` is updated in
    place and returned."""
    if transaction.get_connection().in_atomic_block:
        # Inside the caller's transaction already: no savepoint needed (one statement less).
        return _transition(action, to, actor=actor, data=data, also=also, **fields)
    with transaction.atomic():
        return _transition(action, to, actor=actor, data=data, also=also, **fields)


def _transition(
    action: Action,
    to: str,
    *,
    actor: Actor,
    data: Mapping[str, Any] | None,
    also: Any,
    **fields: Any,
) -> Action:
    sources = sources_of(to)
    now = timezone.now()
    query = Action.objects.filter(pk=action.pk, status__in=sources)
    if also is not None:
        query = query.filter(also)
    changed = query.update(status=to, updated_at=now, **fields)
    if changed != 1:
        current = Action.objects.filter(pk=action.pk).values_list("status", flat=True).first()
        raise IllegalTransition(action.pk, current or "missing", to)
    previous = action.status if action.status in sources else "?"
    action.status = to
    action.updated_at = now
    for name, value in fields.items():
        setattr(action, name, value)
    transition_record(action, previous, actor=actor, data=data)
    return action


def transition_record(
    action: Action, previous: str, *, actor: Actor, data: Mapping[str, Any] | None = None
) -> None:
    """What follows a move to `action.status` from `previous`, in the move's transaction: its
    audit event, and the agent's callback. `transition` calls it; so does a caller that made
    the move with a statement of its own (the worker's claim on PostgreSQL)."""
    to = action.status
    audit_record(
        actor=actor,
        verb=f"action.{to}",
        target=action,
        subject=action.subject,
        data={"from": previous, "to": to, **(data or {})},
    )
    callback_schedule(action, to)


def transition_insert(
    action: Action,
    path: Sequence[str],
    *,
    actor: Actor,
    decider: Actor,
    proposed: Mapping[str, Any],
    reported: bool = True,
) -> Action:
    """Write a new `action` once, in the status it reaches along `path` from proposed.

    Each step must be a transition of the machine, and each is recorded as `transition` records
    it (its audit event, and its callback when `reported`), after the `action.proposed` event
    with the `proposed` data; only the row is written once instead of once per step (the gate's
    time is mostly its statements: see docs/benchmarks.md). `decider` made the first step (the
    decision, whose event carries the decision and its reasons); `actor` the others. The gate
    passes reported=False: the proposer learns those steps from the gate's answer."""
    action.status = path_end(action, path)
    action.save(force_insert=True)
    insert_record(action, path, actor=actor, decider=decider, proposed=proposed, reported=reported)
    return action


def path_end(action: Action, path: Sequence[str]) -> str:
    """The status a new action reaches along `path` from proposed; IllegalTransition at the
    first step the machine does not have."""
    current: str = Status.PROPOSED
    for step in path:
        if not can_transition(current, step):
            raise IllegalTransition(action.pk, current, step)
        current = step
    return current


def insert_record(
    action: Action,
    path: Sequence[str],
    *,
    actor: Actor,
    decider: Actor,
    proposed: Mapping[str, Any],
    reported: bool = True,
) -> None:
    """What follows the insert of a new action along `path` (`transition_insert`): its
    `action.proposed` event, then one event per step, and the callbacks when `reported`."""
    audit_record(
        actor=actor,
        verb="action.proposed",
        target=action,
        subject=action.subject,
        data=dict(proposed),
    )
    previous: str = Status.PROPOSED
    for step in path:
        decided = previous == Status.PROPOSED
        audit_record(
            actor=decider if decided else actor,
            verb=f"action.{step}",
            target=action,
            subject=action.subject,
            data={"from": previous, "to": step}
            | ({"decision": action.decision, "reasons": action.reasons} if decided else {}),
        )
        if reported:
            callback_schedule(action, step)
        previous = step
