"""Runs and steps: starting a run, executing one step, resuming steps a person has unblocked,
and the deterministic fallback of a step that fails or times out past its retries.

A step is executed by a Celery worker (apps.runtime.tasks.run_step). The step function runs on
a thread of its own and is given its time budget: when the budget is spent the worker stops
waiting, the step's context refuses any further model call or proposal, and the attempt counts
as timed out. A failed or timed-out attempt is tried again with backoff up to the step's
retries (its proposals carry the same idempotency keys, so a retry never proposes twice); past
them the step and its run fail, and the step's actions become fallback review items for the
Decision Book's escalation owner. A step that proposed nothing has no action a review item
could carry: its failure is recorded on the run, which names the escalation owner, is shown on
the runs page ("Needs attention") and on that person's escalations page, and is audited.

A step whose action is held ends its attempt in `waiting`: no worker waits with it. The sweep
(every few seconds, from the scheduler) finds the waiting steps whose actions a person has
decided and moves their runs on."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.actions.models import Action, Status
from apps.audit.services import audit_record
from apps.books.models import BookVersion
from apps.core.backoff import backoff as core_backoff
from apps.core.errors import ServiceError
from apps.core.workers import task_send_on_commit
from apps.registry.models import Agent, AgentKey, Workflow
from apps.registry.services import agent_key_create
from apps.reviews.items import review_open
from apps.reviews.models import ReviewItem
from apps.reviews.models import State as ReviewState
from apps.runtime.budgets import BudgetExceeded, active_book, budget_release
from apps.runtime.models import BudgetReservation, Run, Step
from apps.runtime.providers import ProviderError
from apps.runtime.router import RouterError
from apps.runtime.steps import (
    HostedAgent,
    StepContext,
    StepFailed,
    StepSpec,
    StepStopped,
    hosted_agent_of,
)

logger = logging.getLogger(__name__)

RUNTIME_KEY_LABEL = "hosted runtime"
# Statuses in which an action still waits for the gate or a person.
UNDECIDED = frozenset({Status.PROPOSED, Status.PENDING_REVIEW})
# How long past its time budget a running attempt may go unreported before the sweep declares
# it lost (its worker died or hung).
LOST_AFTER_SECONDS = 60.0
STALE_RESERVATION_MINUTES = 15


class RunRefused(ServiceError):
    """A run that cannot be started; `field` names the input at fault."""


@dataclass(frozen=True)
class StepOutcome:
    state: str
    retry_after: float | None = None
    note: str = ""


def backoff(attempt: int) -> float:
    """Seconds before a step's retry `attempt`: from one second, at most a minute apart."""
    return core_backoff(attempt, base=1.0, cap=60.0)


def runtime_key(agent: Agent) -> AgentKey:
    """The key the runtime proposes with on behalf of a hosted agent. Made once; when an admin
    revokes it the agent's runs stop proposing (a new one is never made behind their back)."""
    key = AgentKey.objects.filter(agent=agent, label=RUNTIME_KEY_LABEL).order_by("pk").first()
    if key is None:
        key = agent_key_create(agent=agent, actor="system:runtime", label=RUNTIME_KEY_LABEL).record
    return key


