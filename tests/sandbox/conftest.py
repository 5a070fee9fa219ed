"""Shared helpers for the sandbox tests: the seeded system of record and a JSON POST that sends
what the HTTP connector sends."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.sandbox.demo import sandbox_seed
from apps.sandbox.models import Order


def post(
    client: Client,
    path: str,
    params: Any,
    *,
    key: str | None = "key-1",
    action: str | None = None,
    content_type: str = "application/json",
) -> Any:
    """POST params as JSON to /sandbox/<path> with an Idempotency-Key (None: without one)."""
    headers: dict[str, str] = {}
    if key is not None:
        headers["Idempotency-Key"] = key
    if action is not None:
        headers["X-Escapement-Action"] = action
    return client.post(f"/sandbox/{path}", params, content_type=content_type, headers=headers)


@pytest.fixture
def seeded(db: Any) -> None:
    """Orders 1001..1020, invoices INV-2001..INV-2010 and employees E-101..E-106."""
    sandbox_seed()


def order(order_id: str) -> Order:
    return Order.objects.get(pk=order_id)
