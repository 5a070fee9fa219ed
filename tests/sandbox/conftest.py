"""Shared helpers for the sandbox tests: the sandbox switched on with a known credential, the
seeded system of record and a JSON POST that sends what the HTTP connector sends."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.demo.sandbox import sandbox_seed
from apps.sandbox.models import Order

# The sandbox's credential in tests (SANDBOX_TOKEN), which the tools pointed at it carry.
SANDBOX_TOKEN = "sandbox-credential-for-tests"


def sandbox_open(settings: Any) -> str:
    """Switch the sandbox on, with SANDBOX_TOKEN as its credential; return the credential.
    (Per request, so the live server's thread sees it too: no URLconf to reload.)"""
    settings.SANDBOX_ENABLED = True
    settings.SANDBOX_TOKEN = SANDBOX_TOKEN
    return SANDBOX_TOKEN


@pytest.fixture(autouse=True)
def _sandbox_on(settings: Any) -> None:
    sandbox_open(settings)


def post(
    client: Client,
    path: str,
    params: Any,
    *,
    key: str | None = "key-1",
    action: str | None = None,
    content_type: str = "application/json",
    credential: str | None = SANDBOX_TOKEN,
) -> Any:
    """POST params as JSON to /sandbox/<path> with an Idempotency-Key (None: without one) and
    the sandbox's credential (None: without it)."""
    headers: dict[str, str] = {}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
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
