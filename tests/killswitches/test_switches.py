"""Engaging and releasing switches: audited, blocking new proposals, holding queued work back
at the claim, proving it, and resuming on release."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from apps.actions.execution import action_execute
from apps.actions.models import Action, Status
from apps.actions.requeue import actions_requeue
from apps.actions.states import transition
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.killswitches.models import KillSwitch
from apps.killswitches.proof import switch_proof
from apps.killswitches.switches import (
    SwitchConflict,
    SwitchInvalid,
    switch_engage,
    switch_release,
)
from tests.announced import Announced
from tests.killswitches.conftest import Desk, executed, propose

pytestmark = pytest.mark.django_db


def engage_agent(reason: str = "refund loop on order 1042") -> KillSwitch:
    return switch_engage(
        scope="agent", target="refund-bot", reason=reason, actor="dana", via="command"
    )


def test_engage__agent_scope__audited_with_database_time(desk: Desk) -> None:
    # When on-call stops refund-bot
    switch = engage_agent()
    # Then the switch is engaged, stamped by the database's clock, and the engage is audited
    assert switch.engaged
    assert switch.kind == KillSwitch.Kind.MANUAL
    assert switch.engaged_at is not None
    event = AuditEvent.objects.get(verb="killswitch.engaged", target_id=str(switch.pk))
    assert event.payload["scope"] == "agent"
    assert event.payload["target"] == "refund-bot"
    assert event.payload["reason"] == "refund loop on order 1042"
    assert event.payload["via"] == "command"
    assert audit_verify().intact


def test_engage__then_proposal__blocked_with_the_switch_as_reason(desk: Desk) -> None:
    engage_agent()
    action = propose(desk)
    assert action.status == Status.BLOCKED
    assert action.reasons == [
        {"policy": "kill-switch:agent", "message": "Stopped by on-call: refund loop on order 1042"}
    ]


def test_engage__queued_before__refused_at_the_claim_and_kept(desk: Desk) -> None:
    # Given an allowed refund waiting for a worker
    action = propose(desk)
    assert action.status == Status.QUEUED
    # When refund-bot is stopped and a worker then picks the action up
    switch = engage_agent()
    outcome = action_execute(action_id=action.pk)
    # Then it is not started: still queued, no start time, nothing called
    assert outcome.note == "held by a kill switch"
    action.refresh_from_db()
    assert action.status == Status.QUEUED
    assert action.started_at is None
    assert switch_proof(switch).held_back == 1


@pytest.mark.parametrize(
    ("scope", "target"),
    [("global", ""), ("workflow", "refunds"), ("tool", "issue_refund"), ("agent", "refund-bot")],
)
def test_engage__each_scope_covering_the_action__claim_refused(
    desk: Desk, scope: str, target: str
) -> None:
    action = propose(desk)
    switch_engage(scope=scope, target=target, reason="stop", actor="dana", via="api")
    action_execute(action_id=action.pk)
    assert Action.objects.get(pk=action.pk).status == Status.QUEUED


def test_engage__other_tool__claim_not_refused(desk: Desk) -> None:
    action = propose(desk)
    switch_engage(scope="tool", target="close_ticket", reason="stop", actor="dana", via="api")
    action_execute(action_id=action.pk)
    action.refresh_from_db()
    assert action.status == Status.SUCCEEDED
    assert action.started_at is not None


def test_engage__same_scope_twice__refused_naming_the_first(desk: Desk) -> None:
    first = engage_agent()
    with pytest.raises(SwitchConflict, match=f"already stopped \\(switch {first.pk}"):
        engage_agent("again")
    assert KillSwitch.objects.filter(released_at__isnull=True).count() == 1


@pytest.mark.parametrize(
    ("scope", "target", "reason", "field", "message"),
    [
        ("planet", "", "x", "scope", "unknown scope 'planet'"),
        ("agent", "ghost-bot", "x", "target", "no agent 'ghost-bot' is registered"),
        ("agent", "", "x", "target", "needs the agent's slug"),
        ("global", "refund-bot", "x", "target", "a global switch has no target"),
        ("agent", "refund-bot", "  ", "reason", "say why"),
    ],
)
def test_engage__bad_input__refused_naming_the_field(
    desk: Desk, scope: str, target: str, reason: str, field: str, message: str
) -> None:
    with pytest.raises(SwitchInvalid) as refused:
        switch_engage(scope=scope, target=target, reason=reason, actor="dana", via="api")
    assert refused.value.field == field
    assert message in refused.value.message
    assert not KillSwitch.objects.exists()


def test_release__then_held_work_runs_and_new_proposals_allowed(
    desk: Desk, enqueued: Announced
) -> None:
    # Given refund-bot stopped with one refund held back at the claim and one blocked
    queued = propose(desk)
    switch = engage_agent()
    action_execute(action_id=queued.pk)
    assert propose(desk, order_id="1043").status == Status.BLOCKED
    enqueued.clear()

    # When on-call releases the switch
    released = switch_release(
        switch_id=switch.pk, reason="loop fixed in v2.3", actor="dana", via="api"
    )

    # Then it is released (audited) and the held-back refund is announced to the workers again
    assert released.switch.released_at is not None
    assert released.switch.release_reason == "loop fixed in v2.3"
    assert released.resumed == 1
    assert enqueued.ids() == [str(queued.pk)]
    assert AuditEvent.objects.filter(verb="killswitch.released").count() == 1
    # ... where it now runs, and new proposals are allowed again
    action_execute(action_id=queued.pk)
    assert Action.objects.get(pk=queued.pk).status == Status.SUCCEEDED
    assert propose(desk, order_id="1044").status == Status.QUEUED
    # And a second release is refused
    with pytest.raises(SwitchConflict, match="already released"):
        switch_release(switch_id=switch.pk, reason="again", actor="dana", via="api")


def test_release__no_worker_hears__held_work_left_for_the_sweep(
    desk: Desk, enqueued: Announced, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given refund-bot stopped with two refunds held back, and no worker listening
    held = [propose(desk), propose(desk, order_id="1043")]
    switch = engage_agent()
    enqueued.clear()
    # When on-call releases the switch
    released = switch_release(switch_id=switch.pk, reason="fixed", actor="dana", via="api")
    # Then the release stands, both are announced once, and both stay queued
    assert released.switch.released_at is not None
    assert sorted(enqueued.ids()) == sorted(str(a.pk) for a in held)
    statuses = set(Action.objects.filter(pk__in=[a.pk for a in held]).values_list("status"))
    assert statuses == {(Status.QUEUED,)}
    # ... where the requeue sweep finds them once they are stale and sends them through the broker
    later = timezone.now() + timedelta(seconds=120)
    sent: list[str] = []
    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", sent.append)
    assert actions_requeue(later).sent == 2
    assert sorted(sent) == sorted(str(a.pk) for a in held)


def test_proof__running_at_engage_started_after_and_blocked(desk: Desk) -> None:
    # Given a refund already running when refund-bot is stopped
    running = propose(desk)
    transition(running, Status.RUNNING, actor="system:worker", started_at=Now())
    switch = engage_agent()
    # ... which then ends, and two proposals blocked since
    transition(running, Status.FAILED, actor="system:worker", error="503")
    propose(desk, order_id="1043")
    propose(desk, order_id="1044")
    held = propose(desk, order_id="1045")  # blocked too: the switch is engaged

    proof = switch_proof(switch)

    assert proof.running_at_engage_count == 1
    assert proof.running_at_engage[0].action_id == str(running.pk)
    assert proof.running_at_engage[0].status == Status.FAILED
    assert proof.started_after == 0
    assert proof.holds
    assert proof.blocked_since == 3
    assert held.status == Status.BLOCKED
    document = proof.as_dict()
    assert document["started_after_engage"] == 0
    assert document["running_at_engage"]["actions"][0]["status"] == "failed"


def test_proof__an_action_started_after_engage__reported_as_broken(desk: Desk) -> None:
    # The proof counts what the database says, so a start after T cannot go unnoticed.
    action = propose(desk)
    switch = engage_agent()
    Action.objects.filter(pk=action.pk).update(
        status=Status.RUNNING, started_at=switch.engaged_at + timedelta(milliseconds=1)
    )
    proof = switch_proof(switch)
    assert proof.started_after == 1
    assert proof.started_after_ids == [str(action.pk)]
    assert not proof.holds


def test_proof__after_release__window_ends_at_release(desk: Desk) -> None:
    switch = engage_agent()
    released = switch_release(switch_id=switch.pk, reason="fixed", actor="dana", via="api")
    executed(desk)  # runs after the release: allowed
    proof = switch_proof(released.switch)
    assert proof.started_after == 0
    assert proof.until == released.switch.released_at
