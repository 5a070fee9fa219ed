"""The review items of actions, as the rest of the product opens and moves them: opening an
item for a held, failed or spot-checked action, withdrawing it, handing it to the escalation
owner, and the per-queue count of open items. People's decisions on items are in
apps/reviews/services.py; this module needs only the action and the audit trail, so that the
gate, the workers, drains and hosted runs can open items without reaching up to decisions."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from apps.actions.models import Action
from apps.actions.states import Actor
from apps.audit.services import audit_record
from apps.books.compilation import zone_of
from apps.reviews.models import Kind, QueueTally, ReviewItem, State


def queue_tally_move(workflow_id: int, change: int) -> None:
    """Move the open count of a queue, in the caller's transaction."""
    if change > 0:
        QueueTally.objects.bulk_create(
            [QueueTally(workflow_id=workflow_id, open=0)], ignore_conflicts=True
        )
    QueueTally.objects.filter(workflow_id=workflow_id).update(open=F("open") + change)


def item_close(item: ReviewItem, state: str, at: datetime, *fields: str) -> None:
    """Take an open item out of the queue (decided, expired or withdrawn)."""
    item.state, item.closed_at = state, at
    item.save(update_fields=["state", "closed_at", *fields])
    queue_tally_move(item.workflow_id, -1)


def queue_tally_rebuild() -> dict[int, int]:
    """Recount every queue from the items themselves (after a bulk load, or to check)."""
    with transaction.atomic():
        counts = dict(
            ReviewItem.objects.filter(state=State.OPEN)
            .values("workflow_id")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("workflow_id", "n")
        )
        QueueTally.objects.exclude(workflow_id__in=counts).delete()
        for workflow_id, count in counts.items():
            QueueTally.objects.update_or_create(workflow_id=workflow_id, defaults={"open": count})
    return counts


def _expiry_after_deadline() -> timedelta:
    return timedelta(minutes=int(getattr(settings, "REVIEW_EXPIRE_AFTER_MINUTES", 24 * 60)))


def review_open(
    action: Action,
    kind: str,
    *,
    error: str = "",
    escalate: bool = False,
    actor: Actor = "system:gate",
    at: datetime | None = None,
) -> ReviewItem:
    """Open the review item of `action` (inside the caller's transaction); `escalate` puts it
    in the hands of the action's escalation owner at once."""
    escalate_to_id = action.escalation_owner_id if escalate else None
    now = at or timezone.now()
    version = action.book_version
    zone = zone_of(version, action.tool.slug, action.tool.risk_zone) if version else "yellow"
    sla = timedelta(minutes=version.sla_minutes if version else 60)
    two = kind == Kind.HOLD and zone == "red" and (version is None or version.red_two_approvers)
    item = ReviewItem.objects.create(
        action=action,
        workflow_id=action.workflow_id,
        kind=kind,
        zone=zone,
        approvals_required=2 if two else 1,
        error=error,
        created_at=now,
        deadline=now + sla,
        expires_at=now + sla + _expiry_after_deadline(),
        escalated_to_id=escalate_to_id,
        escalated_at=now if escalate_to_id else None,
    )
    queue_tally_move(action.workflow_id, +1)
    audit_record(
        actor=actor,
        verb="review.opened",
        target=item,
        subject=action.subject,
        data={
            "action": str(action.pk),
            "kind": kind,
            "zone": zone,
            "deadline": item.deadline.isoformat(),
            "approvals_required": item.approvals_required,
            "escalated_to": escalate_to_id,
        },
    )
    return item


def review_withdraw(action: Action, *, actor: Actor, note: str) -> int:
    """Close the open item of an action that no longer needs a person (drained, say)."""
    now = timezone.now()
    count = 0
    for item in ReviewItem.objects.select_for_update().filter(action=action, state=State.OPEN):
        item_close(item, State.WITHDRAWN, now)
        audit_record(
            actor=actor,
            verb="review.withdrawn",
            target=item,
            subject=action.subject,
            data={"note": note},
        )
        count += 1
    return count


def review_hand_over(
    action: Action, *, to_user_id: int | None, actor: Actor, note: str
) -> ReviewItem | None:
    """Put the open item of `action` in its escalation owner's hands (marked escalated)."""
    item = ReviewItem.objects.select_for_update().filter(action=action, state=State.OPEN).first()
    if item is None:
        return None
    item_escalate(item, to_user_id=to_user_id, actor=actor, note=note, at=timezone.now())
    return item


def item_escalate(
    item: ReviewItem, *, to_user_id: int | None, actor: Actor, note: str, at: datetime
) -> None:
    item.escalated_at, item.escalated_to_id = at, to_user_id
    item.claimed_by, item.claimed_at = None, None
    item.save(update_fields=["escalated_at", "escalated_to", "claimed_by", "claimed_at"])
    audit_record(
        actor=actor,
        verb="review.escalated",
        target=item,
        subject=item.action.subject,
        data={"to": to_user_id, "note": note},
    )
