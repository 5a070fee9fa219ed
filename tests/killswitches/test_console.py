"""The on-call console shows engaged switches and every tool's circuit breaker."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import ToolCircuit
from apps.killswitches.models import KillSwitch
from tests.factories import make_tool

pytestmark = pytest.mark.django_db


def test_console__open_circuit_and_engaged_switch__both_shown(client_for: Any) -> None:
    # Given an open circuit on issue_refund and an engaged switch on refund-bot
    ToolCircuit.objects.create(
        tool=make_tool(),
        state=ToolCircuit.State.OPEN,
        consecutive_failures=5,
        opened_at=timezone.now(),
        last_error="system of record answered 503",
    )
    KillSwitch.objects.create(
        scope="agent",
        target="refund-bot",
        reason="refund loop on order 1003",
        engaged_by="dana",
        engaged_at=timezone.now(),
    )
    # When on-call opens the console
    html = client_for(Role.ONCALL).get("/oncall/").content.decode()
    # Then both are there, with the error and the reason
    assert '<span class="badge badge-bad">open</span>' in html
    assert "system of record answered 503" in html
    assert "agent: refund-bot" in html
    assert "refund loop on order 1003" in html


def test_console__htmx_refresh__returns_only_the_state(client_for: Any) -> None:
    response = client_for(Role.ONCALL).get("/oncall/", headers={"HX-Request": "true"})
    html = response.content.decode().strip()
    assert html.startswith('<div id="console-state"')
    assert "<html" not in html
