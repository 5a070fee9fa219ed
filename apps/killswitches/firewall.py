"""The behavioural firewall: an agent that acts outside its scope, bursts far above its usual
rate, or keeps tripping forbid policies is quarantined automatically (apps/killswitches/
switches.py: agent_quarantine), with what was counted as the reason, for on-call to see.

The gate calls three hooks. Each costs one round trip to the counters (counters.py), none to
the database, unless it trips:

- `firewall_scope_violation`: a proposal refused for a tool or workflow outside the agent's
  scope (still refused with 403; now counted);
- `firewall_proposal`: every proposal about to be recorded, for the rate. When it trips, the
  quarantine commits first and the proposal that tripped it is recorded as blocked;
- `firewall_decided`: after a proposal is recorded; a denial by a forbid policy is counted.

Thresholds are settings (FIREWALL_* in controlplane/settings.py)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from apps.actions.models import Action, Status
from apps.killswitches.counters import Window, count, counters, window
from apps.killswitches.switches import agent_quarantine
from apps.registry.models import Agent

logger = logging.getLogger(__name__)

# Reasons of a denial that are not a forbid policy: no permit at all, or nothing evaluated.
NOT_FORBIDS = frozenset(
    {"no-permit-to-run", "no-permit-to-propose", "not-evaluated", "no-active-book"}
)


def _subject(agent: Agent) -> str:
    # The creation time keeps the counters of a re-created agent (same id, a new database)
    # apart from those of the old one.
    created = int(agent.created_at.timestamp() * 1_000_000) if agent.created_at else 0
    return f"agent:{agent.pk}.{created}"


def firewall_scope_violation(agent: Agent, *, field: str, value: str, message: str) -> None:
    if not settings.FIREWALL_ENABLED:
        return
    limit: int = settings.FIREWALL_SCOPE_VIOLATIONS
    seconds: int = settings.FIREWALL_SCOPE_WINDOW_SECONDS
    totals = count(_subject(agent), [window("scope", seconds)])
    if totals is None or totals[0] < limit:
        return
    _quarantine(
        agent,
        trigger="scope",
        reason=(
            f"Firewall: {totals[0]} proposal(s) outside its scope within {seconds} s "
            f"(limit {limit}); the last: {field} {value!r}, {message}"
        ),
        evidence={
            "count": totals[0],
            "limit": limit,
            "window_seconds": seconds,
            "last": {"field": field, "value": value, "message": message},
        },
    )


def rate_windows() -> tuple[Window, Window]:
    recent: int = settings.FIREWALL_RATE_WINDOW_SECONDS
    trailing: int = settings.FIREWALL_RATE_TRAILING_SECONDS
    return window("rate", recent), window("trail", max(trailing, recent * 2), buckets=60)


def firewall_proposal(agent: Agent) -> None:
    if not settings.FIREWALL_ENABLED:
        return
    recent_window, trailing_window = rate_windows()
    totals = count(_subject(agent), [recent_window, trailing_window])
    if totals is None:
        return
    recent, trailing = totals
    floor: int = settings.FIREWALL_RATE_FLOOR
    multiple: float = settings.FIREWALL_RATE_MULTIPLE
    if recent <= floor:
        return  # cheap exit: below the floor nothing can trip
    # The usual rate: the trailing period without the recent window, per window length.
    periods = max(1.0, trailing_window.seconds / recent_window.seconds - 1)
    usual = max(0, trailing - recent) / periods
    threshold = max(float(floor), multiple * usual)
    if recent <= threshold:
        return
    _quarantine(
        agent,
        trigger="rate",
        reason=(
            f"Firewall: {recent} proposals in the last {recent_window.seconds} s; its usual "
            f"rate is {usual:.1f} per {recent_window.seconds} s over the last "
            f"{trailing_window.seconds // 60} min (limit: the larger of {floor} and "
            f"{multiple:g} x {usual:.1f})"
        ),
        evidence={
            "count": recent,
            "window_seconds": recent_window.seconds,
            "usual_per_window": round(usual, 2),
            "trailing_seconds": trailing_window.seconds,
            "floor": floor,
            "multiple": multiple,
            "threshold": round(threshold, 2),
        },
    )


def firewall_decided(agent: Agent, action: Action) -> None:
    if not settings.FIREWALL_ENABLED or action.status != Status.DENIED:
        return
    forbids = [
        reason.get("policy", "")
        for reason in action.reasons
        if reason.get("policy", "") not in NOT_FORBIDS
    ]
    if not forbids:
        return
    limit: int = settings.FIREWALL_DENIALS
    seconds: int = settings.FIREWALL_DENIAL_WINDOW_SECONDS
    totals = count(_subject(agent), [window("deny", seconds)])
    if totals is None or totals[0] < limit:
        return
    _quarantine(
        agent,
        trigger="denials",
        reason=(
            f"Firewall: {totals[0]} proposals denied by forbid policies within {seconds} s "
            f"(limit {limit}); the last: {', '.join(forbids)} on "
            f"{action.subject or action.tool.slug}"
        ),
        evidence={
            "count": totals[0],
            "limit": limit,
            "window_seconds": seconds,
            "last": {"action": str(action.pk), "policies": forbids, "subject": action.subject},
        },
    )


def _quarantine(agent: Agent, *, trigger: str, reason: str, evidence: dict[str, Any]) -> None:
    agent_id = agent.pk

    def run() -> None:
        agent_quarantine(agent_id=agent_id, trigger=trigger, reason=reason, evidence=evidence)

    # In its own transaction, after the caller's (if any) has committed: the quarantine takes
    # the engage fence, which must never be asked for while holding the audit chain's lock.
    transaction.on_commit(run)


def firewall_forget(agent: Agent) -> None:
    """Drop the agent's counters (after on-call has looked into a quarantine, say)."""
    counters().clear(_subject(agent))
