"""Action fixtures: refund-bot serving refunds and payments with the issue_refund tool, the
refunds book published by bob (risk, also its escalation owner), and helpers to propose."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.roles import Role
from apps.actions.gate import Proposal
from apps.actions.models import Action
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool, Workflow
from apps.registry.services import IssuedKey, agent_key_create
from tests.actions import tools
from tests.factories import make_agent, make_published_book, make_tool, make_workflow

if TYPE_CHECKING:
    # What the test client returns: a response with .json(); it exists in the stubs only.
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

# pytest-django's django_capture_on_commit_callbacks fixture.
CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]

# A refund of 30.00 EUR: under the 50.00 review cap, so the refunds book allows it.
GOOD_PARAMS: dict[str, Any] = {
    "order_id": "1042",
    "amount_cents": 3000,
    "currency": "EUR",
    "reason": "damaged",
}


def proposal_body(**changes: Any) -> dict[str, Any]:
    """A JSON proposal the refunds book allows; keyword arguments replace or add fields."""
    body: dict[str, Any] = {
        "workflow": "refunds",
        "tool": "issue_refund",
        "params": dict(GOOD_PARAMS),
        "subject": "order:1042",
        "confidence": 0.93,
        "reasoning": "The parcel arrived damaged; photo in the ticket.",
        "evidence": [{"source": "ticket:77", "snippet": "box crushed"}],
        "trace_id": "trace-1",
    }
    body.update(changes)
    return body


def proposal(**changes: Any) -> Proposal:
    """The same proposal as `proposal_body`, for calling the gate directly."""
    values: dict[str, Any] = {
        "workflow": "refunds",
        "tool": "issue_refund",
        "params": dict(GOOD_PARAMS),
        "subject": "order:1042",
        "confidence": Decimal("0.93"),
        "reasoning": "The parcel arrived damaged; photo in the ticket.",
        "trace_id": "trace-1",
    }
    values.update(changes)
    return Proposal(**values)


def refund_params(**changes: Any) -> dict[str, Any]:
    return {**GOOD_PARAMS, **changes}


def propose(client: Client, key: str | None, body: Any, **headers: str) -> TestResponse:
    """POST a proposal; `key` None sends no Authorization header."""
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    return client.post("/api/v1/actions", body, content_type="application/json", headers=headers)


def recorded() -> tuple[int, int]:
    """(actions, audit events): what a refusal must leave unchanged."""
    return Action.objects.count(), AuditEvent.objects.count()


def verbs_of(action_id: object) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="actions.action", target_id=str(action_id))
        .order_by("sequence")
        .values_list("verb", flat=True)
    )


@pytest.fixture
def risk_user(user_for: Any) -> User:
    """bob: publishes the refunds book and is its escalation owner."""
    user: User = user_for(Role.RISK)
    return user


@pytest.fixture
def refunds(db: Any) -> Workflow:
    return make_workflow("refunds", "Refund requests")


@pytest.fixture
def payments(db: Any) -> Workflow:
    return make_workflow("payments", "Outgoing payments")


@pytest.fixture
def refund_tool(db: Any) -> Tool:
    return make_tool("issue_refund")


@pytest.fixture
def agent(user_for: Any, refunds: Workflow, payments: Workflow, refund_tool: Tool) -> Agent:
    """refund-bot: serves refunds and payments, may use issue_refund only."""
    return make_agent(
        "refund-bot", owner=user_for(Role.ADMIN), workflows=[refunds, payments], tools=[refund_tool]
    )


@pytest.fixture
def book(refunds: Workflow, refund_tool: Tool, risk_user: User) -> BookVersion:
    """Version 1 of the refunds book (REFUND_CONTROLS), active."""
    return make_published_book(workflow=refunds, author=risk_user)


@pytest.fixture
def key(agent: Agent) -> IssuedKey:
    """A key of refund-bot for all its workflows."""
    return agent_key_create(agent=agent, actor="system:test", label="tests")


@pytest.fixture
def in_process_tool(refund_tool: Tool) -> Tool:
    """issue_refund run by the tests' in-process refund function (tests/actions/tools.py)."""
    refund_tool.connector = Tool.Connector.CALLABLE
    refund_tool.callable_path = "tests.actions.tools.refund"
    refund_tool.save()
    return refund_tool


@pytest.fixture
def tool_calls() -> Iterator[None]:
    """Empties the call records of tests.actions.tools around each test."""
    tools.forget()
    yield
    tools.forget()
