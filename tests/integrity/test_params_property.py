"""A property of every demo tool and numeric param: whatever number text an agent sends (an
integer, a whole float, an exponent form, a fraction, a numeric string, a huge or negative
value), the gate either refuses it naming the field, or stores the canonical value, decides on
it, and the tool receives exactly what is stored."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.accounts.roles import Role
from apps.actions.decision import action_rule, active_version
from apps.actions.execution import action_execute
from apps.actions.gate import GateRefusal, Proposal, action_propose
from apps.actions.models import Action, Status
from apps.demo.world import TOOLS, WORKFLOWS, demo_world_ensure
from apps.registry.models import Agent, Tool
from apps.registry.services import IssuedKey, agent_key_create
from tests.actions import tools

# Valid params for each demo tool; the numeric param under test replaces its value.
BASE: dict[str, dict[str, Any]] = {
    "issue_refund": {"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "x"},
    "match_invoice": {
        "invoice_id": "INV-1",
        "po_number": "PO-1",
        "amount_cents": 3000,
        "currency": "EUR",
    },
    "grant_access": {
        "employee_id": "E-101",
        "system": "crm",
        "role": "viewer",
        "duration_days": 7,
    },
}

NUMERIC = [
    (spec["slug"], name)
    for spec in TOOLS
    for name, schema in spec["input_schema"]["properties"].items()
    if schema.get("type") in ("integer", "number")
]

WORKFLOW_OF = {
    tool: spec["slug"] for spec in WORKFLOWS for tool in spec["agent"][3]
}  # the demo agent of each tool's workflow uses it

number_text = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=-(10**7), max_value=10**7).map(lambda n: f"{n}.0"),
    st.tuples(st.integers(-(10**6), 10**6), st.integers(-3, 8)).map(lambda p: f"{p[0]}e{p[1]}"),
    st.tuples(st.integers(1, 10**5), st.integers(0, 4)).map(lambda p: f"{p[0]}E+{p[1]}"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**6), 10**6).map(lambda n: json.dumps(str(n))),
    st.sampled_from(["1e400", "-1e400", "9223372036854775807", "9223372036854775808", "-0.0"]),
)


def canonical(token: str) -> int | None:
    """The whole number a JSON number text names, or None (a fraction, text, not finite)."""
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value():
        return None
    return int(value)


@pytest.fixture
def demo(db: Any, user_for: Any, tool_calls: None) -> dict[str, tuple[Agent, IssuedKey]]:
    """The demo world, every tool called in-process (its calls recorded); a key per agent."""
    risk: User = user_for(Role.RISK)
    demo_world_ensure(author=risk, owner=user_for(Role.ADMIN), escalation_owner=risk)
    Tool.objects.update(
        connector=Tool.Connector.CALLABLE, callable_path="tests.actions.tools.refund"
    )
    keys = {}
    for agent in Agent.objects.all():
        keys[agent.slug] = (agent, agent_key_create(agent=agent, actor="system:test"))
    return keys


@pytest.mark.parametrize(("tool_slug", "param"), NUMERIC)
def test_numeric_param__any_number_text__refused_or_decided_and_run_as_stored(
    demo: dict[str, tuple[Agent, IssuedKey]], tool_slug: str, param: str
) -> None:
    workflow = WORKFLOW_OF[tool_slug]
    agent, issued = next(
        (agent, key) for agent, key in demo.values() if agent.tools.filter(slug=tool_slug).exists()
    )

    @settings(
        max_examples=60, deadline=None, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(token=number_text)
    def check(token: str) -> None:
        # Given a proposal whose param is the number text `token`, parsed as JSON parses it
        params = {**BASE[tool_slug], param: json.loads(token)}
        proposal = Proposal(
            workflow=workflow, tool=tool_slug, params=params, subject="property:1",
            confidence=Decimal("0.95"),
        )  # fmt: skip
        # When the gate decides it
        refused: tuple[int, str] | None = None
        try:
            action = action_propose(key=issued.record, proposal=proposal).action
        except GateRefusal as refusal:
            refused = (refusal.status, refusal.field)
        if refused is not None:
            # Then either it is refused naming the param...
            assert refused == (422, f"params.{param}")
            return
        # ...or the canonical whole number is stored, as an integer
        stored = action.params[param]
        assert type(stored) is int
        assert stored == canonical(token)
        # and the book's decision on what is stored is its decision on the canonical value
        version = active_version(workflow)
        ruling = action_rule(
            version=version, workflow=action.workflow, agent=agent, tool=action.tool,
            params={**BASE[tool_slug], param: canonical(token)}, confidence=Decimal("0.95"),
            subject="property:1",
        )  # fmt: skip
        assert action.decision == ruling.decision
        # and a queued action's tool receives exactly what is stored
        if action.status == Status.QUEUED:
            calls = len(tools.REFUNDS)
            assert action_execute(action_id=action.pk).status == Status.SUCCEEDED
            assert tools.REFUNDS[calls:][0].params == Action.objects.get(pk=action.pk).params

    check()
