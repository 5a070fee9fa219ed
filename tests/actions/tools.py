"""In-process tool functions for the action tests (connector "callable"): each call is recorded,
so a test can see what the connector sent (params, idempotency key) and how often."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.actions.connectors import ConnectorFailure


@dataclass(frozen=True)
class Call:
    params: dict[str, Any]
    idempotency_key: str


REFUNDS: list[Call] = []
UNDOS: list[Call] = []


def forget() -> None:
    REFUNDS.clear()
    UNDOS.clear()


def refund(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    REFUNDS.append(Call(params, idempotency_key))
    return {"refund_id": f"R-{len(REFUNDS)}", "amount_cents": params.get("amount_cents")}


def undo_refund(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    UNDOS.append(Call(params, idempotency_key))
    return {"reversed": params.get("refund_id")}


def undo_refused(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    UNDOS.append(Call(params, idempotency_key))
    raise ConnectorFailure("refused with 409: refund already paid out", transient=False)
