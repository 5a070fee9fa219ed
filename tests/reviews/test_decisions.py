"""Deciding review items: approve, edit and approve, reject; who may decide; the two-approver
rule of the red zone; the feedback each decision leaves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User

from apps.actions.models import Status
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.books.models import BookVersion
from apps.books.services import book_publish, draft_create, draft_update
from apps.registry.models import Agent
from apps.registry.services import IssuedKey
from apps.reviews.models import Kind, ReviewDecision, State, Verdict
from apps.reviews.services import (
    DecisionInput,
    ReviewConflict,
    ReviewForbidden,
    ReviewInvalid,
    review_claim,
    review_decide,
    review_unclaim,
)
from tests.actions.conftest import refund_params
from tests.announced import Announced
from tests.factories import REFUND_CONTROLS
from tests.reviews.conftest import hold, reload

pytestmark = pytest.mark.django_db

APPROVE = DecisionInput(verdict=Verdict.APPROVE, reason_code="within-policy")
REJECT = DecisionInput(verdict=Verdict.REJECT, reason_code="insufficient-evidence")


def test_hold__action_held_by_the_book__item_opened_with_the_books_sla(
    book: BookVersion, key: IssuedKey
) -> None:
    item = hold(key)
    assert item.kind == Kind.HOLD
    assert item.state == State.OPEN
    assert item.zone == "yellow"
    assert item.approvals_required == 1
    assert item.workflow_id == book.workflow_id
    assert item.deadline - item.created_at == timedelta(minutes=book.sla_minutes)
    assert item.expires_at > item.deadline
    assert AuditEvent.objects.filter(verb="review.opened", target_id=str(item.pk)).count() == 1


def test_review_decide__approve__action_queued_at_once(
    book: BookVersion,
    key: IssuedKey,
    alice: User,
    enqueued: Announced,
    django_capture_on_commit_callbacks: Any,
) -> None:
    item = hold(key)
    with django_capture_on_commit_callbacks(execute=True):
        result = review_decide(item_id=item.pk, user=alice, given=APPROVE)
    action = reload(item.action)
    assert result.final
    assert action.status == Status.QUEUED
    assert enqueued.ids() == [str(action.pk)]
    item.refresh_from_db()
    assert (item.state, item.outcome) == (State.DECIDED, Verdict.APPROVE)
    assert item.closed_at is not None
    assert item.claimed_by == alice
    assert audit_verify().intact


def test_review_decide__reject__action_rejected_and_nothing_runs(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced
) -> None:
    item = hold(key)
    review_decide(item_id=item.pk, user=alice, given=REJECT)
    assert reload(item.action).status == Status.REJECTED
    assert enqueued.ids() == []


def test_review_decide__edit_approve__edited_params_run_and_diff_recorded(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced
) -> None:
    item = hold(key, amount_cents=12_000)
    edited = refund_params(amount_cents=9_000)
    review_decide(
        item_id=item.pk,
        user=alice,
        given=DecisionInput(verdict=Verdict.EDIT_APPROVE, reason_code="verified", params=edited),
    )
    action = reload(item.action)
    assert action.params == edited
    assert action.status == Status.QUEUED
    decision = ReviewDecision.objects.get(item=item)
    assert decision.diff == [{"field": "params.amount_cents", "before": 12_000, "after": 9_000}]
    assert decision.context["params"]["amount_cents"] == 12_000  # what the person saw
    assert decision.params_after == edited


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (refund_params(amount_cents=0), "params.amount_cents"),
        (refund_params(amount_cents="lots"), "params.amount_cents"),
        ({**refund_params(), "extra": 1}, "params.extra"),
        ({"order_id": "1042", "currency": "EUR", "reason": "x"}, "params.amount_cents"),
    ],
)
def test_review_decide__edit_the_tool_refuses__invalid_and_nothing_changed(
    book: BookVersion, key: IssuedKey, alice: User, params: dict[str, object], field: str
) -> None:
    item = hold(key)
    before = reload(item.action).params
    with pytest.raises(ReviewInvalid) as refused:
        review_decide(
            item_id=item.pk,
            user=alice,
            given=DecisionInput(
                verdict=Verdict.EDIT_APPROVE, reason_code="verified", params=params
            ),
        )
    assert refused.value.errors[0][0] == field
    assert reload(item.action).params == before
    assert reload(item.action).status == Status.PENDING_REVIEW
    assert not ReviewDecision.objects.exists()


@pytest.mark.parametrize(
    ("given", "field"),
    [
        (DecisionInput(verdict=Verdict.APPROVE, reason_code=""), "reason_code"),
        (DecisionInput(verdict=Verdict.APPROVE, reason_code="wrong-amount"), "reason_code"),
        (
            DecisionInput(verdict=Verdict.REJECT, reason_code="other", reason_text="  "),
            "reason_text",
        ),
        (
            DecisionInput(verdict=Verdict.REJECT, reason_code="other", reason_text="x" * 2001),
            "reason_text",
        ),
        (DecisionInput(verdict="maybe", reason_code="other"), "verdict"),
    ],
)
def test_review_decide__reason_missing_or_invalid__invalid_naming_the_field(
    book: BookVersion, key: IssuedKey, alice: User, given: DecisionInput, field: str
) -> None:
    item = hold(key)
    with pytest.raises(ReviewInvalid) as refused:
        review_decide(item_id=item.pk, user=alice, given=given)
    assert refused.value.field == field
    assert reload(item.action).status == Status.PENDING_REVIEW


def test_review_decide__other_with_words__reason_text_recorded(
    book: BookVersion, key: IssuedKey, alice: User
) -> None:
    item = hold(key)
    given = DecisionInput(
        verdict=Verdict.REJECT, reason_code="other", reason_text="Customer withdrew"
    )
    review_decide(item_id=item.pk, user=alice, given=given)
    assert ReviewDecision.objects.get(item=item).reason_text == "Customer withdrew"


def test_review_decide__by_the_agents_owner__forbidden(
    book: BookVersion, key: IssuedKey, alice: User, agent: Agent
) -> None:
    agent.owner = alice
    agent.save()
    item = hold(key)
    with pytest.raises(ReviewForbidden, match="You own refund-bot"):
        review_decide(item_id=item.pk, user=alice, given=APPROVE)
    assert reload(item.action).status == Status.PENDING_REVIEW


def test_review_decide__item_already_decided__conflict_naming_the_decision(
    book: BookVersion, key: IssuedKey, alice: User, frank: User
) -> None:
    item = hold(key)
    review_decide(item_id=item.pk, user=alice, given=REJECT)
    with pytest.raises(ReviewConflict, match="Already decided: reject by alice"):
        review_decide(item_id=item.pk, user=frank, given=APPROVE)
    assert reload(item.action).status == Status.REJECTED
    assert ReviewDecision.objects.filter(item=item).count() == 1


def test_review_claim__claimed_by_another__claim_decide_and_unclaim_refused(
    book: BookVersion, key: IssuedKey, alice: User, frank: User
) -> None:
    item = hold(key)
    review_claim(item_id=item.pk, user=alice)
    with pytest.raises(ReviewConflict, match="Already claimed by alice"):
        review_claim(item_id=item.pk, user=frank)
    with pytest.raises(ReviewConflict, match="Claimed by alice"):
        review_decide(item_id=item.pk, user=frank, given=APPROVE)
    with pytest.raises(ReviewConflict, match="not claimed"):
        review_unclaim(item_id=item.pk, user=frank)
    review_unclaim(item_id=item.pk, user=alice)
    review_claim(item_id=item.pk, user=frank)
    review_decide(item_id=item.pk, user=frank, given=APPROVE)
    item.refresh_from_db()
    assert item.claimed_by == frank
    assert item.outcome == Verdict.APPROVE


@pytest.fixture
def red_book(book: BookVersion, risk_user: User) -> BookVersion:
    """Version 2 of the refunds book: issue_refund is red zone, two approvers."""
    draft = draft_create(workflow=book.workflow, user=risk_user)
    tools = [{**REFUND_CONTROLS["tools"][0], "risk_zone": "red"}]
    draft_update(
        version_id=draft.pk,
        user=risk_user,
        values={**REFUND_CONTROLS, "tools": tools, "escalation_owner_id": risk_user.pk},
    )
    return book_publish(version_id=draft.pk, user=risk_user, change_note="red refunds")


def test_review_decide__red_zone_item__needs_two_different_approvers(
    red_book: BookVersion, key: IssuedKey, alice: User, frank: User, enqueued: Announced
) -> None:
    item = hold(key, amount_cents=3_000)  # red zone: held whatever the amount
    assert (item.zone, item.approvals_required) == ("red", 2)

    first = review_decide(item_id=item.pk, user=alice, given=APPROVE)
    assert not first.final
    assert "Approval 1 of 2" in first.messages[0]
    item.refresh_from_db()
    assert item.state == State.OPEN
    assert item.claimed_by is None
    assert reload(item.action).status == Status.PENDING_REVIEW
    assert enqueued.ids() == []

    with pytest.raises(ReviewForbidden, match="second, different person"):
        review_decide(item_id=item.pk, user=alice, given=APPROVE)

    second = review_decide(item_id=item.pk, user=frank, given=APPROVE)
    assert second.final
    assert reload(item.action).status == Status.QUEUED
    assert [d.user for d in ReviewDecision.objects.filter(item=item)] == [alice, frank]
    assert [d.final for d in ReviewDecision.objects.filter(item=item)] == [False, True]


def test_review_decide__red_zone_item_rejected_once__action_rejected(
    red_book: BookVersion, key: IssuedKey, alice: User, frank: User
) -> None:
    item = hold(key, amount_cents=3_000)
    review_decide(item_id=item.pk, user=alice, given=APPROVE)
    review_decide(item_id=item.pk, user=frank, given=REJECT)
    assert reload(item.action).status == Status.REJECTED


def test_review_decide__claimed_then_rejected__audited_in_an_intact_chain(
    book: BookVersion, key: IssuedKey, alice: User
) -> None:
    item = hold(key)
    review_claim(item_id=item.pk, user=alice)
    review_decide(item_id=item.pk, user=alice, given=REJECT)
    verbs = list(
        AuditEvent.objects.filter(target_id=str(item.pk), target_type="reviews.reviewitem")
        .order_by("sequence")
        .values_list("verb", flat=True)
    )
    assert verbs == ["review.opened", "review.claimed", "review.reject"]
    assert audit_verify().intact


def test_queue_tally__items_opened_and_closed__matches_the_open_items(
    book: BookVersion, key: IssuedKey, alice: User
) -> None:
    from apps.reviews.items import queue_tally_rebuild, review_withdraw
    from apps.reviews.models import QueueTally, ReviewItem
    from apps.reviews.services import reviews_sweep

    def tally() -> int:
        return QueueTally.objects.get(workflow=book.workflow).open

    def counted() -> int:
        return ReviewItem.objects.filter(state=State.OPEN, workflow=book.workflow).count()

    items = [hold(key, amount_cents=6_000 + i, idempotency_key=f"t{i}") for i in range(5)]
    assert tally() == counted() == 5
    review_decide(item_id=items[0].pk, user=alice, given=APPROVE)
    review_decide(item_id=items[1].pk, user=alice, given=REJECT)
    review_withdraw(items[2].action, actor="system:test", note="drained")
    reviews_sweep(now=items[3].expires_at + timedelta(seconds=1))  # expires 3 and 4
    assert tally() == counted() == 0
    hold(key, amount_cents=7_000, idempotency_key="again")
    assert tally() == counted() == 1
    QueueTally.objects.update(open=99)  # drifted, say by a bulk load
    assert queue_tally_rebuild() == {book.workflow_id: 1}
    assert tally() == 1
