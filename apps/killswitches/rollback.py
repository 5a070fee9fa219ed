"""Rolling back the last N succeeded actions of an agent or a workflow, newest first, each
through its tool's undo.

The actions are chosen when on-call asks (so the report is about exactly those) and undone by
a worker, one at a time, the run's report growing after each so that the console can show the
progress. An action of an irreversible tool is not touched: it is listed for remediation by
hand. A redelivered task (a worker lost mid-run) carries on where the report stops."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from apps.actions.execution import RollbackRefused, action_rollback
from apps.actions.models import Action, Status
from apps.actions.states import Actor, IllegalTransition
from apps.audit.services import audit_record
from apps.killswitches.models import RollbackRun, Scope, in_scope
from apps.killswitches.switches import SwitchInvalid, actor_name, reason_check, scope_check

logger = logging.getLogger(__name__)

COUNT_MAX = 500


def rollback_scope_check(scope: str, target: str) -> tuple[str, str]:
    scope = (scope or "").strip().lower()
    if scope not in (Scope.AGENT, Scope.WORKFLOW):
        raise SwitchInvalid(
            f"unknown scope {scope!r}; roll back the actions of an agent or a workflow", "scope"
        )
    return scope_check(scope, target)


def rollback_count_check(count: object) -> int:
    try:
        number = int(str(count).strip())
    except ValueError:
        raise SwitchInvalid(f"{count!r} is not a whole number", "count") from None
    if not 1 <= number <= COUNT_MAX:
        raise SwitchInvalid(f"between 1 and {COUNT_MAX}, got {number}", "count")
    return number


def rollback_candidates(*, scope: str, target: str, count: int) -> list[Action]:
    """The `count` most recent succeeded actions of the agent or workflow, newest first."""
    return list(
        Action.objects.filter(in_scope(scope, target), status=Status.SUCCEEDED)
        .select_related("agent", "tool", "workflow")
        .order_by("-finished_at", "-started_at")[:count]
    )


def rollback_request(
    *,
    scope: str,
    target: str,
    count: int | str,
    reason: str,
    actor: Actor,
    dispatch: bool = True,
) -> RollbackRun:
    """Choose the actions and record the run; a worker undoes them once this commits (unless
    `dispatch` is False: the caller then runs `rollback_perform` itself)."""
    from apps.killswitches.tasks import rollback_run_task

    scope, target = rollback_scope_check(scope, target)
    number = rollback_count_check(count)
    reason = reason_check(reason)
    chosen = rollback_candidates(scope=scope, target=target, count=number)
    if not chosen:
        raise SwitchInvalid(f"{scope} {target} has no succeeded action to roll back", "target")
    with transaction.atomic():
        run = RollbackRun.objects.create(
            scope=scope,
            target=target,
            count=number,
            reason=reason,
            requested_by=actor_name(actor),
            planned=[str(action.pk) for action in chosen],
            created_at=timezone.now(),
        )
        audit_record(
            actor=actor,
            verb="rollback.requested",
            target=run,
            data={
                "scope": scope,
                "target": target,
                "count": number,
                "reason": reason,
                "actions": run.planned,
            },
        )
        run_id = run.pk
        if dispatch:
            transaction.on_commit(lambda: rollback_run_task.delay(run_id))
    return run


Progress = Callable[[RollbackRun, dict[str, Any]], None]


def rollback_perform(
    *, run_id: int, actor: Actor | None = None, progress: Progress | None = None
) -> RollbackRun:
    """Undo the run's actions in order, recording each outcome as it happens."""
    run = RollbackRun.objects.get(pk=run_id)
    who: Actor = actor if actor is not None else _requester(run)
    if run.state == RollbackRun.State.FINISHED:
        return run
    if run.state == RollbackRun.State.PENDING:
        RollbackRun.objects.filter(pk=run.pk).update(
            state=RollbackRun.State.RUNNING, started_at=timezone.now()
        )
    done = {entry["action"] for entry in run.report}
    report = list(run.report)
    for action_id in run.planned:
        if action_id in done:
            continue
        entry = _undo_one(UUID(action_id), actor=who)
        report.append(entry)
        RollbackRun.objects.filter(pk=run.pk).update(report=report)
        if progress is not None:
            run.report = report
            progress(run, entry)
    with transaction.atomic():
        RollbackRun.objects.filter(pk=run.pk).update(
            state=RollbackRun.State.FINISHED, finished_at=timezone.now(), report=report
        )
        run.refresh_from_db()
        counts: dict[str, int] = {}
        for entry in report:
            counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        audit_record(actor=who, verb="rollback.finished", target=run, data={"outcomes": counts})
    logger.warning("rollback %s of %s finished: %s", run.pk, run.where, counts)
    return run


def _requester(run: RollbackRun) -> Actor:
    """The person who asked (so the undo is audited as theirs), or the system actor named."""
    from django.contrib.auth.models import User

    return User.objects.filter(username=run.requested_by).first() or run.requested_by


def _undo_one(action_id: UUID, *, actor: Actor) -> dict[str, Any]:
    action = Action.objects.select_related("agent", "tool").get(pk=action_id)
    entry: dict[str, Any] = {
        "action": str(action.pk),
        "agent": action.agent.slug,
        "tool": action.tool.slug,
        "subject": action.subject,
        "finished_at": action.finished_at.isoformat() if action.finished_at else None,
    }
    try:
        undone = action_rollback(action_id=action.pk, actor=actor)
    except RollbackRefused as exc:
        return entry | {"outcome": "manual", "detail": str(exc)}
    except IllegalTransition as exc:
        return entry | {"outcome": "skipped", "detail": f"now {exc.current}, not succeeded"}
    if undone.status == Status.ROLLED_BACK:
        return entry | {"outcome": "rolled_back", "detail": _undo_summary(undone.undo_result)}
    return entry | {"outcome": "rollback_failed", "detail": undone.error}


def _undo_summary(result: Any) -> str:
    """What the system of record said, in a line: the order's balance after a refund's undo."""
    if isinstance(result, dict):
        order = result.get("order")
        if isinstance(order, dict) and "refundable_cents" in order:
            refundable = int(order["refundable_cents"])
            total = int(order.get("total_cents", 0))
            currency = order.get("currency", "")
            return (
                f"order {order.get('order_id')}: {refundable / 100:.2f} of "
                f"{total / 100:.2f} {currency} refundable again"
            )
    return "undone"
