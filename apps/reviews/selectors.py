"""Reading the review queue: the page of items, the counts per queue, an item's story."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet

from apps.actions.models import Action
from apps.reviews.models import Kind, QueueTally, ReviewDecision, ReviewItem, State

# The queue's age filter: older than this many minutes.
AGES = {"15m": 15, "1h": 60, "4h": 240, "1d": 1440}

PAGE_SIZE = 50
QUEUE_ROW_FIELDS = (
    "kind",
    "zone",
    "deadline",
    "created_at",
    "approvals_required",
    "escalated_at",
    "workflow__slug",
    "action__subject",
    "action__params",
    "action__status",
    "action__agent__slug",
    "action__tool__slug",
    "action__tool__amount_param",
    "action__book_version__currency",
    "claimed_by__username",
    "escalated_to__username",
)
_KINDS = dict(Kind.choices)


@dataclass(frozen=True)
class QueueCount:
    workflow_id: int
    slug: str
    name: str
    open: int
    overdue: int


@dataclass(frozen=True)
class QueueRow:
    """One line of the queue, formatted once here rather than looked up field by field in
    the template (fifty rows of dotted lookups cost more than the queries)."""

    pk: int
    due: str
    overdue: bool
    workflow: str
    what: str
    kind: str
    amount: str
    zone: str
    agent: str
    claimed_by: str
    escalated: bool
    escalated_to: str
    approvals_required: int


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueRow]
    page: int
    has_next: bool


def due_text(deadline: datetime, now: datetime) -> str:
    """ "in 12 min", "3 h 5 min overdue"."""
    seconds = int((deadline - now).total_seconds())
    minutes = abs(seconds) // 60
    hours, rest = divmod(minutes, 60)
    span = f"{hours} h {rest} min" if hours else f"{rest} min"
    return f"{span} overdue" if seconds < 0 else f"in {span}"


def _row(values: dict[str, Any], now: datetime) -> QueueRow:
    subject, tool = values["action__subject"], values["action__tool__slug"]
    return QueueRow(
        pk=values["pk"],
        due=due_text(values["deadline"], now),
        overdue=values["deadline"] < now,
        workflow=values["workflow__slug"],
        what=f"{tool} · {subject}" if subject else tool,
        kind=str(_KINDS.get(values["kind"], values["kind"])),
        amount=amount_text(
            values["action__params"],
            values["action__tool__amount_param"],
            values["action__book_version__currency"] or "",
        ),
        zone=values["zone"],
        agent=values["action__agent__slug"],
        claimed_by=values["claimed_by__username"] or "",
        escalated=values["escalated_at"] is not None,
        escalated_to=values["escalated_to__username"] or "",
        approvals_required=values["approvals_required"],
    )


def open_items(filters: dict[str, Any], user: User, now: datetime) -> QuerySet[ReviewItem]:
    items = ReviewItem.objects.filter(state=State.OPEN)
    if filters.get("workflow"):
        items = items.filter(workflow=filters["workflow"])
    if filters.get("zone"):
        items = items.filter(zone=filters["zone"])
    if filters.get("kind"):
        items = items.filter(kind=filters["kind"])
    if filters.get("age"):
        items = items.filter(created_at__lte=now - timedelta(minutes=AGES[filters["age"]]))
    if filters.get("overdue"):
        items = items.filter(deadline__lt=now)
    if filters.get("mine"):
        items = items.filter(Q(claimed_by=user) | Q(escalated_to=user))
    return items


def queue_page(filters: dict[str, Any], user: User, now: datetime) -> QueuePage:
    """One page of open items, the nearest deadline first.

    Two steps, so that the cost does not grow with the queue: the page's ids come from the
    items table alone, walking the partial index on (deadline, id) of open items (skipped
    rows of later pages cost an index entry each, not five joins); then only those items are
    read with their action, agent, tool and book."""
    page = filters.get("page") or 1
    start = (page - 1) * PAGE_SIZE
    ids = list(
        open_items(filters, user, now)
        .order_by("deadline", "pk")
        .values_list("pk", flat=True)[start : start + PAGE_SIZE + 1]
    )
    # Plain values, not model instances: a row needs sixteen fields of six tables.
    rows = (
        ReviewItem.objects.filter(pk__in=ids[:PAGE_SIZE])
        .order_by("deadline", "pk")
        .values("pk", *QUEUE_ROW_FIELDS)
    )
    return QueuePage(
        items=[_row(item, now) for item in rows], page=page, has_next=len(ids) > PAGE_SIZE
    )


OVERDUE_COUNT_CAP = 1000


def queue_counts(now: datetime) -> list[QueueCount]:
    """Open and overdue items per workflow. The open count is the queue's tally, kept by the
    transactions that open and close items; the overdue count walks the partial index of open
    items by (workflow, deadline) and stops at OVERDUE_COUNT_CAP (shown as "1000+"): both cost
    the same with 100 or 100,000 items waiting."""
    tallies = (
        QueueTally.objects.filter(open__gt=0).select_related("workflow").order_by("workflow__slug")
    )
    counts = []
    for tally in tallies:
        overdue = (
            ReviewItem.objects.filter(
                state=State.OPEN, workflow_id=tally.workflow_id, deadline__lt=now
            )
            .order_by()
            .values("pk")[:OVERDUE_COUNT_CAP]
            .count()
        )
        counts.append(
            QueueCount(
                workflow_id=tally.workflow_id,
                slug=tally.workflow.slug,
                name=tally.workflow.name,
                open=tally.open,
                overdue=overdue,
            )
        )
    return counts


def amount_text(params: Any, amount_param: str, currency: str) -> str:
    """An amount in minor units as a person reads it ("300.00 EUR"), or "" if none."""
    value = params.get(amount_param) if amount_param and isinstance(params, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if isinstance(value, float) and not value.is_integer():
        return ""
    return f"{Decimal(int(value)) / 100:,.2f} {currency}".strip()


def action_currency(action: Action) -> str:
    """The currency the action's amount is in: its own `currency` param, else its book's."""
    given = action.params.get("currency") if isinstance(action.params, dict) else None
    if isinstance(given, str) and given.strip():
        return given.strip().upper()
    return action.book_version.currency if action.book_version else ""


def money(action: Action) -> str:
    """The action's amount as a person reads it ("300.00 EUR"), or "" if it has none."""
    return amount_text(action.params, action.tool.amount_param, action_currency(action))


def prior_actions(action: Action, limit: int = 10) -> list[Action]:
    if not action.subject:
        return []
    return list(
        Action.objects.filter(subject=action.subject)
        .exclude(pk=action.pk)
        .select_related("agent", "tool", "book_version")
        .order_by("-created_at")[:limit]
    )


def feedback_lines(since: datetime | None = None) -> Iterator[str]:
    """Every human decision as one JSON line: {context, correction, rationale}, who and when,
    oldest first; read in chunks, so an export of any size streams in constant memory."""
    decisions = ReviewDecision.objects.select_related("item__workflow", "user").order_by(
        "created_at", "pk"
    )
    if since is not None:
        decisions = decisions.filter(created_at__gte=since)
    for decision in decisions.iterator(chunk_size=1000):
        record = {
            "id": decision.pk,
            "review": decision.item_id,
            "workflow": decision.item.workflow.slug,
            "decided_at": decision.created_at.isoformat(),
            "decided_by": decision.user.get_username(),
            "context": decision.context,
            "correction": {
                "verdict": decision.verdict,
                "params": decision.params_after,
                "diff": decision.diff,
                "final": decision.final,
            },
            "rationale": {"reason": decision.reason_code, "text": decision.reason_text},
        }
        yield json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
