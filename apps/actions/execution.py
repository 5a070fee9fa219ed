"""Running allowed actions against their systems of record, and undoing them.

A worker claims an action (queued -> running) with one conditional UPDATE that also checks the
kill switches, so two workers never run one action and no action starts under an engaged switch.
The claim also gives the worker the action's execution lease (see `lease_seconds`): while it
holds it, no other delivery of the same action calls the system of record. The downstream call
carries the action's own idempotency key, so a delivery that takes over an expired lease (its
worker killed mid-call, say) repeats the call harmlessly and the action ends once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils import timezone

from apps.actions.breaker import (
    circuit_allows,
    circuit_failure,
    circuit_open_error,
    circuit_success,
)
from apps.actions.connectors import ConnectorFailure, call_tool, call_undo
from apps.actions.metrics import EXECUTIONS
from apps.actions.models import Action, Status
from apps.actions.params import params_digest
from apps.actions.states import Actor, IllegalTransition, transition, transition_record
from apps.audit.services import audit_batch, audit_record
from apps.books.models import BookVersion
from apps.core.backoff import backoff
from apps.registry.models import Agent, Tool, Workflow
from apps.registry.snapshot import registry_view
from apps.reviews.items import review_open

logger = logging.getLogger(__name__)

FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.ROLLBACK_FAILED})


@dataclass(frozen=True)
class Outcome:
    status: str
    retry_after: float | None = None
    note: str = ""


# A delivery that finds the lease held comes back this long after the lease's end, so that it
# does not arrive a hair before it (the database's clock decides, not the worker's).
LEASE_SLACK_SECONDS = 0.5


def lease_seconds(tool: Tool) -> float:
    """How long a worker holds a running action: one attempt, the tool's timeout plus
    ACTION_LEASE_MARGIN_SECONDS (30 s by default).

    One attempt is the claim (or take-over), the call to the system of record and the statement
    that records its outcome. The call is bounded by the tool's timeout (urllib3's read timeout;
    the connect timeout, at most 5 s, and the database statements around the call fit in the
    margin), so a live worker is done with the lease well before it ends, and it gives it back
    early when it schedules a retry. A lease that is too short costs little: a second delivery
    takes it over while the first call is still in flight, and the downstream idempotency key
    keeps that second call from having a second effect (in-process tools have no timeout at
    all; they rely on that key alone). A lease that is too long only delays the completion of an
    action whose worker died: the next delivery waits for the lease to end. Kombu hands a dead
    worker's message to another only after the visibility timeout (an hour by default), long
    after the lease has ended, and the requeue sweep re-sends such an action sooner, once its
    lease has been over for ACTION_REQUEUE_AFTER_SECONDS.

    The lease's end is computed by the database (`now() + interval`) in the UPDATE that takes
    it, and compared with the database's clock, so no worker's clock enters the decision."""
    return tool.timeout_seconds + float(settings.ACTION_LEASE_MARGIN_SECONDS)


def _lease_end(tool: Tool) -> ExpressionWrapper[CombinedExpression]:
    return ExpressionWrapper(
        Now() + timedelta(seconds=lease_seconds(tool)), output_field=DateTimeField()
    )


def _lease_take_over(action: Action) -> Outcome | None:
    """Take the lease of a running action whose lease has ended (or that has none): one
    conditional UPDATE, so of two deliveries only one wins. None when taken; otherwise the
    outcome for this delivery: come back when the holder's lease ends, or stop if it finished."""
    taken = (
        Action.objects.filter(pk=action.pk, status=Status.RUNNING)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=Now()))
        .update(lease_expires_at=_lease_end(action.tool))
    )
    if taken:
        # The previous holder may have counted an attempt since this delivery read the row.
        action.refresh_from_db(fields=["lease_expires_at", "attempts"])
        return None
    current = (
        Action.objects.filter(pk=action.pk)
        .annotate(left=F("lease_expires_at") - Now())
        .values_list("status", "left")
        .get()
    )
    status, left = current
    if status != Status.RUNNING:
        return Outcome(status, note="finished by another delivery")
    wait = max(left.total_seconds(), 0.0) + LEASE_SLACK_SECONDS
    logger.info(
        "action %s is being run by another worker: not called, back in %.1f s", action.pk, wait
    )
    return Outcome(Status.RUNNING, retry_after=wait, note="leased by another worker")


