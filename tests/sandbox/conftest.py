"""Shared helpers for the sandbox tests: the seeded system of record and a JSON POST that sends
what the HTTP connector sends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
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


def at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run call(0..count-1) on `count` threads released together; return the results in order.

    Each thread has its own database connection and closes it at the end, so the test database
    can be dropped afterwards."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call(index)
        except BaseException as exc:  # noqa: BLE001 (re-raised on the test's thread below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results
