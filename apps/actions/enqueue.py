"""Queueing decided actions for the workers after people approved them: a held action once
its approvals are complete, and a new action that runs a failed or drained one again.

Both need a Ruling (apps/actions/decision.py) made for exactly the params that will run: the
digest it carries is stored with the action, and the worker runs nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from apps.actions.decision import Ruling
from apps.actions.dispatch import action_dispatch
from apps.actions.models import Action, Status
from apps.actions.params import params_digest
from apps.actions.states import Actor, IllegalTransition, transition, transition_insert


def action_enqueue(
    action: Action, *, ruling: Ruling, actor: Actor, approval_expires_at: datetime | None
) -> Action:
    """approved -> queued with the params the ruling decided, and hand the id to a worker once
    the transaction commits. The ruling must be of these very params: the worker runs nothing
    else (and nothing once the approval has expired)."""
    _check_ruling(action, ruling)
    transition(
        action,
        Status.QUEUED,
        actor=actor,
        queued_at=timezone.now(),
        params_digest=ruling.digest,
        approval_expires_at=approval_expires_at,
    )
    action_dispatch(action.pk)
    return action


def _check_ruling(action: Action, ruling: Ruling) -> None:
    if not ruling.may_run_after_approval or ruling.digest != params_digest(action.params):
        raise IllegalTransition(action.pk, action.status, Status.QUEUED)


def action_retry(
    original: Action,
    *,
    params: dict[str, Any],
    ruling: Ruling,
    actor: Actor,
    note: dict[str, Any],
    approval_expires_at: datetime | None,
) -> Action:
    """Run a failed or drained action again, as a new action people approved, with the params
    and under the book version of `ruling` (made for exactly these params, now).

    The new action has its own id and so its own downstream idempotency key: the person has
    judged that the first one had no effect (or should be repeated)."""
    now = timezone.now()
    retry = Action(
        agent=original.agent,
        key=None,
        workflow=original.workflow,
        tool=original.tool,
        book_version=ruling.version,
        status=Status.PROPOSED,
        decision=ruling.decision,
        reasons=[
            *ruling.reasons,
            {
                "policy": "human-retry",
                "message": f"Run again by a person after action {original.pk} "
                f"ended {original.status}",
            },
        ],
        params=params,
        subject=original.subject,
        confidence=original.confidence,
        reasoning=original.reasoning,
        evidence=original.evidence,
        trace_id=original.trace_id,
        segment=original.segment,
        created_at=now,
        queued_at=now,
        params_digest=ruling.digest,
        approval_expires_at=approval_expires_at,
    )
    _check_ruling(retry, ruling)
    transition_insert(
        retry,
        (Status.APPROVED, Status.QUEUED),
        actor=actor,
        decider=actor,
        proposed={
            "retry_of": str(original.pk),
            "params": params,
            "book_version": ruling.version.number if ruling.version else None,
            **note,
        },
    )
    action_dispatch(retry.pk)
    return retry