def _lease_release(action: Action) -> None:
    """Give the lease back at once (its end set to now), so the retry's delivery can take it.
    Only this worker's own lease: if it ran out and another worker took it over, that one's
    stays. (The end, set by the database to the microsecond, identifies the lease.)"""
    Action.objects.filter(
        pk=action.pk, status=Status.RUNNING, lease_expires_at=action.lease_expires_at
    ).update(lease_expires_at=Now())


def _escalate_failure(action: Action, error: str) -> Outcome:
    """failed, and a fallback review item for the book's escalation owner, in one transaction."""
    owner = action.escalation_owner_id
    try:
        with transaction.atomic(), audit_batch():  # the chain head last (see action_execute)
            transition(
                action,
                Status.FAILED,
                actor="system:worker",
                data={"error": error, "escalated_to": owner},
                error=error,
                escalated_to_id=owner,
                finished_at=timezone.now(),
            )
            review_open(action, "fallback", error=error, escalate=True, actor="system:worker")
    except IllegalTransition as exc:
        # A duplicate delivery of the same action finished it first.
        return Outcome(exc.current, note="finished by another delivery")
    EXECUTIONS.labels("failed").inc()
    logger.warning("action %s failed: %s", action.pk, error)
    return Outcome(Status.FAILED, note=error)


# The claim on PostgreSQL is two database functions (apps/actions/migrations/
# 0006_claim_functions.py), planned once per connection: `actions_claim_look` reads the action's
# status and whether an engaged switch covers it, behind the fence, writing nothing; and
# `actions_claim` moves it queued -> running when it is queued and not covered, behind the fence,
# returning what it found and whether it moved it. The action itself is read only once claimed.
def _look(action_id: UUID) -> tuple[str, bool]:
    """The action's status and whether an engaged switch covers it, read behind the fence:
    a look that waits there while a switch is being engaged sees it once it commits. Outside a
    transaction this is one statement and one round trip. Raises Action.DoesNotExist for an
    unknown action."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM actions_claim_look(%s)", [action_id])
        row = cursor.fetchone()
    if row is None:
        raise Action.DoesNotExist(f"no action {action_id}")
    return row[0], row[1]


def _claim_statement(action_id: UUID) -> tuple[str, bool, bool]:
    """The claim statement (call inside a transaction): the status it found, whether a switch
    covered the action, and whether it moved it to running."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM actions_claim(%s, %s, %s)",
            [action_id, timezone.now(), float(settings.ACTION_LEASE_MARGIN_SECONDS)],
        )
        row = cursor.fetchone()
    if row is None:
        raise Action.DoesNotExist(f"no action {action_id}")
    return row[0], row[1], row[2]


class Claim(Enum):
    CLAIMED = "claimed"  # queued -> running by this delivery
    REFUSED = "refused"  # queued, and an engaged switch covers it
    LOST = "lost"  # queued when read, moved meanwhile by another claim or a drain
    NOT_QUEUED = "not queued"  # running, finished or not runnable: nothing to claim


@dataclass(frozen=True)
class ClaimResult:
    verdict: Claim
    status: str  # the action's status as the claim found (CLAIMED: running)
    action: Action | None  # read when claimed


def _read(action_id: UUID) -> Action:
    """The action, with its agent, workflow, tool and book version as of now: shared rows of the
    registry's snapshot (apps/registry/snapshot.py: read them only), since a join of the four
    cost the ORM more to compose than the action's own read and the generation's together."""
    action = Action.objects.get(pk=action_id)
    view = registry_view()
    if (agent := view.row(Agent, action.agent_id)) is not None:
        action.agent = agent
    if (workflow := view.row(Workflow, action.workflow_id)) is not None:
        action.workflow = workflow
    if (tool := view.row(Tool, action.tool_id)) is not None:
        action.tool = tool
    version_id = action.book_version_id
    if version_id is not None and (version := view.row(BookVersion, version_id)) is not None:
        action.book_version = version
    return action


