"""Integrity tests: each reproduces one way around the gate and shows it closed. They reuse the
action fixtures: refund-bot, the refunds book, its keys and the recorded tool calls."""

from __future__ import annotations

from typing import Any

import pytest

from apps.registry.models import Tool
from tests.actions.conftest import (
    agent,
    book,
    key,
    payments,
    refund_tool,
    refunds,
    risk_user,
    tool_calls,
)
from tests.reviews.conftest import alice, frank

__all__ = [
    "agent",
    "alice",
    "book",
    "frank",
    "key",
    "payments",
    "refund_tool",
    "refunds",
    "risk_user",
    "tool_calls",
]


@pytest.fixture
def in_process(refund_tool: Tool, tool_calls: Any) -> Tool:
    """issue_refund called in-process: tests.actions.tools records exactly what it receives."""
    Tool.objects.filter(pk=refund_tool.pk).update(
        connector=Tool.Connector.CALLABLE, callable_path="tests.actions.tools.refund"
    )
    refund_tool.refresh_from_db()
    return refund_tool
