"""Review fixtures: refund-bot proposing refunds under the refunds book (escalation owner bob,
of the risk role); alice and frank are supervisors; held refunds are proposed straight to the
gate."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.roles import Role
from apps.actions.gate import action_propose
from apps.actions.models import Action
from apps.registry.services import IssuedKey
from apps.reviews.models import ReviewItem
from tests.actions.conftest import (  # noqa: F401 (fixtures)
    agent,
    book,
    key,
    payments,
    proposal,
    refund_params,
    refund_tool,
    refunds,
    risk_user,
)
from tests.conftest import PASSWORD, make_user


@pytest.fixture
def alice(user_for: Any) -> User:
    user: User = user_for(Role.SUPERVISOR)
    return user


@pytest.fixture
def frank(db: Any) -> User:
    """A second supervisor."""
    return make_user(Role.SUPERVISOR, "frank")


@pytest.fixture
def frank_client(frank: User) -> Client:
    client = Client()
    assert client.login(username="frank", password=PASSWORD)
    return client


def hold(issued: IssuedKey, amount_cents: int = 12_000, **changes: Any) -> ReviewItem:
    """Propose a refund the refunds book holds (above the 50.00 EUR review cap); its item."""
    values: dict[str, Any] = {
        "params": refund_params(amount_cents=amount_cents),
        "confidence": Decimal("0.93"),
    }
    values.update(changes)
    action = action_propose(key=issued.record, proposal=proposal(**values)).action
    assert action.status == "pending_review", action.reasons
    return ReviewItem.objects.get(action=action)


def reload(action: Action) -> Action:
    return Action.objects.get(pk=action.pk)
