"""Reads for the runtime's pages: runs with their steps, actions and costs; budgets; alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from uuid import UUID

from django.contrib.auth.models import User
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.utils import timezone

from apps.registry.models import Agent
from apps.runtime.budgets import month_of
from apps.runtime.models import (
    BudgetPeriod,
    ModelCall,
    ProviderCircuit,
    Run,
    Step,
    StepAction,
)

RUNS_SHOWN = 50


def _with_steps(runs: QuerySet[Run]) -> QuerySet[Run]:
    return runs.select_related("workflow", "agent", "escalated_to").prefetch_related(
        Prefetch(
            "steps",
            queryset=Step.objects.order_by("index").prefetch_related(
                Prefetch(
                    "step_actions",
                    queryset=StepAction.objects.select_related("action", "action__tool"),
                )
            ),
        )
    )


def runs_recent(*, state: str = "", workflow: str = "", limit: int = RUNS_SHOWN) -> list[Run]:
    runs = Run.objects.all()
    if state:
        runs = runs.filter(state=state)
    if workflow:
        runs = runs.filter(workflow__slug=workflow)
    return list(_with_steps(runs.order_by("-created_at"))[:limit])


def runs_needing_attention(*, days: int = 7, limit: int = 20) -> list[Run]:
    since = timezone.now() - timedelta(days=days)
    runs = Run.objects.filter(state=Run.State.FAILED, finished_at__gte=since)
    return list(_with_steps(runs.order_by("-finished_at"))[:limit])


def runs_escalated_to(user: User, *, limit: int = 50) -> list[Run]:
    runs = Run.objects.filter(state=Run.State.FAILED, escalated_to=user)
    return list(_with_steps(runs.order_by("-finished_at"))[:limit])


def run_detail(run_id: UUID) -> Run | None:
    return _with_steps(Run.objects.filter(pk=run_id)).first()


def run_calls(run: Run) -> list[ModelCall]:
    return list(run.model_calls.select_related("step").order_by("created_at"))


def run_counts(*, since_hours: int = 24) -> dict[str, int]:
    since = timezone.now() - timedelta(hours=since_hours)
    rows = Run.objects.filter(created_at__gte=since).values("state").annotate(n=Count("pk"))
    counts = {state: 0 for state in Run.State.values}
    for row in rows:
        counts[row["state"]] = row["n"]
    return counts


def budget_periods_of(month: date | None = None) -> list[BudgetPeriod]:
    return list(
        BudgetPeriod.objects.filter(month=month or month_of())
        .select_related("workflow", "agent")
        .order_by("scope", "workflow__slug", "agent__slug")
    )


def budget_alerts(month: date | None = None) -> list[BudgetPeriod]:
    """This month's budgets past their soft limit or refusing calls."""
    return list(
        BudgetPeriod.objects.filter(month=month or month_of())
        .filter(Q(soft_alerted_at__isnull=False) | Q(refused_calls__gt=0))
        .select_related("workflow", "agent")
        .order_by("scope", "pk")
    )


@dataclass(frozen=True)
class SpendRow:
    workflow: str
    provider: str
    model: str
    tier: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_cents: Decimal


def spend_by_model(month: date | None = None) -> list[SpendRow]:
    start = month or month_of()
    end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    rows = (
        ModelCall.objects.filter(created_at__date__gte=start, created_at__date__lt=end)
        .values("workflow__slug", "provider", "model", "tier")
        .annotate(
            calls=Count("pk"),
            tokens_in=Sum("input_tokens"),
            tokens_out=Sum("output_tokens"),
            cost=Sum("cost_cents"),
        )
        .order_by("workflow__slug", "provider", "model", "tier")
    )
    return [
        SpendRow(
            workflow=row["workflow__slug"],
            provider=row["provider"],
            model=row["model"],
            tier=row["tier"] or "external",
            calls=row["calls"],
            input_tokens=row["tokens_in"] or 0,
            output_tokens=row["tokens_out"] or 0,
            cost_cents=row["cost"] or Decimal(0),
        )
        for row in rows
    ]


def provider_circuits() -> list[ProviderCircuit]:
    return list(ProviderCircuit.objects.order_by("provider"))


@dataclass(frozen=True)
class AgentBudgetRow:
    """One agent's own monthly budget (None: it has none) and its use this month."""

    agent: str
    monthly_limit_cents: int | None
    soft_limit_percent: int | None
    spent_cents: Decimal
    reserved_cents: Decimal

    @property
    def remaining_cents(self) -> Decimal | None:
        if self.monthly_limit_cents is None:
            return None
        return Decimal(self.monthly_limit_cents) - self.spent_cents - self.reserved_cents


def agent_budget_rows(month: date | None = None) -> list[AgentBudgetRow]:
    """Every agent with its own budget, if any, and what it has spent and holds this month."""
    periods = {
        period.agent_id: period
        for period in BudgetPeriod.objects.filter(
            scope=BudgetPeriod.Scope.AGENT, month=month or month_of()
        )
    }
    rows = []
    for agent in Agent.objects.select_related("budget").order_by("slug"):
        budget = getattr(agent, "budget", None)
        period = periods.get(agent.pk)
        rows.append(
            AgentBudgetRow(
                agent=agent.slug,
                monthly_limit_cents=budget.monthly_limit_cents if budget is not None else None,
                soft_limit_percent=budget.soft_limit_percent if budget is not None else None,
                spent_cents=period.spent_cents if period is not None else Decimal(0),
                reserved_cents=period.reserved_cents if period is not None else Decimal(0),
            )
        )
    return rows
