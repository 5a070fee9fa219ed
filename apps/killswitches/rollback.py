"""Rolling back the last N succeeded actions of an agent or a workflow, newest first, each
through its tool's undo.

The actions are chosen when on-call asks (so the report is about exactly those) and undone by
a worker, one at a time, the run's report growing after each so that the console can show the
progress. When on-call confirmed a set (the console always does; the API and the command when
given one), the run is recorded only if the actions chosen are exactly that set, in that order
(apps/killswitches/confirmation.py). An action of an irreversible tool is not touched: it is
listed for remediation by hand. A redelivered task (a worker lost mid-run) carries on where the
report stops. An undo that failed, or whose outcome the system of record left unknown, can be
retried from its row of the report."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from apps.actions.execution import RollbackRefused, UndoUnknown, action_undo
from apps.actions.models import Action, Status
from apps.actions.states import Actor, IllegalTransition
from apps.audit.services import audit_record
from apps.core.workers import task_send_on_commit
from apps.killswitches.confirmation import confirmed_check
from apps.killswitches.coverage import in_scope
from apps.killswitches.models import RollbackRun, Scope
from apps.killswitches.switches import (
    SwitchConflict,
    SwitchInvalid,
    actor_name,
    reason_check,
    scope_check,
)

logger = logging.getLogger(__name__)

COUNT_MAX = 500
# Report outcomes a person may retry from the row: the undo failed, or its outcome is unknown.
RETRYABLE = frozenset({"rollback_failed", "undo_unknown"})


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
    """The `count` most recent succeeded actions of the agent or workflow, newest first (the
    id breaks ties, so that the same rows always come in the same order)."""
    return list(
        Action.objects.filter(in_scope(scope, target), status=Status.SUCCEEDED)
        .select_related("agent", "tool", "workflow")
        .order_by("-finished_at", "-started_at", "-id")[:count]
    )


def rollback_preview(*, scope: str, target: str, count: int | str) -> list[Action]:
    """What a rollback would undo now, checked as `rollback_request` checks it: the set to
    show for confirmation."""
    scope, target = rollback_scope_check(scope, target)
    number = rollback_count_check(count)
    chosen = rollback_candidates(scope=scope, target=target, count=number)
    if not chosen:
        raise SwitchInvalid(f"{scope} {target} has no succeeded action to roll back", "target")
    return chosen


def rollback_request(
    *,
    scope: str,
    target: str,
    count: int | str,
    reason: str,
    actor: Actor,
    expected: Sequence[str] | None = None,
    dispatch: bool = True,
) -> RollbackRun:
    """Choose the actions and record the run; a worker undoes them once this commits (unless
    `dispatch` is False: the caller then runs `rollback_perform` itself).

    `expected`: the ids on-call confirmed, newest first. When given, the run is recorded only
    if the actions chosen now are exactly those; otherwise SetChanged, and nothing is done."""
    scope, target = rollback_scope_check(scope, target)
    number = rollback_count_check(count)
    reason = reason_check(reason)
    chosen = rollback_preview(scope=scope, target=target, count=number)
    confirmed_check(
        expected=expected, current=chosen, verb="roll back", done="rolled back", ordered=True
    )
    # From here on the run names its actions: one that succeeds later is not among them.
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
                "confirmed": expected is not None,
            },
        )
        run_id = run.pk
        if dispatch:
            task_send_on_commit("killswitches.rollback", run_id)
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
    for action_id in run.planned:
        if action_id in done:
            continue
        entry = _undo_one(UUID(action_id), actor=who)
        run = _report_put(run.pk, entry)
        if progress is not None:
            progress(run, entry)
    with transaction.atomic():
        run = RollbackRun.objects.select_for_update().get(pk=run.pk)
        run.state = RollbackRun.State.FINISHED
        run.finished_at = timezone.now()
        run.save(update_fields=["state", "finished_at"])
        counts = _outcomes(run.report)
        audit_record(actor=who, verb="rollback.finished", target=run, data={"outcomes": counts})
    logger.warning("rollback %s of %s finished: %s", run.pk, run.where, counts)
    return run


def rollback_retry(*, run_id: int, action_id: UUID, actor: Actor) -> dict[str, Any]:
    """Undo again one action of a run whose undo failed or ended unknown (the same undo, with
    the same idempotency key, so it takes effect at most once); its row of the report is
    replaced by the new outcome, and the retry is audited on the run as on the action.

    The run's row stays locked meanwhile: of two people retrying the same row, the second
    finds it settled, and the worker going through the run waits to add its next row."""
    with transaction.atomic():
        run = RollbackRun.objects.select_for_update().get(pk=run_id)
        previous = next((e for e in run.report if e["action"] == str(action_id)), None)
        if previous is None:
            raise SwitchInvalid(f"action {action_id} has no row in rollback {run.pk}", "action")
        if previous["outcome"] not in RETRYABLE:
            raise SwitchConflict(
                f"the undo of {previous['subject'] or action_id} ended {previous['outcome']}; "
                "only a failed or unknown undo can be retried"
            )
        entry = _undo_one(action_id, actor=actor)
        entry["retries"] = int(previous.get("retries", 0)) + 1
        run.report = [entry if row["action"] == entry["action"] else row for row in run.report]
        run.save(update_fields=["report"])
        audit_record(
            actor=actor,
            verb="rollback.retried",
            target=run,
            data={
                "action": entry["action"],
                "was": previous["outcome"],
                "outcome": entry["outcome"],
                "detail": entry["detail"],
            },
        )
    return entry


def _report_put(run_id: int, entry: dict[str, Any]) -> RollbackRun:
    """Add the entry to the run's report under the run's row lock, so that a person retrying
    a row meanwhile and the worker going through the run never write over each other."""
    with transaction.atomic():
        run = RollbackRun.objects.select_for_update().get(pk=run_id)
        run.report = [*run.report, entry]
        run.save(update_fields=["report"])
    return run


def _outcomes(report: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in report:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    return counts


def _requester(run: RollbackRun) -> Actor:
    """The person who asked (so the undo is audited as theirs), or the system actor named."""
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
        undone = action_undo(action_id=action.pk, actor=actor)
    except RollbackRefused as exc:
        return entry | {"outcome": "manual", "detail": str(exc)}
    except IllegalTransition as exc:
        return entry | {"outcome": "skipped", "detail": f"now {exc.current}: not undone here"}
    except UndoUnknown as exc:
        return entry | {"outcome": "undo_unknown", "detail": exc.message}
    if undone.action.status == Status.ROLLED_BACK:
        detail = _undo_summary(undone.action.undo_result)
        if undone.checked:
            detail += f" ({undone.checked})"
        return entry | {"outcome": "rolled_back", "detail": detail}
    return entry | {"outcome": "rollback_failed", "detail": undone.action.error}


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