def _check_key(key: AgentKey) -> None:
    now = timezone.now()
    if key.revoked_at is not None:
        raise StepFailed(f"the runtime key {key.prefix} of {key.agent.slug} was revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise StepFailed(f"the runtime key {key.prefix} of {key.agent.slug} has expired")


def run_start(
    *,
    workflow: str,
    subject: str = "",
    input: Mapping[str, Any] | None = None,
    source: str = "manual",
    trace_id: str = "",
) -> Run:
    """Start a run of `workflow`'s hosted agent; its first step is queued once this commits."""
    hosted = hosted_agent_of(workflow)
    if hosted is None:
        raise RunRefused(f"workflow {workflow!r} has no hosted agent", "workflow")
    if not hosted.steps:
        raise RunRefused(f"the hosted agent of {workflow!r} has no steps", "workflow")
    flow = Workflow.objects.filter(slug=workflow).first()
    if flow is None:
        raise RunRefused(f"there is no workflow {workflow!r}", "workflow")
    agent = Agent.objects.filter(slug=hosted.agent).first()
    if agent is None:
        raise RunRefused(f"the hosted agent {hosted.agent!r} is not registered", "workflow")
    try:
        payload = json.loads(json.dumps(dict(input or {})))
    except (TypeError, ValueError):
        raise RunRefused("the input must be JSON: an object of plain values", "input") from None
    if len(subject) > 200:
        raise RunRefused("at most 200 characters", "subject")
    first = hosted.steps[0]
    with transaction.atomic():
        run = Run.objects.create(
            workflow=flow,
            agent=agent,
            subject=subject,
            input=payload,
            source=source[:20],
            trace_id=trace_id or uuid.uuid4().hex,
        )
        step = Step.objects.create(
            run=run, index=0, name=first.name, time_budget_seconds=first.time_budget
        )
        audit_record(
            actor="system:runtime",
            verb="run.started",
            target=run,
            subject=subject,
            data={"workflow": workflow, "agent": agent.slug, "source": source},
        )
        _dispatch(step)
    return run


def _dispatch(step: Step, countdown: float | None = None) -> None:
    step_id = step.pk
    # A hard limit for the worker's process, well past the budget: the budget itself is
    # enforced by the runtime, this only catches a step that blocks the whole process.
    hard_limit = int(step.time_budget_seconds) + 60
    options: dict[str, Any] = {"time_limit": hard_limit}
    if countdown is not None:
        options["countdown"] = countdown

    task_send_on_commit("runtime.run_step", step_id, **options)


def _earlier_outputs(run: Run, index: int) -> dict[str, Any]:
    return {
        name: output or {}
        for name, output in run.steps.filter(index__lt=index).values_list("name", "output")
    }


@dataclass
class _Attempt:
    output: Mapping[str, Any] | None = None
    error: BaseException | None = None
    timed_out: bool = False


def _run_within(spec: StepSpec, ctx: StepContext) -> _Attempt:
    """Run the step function on its own thread and wait at most its time budget."""
    attempt = _Attempt()

    def target() -> None:
        try:
            attempt.output = spec.func(ctx)
        except BaseException as exc:  # noqa: BLE001 (handed to the worker's thread below)
            attempt.error = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target, name=f"step-{ctx.step.pk}", daemon=True)
    thread.start()
    thread.join(max(ctx.remaining(), 0.0))
    if thread.is_alive():
        ctx.stop()
        attempt.timed_out = True
    return attempt


def step_execute(*, step_id: int) -> StepOutcome:
    """One attempt at one step (the body of the run_step task)."""
    step = Step.objects.select_related("run", "run__workflow", "run__agent").get(pk=step_id)
    if step.state != Step.State.QUEUED:
        return StepOutcome(step.state, note="not queued")
    now = timezone.now()
    claimed = Step.objects.filter(pk=step.pk, state=Step.State.QUEUED).update(
        state=Step.State.RUNNING,
        attempts=F("attempts") + 1,
        started_at=Coalesce(F("started_at"), now),
        attempt_started_at=now,
    )
    if claimed != 1:
        return StepOutcome(step.state, note="claimed elsewhere")
    step.refresh_from_db()
    run = step.run
    Run.objects.filter(pk=run.pk).update(
        state=Run.State.RUNNING, started_at=Coalesce(F("started_at"), now)
    )
    hosted = hosted_agent_of(run.workflow.slug)
    spec = hosted.spec(step.index) if hosted is not None else None
    if hosted is None or spec is None or spec.name != step.name:
        return _step_failed(
            step, f"step {step.name!r} is no longer registered for {run.workflow.slug}", spec=None
        )
    try:
        key = runtime_key(run.agent)
        _check_key(key)
    except StepFailed as exc:
        return _step_failed(step, str(exc), spec=spec, exc=exc)
    book = active_book(run.workflow)
    ctx = StepContext(
        run=run,
        step=step,
        key=key,
        book=book,
        earlier=_earlier_outputs(run, step.index),
        time_budget=spec.time_budget,
    )
    attempt = _run_within(spec, ctx)
    if attempt.timed_out:
        return _step_failed(
            step, f"timed out after its time budget of {spec.time_budget:g}s", spec=spec
        )
    if attempt.error is not None:
        return _step_failed(step, _describe(attempt.error), spec=spec, exc=attempt.error)
    try:
        output = json.loads(json.dumps(dict(attempt.output or {})))
    except (TypeError, ValueError) as exc:
        return _step_failed(step, f"its output is not JSON: {exc}", spec=spec, exc=StepFailed())
    return _step_done(step, output, hosted)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BudgetExceeded | StepFailed | StepStopped | RouterError):
        return str(exc)
    if isinstance(exc, ProviderError):
        return f"model provider: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _permanent(exc: BaseException | None) -> bool:
    """Failures another attempt cannot mend: a budget spent, a refused proposal, a task no
    model serves, a provider that refuses the request itself."""
    if isinstance(exc, BudgetExceeded | StepFailed | RouterError):
        return True
    return isinstance(exc, ProviderError) and not exc.transient


