"""Calling a tool's system of record: over HTTP (JSON, Idempotency-Key) or in-process.

The contract with an HTTP system of record: POST the params as JSON with `Idempotency-Key`;
2xx with `{"ok": true, "result": {...}}` is success; 4xx is a permanent refusal (never retried);
5xx, a timeout or a broken connection is transient (retried with backoff, counted by the
circuit breaker)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

from apps.core.tracing import client_span
from apps.registry.models import Tool

_pool = urllib3.PoolManager(num_pools=32, maxsize=16, retries=False)


class ConnectorFailure(Exception):
    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class Call:
    url: str
    callable_path: str
    payload: Mapping[str, Any]
    idempotency_key: str
    action_id: str
    timeout: float
    # The tool's credential (Tool.credential_secret): kept out of repr() so that it never shows
    # in a traceback, a debug page or a log line.
    credential: str = field(default="", repr=False)


def _http(call: Call) -> dict[str, Any]:
    where = urlsplit(call.url)
    # Sent only as a header of this request: never in the span, the log or the error message.
    credential = {"Authorization": f"Bearer {call.credential}"} if call.credential else {}
    span = client_span(
        f"POST {where.path}",
        {"server.address": where.hostname or "", "url.path": where.path, "action": call.action_id},
    )
    try:
        with span as trace_headers:
            response = _pool.request(
                "POST",
                call.url,
                body=json.dumps(call.payload).encode(),
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": call.idempotency_key,
                    "X-Escapement-Action": call.action_id,
                    **credential,
                    **trace_headers,
                },
                timeout=urllib3.Timeout(connect=min(call.timeout, 5.0), read=call.timeout),
            )
    except urllib3.exceptions.NewConnectionError:
        # (caught first: urllib3 files a refused connection under its timeouts)
        raise ConnectorFailure(
            "connection failed: refused or unreachable", transient=True
        ) from None
    except urllib3.exceptions.TimeoutError:
        raise ConnectorFailure(f"timed out after {call.timeout:g}s", transient=True) from None
    except urllib3.exceptions.HTTPError as exc:
        raise ConnectorFailure(f"connection failed: {type(exc).__name__}", transient=True) from None
    status = response.status
    try:
        body = json.loads(response.data or b"null")
    except json.JSONDecodeError:
        body = None
    if status >= 500:
        raise ConnectorFailure(f"system of record answered {status}", transient=True, status=status)
    if status >= 400:
        detail = body.get("error") if isinstance(body, dict) else None
        field = body.get("field") if isinstance(body, dict) else None
        message = f"refused with {status}" + (f": {detail}" if detail else "")
        if field:
            message += f" (field {field})"
        raise ConnectorFailure(message, transient=False, status=status)
    if (
        not isinstance(body, dict)
        or body.get("ok") is not True
        or not isinstance(body.get("result"), dict)
    ):
        raise ConnectorFailure(
            f"answered {status} without the expected {{'ok': true, 'result': {{...}}}}",
            transient=False,
            status=status,
        )
    result: dict[str, Any] = body["result"]
    return result


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, name = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ConnectorFailure(f"no callable at {path!r}", transient=False) from None
    if not callable(target):
        raise ConnectorFailure(f"{path!r} is not callable", transient=False)
    return target  # type: ignore[no-any-return]


def _in_process(call: Call) -> dict[str, Any]:
    """In-process tools are called as fn(params, *, idempotency_key) and return a dict; they
    raise ConnectorFailure to refuse or to report a transient fault."""
    result = _resolve(call.callable_path)(dict(call.payload), idempotency_key=call.idempotency_key)
    if not isinstance(result, dict):
        raise ConnectorFailure("the callable did not return a dict", transient=False)
    return result


def call_tool(
    tool: Tool, *, params: Mapping[str, Any], idempotency_key: str, action_id: str
) -> dict[str, Any]:
    call = Call(
        tool.endpoint_url,
        tool.callable_path,
        params,
        idempotency_key,
        action_id,
        tool.timeout_seconds,
        tool.credential_secret,
    )
    if tool.connector == Tool.Connector.CALLABLE:
        return _in_process(call)
    return _http(call)


def call_undo(
    tool: Tool, *, original_key: str, result: Mapping[str, Any] | None, action_id: str
) -> dict[str, Any]:
    payload = {"idempotency_key_of_original": original_key, **(result or {})}
    call = Call(
        tool.undo_endpoint_url,
        tool.undo_callable_path,
        payload,
        f"{original_key}-undo",
        action_id,
        tool.timeout_seconds,
        tool.credential_secret,
    )
    if tool.connector == Tool.Connector.CALLABLE or (
        tool.undo_callable_path and not tool.undo_endpoint_url
    ):
        return _in_process(call)
    return _http(call)
