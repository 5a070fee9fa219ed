"""The one state machine of an action (PRODUCT.md section 4): each transition it has works and
writes one audit event; every other (from, to) pair is refused and changes nothing; two workers
racing for one move cannot both win."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db.models import Q
from django.utils import timezone

from apps.actions.models import Action, Decision, Status
from apps.actions.states import TERMINAL, TRANSITIONS, IllegalTransition, transition
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.registry.models import Agent, Tool, Workflow
from tests.actions.conftest import GOOD_PARAMS, verbs_of
from tests.concurrency import at_once

# Section 4 of PRODUCT.md, written out again: a change to the machine must change this too.
SPECIFIED = {
    "proposed": {"denied", "observed", "blocked", "pending_review", "approved"},
    "pending_review": {"approved", "rejected", "expired", "cancelled"},
    "approved": {"queued"},
    "queued": {"running", "cancelled"},
    "running": {"succeeded", "failed"},
    "succeeded": {"rolled_back", "rollback_failed"},
    "rollback_failed": {"rolled_back", "rollback_failed"},  # a failed undo, retried
}
LEGAL = sorted((source, target) for source, targets in SPECIFIED.items() for target in targets)
ILLEGAL = sorted(
    (source, target)
    for source in Status.values
    for target in Status.values
    if target not in SPECIFIED.get(source, set())
)

MakeAction = Callable[[str], Action]


@pytest.fixture
def make_action(agent: Agent, refunds: Workflow, refund_tool: Tool) -> MakeAction:
    """make_action(status) -> an action of refund-bot already in that status."""

    def make(status: str) -> Action:
        return Action.objects.create(
            agent=agent,
            workflow=refunds,
            tool=refund_tool,
            status=status,
            decision=Decision.ALLOW,
            params=dict(GOOD_PARAMS),
            subject="order:1042",
        )

    return make


def test_transitions__same_as_product_spec() -> None:
    assert {source: set(targets) for source, targets in TRANSITIONS.items()} == SPECIFIED
    # Terminal states lead nowhere; every other state but `proposed` can be reached.
    assert not TERMINAL & set(TRANSITIONS)
    reachable = {target for targets in TRANSITIONS.values() for target in targets}
    assert reachable | {Status.PROPOSED} == set(Status.values)
    assert len(LEGAL) + len(ILLEGAL) == len(Status.values) ** 2


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s}->{t}" for s, t in LEGAL])
def test_transition__legal__moves_and_writes_one_audit_event(
    make_action: MakeAction, source: str, target: str
) -> None:
    # Given an action in `source`
    action = make_action(source)
    events_before = AuditEvent.objects.count()
    updated_before = action.updated_at
    # When it moves to `target`
    returned = transition(action, target, actor="system:test", data={"note": "by the test"})
    # Then the row and the object passed in say so
    assert returned is action
    assert action.status == target
    stored = Action.objects.get(pk=action.pk)
    assert stored.status == target
    assert stored.updated_at == action.updated_at > updated_before
    # And exactly one audit event records it, with who, from where and to where
    assert AuditEvent.objects.count() == events_before + 1
    event = AuditEvent.objects.get(target_type="actions.action", target_id=str(action.pk))
    assert event.verb == f"action.{target}"
    assert (event.actor_type, event.actor) == ("system", "system:test")
    assert event.subject == "order:1042"
    assert event.payload == {"from": source, "to": target, "note": "by the test"}
    assert audit_verify().intact


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_transition__illegal__raises_and_changes_nothing(
    make_action: MakeAction, source: str, target: str
) -> None:
    # Given an action in `source`
    action = make_action(source)
    stored_before = Action.objects.values("status", "updated_at", "error").get(pk=action.pk)
    events_before = AuditEvent.objects.count()
    # When something tries to move it to `target`, a move the machine does not have
    with pytest.raises(IllegalTransition) as refused:
        transition(action, target, actor="system:test", error="should not be written")
    # Then it is refused, naming both states
    assert (refused.value.current, refused.value.wanted) == (source, target)
    assert str(refused.value) == f"action {action.pk} is {source}; it cannot become {target}"
    # And neither the row, nor the object, nor the audit trail changed
    assert Action.objects.values("status", "updated_at", "error").get(pk=action.pk) == (
        stored_before
    )
    assert action.status == source
    assert action.error == ""
    assert AuditEvent.objects.count() == events_before


@pytest.mark.django_db
def test_transition__sets_fields_with_the_status(make_action: MakeAction) -> None:
    action = make_action(Status.RUNNING)
    finished = timezone.now()
    transition(
        action,
        Status.SUCCEEDED,
        actor="system:worker",
        data={"result": {"refund_id": "R-1"}},
        result={"refund_id": "R-1"},
        finished_at=finished,
    )
    stored = Action.objects.get(pk=action.pk)
    assert (stored.status, stored.result, stored.finished_at) == (
        Status.SUCCEEDED,
        {"refund_id": "R-1"},
        finished,
    )
    assert verbs_of(action.pk) == ["action.succeeded"]


@pytest.mark.django_db
def test_transition__stale_copy__refused_with_status_found(make_action: MakeAction) -> None:
    # Given a worker's copy of a queued action, and on-call cancelling it meanwhile
    action = make_action(Status.QUEUED)
    stale = Action.objects.get(pk=action.pk)
    transition(action, Status.CANCELLED, actor="system:drain")
    # When the worker tries to claim its stale copy
    with pytest.raises(IllegalTransition) as refused:
        transition(stale, Status.RUNNING, actor="system:worker")
    # Then the database, not the copy, decides: it is told what the action really is
    assert refused.value.current == Status.CANCELLED
    assert Action.objects.get(pk=action.pk).status == Status.CANCELLED
    assert verbs_of(action.pk) == ["action.cancelled"]


@pytest.mark.django_db
def test_transition__also_condition_false__refused_unchanged(make_action: MakeAction) -> None:
    # The extra condition is part of the same UPDATE (execution uses it for kill switches).
    action = make_action(Status.QUEUED)
    with pytest.raises(IllegalTransition) as refused:
        transition(action, Status.RUNNING, actor="system:worker", also=Q(subject="order:9"))
    assert refused.value.current == Status.QUEUED
    assert Action.objects.get(pk=action.pk).status == Status.QUEUED
    assert verbs_of(action.pk) == []


@pytest.mark.django_db
def test_transition__missing_action__refused_as_missing(make_action: MakeAction) -> None:
    action = make_action(Status.QUEUED)
    Action.objects.filter(pk=action.pk).delete()
    with pytest.raises(IllegalTransition) as refused:
        transition(action, Status.RUNNING, actor="system:worker")
    assert refused.value.current == "missing"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_transition__two_concurrent_claims__exactly_one_wins(
    make_action: MakeAction, round_: int
) -> None:
    # Given a queued action and two workers, each with its own copy of it
    action = make_action(Status.QUEUED)

    def claim(worker: int) -> str:
        copy = Action.objects.get(pk=action.pk)
        try:
            transition(
                copy,
                Status.RUNNING,
                actor=f"system:worker-{worker}",
                started_at=timezone.now() + timedelta(microseconds=worker),
            )
        except IllegalTransition as lost:
            return f"lost to {lost.current}"
        return "won"

    # When both claim it at the same moment
    outcomes = at_once(2, claim)
    # Then one wins, the other finds it running; it started once, audited once
    assert sorted(outcomes) == ["lost to running", "won"]
    assert Action.objects.get(pk=action.pk).status == Status.RUNNING
    events = AuditEvent.objects.filter(target_type="actions.action", target_id=str(action.pk))
    assert [event.verb for event in events] == ["action.running"]
    winner = outcomes.index("won")
    assert events.get().actor == f"system:worker-{winner}"
    assert audit_verify().intact
