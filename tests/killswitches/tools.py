"""In-process tools for the on-call tests (connector "callable"): a refund that records its
calls and can be undone, a ticket closure that cannot, and a no-op that takes a little time
(for the race, so that actions are in flight when a switch is engaged)."""

from __future__ import annotations

import os
import time
from typing import Any

CALLS: list[tuple[str, str]] = []  # (operation, idempotency key)
# While the file this variable names exists, slow_noop does not return (test_race.py makes the
# workers fall behind the gate that way, whatever the machine's speed). Bounded, so that a test
# that dies holding it does not keep its workers forever.
SLOW_NOOP_HOLD = "SLOW_NOOP_HOLD"
HOLD_CEILING_SECONDS = 120.0


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
    hold = os.environ.get(SLOW_NOOP_HOLD, "")
    deadline = time.monotonic() + HOLD_CEILING_SECONDS
    while hold and os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"ok": True, "n": params.get("n")}
