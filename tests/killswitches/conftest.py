"""On-call fixtures: refund-bot in the refunds workflow with two in-process tools, issue_refund
(reversible, review-free up to 50.00 EUR, held above, denied above 500.00 EUR by a forbid
policy) and close_ticket (irreversible), the refunds book published by bob (risk), who is its
escalation owner, and helpers to propose and execute."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from apps.accounts.roles import Role
from apps.actions.execution import action_execute
from apps.actions.gate import Proposal, action_propose
from apps.actions.models import Action, Status
from apps.registry.models import Agent, AgentKey, Tool, Workflow
from apps.registry.services import agent_key_create
from tests.factories import REFUND_CONTROLS, make_agent, make_published_book, make_workflow
from tests.killswitches import tools

TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ticket_id": {"type": "string"}},
    "required": ["ticket_id"],
    "additionalProperties": False,
}
CONTROLS: dict[str, Any] = {
    **REFUND_CONTROLS,
    "tools": [*REFUND_CONTROLS["tools"], {"tool": "close_ticket", "risk_zone": "green"}],
}


@dataclass(frozen=True)
class Desk:
    agent: Agent
    key: AgentKey
    workflow: Workflow
    refund_tool: Tool
    ticket_tool: Tool
    owner: User  # bob, the book's escalation owner


def callable_tool(slug: str, call: str, undo: str = "", *, schema: dict[str, Any]) -> Tool:
    return Tool.objects.create(
        slug=slug,
        name=slug.replace("_", " "),
        input_schema=schema,
        amount_param="amount_cents" if "amount_cents" in schema["properties"] else "",
        connector=Tool.Connector.CALLABLE,
        callable_path=f"tests.killswitches.tools.{call}",
        undo_callable_path=f"tests.killswitches.tools.{undo}" if undo else "",
        reversible=bool(undo),
        risk_zone="yellow" if undo else "green",
    )


@pytest.fixture
def desk(db: Any, user_for: Any) -> Iterator[Desk]:
    from tests.factories import REFUND_SCHEMA

    tools.CALLS.clear()
    owner: User = user_for(Role.RISK)
    workflow = make_workflow()
    refund_tool = callable_tool("issue_refund", "refund", "undo_refund", schema=REFUND_SCHEMA)
    ticket_tool = callable_tool("close_ticket", "close_ticket", schema=TICKET_SCHEMA)
    agent = make_agent(
        owner=user_for(Role.ADMIN), workflows=[workflow], tools=[refund_tool, ticket_tool]
    )
    make_published_book(workflow=workflow, author=owner, values=CONTROLS)
    key = agent_key_create(agent=agent, actor="system:test").record
    yield Desk(agent, key, workflow, refund_tool, ticket_tool, owner)
    tools.CALLS.clear()


def propose(
    desk: Desk,
    *,
    amount_cents: int = 3_000,
    order_id: str = "1042",
    tool: str = "issue_refund",
    ticket_id: str = "T-1",
) -> Action:
    """refund-bot proposes a refund (or, with tool="close_ticket", a ticket closure)."""
    if tool == "close_ticket":
        params: dict[str, Any] = {"ticket_id": ticket_id}
        subject = f"ticket:{ticket_id}"
    else:
        params = {
            "order_id": order_id,
            "amount_cents": amount_cents,
            "currency": "EUR",
            "reason": "parcel arrived damaged",
        }
        subject = f"order:{order_id}"
    proposal = Proposal(
        workflow="refunds",
        tool=tool,
        params=params,
        subject=subject,
        confidence=Decimal("0.9"),
        reasoning="photo of the damaged parcel",
    )
    # The key is read afresh, as the API's authentication does for each request.
    key = AgentKey.objects.select_related("agent").get(pk=desk.key.pk)
    return action_propose(key=key, proposal=proposal).action


def executed(desk: Desk, **kwargs: Any) -> Action:
    """An action proposed, allowed and run to success in this process."""
    action = propose(desk, **kwargs)
    assert action.status == Status.QUEUED, action.reasons
    action_execute(action_id=action.pk)
    action.refresh_from_db()
    assert action.status == Status.SUCCEEDED, action.error
    return action