def _claim(action_id: UUID) -> ClaimResult:
    """Claim a queued action for execution: queued -> running, with the kill-switch check,
    a start time and a lease, in one statement behind the fence that orders claims and engages
    (apps/killswitches/coverage.py explains why both are needed), after a look that refuses at
    once what a switch covers. A switch committed before the claim is always seen, and an
    action claimed before a switch's engage time always has an earlier start time: `started_at`
    is the database's clock, the one that stamps `engaged_at`. Raises Action.DoesNotExist for
    an unknown action."""
    # First a look, one round trip: an action a switch covers is refused there, and so is one
    # whose look waited at the fence while the switch was engaged (once it commits, the refusal
    # costs no further round trip). Only a queued action that no switch covered is claimed, and
    # the claim checks the switches again: one may have been engaged since the look.
    status, switched = _look(action_id)
    if status == Status.QUEUED and not switched:
        with transaction.atomic():
            status, switched, claimed = _claim_statement(action_id)
            if claimed:
                action = _read(action_id)
                transition_record(action, status, actor="system:worker")
                return ClaimResult(Claim.CLAIMED, action.status, action)
    if status != Status.QUEUED:
        return ClaimResult(Claim.NOT_QUEUED, status, None)
    if switched:
        return ClaimResult(Claim.REFUSED, status, None)
    current = Action.objects.filter(pk=action_id).values_list("status", flat=True).first()
    return ClaimResult(Claim.LOST, current or "missing", None)


def _not_as_decided(action: Action) -> str:
    """Why this action may not run as it stands, or "": its params must be those the Decision
    Book decided (apps/actions/decision.py), and an approval must not have expired before the
    first call (a later attempt continues the run the approval started)."""
    if not action.params_digest or action.params_digest != params_digest(action.params):
        return "not run: its params are not those the Decision Book decided"
    expires = action.approval_expires_at
    if expires is not None and action.attempts == 0 and timezone.now() >= expires:
        when = timezone.localtime(expires).strftime("%Y-%m-%d %H:%M:%S")
        return f"not run: its approval expired at {when}; approve it again to run it"
    return ""


def action_execute(*, action_id: UUID, queued_only: bool = False) -> Outcome:
    """Run one delivery of an action. `queued_only`: a delivery that only starts a queued action
    (an announcement, heard by every worker): it leaves a running one to the delivery that holds
    it, instead of waiting for its lease."""
    taken = time.perf_counter()
    claim = _claim(action_id)
    if claim.verdict is Claim.REFUSED:
        logger.info(
            "action %s not started: a kill switch covers it (refused in %.1f ms)",
            action_id,
            (time.perf_counter() - taken) * 1000,
        )
        return Outcome(Status.QUEUED, note="held by a kill switch")
    if claim.verdict is Claim.LOST:
        return Outcome(claim.status, note="claimed elsewhere")
    if claim.verdict is Claim.CLAIMED:
        assert claim.action is not None
        action = claim.action
    elif claim.status in FINISHED:
        return Outcome(claim.status, note="already finished")
    elif claim.status == Status.RUNNING and queued_only:
        return Outcome(claim.status, note="running elsewhere")
    elif claim.status == Status.RUNNING:
        # Another delivery of a running action (a duplicate message, a retry, the redelivery
        # after a worker died, the requeue sweep) continues it only once it holds the lease.
        action = _read(action_id)
        held = _lease_take_over(action)
        if held is not None:
            return held
    else:
        return Outcome(claim.status, note="not runnable")

    refused = _not_as_decided(action)
    if refused:
        # Nothing reaches the system of record; the escalation owner sees why.
        return _escalate_failure(action, refused)
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
            _lease_release(action)
            return Outcome(
                Status.RUNNING, retry_after=backoff(action.attempts), note=failure.message
            )
        return _escalate_failure(action, f"{failure.message} (after {action.attempts} attempt(s))")
    circuit_success(tool)
    try:
        # The audit events are appended when the block ends, after the review queue's tally
        # (a spot check) is moved: the chain's head is taken last, in the order the gate takes
        # the two when it holds a proposal, so the two never wait for each other in a cycle.
        with transaction.atomic(), audit_batch():
            transition(
                action,
                Status.SUCCEEDED,
                actor="system:worker",
                data={"result": result},
                result=result,
                finished_at=timezone.now(),
            )
            if action.spot_check:
                review_open(action, "spot_check", actor="system:worker")
    except IllegalTransition as exc:
        # A duplicate delivery of the same action finished it first (same downstream key, so
        # the same single effect).
        return Outcome(exc.current, note="finished by another delivery")
    EXECUTIONS.labels("succeeded").inc()
    return Outcome(Status.SUCCEEDED)


class RollbackRefused(Exception):
    pass


class UndoUnknown(Exception):
    """The system of record gave no definite answer to the undo, not even to the same undo sent
    again: it may or may not have taken effect. The action keeps its status (the attempt is
    audited), and rolling it back again re-sends the same undo, which takes effect at most
    once."""

    def __init__(self, action: Action, message: str) -> None:
        super().__init__(message)
        self.action = action
        self.message = message


