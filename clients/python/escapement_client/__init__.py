"""The Python client of Escapement's agent API, and the audit log's stand-alone verifier
(`escapement_client.transparency`). Standard library and `cryptography` only; no Django needed.

from escapement_client import Escapement

gate = Escapement("http://127.0.0.1:8000", key="esk_...")
action = gate.propose(workflow="refunds", tool="issue_refund", subject="order:1003",
                      params={...}, confidence=0.92)
print(action.decision, action.reasons)
final = gate.wait(action.id)            # until it has run (or was refused, or failed)

@gate.governed(workflow="refunds", tool="issue_refund",
               subject=lambda p: f"order:{p['order_id']}")
def issue_refund(order_id: str, amount_cents: int, currency: str, reason: str) -> dict: ...

issue_refund("1003", 3000, "EUR", "damaged")   # proposed, decided, run by Escapement
"""

from __future__ import annotations

from escapement_client.client import (
    Action,
    ActionFailed,
    ActionNotAllowed,
    Escapement,
    EscapementError,
    WaitTimeout,
)

__all__ = [
    "Action",
    "ActionFailed",
    "ActionNotAllowed",
    "Escapement",
    "EscapementError",
    "WaitTimeout",
]
