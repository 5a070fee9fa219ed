"""Integrity tests: each reproduces one way around the gate and shows it closed. They reuse the
action, review and kill switch fixtures of their apps."""

from __future__ import annotations

from tests.actions.conftest import agent, book, key, payments, refund_tool, refunds, risk_user

__all__ = ["agent", "book", "key", "payments", "refund_tool", "refunds", "risk_user"]
