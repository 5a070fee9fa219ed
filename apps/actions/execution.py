"""Running allowed actions against their systems of record, and undoing them.

A worker claims an action (queued -> running) with one conditional UPDATE that also checks the
kill switches, so two workers never run one action and no action starts under an engaged switch.
The downstream call carries the action's own idempotency key, so a redelivered task (a worker
killed mid-call, say) repeats the call harmlessly and the action ends once."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from django.utils import timezone

from apps.actions.breaker import (
    circuit_allows,
    circuit_failure,
    circuit_open_error,
    circuit_success,
)
from apps.actions.connectors import ConnectorFailure, call_tool, call_undo
from apps.actions.models import Action, Status
from apps.actions.states import Actor, IllegalTransition, transition
from apps.core.metrics import EXECUTIONS
from apps.killswitches.fence import fence_for_claim
from apps.killswitches.models import KillSwitch, Scope

logger = logging.getLogger(__name__)

FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.ROLLBACK_FAILED})


@dataclass(frozen=True)
class Outcome:
    status: str
    retry_after: float | None = None
    note: str = ""


def _switch_engaged() -> Exists:
    """An engaged switch covering the action in the outer query (for the claim's WHERE)."""
    from django.db.models import Q

    return Exists(
        KillSwitch.objects.filter(released_at__isnull=True).filter(
            Q(scope=Scope.GLOBAL)
            | Q(scope=Scope.WORKFLOW, target=OuterRef("workflow__slug"))
            | Q(scope=Scope.AGENT, target=OuterRef("agent__slug"))
            | Q(scope=Scope.TOOL, target=OuterRef("tool__slug"))
        )
    )


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with jitter."""
    delay: float = min(0.5 * 2.0 ** (attempt - 1), 30.0)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311


def _escalate_failure(action: Action, error: str) -> Outcome:
    """failed, and a fallback review item for the book's escalation owner, in one transaction."""
    from apps.reviews.services import review_open

    owner = action.book_version.escalation_owner_id if action.book_version else None
    try:
        with transaction.atomic():
            transition(
                action,
                Status.FAILED,
                actor="system:worker",
                data={"error": error, "escalated_to": owner},
                error=error,
                escalated_to_id=owner,
                finished_at=timezone.now(),
            )
            review_open(
                action, "fallback", error=error, escalate_to_id=owner, actor="system:worker"
            )
    except IllegalTransition as exc:
        # A duplicate delivery of the same action finished it first.
        return Outcome(exc.current, note="finished by another delivery")
    EXECUTIONS.labels("failed").inc()
    logger.warning("action %s failed: %s", action.pk, error)
    return Outcome(Status.FAILED, note=error)


def action_execute(*, action_id: UUID) -> Outcome:
    taken = time.perf_counter()
    action = Action.objects.select_related("tool", "workflow", "agent", "book_version").get(
        pk=action_id
    )
    if action.status in FINISHED:
        return Outcome(action.status, note="already finished")
    if action.status == Status.QUEUED:
        # The claim and the kill-switch check are one statement, behind the fence that orders
        # claims and engages (apps/killswitches/fence.py explains why both are needed): a
        # switch committed before the claim is always seen, and an action claimed before a
        # switch's engage time always has an earlier start time. `started_at` is the
        # database's clock, the same one that stamps `engaged_at`.
        try:
            with transaction.atomic():
                fence_for_claim()
                transition(
                    action,
                    Status.RUNNING,
                    actor="system:worker",
                    also=~_switch_engaged(),
                    started_at=Now(),
                )
            action.refresh_from_db(fields=["started_at"])
        except IllegalTransition as exc:
            if exc.current == Status.QUEUED:
                logger.info(
                    "action %s not started: a kill switch covers it (refused in %.1f ms)",
                    action.pk,
                    (time.perf_counter() - taken) * 1000,
                )
                return Outcome(Status.QUEUED, note="held by a kill switch")
            return Outcome(exc.current, note="claimed elsewhere")
    elif action.status != Status.RUNNING:
        return Outcome(action.status, note="not runnable")

    tool = action.tool
    if not circuit_allows(tool):
        # A first delivery (attempts == 0) never reached the system of record; a resumed one
        # may have, so the owner is told to check before acting again.
        maybe = "" if action.attempts == 0 else "; an earlier attempt may have reached it, check"
        return _escalate_failure(
            action,
            f"circuit open for {tool.slug}: not called{maybe} ({circuit_open_error(tool)})",
        )
    Action.objects.filter(pk=action.pk).update(attempts=action.attempts + 1)
    action.attempts += 1
    try:
        result = call_tool(
            tool,
            params=action.params,
            idempotency_key=action.downstream_key,
            action_id=str(action.pk),
        )
    except ConnectorFailure as failure:
        if not failure.transient:
            return _escalate_failure(action, failure.message)
        opened = circuit_failure(tool, failure.message)
        if opened:
            logger.warning("circuit opened for %s: %s", tool.slug, failure.message)
        if action.attempts <= tool.max_retries and not opened:
            EXECUTIONS.labels("retry").inc()
            return Outcome(
                Status.RUNNING, retry_after=backoff(action.attempts), note=failure.message
            )
        return _escalate_failure(action, f"{failure.message} (after {action.attempts} attempt(s))")
    circuit_success(tool)
    try:
        with transaction.atomic():
            transition(
                action,
                Status.SUCCEEDED,
                actor="system:worker",
                data={"result": result},
                result=result,
                finished_at=timezone.now(),
            )
            if action.spot_check:
                from apps.reviews.services import review_open

                review_open(action, "spot_check", actor="system:worker")
    except IllegalTransition as exc:
        # A duplicate delivery of the same action finished it first (same downstream key, so
        # the same single effect).
        return Outcome(exc.current, note="finished by another delivery")
    EXECUTIONS.labels("succeeded").inc()
    return Outcome(Status.SUCCEEDED)


class RollbackRefused(Exception):
    pass


def action_rollback(*, action_id: UUID, actor: Actor) -> Action:
    """Undo a succeeded action through its tool's undo; rolled_back or rollback_failed."""
    with transaction.atomic():
        action = Action.objects.select_for_update().select_related("tool").get(pk=action_id)
        if action.status != Status.SUCCEEDED:
            raise IllegalTransition(action.pk, action.status, Status.ROLLED_BACK)
        tool = action.tool
        if not tool.reversible:
            raise RollbackRefused(
                f"{tool.slug} is irreversible: undo it by hand in the system of record"
            )
        try:
            undone = call_undo(
                tool,
                original_key=action.downstream_key,
                result=action.result,
                action_id=str(action.pk),
            )
        except ConnectorFailure as failure:
            return transition(
                action,
                Status.ROLLBACK_FAILED,
                actor=actor,
                data={"error": failure.message},
                error=failure.message,
            )
        return transition(
            action,
            Status.ROLLED_BACK,
            actor=actor,
            data={"undo": undone},
            undo_result=undone,
            rolled_back_at=timezone.now(),
        )
