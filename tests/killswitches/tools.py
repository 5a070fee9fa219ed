"""In-process tools for the on-call tests (connector "callable"): a refund that records its
calls and can be undone, a ticket closure that cannot, and a no-op that takes a little time
(for the race, so that actions are in flight when a switch is engaged)."""

from __future__ import annotations

import time
from typing import Any

CALLS: list[tuple[str, str]] = []  # (operation, idempotency key)


def refund(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    CALLS.append(("refund", idempotency_key))
    return {"refund_id": f"R-{idempotency_key}", "amount_cents": params.get("amount_cents")}


def undo_refund(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    CALLS.append(("undo", idempotency_key))
    return {"reversed": params.get("refund_id")}


def close_ticket(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    CALLS.append(("close", idempotency_key))
    return {"closed": params.get("ticket_id")}


def slow_noop(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    time.sleep(0.3)
    return {"ok": True, "n": params.get("n")}
