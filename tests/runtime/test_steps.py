"""Runs and steps, executed in the test's process one attempt at a time (the worker's task
body): proposing through the gate, waiting for a person without holding a worker and resuming
after the decision, retries, and the fallback of a step that fails or runs out of time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.audit.models import AuditEvent
from apps.reviews.models import ReviewItem
from apps.reviews.services import DecisionInput, review_decide
from apps.runtime.models import Run, Step
from apps.runtime.services import RunRefused, run_start, runtime_sweep, step_execute
from apps.runtime.steps import StepContext, hosted_agent
from tests.runtime.conftest import Flow, make_flow

pytestmark = pytest.mark.django_db(transaction=True)

REFUND = {"order_id": "1003", "currency": "EUR", "reason": "parcel arrived damaged"}

# rt-held: proposes a 300.00 EUR refund (the book holds it), then a step that reads the outcome.
held = hosted_agent("rt-held", agent="rt-held-bot")


@held.step("propose", time_budget=10)
def held_propose(ctx: StepContext) -> dict[str, Any]:
    action = ctx.propose(
        "issue_refund", {**REFUND, "amount_cents": 30000}, confidence=0.95, reasoning="photo"
    )
    return {"action": str(action.pk)}


@held.step("after", time_budget=10)
def held_after(ctx: StepContext) -> dict[str, Any]:
    return {"earlier": [action.status for action in ctx.earlier_actions()], **ctx.earlier}


# rt-slow: proposes a small refund (allowed), then overruns its time budget: it tries a second
# proposal only once the test has seen the step time out, and says when that try is over. (The
# budget is ample for the first proposal, however busy the machine.)
slow = hosted_agent("rt-slow", agent="rt-slow-bot")
SLOW_BUDGET = 3.0
SLOW_TIMED_OUT = threading.Event()
SLOW_LATE_TRY_OVER = threading.Event()
WAIT_SECONDS = 120


@slow.step("overrun", time_budget=SLOW_BUDGET, max_retries=0)
def slow_overrun(ctx: StepContext) -> dict[str, Any]:
    ctx.propose("issue_refund", {**REFUND, "amount_cents": 1000}, confidence=0.95)
    try:
        SLOW_TIMED_OUT.wait(timeout=WAIT_SECONDS)
        ctx.propose("issue_refund", {**REFUND, "amount_cents": 1100}, confidence=0.95)
    finally:
        SLOW_LATE_TRY_OVER.set()
    return {}


# rt-flaky: fails its first attempt, succeeds on the second.
flaky = hosted_agent("rt-flaky", agent="rt-flaky-bot")
ATTEMPTS: list[int] = []


@flaky.step("once", time_budget=10, max_retries=2)
def flaky_once(ctx: StepContext) -> dict[str, Any]:
    ATTEMPTS.append(ctx.step.attempts)
    action = ctx.propose("issue_refund", {**REFUND, "amount_cents": 1000}, confidence=0.95)
    if ctx.step.attempts == 1:
        raise ConnectionError("the order system did not answer")
    return {"action": str(action.pk)}


# rt-broken: fails before proposing anything, every time.
broken = hosted_agent("rt-broken", agent="rt-broken-bot")


@broken.step("crash", time_budget=10, max_retries=1)
def broken_crash(ctx: StepContext) -> dict[str, Any]:
    raise ValueError("ticket has no order number")


# rt-refused: proposes with a tool the agent may not use (the gate refuses: no retry helps).
refused = hosted_agent("rt-refused", agent="rt-refused-bot")


@refused.step("wrong-tool", time_budget=10, max_retries=3)
def refused_wrong_tool(ctx: StepContext) -> dict[str, Any]:
    ctx.propose("delete_everything", {})
    return {}


def flow_for(user_for: Any, workflow: str) -> Flow:
    return make_flow(user_for, slug=workflow, agent=f"{workflow}-bot")


def only_step(run: Run, index: int = 0) -> Step:
    return Step.objects.get(run=run, index=index)


def test_held_step__waits_then_resumes_after_approval(user_for: Any, own_queue: str) -> None:
    # Given a hosted agent whose first step proposes a refund the book holds
    flow_for(user_for, "rt-held")
    run = run_start(workflow="rt-held", subject="order:1003", input={"ticket": 881})
    # When the first step runs
    outcome = step_execute(step_id=only_step(run).pk)
    # Then it proposed through the gate and waits, holding no worker
    assert outcome.state == "waiting"
    assert outcome.retry_after is None
    action = Action.objects.get()
    assert action.status == "pending_review"
    assert action.idempotency_key == f"run-{run.pk}-0-1"
    assert action.agent.slug == "rt-held-bot"
    assert Run.objects.get(pk=run.pk).state == "waiting"
    # And the sweep leaves it waiting while nobody has decided
    assert runtime_sweep().resumed == []
    # When a supervisor approves the held refund
    item = ReviewItem.objects.get(action=action, kind="hold")
    review_decide(
        item_id=item.pk,
        user=user_for(Role.SUPERVISOR),
        given=DecisionInput("approve", "within-policy"),
    )
    # Then the sweep resumes the step, and the next step sees the decided action
    assert runtime_sweep().resumed == [only_step(run).pk]
    first = only_step(run)
    assert first.state == "succeeded"
    assert first.output is not None
    assert first.output["decided"] == {str(action.pk): "queued"}
    second = only_step(run, 1)
    assert step_execute(step_id=second.pk).state == "succeeded"
    second.refresh_from_db()
    assert second.output is not None
    assert second.output["earlier"] == ["queued"]
    assert second.output["propose"]["action"] == str(action.pk)
    finished = Run.objects.get(pk=run.pk)
    assert finished.state == "succeeded"
    assert AuditEvent.objects.filter(verb="run.succeeded", target_id=str(run.pk)).exists()


def test_held_step__rejected__run_moves_on_with_the_rejection(
    user_for: Any, own_queue: str
) -> None:
    flow_for(user_for, "rt-held")
    run = run_start(workflow="rt-held", subject="order:1003")
    step_execute(step_id=only_step(run).pk)
    item = ReviewItem.objects.get()
    review_decide(
        item_id=item.pk,
        user=user_for(Role.SUPERVISOR),
        given=DecisionInput("reject", "wrong-amount"),
    )
    runtime_sweep()
    step_execute(step_id=only_step(run, 1).pk)
    assert (only_step(run, 1).output or {})["earlier"] == ["rejected"]


def test_step_timeout__becomes_a_fallback_review_item(user_for: Any, own_queue: str) -> None:
    # Given a step that proposes, then overruns its budget, with no retries
    SLOW_TIMED_OUT.clear()
    SLOW_LATE_TRY_OVER.clear()
    flow = flow_for(user_for, "rt-slow")
    run = run_start(workflow="rt-slow", subject="order:1003")
    # When it runs
    outcome = step_execute(step_id=only_step(run).pk)
    # Then the step and its run failed with the timeout
    assert outcome.state == "failed"
    step = only_step(run)
    assert step.error == f"timed out after its time budget of {SLOW_BUDGET:g}s"
    failed = Run.objects.get(pk=run.pk)
    assert failed.state == "failed"
    assert failed.escalated_to == flow.owner
    # And the action it proposed is a fallback review item for the escalation owner
    action = Action.objects.get()
    item = ReviewItem.objects.get(action=action)
    assert (item.kind, item.state, item.escalated_to) == ("fallback", "open", flow.owner)
    assert "timed out" in item.error
    # And after the budget, the step could propose nothing more
    SLOW_TIMED_OUT.set()
    assert SLOW_LATE_TRY_OVER.wait(timeout=WAIT_SECONDS)
    assert Action.objects.count() == 1
    event = AuditEvent.objects.get(verb="run.failed", target_id=str(run.pk))
    assert event.payload["fallback_reviews"] == [str(action.pk)]


def test_failed_attempt__retried_with_the_same_action(user_for: Any, own_queue: str) -> None:
    ATTEMPTS.clear()
    flow_for(user_for, "rt-flaky")
    run = run_start(workflow="rt-flaky", subject="order:1003")
    first = step_execute(step_id=only_step(run).pk)
    assert first.state == "queued"
    assert first.retry_after is not None
    assert "ConnectionError: the order system did not answer" in only_step(run).error
    second = step_execute(step_id=only_step(run).pk)
    assert second.state == "succeeded"
    assert ATTEMPTS == [1, 2]
    # The retry proposed under the same idempotency key: one action, not two
    assert Action.objects.count() == 1
    assert Run.objects.get(pk=run.pk).state == "succeeded"


def test_failure_without_an_action__run_escalated_to_the_owner(
    user_for: Any, own_queue: str
) -> None:
    flow = flow_for(user_for, "rt-broken")
    run = run_start(workflow="rt-broken", subject="ticket:77")
    assert step_execute(step_id=only_step(run).pk).state == "queued"
    assert step_execute(step_id=only_step(run).pk).state == "failed"
    failed = Run.objects.get(pk=run.pk)
    assert failed.error == "step crash failed: ValueError: ticket has no order number"
    assert failed.escalated_to == flow.owner
    assert not ReviewItem.objects.exists()
    assert AuditEvent.objects.filter(verb="run.failed", target_id=str(run.pk)).exists()


def test_gate_refusal__fails_at_once_without_retries(user_for: Any, own_queue: str) -> None:
    flow_for(user_for, "rt-refused")
    run = run_start(workflow="rt-refused")
    assert step_execute(step_id=only_step(run).pk).state == "failed"
    step = only_step(run)
    assert step.attempts == 1
    assert "the gate refused delete_everything: Agent rt-refused-bot may not use tool" in step.error


def test_revoked_runtime_key__runs_stop_proposing(user_for: Any, own_queue: str) -> None:
    from apps.registry.services import agent_key_revoke
    from apps.runtime.services import runtime_key

    flow = flow_for(user_for, "rt-held")
    agent_key_revoke(key_id=runtime_key(flow.agent).pk, actor="system:test")
    run = run_start(workflow="rt-held")
    assert step_execute(step_id=only_step(run).pk).state == "failed"
    assert "was revoked" in only_step(run).error
    assert not Action.objects.exists()


@pytest.mark.parametrize(
    ("workflow", "values", "field", "message"),
    [
        ("nope", {}, "workflow", "workflow 'nope' has no hosted agent"),
        ("rt-held", {"input": {"when": object()}}, "input", "the input must be JSON"),
        ("rt-held", {"subject": "x" * 201}, "subject", "at most 200 characters"),
    ],
)
def test_run_start__bad_input__refused_naming_the_field(
    user_for: Any, workflow: str, values: dict[str, Any], field: str, message: str
) -> None:
    flow_for(user_for, "rt-held")
    with pytest.raises(RunRefused) as caught:
        run_start(workflow=workflow, **values)
    assert caught.value.field == field
    assert message in caught.value.message
    assert not Run.objects.exists()
