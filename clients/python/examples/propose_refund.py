"""Propose a refund to the demo of `make run` and print what the gate decided.

    .venv/bin/python manage.py create_agent_key refund-bot      # prints esk_...
    ESCAPEMENT_KEY=esk_... python clients/python/examples/propose_refund.py

ESCAPEMENT_URL defaults to http://127.0.0.1:8000. The first proposal (30.00 EUR) runs on its
own; the second (300.00 EUR) waits for a supervisor in the review queue; the third goes through
the `governed` decorator and returns the sandbox's refund once a worker has run it."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from escapement_client import ActionNotAllowed, Escapement, WaitTimeout


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def main() -> int:
    key = os.environ.get("ESCAPEMENT_KEY", "")
    if not key:
        say("ESCAPEMENT_KEY is not set: make one with `manage.py create_agent_key refund-bot`")
        return 2
    gate = Escapement(os.environ.get("ESCAPEMENT_URL", "http://127.0.0.1:8000"), key=key)
    run = uuid.uuid4().hex[:8]

    for amount in (3000, 30000):
        action = gate.propose(
            workflow="refunds",
            tool="issue_refund",
            subject="order:1005",
            params={"order_id": "1005", "amount_cents": amount, "currency": "EUR",
                    "reason": "parcel arrived damaged"},
            confidence=0.92,
            reasoning="photo of the damaged parcel attached to the ticket",
            idempotency_key=f"example-{run}-{amount}",
            usage={"model": "gpt-4o-mini", "provider": "openai",
                   "input_tokens": 850, "output_tokens": 120},
        )  # fmt: skip
        say(f"{amount / 100:.2f} EUR: decision {action.explain()}")
        try:
            final = gate.wait(action.id, until="finished", timeout=10)
            say(f"  -> {final.status} {final.result or final.error}")
        except WaitTimeout as waiting:
            say(f"  -> still {waiting.action.status}: a supervisor decides it in the queue")

    @gate.governed(
        workflow="refunds",
        tool="issue_refund",
        subject=lambda params: f"order:{params['order_id']}",
        confidence=0.95,
        timeout=30,
    )
    def issue_refund(
        order_id: str, amount_cents: int, currency: str, reason: str
    ) -> dict[str, Any]:
        """Refund part of an order to the customer's original payment method."""
        raise NotImplementedError  # Escapement runs the registered tool

    try:
        refund = issue_refund("1005", 1200, "EUR", "item never arrived")
        say(f"governed call: refunded {refund}")
    except ActionNotAllowed as refused:
        say(f"governed call: not run: {refused}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
