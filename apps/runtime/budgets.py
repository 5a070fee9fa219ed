"""Monthly model budgets per workflow (the Decision Book's cost envelope) and per agent.

Before a model call its expected cost is reserved against both budgets; after it, the
reservation is settled with the real cost (or released when the call failed). A reservation
is a conditional UPDATE of each budget's row for the month, `reserved + spent + amount <=
limit`, in one transaction: PostgreSQL re-checks the condition on the row it locked, so two
calls racing for the last cents cannot both win, and a refusal by the second budget undoes the
first. Costs reported by external agents (a proposal's `usage`) are added to the same rows,
within bounds and at the price table's prices, or refused (`UsageRefused`, see `usage_record`).

When spend plus reservations first cross a budget's soft limit, the alert is recorded once
per month in the audit trail and shown to finance (budgets page) and on-call (runs page).

Amounts are compared as they are recorded, in minor units; model prices and Decision Books
are expected to share a currency (see docs/runtime.md)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
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
from apps.runtime.pricing import PriceUnknown, cost_cents, price_require

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


# --- Usage reported by external agents -------------------------------------------------------

# The most one proposal may report: a little above the largest context windows and answers of
# today's models. Anything more is not a model call but an attempt to drain the budgets.
USAGE_MAX_INPUT_TOKENS = 2_000_000
USAGE_MAX_OUTPUT_TOKENS = 500_000
USAGE_MODEL_MAX_LENGTH = 120
USAGE_PROVIDER_MAX_LENGTH = 40


class UsageRefused(Exception):
    """Usage reported with a proposal that the gate refuses, recording nothing of the proposal.

    `status` is 422 when the usage itself is at fault (a field out of bounds or missing, a
    model without a price) and 409 when it is well formed but would take a budget past its
    limit (the budget's state is what conflicts; next month, or a larger budget, it would
    pass). `field` names what to fix ("usage.input_tokens", "usage.model", or "usage" for a
    budget) and `message` says why, naming the budget and both amounts when it is one."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ReportedUsage:
    provider: str
    model: str
    input_tokens: int
    output_tokens: int


def _text(usage: Mapping[str, Any], name: str, *, required: bool, max_length: int) -> str:
    value = usage.get(name)
    if value is None or value == "":
        if required:
            raise UsageRefused(422, f"usage.{name}", "is required")
        return ""
    if not isinstance(value, str):
        raise UsageRefused(422, f"usage.{name}", "must be a string")
    if len(value) > max_length:
        raise UsageRefused(422, f"usage.{name}", f"must be at most {max_length} characters")
    return value


