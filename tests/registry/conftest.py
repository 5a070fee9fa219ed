"""Registry fixtures: an agent serving two workflows, owned by the admin user."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.registry.models import Agent, Workflow
from tests.factories import make_agent, make_workflow


@pytest.fixture
def refunds(db: Any) -> Workflow:
    return make_workflow("refunds", "Refund requests")


@pytest.fixture
def payments(db: Any) -> Workflow:
    return make_workflow("payments", "Outgoing payments")


@pytest.fixture
def agent(user_for: Any, refunds: Workflow, payments: Workflow) -> Agent:
    """refund-bot, serving refunds and payments."""
    return make_agent("refund-bot", owner=user_for(Role.ADMIN), workflows=[refunds, payments])