@dataclass(frozen=True)
class Undone:
    """An undo with a definite answer: the action is rolled_back or rollback_failed. `checked`
    says how it was settled when the first answer never came ("" when it came)."""

    action: Action
    checked: str = ""


# Undoable again: a succeeded action, and one whose undo failed (retried by on-call).
UNDOABLE = frozenset({Status.SUCCEEDED, Status.ROLLBACK_FAILED})
# How many times an undo without a definite answer is sent again, with the same idempotency key.
UNDO_RESENDS = 2


@dataclass(frozen=True)
class _UndoAnswer:
    result: dict[str, Any] | None  # the undo's result: it has taken effect
    definite: bool  # the system of record answered (result, or a refusal it stands by)
    message: str  # what went wrong, when something did
    tries: int
    checked: str


def _undo_answer(action: Action) -> _UndoAnswer:
    """Send the undo; without a definite answer, send the same undo again (the same idempotency
    key). A system of record that applied the first answers a re-send with the first's result
    (the sandbox replays it), one that never saw it applies it now: either way a 2xx means the
    undo has taken effect, once. A try that got no answer at all (a timeout, a broken or
    refused connection) may have taken effect; a 5xx answer did not, by the connector's
    contract. A 409 to a re-send may mean the first is still in progress, so it settles
    nothing."""
    unanswered = ""  # the first failure that left the outcome open
    failure: ConnectorFailure | None = None
    tries = 0
    for attempt in range(1 + UNDO_RESENDS):
        if attempt:
            time.sleep(backoff(attempt))
        tries += 1
        try:
            result = call_undo(
                action.tool,
                original_key=action.downstream_key,
                result=action.result,
                action_id=str(action.pk),
            )
        except ConnectorFailure as exc:
            failure = exc
            in_progress = bool(unanswered) and exc.status == 409
            if not exc.transient and not in_progress:
                return _UndoAnswer(None, True, exc.message, tries, _checked(unanswered))
            if exc.status is None and not unanswered:
                unanswered = exc.message
            continue
        return _UndoAnswer(result, True, "", tries, _checked(unanswered))
    assert failure is not None
    if unanswered:
        return _UndoAnswer(None, False, failure.message, tries, "")
    return _UndoAnswer(None, True, failure.message, tries, "")


def _checked(unanswered: str) -> str:
    if not unanswered:
        return ""
    return f"verified with the system of record after no answer at first ({unanswered})"


def action_undo(*, action_id: UUID, actor: Actor) -> Undone:
    """Undo a succeeded action through its tool's undo (or retry the undo of one whose undo
    failed): rolled_back or rollback_failed, each only on a definite answer from the system of
    record. Without one, UndoUnknown: nothing moves and the attempt is audited."""
    with transaction.atomic():
        action = Action.objects.select_for_update().select_related("tool").get(pk=action_id)
        if action.status not in UNDOABLE:
            raise IllegalTransition(action.pk, action.status, Status.ROLLED_BACK)
        tool = action.tool
        if not tool.reversible:
            raise RollbackRefused(
                f"{tool.slug} is irreversible: undo it by hand in the system of record"
            )
        retry = action.status == Status.ROLLBACK_FAILED
        answer = _undo_answer(action)
        extra: dict[str, Any] = {"tries": answer.tries}
        if retry:
            extra["retry"] = True
        if answer.checked:
            extra["checked"] = answer.checked
        if answer.result is not None:
            transition(
                action,
                Status.ROLLED_BACK,
                actor=actor,
                data={"undo": answer.result, **extra},
                undo_result=answer.result,
                rolled_back_at=timezone.now(),
                error="",
            )
            return Undone(action, answer.checked)
        if answer.definite:
            transition(
                action,
                Status.ROLLBACK_FAILED,
                actor=actor,
                data={"error": answer.message, **extra},
                error=answer.message,
            )
            return Undone(action, answer.checked)
        message = (
            f"undo outcome unknown: the system of record did not answer ({answer.message}, "
            f"{answer.tries} tries); the action is still {action.status}, and rolling it back "
            "again re-sends the same undo"
        )
        audit_record(
            actor=actor,
            verb="action.undo_unknown",
            target=action,
            subject=action.subject,
            data={"status": action.status, "error": answer.message, **extra},
        )
    raise UndoUnknown(action, message)


def action_rollback(*, action_id: UUID, actor: Actor) -> Action:
    """Undo a succeeded action (or retry a failed undo); rolled_back or rollback_failed, or
    UndoUnknown when the system of record gave no definite answer (see `action_undo`)."""
    return action_undo(action_id=action_id, actor=actor).action
