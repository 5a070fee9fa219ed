"""The client: propose, read, wait, and the `governed` decorator."""

from __future__ import annotations

import functools
import inspect
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypeVar, cast

# Statuses in which the gate or a person has not yet decided.
UNDECIDED = frozenset({"proposed", "pending_review"})
# Statuses after which nothing more happens to the action (succeeded may still be rolled back).
FINISHED = frozenset(
    {
        "succeeded",
        "failed",
        "denied",
        "observed",
        "blocked",
        "rejected",
        "expired",
        "cancelled",
        "rolled_back",
        "rollback_failed",
    }
)
NOT_RUN = frozenset({"denied", "observed", "blocked", "rejected", "expired", "cancelled"})

F = TypeVar("F", bound=Callable[..., Any])


class EscapementError(Exception):
    """The API answered with an error: `status`, `detail` and the fields at fault."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None):
        self.status = status
        self.detail = detail
        self.errors = errors or []
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in self.errors)
        super().__init__(f"{status}: {detail}" + (f" ({fields})" if fields else ""))


@dataclass(frozen=True)
class Action:
    id: str
    status: str
    decision: str
    reasons: list[dict[str, str]]
    result: dict[str, Any] | None
    error: str
    book_version: int | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Action:
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            decision=str(data["decision"]),
            reasons=list(data.get("reasons") or []),
            result=data.get("result"),
            error=str(data.get("error") or ""),
            book_version=data.get("book_version"),
            raw=dict(data),
        )

    @property
    def decided(self) -> bool:
        return self.status not in UNDECIDED

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def explain(self) -> str:
        why = "; ".join(f"{r.get('policy')}: {r.get('message')}" for r in self.reasons)
        return f"{self.decision} ({self.status})" + (f": {why}" if why else "")


class ActionNotAllowed(Exception):
    """The action will not run: denied, observed only, blocked, rejected, expired, cancelled."""

    def __init__(self, action: Action) -> None:
        self.action = action
        super().__init__(f"action {action.id} was not run: {action.explain()}")


class ActionFailed(Exception):
    """The action was allowed but failed in the system of record."""

    def __init__(self, action: Action) -> None:
        self.action = action
        super().__init__(f"action {action.id} failed: {action.error}")


class WaitTimeout(Exception):
    """The action did not get where it was waited for in time; `action` is how it stood."""

    def __init__(self, action: Action, until: str, timeout: float) -> None:
        self.action = action
        super().__init__(
            f"action {action.id} still {action.status} after {timeout:g}s (waited until {until})"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Escapement:
    """One agent's connection to Escapement: the base URL and the agent's API key."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http:// or https:// address, got {base_url!r}")
        if not key:
            raise ValueError("key: the agent's API key is required (manage.py create_agent_key)")
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Escapement({self.base_url!r})"

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body, default=_jsonable).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            f"{self.base_url}/api/v1{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"null")
            except ValueError:
                payload = None
            if isinstance(payload, dict):
                raise EscapementError(
                    exc.code, str(payload.get("detail", "")), payload.get("errors")
                ) from None
            raise EscapementError(exc.code, exc.reason or "error") from None

    def propose(
        self,
        *,
        workflow: str,
        tool: str,
        params: Mapping[str, Any],
        subject: str = "",
        confidence: float | Decimal | None = None,
        reasoning: str = "",
        evidence: list[Any] | None = None,
        idempotency_key: str | None = None,
        usage: Mapping[str, Any] | None = None,
        trace_id: str = "",
        segment: str = "",
    ) -> Action:
        """Propose one action; the answer carries the gate's decision and its reasons.

        `usage` ({"model", "provider", "input_tokens", "output_tokens"}) is the model call
        behind the proposal: priced and counted against the workflow's and agent's budgets."""
        body: dict[str, Any] = {
            "workflow": workflow,
            "tool": tool,
            "params": dict(params),
            "subject": subject,
            "reasoning": reasoning,
            "evidence": evidence or [],
            "trace_id": trace_id,
            "segment": segment,
        }
        if confidence is not None:
            body["confidence"] = str(round(Decimal(str(confidence)), 4))
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if usage is not None:
            body["usage"] = dict(usage)
        return Action.from_json(self._request("POST", "/actions", body))

    def get(self, action_id: str) -> Action:
        return Action.from_json(self._request("GET", f"/actions/{action_id}"))

    def wait(
        self,
        action_id: str,
        *,
        until: Literal["decided", "finished"] = "finished",
        timeout: float = 60.0,
        interval: float = 0.5,
    ) -> Action:
        """Poll the action until it is `decided` (a person or the gate has settled whether it
        runs) or `finished` (it ran, failed, or will never run). Raises WaitTimeout."""
        if until not in ("decided", "finished"):
            raise ValueError(f"until: expected 'decided' or 'finished', got {until!r}")
        deadline = time.monotonic() + timeout
        while True:
            action = self.get(action_id)
            if action.decided if until == "decided" else action.finished:
                return action
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(action, until, timeout)
            time.sleep(min(interval, left))

    def governed(
        self,
        *,
        workflow: str,
        tool: str,
        subject: str | Callable[[dict[str, Any]], str] = "",
        confidence: float | Callable[[dict[str, Any]], float | None] | None = None,
        idempotency_key: Callable[[dict[str, Any]], str] | None = None,
        timeout: float = 60.0,
    ) -> Callable[[F], F]:
        """Put a tool function behind the gate.

        Calling the decorated function proposes its arguments (bound to its parameter names)
        as the params of `tool`; Escapement decides, a person reviews if the book says so, and
        Escapement's worker runs the registered tool against the system of record. The call
        returns the tool's result, or raises ActionNotAllowed, ActionFailed or WaitTimeout.
        The function's own body is never run: it gives the tool its name, signature and
        description for the agent framework, and the control plane does the work, so that kill
        switches, idempotency and rollback hold for it like for any action."""

        def decorate(func: F) -> F:
            signature = inspect.signature(func)

            @functools.wraps(func)
            def call(*args: Any, **kwargs: Any) -> Any:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                params = dict(bound.arguments)
                action = self.propose(
                    workflow=workflow,
                    tool=tool,
                    params=params,
                    subject=subject(params) if callable(subject) else subject,
                    confidence=confidence(params) if callable(confidence) else confidence,
                    idempotency_key=idempotency_key(params) if idempotency_key else None,
                    reasoning=(func.__doc__ or "").strip()[:10_000],
                )
                final = action if action.finished else self.wait(action.id, timeout=timeout)
                if final.status in NOT_RUN:
                    raise ActionNotAllowed(final)
                if final.status != "succeeded":
                    raise ActionFailed(final)
                return final.result

            call.escapement = {"workflow": workflow, "tool": tool}  # type: ignore[attr-defined]
            return cast(F, call)

        return decorate
