"""Small builders for registry and book objects, shared by the tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User

from apps.books.models import BookVersion
from apps.books.policy.engine import ActionFacts
from apps.books.services import book_publish, draft_create, draft_update
from apps.registry.models import Agent, Tool, Workflow

REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount_cents": {"type": "integer", "minimum": 1},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "reason": {"type": "string"},
    },
    "required": ["order_id", "amount_cents", "currency", "reason"],
    "additionalProperties": False,
}


def make_workflow(slug: str = "refunds", name: str = "Refund requests") -> Workflow:
    return Workflow.objects.get_or_create(slug=slug, defaults={"name": name})[0]


def make_tool(
    slug: str = "issue_refund",
    *,
    schema: dict[str, Any] | None = None,
    amount_param: str = "amount_cents",
    risk_zone: str = "yellow",
    reversible: bool = True,
) -> Tool:
    return Tool.objects.get_or_create(
        slug=slug,
        defaults={
            "name": slug.replace("_", " "),
            "input_schema": schema if schema is not None else REFUND_SCHEMA,
            "amount_param": amount_param,
            "risk_zone": risk_zone,
            "reversible": reversible,
            "endpoint_url": f"http://127.0.0.1/sandbox/{slug}",
        },
    )[0]


def make_agent(
    slug: str = "refund-bot",
    *,
    owner: User,
    workflows: list[Workflow] | None = None,
    tools: list[Tool] | None = None,
    risk_tier: str = "low",
) -> Agent:
    agent, _ = Agent.objects.get_or_create(
        slug=slug, defaults={"name": slug, "owner": owner, "risk_tier": risk_tier}
    )
    agent.workflows.set(workflows if workflows is not None else [make_workflow()])
    agent.tools.set(tools if tools is not None else [make_tool()])
    return agent


REFUND_CONTROLS: dict[str, Any] = {
    "objective": "Refund customers quickly where the order evidence is clear.",
    "tools": [{"tool": "issue_refund", "risk_zone": "yellow", "auto_cap": 5000, "hard_cap": 50000}],
    "confidence_threshold": Decimal("0.8"),
    "autonomy_mode": "autonomous",
    "currency": "EUR",
}


def make_published_book(
    *, workflow: Workflow, author: User, values: dict[str, Any] | None = None, note: str = "first"
) -> BookVersion:
    """Draft, fill and publish a book version; `author` must hold the risk role."""
    draft = draft_create(workflow=workflow, user=author)
    content = {
        "escalation_owner_id": author.pk,
        **(values if values is not None else REFUND_CONTROLS),
    }
    draft_update(version_id=draft.pk, user=author, values=content)
    return book_publish(version_id=draft.pk, user=author, change_note=note)


# A refund-bot refund of 30.00 EUR on Wednesday 5 March 2025, 10:00 UTC (business hours).
WEDNESDAY_10 = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)


def refund_facts(**changes: Any) -> ActionFacts:
    """The facts of one refund proposal by refund-bot; keyword arguments replace fields."""
    facts = ActionFacts(
        agent="refund-bot",
        agent_risk_tier="low",
        agent_workflows=("refunds",),
        tool="issue_refund",
        tool_zone="yellow",
        tool_reversible=True,
        workflow="refunds",
        at=WEDNESDAY_10,
        params={"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "damaged"},
        amount=3000,
        currency="EUR",
        confidence=Decimal("0.9"),
        segment="retail",
        subject="order:1042",
    )
    return dataclasses.replace(facts, **changes)
