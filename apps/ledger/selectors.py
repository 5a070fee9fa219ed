"""The Autonomy Balance Sheet: per workflow and month, what autonomy did, cost and saved.

Which month a figure belongs to (local time, settings.TIME_ZONE):
- action counts and human time saved: the month the action was proposed;
- model spend: the month of the cost event (runtime.ModelCall.created_at);
- review minutes: the month the review item was decided (claim to decision);
- supervisor edits: the month of the edit-and-approve decision.

Definitions:
- executed: the action reached a worker (running, succeeded, failed, rolled back or not);
- autonomous: executed on the gate's `allow`, no person approved it first (a spot check after
  the fact does not change that); after review: executed on a `hold` a person approved;
- successful outcome: an action that succeeded and stayed so (not rolled back);
- human time saved: the governing book version's baseline minutes, per autonomous success;
- rework: rejections + rollbacks + supervisor edits;
- cost per successful outcome: model spend / successful outcomes;
- budget: the workflow's monthly budget as recorded for that month by the runtime (the book's
  cost envelope), else the active book's; used = the month's model spend.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, DurationField, ExpressionWrapper, F, Sum
from django.utils import timezone

from apps.actions.models import Decision, Status
from apps.books.models import BookVersion
from apps.ledger.rollups import local_midnight, spend_by_day
from apps.ledger.tallies import action_counts
from apps.registry.models import Workflow
from apps.reviews.models import ReviewDecision, ReviewItem, Verdict
from apps.reviews.models import State as ReviewState
from apps.runtime.models import BudgetPeriod

ZERO = Decimal(0)
CENT = Decimal("0.01")
EXECUTED = (
    Status.RUNNING,
    Status.SUCCEEDED,
    Status.FAILED,
    Status.ROLLED_BACK,
    Status.ROLLBACK_FAILED,
)


class MonthError(ValueError):
    def __init__(self, raw: str) -> None:
        super().__init__(f"month: expected a month as YYYY-MM (2025-03), got {raw!r}")


def month_parse(raw: str | None) -> date:
    """The first day of the month named `YYYY-MM`; the current month when not given."""
    if raw is None or raw == "":
        return timezone.localdate().replace(day=1)
    parts = raw.split("-")
    if len(parts) != 2 or not all(part.isdigit() for part in parts) or len(parts[0]) != 4:
        raise MonthError(raw)
    year, month = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12 or year < 2000:
        raise MonthError(raw)
    return date(year, month, 1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(month: date) -> date:
    return (month - timedelta(days=1)).replace(day=1)


def to_major(cents: Decimal | None) -> Decimal | None:
    """Minor units (cents, six decimals) to major units rounded to the cent, as shown."""
    if cents is None:
        return None
    return (cents / 100).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class SheetRow:
    workflow: Workflow
    currency: str
    autonomous: int = 0
    after_review: int = 0
    rejected: int = 0
    expired: int = 0
    rolled_back: int = 0
    successful: int = 0
    autonomous_successful: int = 0
    model_calls: int = 0
    model_spend_cents: Decimal = ZERO
    review_minutes: Decimal = ZERO
    time_saved_minutes: Decimal = ZERO
    edits: int = 0
    budget_cents: Decimal | None = None

    @property
    def rework(self) -> int:
        return self.rejected + self.rolled_back + self.edits

    @property
    def cost_per_success_cents(self) -> Decimal | None:
        if not self.successful:
            return None
        return self.model_spend_cents / self.successful

    @property
    def budget_left_cents(self) -> Decimal | None:
        if self.budget_cents is None:
            return None
        return self.budget_cents - self.model_spend_cents

    @property
    def budget_used_percent(self) -> Decimal | None:
        if not self.budget_cents:
            return None
        return (self.model_spend_cents * 100 / self.budget_cents).quantize(Decimal("0.1"))

    @property
    def active(self) -> bool:
        return bool(
            self.autonomous
            or self.after_review
            or self.rejected
            or self.expired
            or self.rolled_back
            or self.model_calls
            or self.review_minutes
            or self.edits
        )


@dataclass
class BalanceSheet:
    month: date
    rows: list[SheetRow]
    spend_by_day: dict[str, list[tuple[date, Decimal]]] = field(default_factory=dict)


def _month_range(month: date) -> tuple[date, date]:
    return month, next_month(month)


def _rows(workflows: list[Workflow]) -> dict[int, SheetRow]:
    active = {
        version.workflow_id: version
        for version in BookVersion.objects.filter(
            workflow__in=workflows, status=BookVersion.Status.PUBLISHED
        ).only("workflow_id", "currency", "monthly_budget_cents")
    }
    rows = {}
    for flow in workflows:
        book = active.get(flow.pk)
        rows[flow.pk] = SheetRow(
            workflow=flow,
            currency=book.currency if book else "",
            budget_cents=(
                Decimal(book.monthly_budget_cents)
                if book and book.monthly_budget_cents is not None
                else None
            ),
        )
    return rows


def balance_sheet(month: date) -> BalanceSheet:
    """Every workflow's figures for `month` (the first day of a month)."""
    start, end = _month_range(month)
    start_at, end_at = local_midnight(start), local_midnight(end)
    workflows = list(Workflow.objects.order_by("slug"))
    rows = _rows(workflows)
    ids = list(rows)

    counts = action_counts(workflow_ids=ids, bounds=[start_at, end_at])
    # Human time saved: autonomous successes counted per governing version, times that
    # version's baseline (a handful of versions, read once).
    baselines = dict(
        BookVersion.objects.filter(
            pk__in={count.book_version_id for count in counts if count.book_version_id}
        ).values_list("pk", "baseline_minutes")
    )
    for count in counts:
        row = rows[count.workflow_id]
        if count.status in EXECUTED:
            if count.decision == Decision.ALLOW:
                row.autonomous += count.n
            elif count.decision == Decision.HOLD:
                row.after_review += count.n
        if count.status == Status.REJECTED:
            row.rejected += count.n
        elif count.status == Status.EXPIRED:
            row.expired += count.n
        elif count.status == Status.ROLLED_BACK:
            row.rolled_back += count.n
        elif count.status == Status.SUCCEEDED:
            row.successful += count.n
            if count.decision == Decision.ALLOW:
                row.autonomous_successful += count.n
                if count.book_version_id is not None:
                    row.time_saved_minutes += baselines[count.book_version_id] * count.n

    review = (
        ReviewItem.objects.filter(
            workflow_id__in=ids,
            state=ReviewState.DECIDED,
            claimed_at__isnull=False,
            closed_at__gte=start_at,
            closed_at__lt=end_at,
        )
        .values("workflow_id")
        .annotate(
            spent=Sum(
                ExpressionWrapper(F("closed_at") - F("claimed_at"), output_field=DurationField())
            )
        )
        .order_by()
    )
    for spent_row in review:
        spent = spent_row["spent"] or timedelta(0)
        micro = (spent.days * 86_400 + spent.seconds) * 1_000_000 + spent.microseconds
        rows[spent_row["workflow_id"]].review_minutes = (Decimal(micro) / 60_000_000).quantize(CENT)

    edits = (
        ReviewDecision.objects.filter(
            item__workflow_id__in=ids,
            verdict=Verdict.EDIT_APPROVE,
            created_at__gte=start_at,
            created_at__lt=end_at,
        )
        .values("item__workflow_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for edit_row in edits:
        rows[edit_row["item__workflow_id"]].edits = edit_row["n"]

    budgets = BudgetPeriod.objects.filter(
        scope=BudgetPeriod.Scope.WORKFLOW, workflow_id__in=ids, month=start
    ).values_list("workflow_id", "limit_cents")
    for workflow_id, limit in budgets:
        if workflow_id is not None and limit is not None:
            rows[workflow_id].budget_cents = limit

    daily: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for spend in spend_by_day(workflow_ids=ids, start=start, end=end):
        row = rows[spend.workflow_id]
        row.model_calls += spend.calls
        row.model_spend_cents += spend.cost_cents
        daily[row.workflow.slug].append((spend.day, spend.cost_cents))

    return BalanceSheet(month=month, rows=list(rows.values()), spend_by_day=dict(daily))


@dataclass(frozen=True)
class TrendPoint:
    month: date
    spend_cents: Decimal
    successful: int

    @property
    def cost_per_success_cents(self) -> Decimal | None:
        return self.spend_cents / self.successful if self.successful else None


def cost_per_outcome_trend(month: date, *, months: int = 6) -> dict[str, list[TrendPoint]]:
    """Model spend and successful outcomes per workflow for the `months` months ending with
    `month`, for the cost-per-outcome chart."""
    first = month
    for _ in range(months - 1):
        first = previous_month(first)
    end = next_month(month)
    workflows = {flow.pk: flow.slug for flow in Workflow.objects.all()}
    spend: dict[tuple[int, date], Decimal] = defaultdict(lambda: ZERO)
    for day_spend in spend_by_day(workflow_ids=list(workflows), start=first, end=end):
        spend[(day_spend.workflow_id, day_spend.day.replace(day=1))] += day_spend.cost_cents
    bounds = [first]
    while bounds[-1] < end:
        bounds.append(next_month(bounds[-1]))
    successes: dict[tuple[int, date], int] = defaultdict(int)
    for count in action_counts(
        workflow_ids=list(workflows),
        bounds=[local_midnight(bound) for bound in bounds],
        statuses=[Status.SUCCEEDED],
    ):
        successes[(count.workflow_id, bounds[count.period])] += count.n
    trend: dict[str, list[TrendPoint]] = {}
    for workflow_id, slug in sorted(workflows.items(), key=lambda item: item[1]):
        points = []
        current = first
        while current < end:
            key = (workflow_id, current)
            points.append(TrendPoint(current, spend[key], successes[key]))
            current = next_month(current)
        if any(point.spend_cents or point.successful for point in points):
            trend[slug] = points
    return trend
