"""Budgets: reservation before a call and settlement after, refusal naming the budget, no
overspending under concurrent calls (real PostgreSQL), soft-limit alerts, and the usage
external agents report counting against the same budgets."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.registry.models import ModelPrice
from apps.registry.services import agent_key_create
from apps.runtime.budgets import (
    BudgetExceeded,
    budget_release,
    budget_reserve,
    budget_settle,
    month_of,
)
from apps.runtime.models import AgentBudget, BudgetPeriod, BudgetReservation, ModelCall
from tests.concurrency import at_once
from tests.runtime.conftest import Flow, make_flow

MONTH = month_of()


def period(flow: Flow, scope: str = "workflow") -> BudgetPeriod:
    if scope == "workflow":
        return BudgetPeriod.objects.get(scope=scope, workflow=flow.workflow, month=MONTH)
    return BudgetPeriod.objects.get(scope=scope, agent=flow.agent, month=MONTH)


def reserve(flow: Flow, amount: str) -> BudgetReservation:
    return budget_reserve(
        workflow=flow.workflow, agent=flow.agent, book=flow.book, amount=Decimal(amount)
    )


@pytest.mark.django_db
def test_reserve_then_settle__reservation_becomes_spend(user_for: Any) -> None:
    # Given a workflow with a 100-cent monthly budget
    flow = make_flow(user_for, book={"monthly_budget_cents": 100})
    # When a call reserves 10 cents, then costs 7.5
    reservation = reserve(flow, "10")
    assert period(flow).reserved_cents == 10
    budget_settle(reservation, actual=Decimal("7.5"))
    # Then the budget has spent 7.5 and holds nothing; the agent's (unlimited) budget tracks it
    assert period(flow).spent_cents == Decimal("7.5")
    assert period(flow).reserved_cents == 0
    assert period(flow, "agent").spent_cents == Decimal("7.5")
    assert period(flow, "agent").limit_cents is None
    # And settling again changes nothing
    budget_settle(reservation, actual=Decimal("7.5"))
    assert period(flow).spent_cents == Decimal("7.5")


@pytest.mark.django_db
def test_release__gives_the_reservation_back(user_for: Any) -> None:
    flow = make_flow(user_for, book={"monthly_budget_cents": 100})
    reservation = reserve(flow, "60")
    budget_release(reservation)
    assert period(flow).spent_cents == 0
    assert period(flow).reserved_cents == 0
    reserve(flow, "100")  # the whole budget is free again


@pytest.mark.django_db
def test_over_the_agent_budget__refused_naming_it_and_nothing_held(user_for: Any) -> None:
    # Given a generous workflow budget and a tight agent budget
    flow = make_flow(user_for, book={"monthly_budget_cents": 10_000})
    AgentBudget.objects.create(agent=flow.agent, monthly_limit_cents=50)
    reserve(flow, "30")
    # When a call needing 25 more cents is asked for
    with pytest.raises(BudgetExceeded) as caught:
        reserve(flow, "25")
    # Then the agent's budget refuses it, saying what it has left
    assert caught.value.budget == f"agent rt-bot {MONTH:%Y-%m}"
    assert caught.value.remaining == 20
    assert "20 cents remain, this call needs up to 25" in str(caught.value)
    # And the workflow's budget, which said yes first, holds nothing of the refused call
    assert period(flow).reserved_cents == 30
    assert period(flow, "agent").refused_calls == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations__never_overspend(user_for: Any) -> None:
    # Given a budget of 100 cents
    flow = make_flow(user_for, book={"monthly_budget_cents": 100})
    reserve(flow, "1")
    budget_release(BudgetReservation.objects.get())

    # When 16 calls reserve 15 cents each at the same instant
    def attempt(index: int) -> bool:
        try:
            reserve(flow, "15")
        except BudgetExceeded:
            return False
        return True

    results = at_once(16, attempt)
    # Then exactly six fit (90 cents), the rest are refused, and the limit is never passed
    assert results.count(True) == 6
    assert period(flow).reserved_cents == 90
    assert period(flow).refused_calls == 10
    assert BudgetReservation.objects.filter(state="held").count() == 6


@pytest.mark.django_db
def test_soft_limit__alert_raised_once_and_audited(user_for: Any) -> None:
    # Given a 100-cent budget with the soft limit at 80%
    flow = make_flow(user_for, book={"monthly_budget_cents": 100})
    budget_settle(reserve(flow, "50"), actual=Decimal(50))
    assert period(flow).soft_alerted_at is None
    # When spend passes 80 cents, and then grows further
    budget_settle(reserve(flow, "35"), actual=Decimal(35))
    budget_settle(reserve(flow, "5"), actual=Decimal(5))
    # Then the alert was raised once, in the audit trail
    assert period(flow).soft_alerted_at is not None
    events = AuditEvent.objects.filter(verb="budget.soft_limit")
    assert events.count() == 1
    assert events.get().payload["budget"] == f"workflow rt-flow {MONTH:%Y-%m}"


@pytest.mark.django_db
def test_external_usage__counted_against_the_same_budgets(user_for: Any) -> None:
    # Given an external agent with a key, and a priced model
    flow = make_flow(user_for, book={"monthly_budget_cents": 100_000})
    ModelPrice.objects.get_or_create(
        provider="openai",
        model="gpt-4o-mini",
        defaults={"input_per_1k": Decimal("0.00015"), "output_per_1k": Decimal("0.0006")},
    )
    key = agent_key_create(agent=flow.agent, actor="system:test").key
    # When it proposes an action and reports the model usage behind it
    response = Client().post(
        "/api/v1/actions",
        {
            "workflow": "rt-flow",
            "tool": "issue_refund",
            "subject": "order:1003",
            "params": {"order_id": "1003", "amount_cents": 300000, "currency": "EUR",
                       "reason": "damaged"},
            "confidence": "0.9",
            "usage": {"model": "gpt-4o-mini", "provider": "openai",
                      "input_tokens": 20000, "output_tokens": 5000},
        },
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert response.status_code == 201, response.content
    # Then the usage is a cost record of its action, priced from the table:
    # 20k in at 0.00015 + 5k out at 0.0006 per 1k = 0.006 USD = 0.6 cents
    call = ModelCall.objects.get()
    assert str(call.action_id) == response.json()["id"]
    assert (call.source, call.provider, call.model) == ("external", "openai", "gpt-4o-mini")
    assert call.cost_cents == Decimal("0.6")
    # And it counts against the workflow's and the agent's budgets
    assert period(flow).spent_cents == Decimal("0.6")
    assert period(flow, "agent").spent_cents == Decimal("0.6")


@pytest.mark.django_db
def test_external_usage__unknown_model__refused_naming_the_model(user_for: Any) -> None:
    # An unpriced model would be free usage: refused, with nothing recorded (see
    # tests/integrity/test_reported_usage.py for the rest of the rules).
    flow = make_flow(user_for)
    key = agent_key_create(agent=flow.agent, actor="system:test").key
    response = Client().post(
        "/api/v1/actions",
        {
            "workflow": "rt-flow", "tool": "issue_refund",
            "params": {"order_id": "1003", "amount_cents": 100, "currency": "EUR", "reason": "x"},
            "usage": {"model": "mystery-7b", "input_tokens": 10, "output_tokens": 5},
        },
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "usage.model"
    assert not ModelCall.objects.exists()
