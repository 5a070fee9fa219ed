"""A small recorded world for the ledger: two workflows with published books, an agent and
builders for actions, review items, decisions and cost events written straight to the tables
(as they would be after the gate, the queue and the runtime have done their work)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool, Workflow
from apps.reviews.models import ReviewDecision, ReviewItem
from apps.runtime.models import ModelCall
from tests.factories import (
    REFUND_CONTROLS,
    make_agent,
    make_published_book,
    make_tool,
    make_workflow,
)


@dataclass
class World:
    refunds: Workflow
    invoices: Workflow
    tool: Tool
    agent: Agent
    books: dict[str, BookVersion]
    supervisor: User
    risk: User


@pytest.fixture
def ledger_world(user_for: Any) -> World:
    risk = user_for(Role.RISK)
    refunds = make_workflow("refunds", "Refund requests")
    invoices = make_workflow("invoices", "Invoice matching")
    tool = make_tool()
    agent = make_agent(owner=user_for(Role.ADMIN), workflows=[refunds, invoices], tools=[tool])
    books = {
        "refunds": make_published_book(
            workflow=refunds,
            author=risk,
            values={
                **REFUND_CONTROLS,
                "baseline_minutes": Decimal("7.50"),
                "monthly_budget_cents": 500_000,
                "slos": {"min_approval_rate": 0.8, "max_override_rate": 0.2},
            },
        ),
        "invoices": make_published_book(
            workflow=invoices,
            author=risk,
            values={**REFUND_CONTROLS, "baseline_minutes": Decimal("3")},
        ),
    }
    return World(refunds, invoices, tool, agent, books, user_for(Role.SUPERVISOR), risk)


@pytest.fixture
def world(ledger_world: World) -> World:
    return ledger_world


def add_action(
    world: World,
    *,
    workflow: Workflow,
    status: str,
    decision: str,
    at: datetime,
    amount: int = 3000,
    confidence: str = "0.9",
) -> Action:
    return Action.objects.create(
        id=uuid.uuid4(),
        agent=world.agent,
        workflow=workflow,
        tool=world.tool,
        book_version=world.books[workflow.slug],
        status=status,
        decision=decision,
        params={"order_id": "1042", "amount_cents": amount, "currency": "EUR", "reason": "damaged"},
        subject=f"order:{amount}",
        confidence=Decimal(confidence),
        created_at=at,
    )


def add_review(
    world: World,
    action: Action,
    *,
    kind: str = "hold",
    outcome: str = "approve",
    claimed_at: datetime,
    minutes: float,
    state: str = "decided",
) -> ReviewItem:
    closed = claimed_at + timedelta(minutes=minutes)
    item = ReviewItem.objects.create(
        action=action,
        workflow=action.workflow,
        kind=kind,
        state=state,
        created_at=action.created_at,
        deadline=action.created_at + timedelta(hours=1),
        expires_at=action.created_at + timedelta(days=1),
        claimed_by=world.supervisor,
        claimed_at=claimed_at,
        closed_at=closed,
        outcome=outcome,
    )
    ReviewDecision.objects.create(
        item=item,
        user=world.supervisor,
        verdict=outcome,
        reason_code="checked",
        context={},
        created_at=closed,
    )
    return item


def add_cost(world: World, *, workflow: Workflow, at: datetime, cents: Decimal) -> ModelCall:
    return ModelCall.objects.create(
        created_at=at,
        workflow=workflow,
        agent=world.agent,
        provider="deterministic",
        model="rules",
        cost_cents=cents,
        currency="EUR",
    )