def _step_done(step: Step, output: dict[str, Any], hosted: HostedAgent) -> StepOutcome:
    actions = list(Action.objects.filter(runtime_step__step=step).values_list("status", flat=True))
    now = timezone.now()
    with transaction.atomic():
        if any(status in UNDECIDED for status in actions):
            moved = Step.objects.filter(pk=step.pk, state=Step.State.RUNNING).update(
                state=Step.State.WAITING, output=output, waiting_since=now, error=""
            )
            if moved == 1:
                Run.objects.filter(pk=step.run_id).update(state=Run.State.WAITING)
            return StepOutcome(Step.State.WAITING, note="waiting for a person")
        moved = Step.objects.filter(pk=step.pk, state=Step.State.RUNNING).update(
            state=Step.State.SUCCEEDED, output=output, finished_at=now, error=""
        )
        if moved == 1:
            _advance(step, hosted)
    return StepOutcome(Step.State.SUCCEEDED)


def _advance(step: Step, hosted: HostedAgent) -> None:
    """The step is done: queue the next one, or finish the run."""
    run = step.run
    following = hosted.spec(step.index + 1)
    now = timezone.now()
    if following is not None:
        nxt = Step.objects.create(
            run=run,
            index=step.index + 1,
            name=following.name,
            time_budget_seconds=following.time_budget,
        )
        Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING)
        _dispatch(nxt)
        return
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED, finished_at=now)
    audit_record(
        actor="system:runtime",
        verb="run.succeeded",
        target=run,
        subject=run.subject,
        data={"steps": step.index + 1},
    )


def _step_failed(
    step: Step, error: str, *, spec: StepSpec | None, exc: BaseException | None = None
) -> StepOutcome:
    retries = spec.max_retries if spec is not None else 0
    if spec is not None and not _permanent(exc) and step.attempts <= retries:
        wait = backoff(step.attempts)
        moved = Step.objects.filter(pk=step.pk, state=Step.State.RUNNING).update(
            state=Step.State.QUEUED, error=error
        )
        if moved == 1:
            logger.info(
                "step %s of run %s failed (attempt %d of %d), retrying: %s",
                step.name,
                step.run_id,
                step.attempts,
                retries + 1,
                error,
            )
            return StepOutcome(Step.State.QUEUED, retry_after=wait, note=error)
        return StepOutcome(step.state, note="moved elsewhere")
    return _fallback(step, error)


