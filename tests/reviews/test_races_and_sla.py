"""Two supervisors deciding at once (real PostgreSQL, committed transactions), and the SLA
sweep: overdue items escalate once, stale items expire and never run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.actions.models import Status
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.registry.services import IssuedKey
from apps.reviews.models import ReviewDecision, State, Verdict
from apps.reviews.services import DecisionInput, ReviewConflict, review_decide, reviews_sweep
from tests.announced import Announced
from tests.concurrency import at_once
from tests.conftest import make_user
from tests.reviews.conftest import hold, reload

APPROVE = DecisionInput(verdict=Verdict.APPROVE, reason_code="within-policy")
REJECT = DecisionInput(verdict=Verdict.REJECT, reason_code="duplicate")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(3))
def test_review_decide__two_supervisors_at_once__exactly_one_wins(
    book: BookVersion, key: IssuedKey, alice: User, frank: User, enqueued: Announced, rounds: int
) -> None:
    item = hold(key)
    people = [alice, frank]
    verdicts = [APPROVE, REJECT]

    def decide(index: int) -> str:
        try:
            review_decide(item_id=item.pk, user=people[index], given=verdicts[index])
        except ReviewConflict as conflict:
            return f"conflict: {conflict.message}"
        return "won"

    outcomes = at_once(2, decide)
    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "won"]
    assert "Already decided" in next(o for o in outcomes if o.startswith("conflict"))
    winner = people[outcomes.index("won")]
    decisions = list(ReviewDecision.objects.filter(item=item))
    assert [d.user for d in decisions] == [winner]
    status = reload(item.action).status
    assert status == (Status.QUEUED if winner == alice else Status.REJECTED)
    assert enqueued.ids() == ([str(item.action_id)] if winner == alice else [])


@pytest.mark.django_db(transaction=True)
def test_review_decide__four_supervisors_on_a_red_item__exactly_two_approvals(
    book: BookVersion, key: IssuedKey, enqueued: Announced, risk_user: User
) -> None:
    from apps.books.services import book_publish, draft_create, draft_update
    from tests.factories import REFUND_CONTROLS

    draft = draft_create(workflow=book.workflow, user=risk_user)
    tools = [{**REFUND_CONTROLS["tools"][0], "risk_zone": "red"}]
    values = {**REFUND_CONTROLS, "tools": tools, "escalation_owner_id": risk_user.pk}
    draft_update(version_id=draft.pk, user=risk_user, values=values)
    book_publish(version_id=draft.pk, user=risk_user, change_note="red")
    item = hold(key, amount_cents=3_000)
    people = [make_user(None, f"sup{i}") for i in range(4)]

    def decide(index: int) -> str:
        try:
            return (
                "final"
                if review_decide(item_id=item.pk, user=people[index], given=APPROVE).final
                else "first"
            )
        except ReviewConflict:
            return "conflict"

    outcomes = at_once(4, decide)
    assert sorted(outcomes) == ["conflict", "conflict", "final", "first"]
    assert ReviewDecision.objects.filter(item=item).count() == 2
    assert reload(item.action).status == Status.QUEUED
    assert enqueued.ids() == [str(item.action_id)]


@pytest.mark.django_db
def test_reviews_sweep__overdue_item__escalated_to_the_owner_once(
    book: BookVersion, key: IssuedKey, risk_user: User
) -> None:
    item = hold(key)
    assert reviews_sweep(now=item.deadline - timedelta(seconds=1)).escalated == []
    later = item.deadline + timedelta(seconds=1)
    assert reviews_sweep(now=later).escalated == [item.pk]
    assert reviews_sweep(now=later + timedelta(minutes=5)).escalated == []
    item.refresh_from_db()
    assert item.escalated_to == risk_user
    assert item.escalated_at == later
    assert item.state == State.OPEN
    assert reload(item.action).status == Status.PENDING_REVIEW
    escalations = AuditEvent.objects.filter(verb="review.escalated", target_id=str(item.pk))
    assert escalations.count() == 1


@pytest.mark.django_db
def test_reviews_sweep__past_expiry__expired_never_approved(
    book: BookVersion, key: IssuedKey, enqueued: Announced, alice: User
) -> None:
    item = hold(key)
    report = reviews_sweep(now=item.expires_at + timedelta(seconds=1))
    assert report.expired == [item.pk]
    assert report.escalated == [item.pk]  # overdue first, then expired, in one sweep
    item.refresh_from_db()
    assert item.state == State.EXPIRED
    assert reload(item.action).status == Status.EXPIRED
    assert enqueued.ids() == []
    with pytest.raises(ReviewConflict, match="expired before anyone decided"):
        review_decide(item_id=item.pk, user=alice, given=APPROVE)


@pytest.mark.django_db
def test_reviews_sweep__fresh_item__left_alone(book: BookVersion, key: IssuedKey) -> None:
    item = hold(key)
    report = reviews_sweep(now=timezone.now())
    assert (report.escalated, report.expired) == ([], [])
    item.refresh_from_db()
    assert item.escalated_at is None


@pytest.mark.django_db
def test_sweep_reviews__scheduled__runs_the_sweep(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["review-sla"]
    assert entry["task"] == "reviews.sweep"
    from apps.reviews.tasks import sweep_reviews

    assert sweep_reviews.name == "reviews.sweep"
    assert sweep_reviews() == {"escalated": 0, "expired": 0}
