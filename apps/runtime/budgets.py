"""Monthly model budgets per workflow (the Decision Book's cost envelope) and per agent.

Before a model call its expected cost is reserved against both budgets; after it, the
reservation is settled with the real cost (or released when the call failed). A reservation
is a conditional UPDATE of each budget's row for the month, `reserved + spent + amount <=
limit`, in one transaction: PostgreSQL re-checks the condition on the row it locked, so two
calls racing for the last cents cannot both win, and a refusal by the second budget undoes the
first. Costs reported by external agents (a proposal's `usage`) are added to the same rows.

When spend plus reservations first cross a budget's soft limit, the alert is recorded once
per month in the audit trail and shown to finance (budgets page) and on-call (runs page).

Amounts are compared as they are recorded, in minor units; model prices and Decision Books
are expected to share a currency (see docs/runtime.md)."""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.books.models import BookVersion
from apps.registry.models import Agent, Workflow
from apps.runtime.models import (
    AgentBudget,
    BudgetPeriod,
    BudgetReservation,
    ModelCall,
)
from apps.runtime.pricing import cost_cents, price_find

logger = logging.getLogger(__name__)


class BudgetExceeded(Exception):
    """A model call refused because it would take a budget past its limit."""

    def __init__(self, budget: str, remaining: Decimal, needed: Decimal) -> None:
        self.budget = budget
        self.remaining = remaining
        self.needed = needed
        super().__init__(
            f"budget {budget} would be exceeded: {_cents(remaining)} cents remain, "
            f"this call needs up to {_cents(needed)}"
        )


