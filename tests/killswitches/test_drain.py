"""Draining a scope: queued and held work cancelled, or handed to the escalation owner, with a
report naming each action and what happened to it."""

from __future__ import annotations

import pytest

from apps.actions.execution import action_execute
from apps.actions.models import Action, Status
from apps.killswitches.drain import drain_run
from apps.killswitches.models import DrainRun
from apps.killswitches.switches import SwitchInvalid, switch_engage
from apps.reviews.models import Kind, ReviewItem, State
from tests.killswitches.conftest import Desk, executed, propose

pytestmark = pytest.mark.django_db


def stopped_with_work(desk: Desk) -> tuple[Action, Action, Action]:
    """refund-bot with one refund queued (held back by its switch), one held for review (above
    the 50.00 EUR review cap) and one that already ran."""
    done = executed(desk, order_id="1040")
    queued = propose(desk, order_id="1041")
    held = propose(desk, amount_cents=30_000, order_id="1042")
    assert (queued.status, held.status) == (Status.QUEUED, Status.PENDING_REVIEW)
    switch_engage(scope="agent", target="refund-bot", reason="loop", actor="dana", via="api")
    return queued, held, done


def test_drain__cancel__queued_and_held_cancelled_item_withdrawn(desk: Desk) -> None:
    # Given refund-bot stopped with a queued and a held refund
    queued, held, done = stopped_with_work(desk)

    # When on-call drains it, cancelling
    run = drain_run(
        scope="agent", target="refund-bot", mode="cancel", reason="bad model", actor="dana"
    )

    # Then both are cancelled, the held one's review item withdrawn, the finished one untouched
    assert Action.objects.get(pk=queued.pk).status == Status.CANCELLED
    assert Action.objects.get(pk=held.pk).status == Status.CANCELLED
    assert Action.objects.get(pk=done.pk).status == Status.SUCCEEDED
    assert ReviewItem.objects.get(action=held).state == State.WITHDRAWN
    # ... and the report names each, in the order they were proposed
    assert [(e["action"], e["was"], e["outcome"]) for e in run.report] == [
        (str(queued.pk), "queued", "cancelled"),
        (str(held.pk), "pending_review", "cancelled"),
    ]
    assert DrainRun.objects.get().finished_at is not None
    # And a cancelled action can never be claimed
    action_execute(action_id=queued.pk)
    assert Action.objects.get(pk=queued.pk).started_at is None


def test_drain__hand_over__held_escalated_queued_becomes_fallback(desk: Desk) -> None:
    queued, held, _ = stopped_with_work(desk)

    run = drain_run(
        scope="agent", target="refund-bot", mode="hand_over", reason="bad model", actor="dana"
    )

    # The held refund stays held, its item now in the escalation owner's hands
    assert Action.objects.get(pk=held.pk).status == Status.PENDING_REVIEW
    item = ReviewItem.objects.get(action=held)
    assert item.state == State.OPEN
    assert item.escalated_to == desk.owner
    assert item.escalated_at is not None
    # The queued refund is cancelled and becomes a fallback item for the owner, with the reason
    assert Action.objects.get(pk=queued.pk).status == Status.CANCELLED
    fallback = ReviewItem.objects.get(action=queued)
    assert fallback.kind == Kind.FALLBACK
    assert fallback.escalated_to == desk.owner
    assert fallback.error == "drained by on-call: bad model"
    assert {e["action"]: e["outcome"] for e in run.report} == {
        str(queued.pk): "handed_over",
        str(held.pk): "handed_over",
    }
    assert all("bob, the escalation owner" in e["detail"] for e in run.report)


def test_drain__other_scope__untouched(desk: Desk) -> None:
    queued = propose(desk)
    run = drain_run(
        scope="tool", target="close_ticket", mode="cancel", reason="broken", actor="dana"
    )
    assert run.report == []
    assert Action.objects.get(pk=queued.pk).status == Status.QUEUED


def test_drain__unknown_mode__refused_naming_the_field(desk: Desk) -> None:
    with pytest.raises(SwitchInvalid) as refused:
        drain_run(scope="agent", target="refund-bot", mode="shred", reason="x", actor="dana")
    assert refused.value.field == "mode"
    assert not DrainRun.objects.exists()