def _tokens(usage: Mapping[str, Any], name: str, maximum: int) -> int:
    value = usage.get(name)
    if value is None:
        raise UsageRefused(422, f"usage.{name}", "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageRefused(422, f"usage.{name}", "must be a whole number of tokens")
    if value < 0:
        raise UsageRefused(422, f"usage.{name}", "must be at least 0")
    if value > maximum:
        raise UsageRefused(
            422,
            f"usage.{name}",
            f"must be at most {maximum:,} (the most one proposal may report); got {value:,}",
        )
    return value


def usage_parse(usage: Any) -> ReportedUsage:
    """The reported usage, checked field by field (UsageRefused names the first at fault).
    Only the model, its provider and the token counts are read: a cost the agent claims, in
    whatever field, is never trusted; the price table sets it."""
    if not isinstance(usage, Mapping):
        raise UsageRefused(422, "usage", "must be an object: model, provider, tokens in and out")
    return ReportedUsage(
        provider=_text(usage, "provider", required=False, max_length=USAGE_PROVIDER_MAX_LENGTH),
        model=_text(usage, "model", required=True, max_length=USAGE_MODEL_MAX_LENGTH),
        input_tokens=_tokens(usage, "input_tokens", USAGE_MAX_INPUT_TOKENS),
        output_tokens=_tokens(usage, "output_tokens", USAGE_MAX_OUTPUT_TOKENS),
    )


def money(cents: Decimal, currency: str) -> str:
    """Minor units as an amount a person reads: 120 -> "1.20 EUR", 0.6 -> "0.006 USD"."""
    major = cents / 100
    whole_cents = major == major.quantize(Decimal("0.01"))
    text = f"{major:.2f}" if whole_cents else f"{major.normalize():f}"
    return f"{text} {currency}".strip()


def usage_record(*, action: Any, usage: Mapping[str, Any]) -> ModelCall:
    """Charge the model usage an external agent reported with a proposal to the workflow's and
    the agent's budgets of the month, as a cost record of its action. Runs inside the gate's
    transaction, which records nothing of the proposal when this raises UsageRefused:

    - 422 `usage.<field>`: a field missing, of the wrong type or past its bound
      (USAGE_MAX_INPUT_TOKENS, USAGE_MAX_OUTPUT_TOKENS);
    - 422 `usage.model` / `usage.provider`: no one price for the model in the price table. An
      unknown model is refused rather than charged at some guessed price: the cost record must
      be the price table's, and the agent can report the model it really used;
    - 409 `usage`: the cost would take the agent's budget, or the workflow's, past its limit
      (spend plus what running calls hold); the message names the budget (the agent's first,
      when both are short), what it has left and what this usage costs.

    Both budget rows are locked, in the order every writer locks them, before either is checked,
    so two proposals racing for the last cents cannot both pass."""
    reported = usage_parse(usage)
    try:
        price = price_require(reported.provider, reported.model)
    except PriceUnknown as unknown:
        raise UsageRefused(422, unknown.field, unknown.message) from None
    cost = cost_cents(price, reported.input_tokens, reported.output_tokens)
    locked: list[BudgetPeriod] = []
    if cost:
        periods = budget_periods(
            workflow=action.workflow, agent=action.agent, book=action.book_version
        )
        locked = list(
            BudgetPeriod.objects.select_for_update(of=("self",))
            .filter(pk__in=[period.pk for period in periods])
            .select_related("workflow", "agent")
            .order_by("pk")
        )
        short = [
            period
            for period in locked
            if period.limit_cents is not None
            and period.spent_cents + period.reserved_cents + cost > period.limit_cents
        ]
        if short:
            period = min(short, key=lambda row: row.scope != BudgetPeriod.Scope.AGENT)
            remaining = max(period.remaining_cents or Decimal(0), Decimal(0))
            logger.warning(
                "reported usage refused by budget %s: %s cents left, %s needed",
                period.name,
                _cents(remaining),
                _cents(cost),
            )
            raise UsageRefused(
                409,
                "usage",
                f"{period.scope} {period.owner_slug}'s budget for {period.month:%Y-%m} has "
                f"{money(remaining, price.currency)} left; this usage costs "
                f"{money(cost, price.currency)}",
            )
        for period in locked:
            BudgetPeriod.objects.filter(pk=period.pk).update(spent_cents=F("spent_cents") + cost)
    call = ModelCall.objects.create(
        created_at=action.created_at,
        source=ModelCall.Source.EXTERNAL,
        workflow=action.workflow,
        agent=action.agent,
        action=action,
        provider=price.provider,
        model=price.model,
        input_tokens=reported.input_tokens,
        output_tokens=reported.output_tokens,
        cost_cents=cost,
        currency=price.currency,
        priced=True,
    )
    _soft_check(locked)
    return call


# --- The agents' own budgets ----------------------------------------------------------------


@transaction.atomic
def agent_budget_set(
    *,
    agent: Agent,
    monthly_limit_cents: int | None,
    soft_limit_percent: int,
    actor: Any,
) -> AgentBudget | None:
    """Set (or, with `monthly_limit_cents` None, remove) the agent's monthly model budget,
    audited, and bring this month's budget row up to date at once: the next call or reported
    usage is held to the new limit."""
    existing = AgentBudget.objects.select_for_update().filter(agent=agent).first()
    before = (
        {
            "monthly_limit_cents": existing.monthly_limit_cents,
            "soft_limit_percent": existing.soft_limit_percent,
        }
        if existing is not None
        else None
    )
    budget: AgentBudget | None
    if monthly_limit_cents is None:
        if existing is None:
            return None
        existing.delete()
        budget = None
        verb, limit, soft = "agent_budget.removed", None, 100
    else:
        budget, _ = AgentBudget.objects.update_or_create(
            agent=agent,
            defaults={
                "monthly_limit_cents": monthly_limit_cents,
                "soft_limit_percent": soft_limit_percent,
            },
        )
        verb, limit, soft = "agent_budget.set", Decimal(monthly_limit_cents), soft_limit_percent
    BudgetPeriod.objects.filter(
        scope=BudgetPeriod.Scope.AGENT, agent=agent, month=month_of()
    ).update(limit_cents=limit, soft_limit_percent=soft)
    audit_record(
        actor=actor,
        verb=verb,
        target=agent,
        data={
            "agent": agent.slug,
            "before": before,
            "after": (
                {"monthly_limit_cents": monthly_limit_cents, "soft_limit_percent": soft}
                if budget is not None
                else None
            ),
        },
    )
    return budget