def _cents(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.0001')).normalize():f}"


def month_of(at: datetime | None = None) -> date:
    moment = timezone.localtime(at or timezone.now())
    return moment.date().replace(day=1)


def active_book(workflow: Workflow) -> BookVersion | None:
    return BookVersion.objects.filter(
        workflow=workflow, status=BookVersion.Status.PUBLISHED
    ).first()


def _limits(
    workflow: Workflow, agent: Agent, book: BookVersion | None
) -> list[tuple[str, Decimal | None, int]]:
    workflow_limit = (
        Decimal(book.monthly_budget_cents)
        if book is not None and book.monthly_budget_cents is not None
        else None
    )
    own = AgentBudget.objects.filter(agent=agent).first()
    return [
        (BudgetPeriod.Scope.WORKFLOW, workflow_limit, int(settings.RUNTIME_SOFT_LIMIT_PERCENT)),
        (
            BudgetPeriod.Scope.AGENT,
            Decimal(own.monthly_limit_cents) if own is not None else None,
            own.soft_limit_percent if own is not None else 100,
        ),
    ]


def budget_periods(
    *, workflow: Workflow, agent: Agent, book: BookVersion | None, at: datetime | None = None
) -> list[BudgetPeriod]:
    """This month's budget rows of the workflow and the agent (created when missing), their
    limits brought up to date with the book and the agent's budget; ordered by id, the order
    every writer locks them in (so that two writers never wait on each other in a cycle)."""
    month = month_of(at)
    limits = _limits(workflow, agent, book)
    BudgetPeriod.objects.bulk_create(
        [
            BudgetPeriod(
                scope=scope,
                workflow=workflow if scope == BudgetPeriod.Scope.WORKFLOW else None,
                agent=agent if scope == BudgetPeriod.Scope.AGENT else None,
                month=month,
                limit_cents=limit,
                soft_limit_percent=soft,
            )
            for scope, limit, soft in limits
        ],
        ignore_conflicts=True,
    )
    rows = list(
        BudgetPeriod.objects.filter(
            Q(scope=BudgetPeriod.Scope.WORKFLOW, workflow=workflow)
            | Q(scope=BudgetPeriod.Scope.AGENT, agent=agent),
            month=month,
        )
        .select_related("workflow", "agent")
        .order_by("pk")
    )
    wanted = {scope: (limit, soft) for scope, limit, soft in limits}
    for row in rows:
        limit, soft = wanted[row.scope]
        if row.limit_cents != limit or row.soft_limit_percent != soft:
            BudgetPeriod.objects.filter(pk=row.pk).update(
                limit_cents=limit, soft_limit_percent=soft
            )
            row.limit_cents, row.soft_limit_percent = limit, soft
    return rows


def budget_reserve(
    *,
    workflow: Workflow,
    agent: Agent,
    book: BookVersion | None,
    amount: Decimal,
    at: datetime | None = None,
) -> BudgetReservation:
    """Hold `amount` (cents) against the workflow's and the agent's budgets, or raise
    BudgetExceeded naming the first budget that cannot take it and what it has left."""
    periods = budget_periods(workflow=workflow, agent=agent, book=book, at=at)
    refused: BudgetPeriod | None = None
    try:
        with transaction.atomic():
            for period in periods:
                fits = Q(limit_cents__isnull=True) | Q(
                    limit_cents__gte=F("spent_cents") + F("reserved_cents") + amount
                )
                taken = BudgetPeriod.objects.filter(fits, pk=period.pk).update(
                    reserved_cents=F("reserved_cents") + amount
                )
                if taken != 1:
                    refused = period
                    raise _Refused
            reservation = BudgetReservation.objects.create(amount_cents=amount)
            reservation.periods.set(periods)
    except _Refused:
        assert refused is not None
        return _refuse(refused, amount)
    _soft_check(periods)
    return reservation


class _Refused(Exception):
    pass


def _refuse(period: BudgetPeriod, amount: Decimal) -> BudgetReservation:
    BudgetPeriod.objects.filter(pk=period.pk).update(
        refused_calls=F("refused_calls") + 1, last_refused_at=timezone.now()
    )
    period.refresh_from_db()
    remaining = period.remaining_cents if period.remaining_cents is not None else Decimal(0)
    logger.warning(
        "model call refused by budget %s: %s cents remain, %s needed",
        period.name,
        _cents(remaining),
        _cents(amount),
    )
    raise BudgetExceeded(period.name, max(remaining, Decimal(0)), amount)


def budget_settle(reservation: BudgetReservation, *, actual: Decimal) -> None:
    """The call ended and cost `actual`: its reservation becomes spend."""
    _close(reservation, actual=actual, state=BudgetReservation.State.SETTLED)


def budget_release(reservation: BudgetReservation) -> None:
    """The call never happened or failed before it cost anything: give the reservation back."""
    _close(reservation, actual=Decimal(0), state=BudgetReservation.State.RELEASED)


def _close(reservation: BudgetReservation, *, actual: Decimal, state: str) -> None:
    with transaction.atomic():
        closed = BudgetReservation.objects.filter(
            pk=reservation.pk, state=BudgetReservation.State.HELD
        ).update(state=state, actual_cents=actual, settled_at=timezone.now())
        if closed != 1:
            return
        periods = list(reservation.periods.order_by("pk"))
        for period in periods:
            BudgetPeriod.objects.filter(pk=period.pk).update(
                reserved_cents=F("reserved_cents") - reservation.amount_cents,
                spent_cents=F("spent_cents") + actual,
            )
    reservation.state = state
    reservation.actual_cents = actual
    if actual:
        _soft_check(periods)


def _soft_check(periods: list[BudgetPeriod]) -> None:
    """Raise each budget's soft-limit alert the first time its use crosses the threshold."""
    now = timezone.now()
    for period in periods:
        if period.limit_cents is None or period.soft_alerted_at is not None:
            continue
        threshold = period.limit_cents * period.soft_limit_percent / 100
        with transaction.atomic():
            raised = (
                BudgetPeriod.objects.filter(
                    pk=period.pk,
                    soft_alerted_at__isnull=True,
                    limit_cents__isnull=False,
                )
                .filter(Q(spent_cents__gte=threshold - F("reserved_cents")))
                .update(soft_alerted_at=now)
            )
            if raised != 1:
                continue
            period.refresh_from_db()
            audit_record(
                actor="system:budget",
                verb="budget.soft_limit",
                target=period,
                data={
                    "budget": period.name,
                    "limit_cents": str(period.limit_cents),
                    "spent_cents": str(period.spent_cents),
                    "reserved_cents": str(period.reserved_cents),
                    "soft_limit_percent": period.soft_limit_percent,
                },
            )
        logger.warning(
            "budget %s passed its soft limit (%s%%): %s of %s cents used",
            period.name,
            period.soft_limit_percent,
            _cents(period.spent_cents + period.reserved_cents),
            _cents(period.limit_cents),
        )


def usage_record(*, action: Any, usage: dict[str, Any]) -> ModelCall:
    """Count the model usage an external agent reported with a proposal against the same
    budgets as hosted calls, as a cost record of its action. Runs inside the gate's
    transaction; the call has already happened, so it is recorded even past a limit."""
    provider = str(usage.get("provider") or "")
    model = str(usage.get("model") or "")
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    price = price_find(provider, model)
    cost = cost_cents(price, input_tokens, output_tokens)
    call = ModelCall.objects.create(
        created_at=action.created_at,
        source=ModelCall.Source.EXTERNAL,
        workflow=action.workflow,
        agent=action.agent,
        action=action,
        provider=price.provider if price else provider or "unknown",
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_cents=cost,
        currency=price.currency if price else "",
        priced=price is not None,
    )
    if cost:
        periods = budget_periods(
            workflow=action.workflow, agent=action.agent, book=action.book_version
        )
        for period in periods:
            BudgetPeriod.objects.filter(pk=period.pk).update(spent_cents=F("spent_cents") + cost)
        _soft_check(periods)
    return call
