"""The benchmark's no-op tool (connector "callable"): what is left of executing an action when
the system of record costs nothing."""

from __future__ import annotations

from typing import Any


def noop(params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
    return {"ok": True}