def _fallback(step: Step, error: str) -> StepOutcome:
    """Fail the step and its run; hand its actions (or, with none, the run) to the book's
    escalation owner."""
    run = step.run
    book: BookVersion | None = active_book(run.workflow)
    owner = book.escalation_owner_id if book is not None else None
    now = timezone.now()
    with transaction.atomic():
        moved = Step.objects.filter(
            pk=step.pk, state__in=(Step.State.RUNNING, Step.State.QUEUED)
        ).update(state=Step.State.FAILED, error=error, finished_at=now)
        if moved != 1:
            return StepOutcome(step.state, note="moved elsewhere")
        message = f"step {step.name} failed: {error}"
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.FAILED, error=message, escalated_to_id=owner, finished_at=now
        )
        actions = list(
            Action.objects.select_related("tool", "workflow", "book_version").filter(
                runtime_step__step=step
            )
        )
        opened = []
        for action in actions:
            if ReviewItem.objects.filter(action=action, state=ReviewState.OPEN).exists():
                continue
            review_open(action, "fallback", error=message, escalate=True, actor="system:runtime")
            opened.append(str(action.pk))
        audit_record(
            actor="system:runtime",
            verb="run.failed",
            target=run,
            subject=run.subject,
            data={
                "step": step.name,
                "attempts": step.attempts,
                "error": error,
                "escalated_to": owner,
                "fallback_reviews": opened,
            },
        )
    logger.warning("run %s failed at step %s: %s", run.pk, step.name, error)
    return StepOutcome(Step.State.FAILED, note=error)


@dataclass
class SweepReport:
    resumed: list[int]
    lost: list[int]
    released: int


def runtime_sweep() -> SweepReport:
    """Resume steps whose held actions are decided; fail attempts that outlived their time
    budget unreported; give back reservations of calls that never ended."""
    report = SweepReport(resumed=[], lost=[], released=0)
    waiting = Step.objects.filter(state=Step.State.WAITING).values_list("pk", flat=True)
    for step_id in list(waiting[:500]):
        if step_resume(step_id=step_id):
            report.resumed.append(step_id)
    now = timezone.now()
    running = Step.objects.filter(state=Step.State.RUNNING).select_related(
        "run", "run__workflow", "run__agent"
    )
    for step in running[:500]:
        started = step.attempt_started_at or step.started_at or now
        limit = timedelta(seconds=step.time_budget_seconds + LOST_AFTER_SECONDS)
        if now - started > limit:
            hosted = hosted_agent_of(step.run.workflow.slug)
            spec = hosted.spec(step.index) if hosted is not None else None
            _step_failed(
                step,
                f"its attempt was lost: no report {step.time_budget_seconds:g}s budget "
                f"+ {LOST_AFTER_SECONDS:g}s after it started (the worker died or hung)",
                spec=spec,
            )
            if spec is not None:
                moved = Step.objects.filter(pk=step.pk, state=Step.State.QUEUED).first()
                if moved is not None:
                    _dispatch_now(moved)
            report.lost.append(step.pk)
    stale = BudgetReservation.objects.filter(
        state=BudgetReservation.State.HELD,
        created_at__lt=now - timedelta(minutes=STALE_RESERVATION_MINUTES),
    )
    for reservation in stale[:500]:
        budget_release(reservation)
        report.released += 1
    return report


def _dispatch_now(step: Step) -> None:
    with transaction.atomic():
        _dispatch(step, countdown=backoff(step.attempts))


def step_resume(*, step_id: int) -> bool:
    """Move a waiting step on once none of its actions waits for a person any more."""
    step = Step.objects.select_related("run", "run__workflow").get(pk=step_id)
    if step.state != Step.State.WAITING:
        return False
    statuses = dict(Action.objects.filter(runtime_step__step=step).values_list("pk", "status"))
    if any(status in UNDECIDED for status in statuses.values()):
        return False
    hosted = hosted_agent_of(step.run.workflow.slug)
    now = timezone.now()
    with transaction.atomic():
        output = dict(step.output or {})
        output["decided"] = {str(pk): status for pk, status in statuses.items()}
        moved = Step.objects.filter(pk=step.pk, state=Step.State.WAITING).update(
            state=Step.State.SUCCEEDED, output=output, finished_at=now
        )
        if moved != 1:
            return False
        step.output = output
        if hosted is None:
            Run.objects.filter(pk=step.run_id).update(
                state=Run.State.FAILED,
                error=f"the hosted agent of {step.run.workflow.slug} is no longer registered",
                finished_at=now,
            )
            return True
        _advance(step, hosted)
    return True
