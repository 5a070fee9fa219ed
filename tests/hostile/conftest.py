"""Hostile-input fixtures: a world worth attacking (refund-bot with a key, a published refunds
book, an on-call/admin user with a session and a staff token, existing actions and switches), and
the API reached in-process through its WSGI application, inside the test's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client

from apps.accounts.roles import Role
from apps.accounts.services import user_create
from apps.accounts.staff_tokens import staff_token_create
from apps.actions.gate import action_propose
from apps.killswitches.switches import switch_engage
from apps.registry.services import agent_key_create
from tests.actions.conftest import proposal
from tests.conftest import PASSWORD
from tests.factories import make_agent, make_published_book, make_tool, make_workflow

# A CSRF secret of Django's shape (32 letters and digits), sent both as the cookie and as the
# header, the way a browser session with its token would.
CSRF_SECRET = "HostileInputCsrfSecret0123456789"


@dataclass(frozen=True)
class Hostile:
    agent_key: str
    other_agent_key: str
    staff_token: str
    session_cookie: str
    staff: User
    action_ids: tuple[str, ...]
    other_action_id: str
    switch_ids: tuple[int, ...]

    def session_cookies(self) -> dict[str, str]:
        return {"sessionid": self.session_cookie, "csrftoken": CSRF_SECRET}


@pytest.fixture
def hostile(db: Any) -> Hostile:
    """refund-bot (refunds, issue_refund) and audit-bot (its own workflow), each with a key; the
    refunds book published by bob; erin with every staff role, signed in and with a staff token;
    three refund-bot actions (allowed, held, denied), one of audit-bot's, one engaged switch."""
    owner = user_create(username="bob", password=PASSWORD, roles=[Role.RISK])
    staff = user_create(
        username="erin",
        password=PASSWORD,
        roles=[Role.ADMIN, Role.ONCALL, Role.SUPERVISOR, Role.RISK],
    )
    refunds = make_workflow("refunds", "Refund requests")
    tool = make_tool("issue_refund")
    agent = make_agent("refund-bot", owner=staff, workflows=[refunds], tools=[tool])
    make_published_book(workflow=refunds, author=owner)
    key = agent_key_create(agent=agent, actor="system:test", label="hostile")

    audits = make_workflow("audits", "Audit sampling")
    other_tool = make_tool("sample_invoice")
    other = make_agent("audit-bot", owner=staff, workflows=[audits], tools=[other_tool])
    other_key = agent_key_create(agent=other, actor="system:test", label="other")
    make_published_book(workflow=audits, author=owner)
    other_action = action_propose(
        key=other_key.record,
        proposal=proposal(workflow="audits", tool="sample_invoice", idempotency_key="other-1"),
    ).action

    actions = [
        action_propose(
            key=key.record,
            proposal=proposal(params={**proposal().params, "amount_cents": cents}),
        ).action
        for cents in (3_000, 30_000, 300_000)
    ]
    switch = switch_engage(
        scope="tool",
        target="sample_invoice",
        reason="hostile-input fixture",
        actor=staff,
        via="api",
    )
    token = staff_token_create(username="erin", actor="system:test", label="hostile").token
    client = Client()
    client.force_login(staff)
    return Hostile(
        agent_key=key.key,
        other_agent_key=other_key.key,
        staff_token=token,
        session_cookie=client.cookies["sessionid"].value,
        staff=staff,
        action_ids=tuple(str(action.pk) for action in actions),
        other_action_id=str(other_action.pk),
        switch_ids=(switch.pk,),
    )


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Requests served by the WSGI application in this thread share the test's connection and
    transaction; Django closes "old" connections at each request's start and end, which would
    end that transaction. Its own test client unhooks the same handlers for the same reason."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
