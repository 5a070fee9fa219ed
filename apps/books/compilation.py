"""From a book version to a decision: compile its controls and raw Cedar into one policy set
with its schema, check it, cache it, and decide actions under the book's autonomy mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from threading import Lock
from typing import Any

from pydantic import ValidationError

from apps.books.content import ToolRule
from apps.books.models import AutonomyMode, BookVersion
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import (
    ActionFacts,
    CompiledPolicies,
    NativeInputs,
    PolicyVerdict,
    Reason,
    decide,
)
from apps.books.policy.schema import ToolParams, build_schema, param_types
from apps.books.policy.validation import PolicyProblem, validate_policies
from apps.registry.models import Agent, Tool

CONTROLS_HEADER = "// Compiled from the Decision Book's controls. Edit the form, not this text.\n"
RAW_HEADER = "\n// Raw Cedar policies of this book.\n"


def tool_rules(version: BookVersion) -> list[ToolRule]:
    rules = []
    for entry in version.tools or []:
        try:
            rules.append(ToolRule.model_validate(entry))
        except ValidationError:
            continue  # reported by book_problems; compile what is valid
    return rules


def _controls(version: BookVersion) -> Controls:
    hours = None
    if version.business_hours_start is not None and version.business_hours_end is not None:
        hours = (version.business_hours_start, version.business_hours_end)
    return Controls(
        tools=tool_rules(version),
        confidence_threshold=version.confidence_threshold,
        allowed_segments=list(version.allowed_segments or []),
        business_hours=hours,
        weekdays_only=version.weekdays_only,
        currency=version.currency,
    )


def _params(version: BookVersion) -> dict[str, str]:
    slugs = [rule.tool for rule in tool_rules(version)]
    tools = Tool.objects.filter(slug__in=slugs).only("slug", "input_schema")
    return param_types(ToolParams(tool.slug, tool.input_schema) for tool in tools)


def controls_text(version: BookVersion) -> str:
    return CONTROLS_HEADER + compile_controls(_controls(version))


def book_compile(version: BookVersion) -> tuple[str, str]:
    """(policy text, Cedar schema) for a version's current content."""
    raw = version.raw_policies.strip()
    text = controls_text(version) + (RAW_HEADER + raw + "\n" if raw else "")
    return text, build_schema(_params(version))


def book_problems(version: BookVersion) -> list[PolicyProblem]:
    """Everything that stops a draft from being published."""
    problems: list[PolicyProblem] = []
    known = set(Tool.objects.values_list("slug", flat=True))
    for position, entry in enumerate(version.tools or [], start=1):
        try:
            rule = ToolRule.model_validate(entry)
        except ValidationError as exc:
            cause = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
            problems.append(PolicyProblem("controls", position, "tools", cause))
            continue
        if rule.tool not in known:
            problems.append(
                PolicyProblem("controls", position, "tools", f"No tool {rule.tool!r} is registered")
            )
    start, end = version.business_hours_start, version.business_hours_end
    if (start is None) != (end is None):
        problems.append(
            PolicyProblem("controls", 1, "business-hours", "Give both the start and the end hour")
        )
    elif start is not None and end is not None and start >= end:
        problems.append(
            PolicyProblem(
                "controls", 1, "business-hours", "The start hour must come before the end"
            )
        )
    if version.escalation_owner_id is None:
        problems.append(
            PolicyProblem("controls", 1, "escalation-owner", "Name an escalation owner")
        )
    schema = build_schema(_params(version))
    problems += validate_policies(
        compile_controls(_controls(version)), version.raw_policies, schema
    )
    return problems


_cache: dict[int, CompiledPolicies] = {}
_cache_lock = Lock()


def compiled_for(version: BookVersion) -> CompiledPolicies:
    """The parsed policy set of a version. Published versions never change, so theirs is kept
    for the life of the process; a draft is compiled afresh from its content each time, and
    parsed again only when that content changed (a backtest asks once per part)."""
    if version.is_draft:
        text, _ = book_compile(version)
        return _compiled_text(text, tuple(sorted(_params(version).items())))
    compiled = _cache.get(version.pk)
    if compiled is None:
        with _cache_lock:
            compiled = _cache.get(version.pk)
            if compiled is None:
                compiled = CompiledPolicies(version.policy_text, _params(version))
                _cache[version.pk] = compiled
    return compiled


@lru_cache(maxsize=16)
def _compiled_text(text: str, params: tuple[tuple[str, str], ...]) -> CompiledPolicies:
    return CompiledPolicies(text, dict(params))


@dataclass(frozen=True)
class BookDecision:
    decision: str  # allow | hold | deny | observe
    reasons: tuple[Reason, ...]
    policy: PolicyVerdict
    spot_check: bool = False


MODE_REASONS = {
    AutonomyMode.OBSERVE: Reason(
        "autonomy-observe", "Observe mode: decisions are logged, nothing is executed"
    ),
    AutonomyMode.ASSIST: Reason(
        "autonomy-assist", "Assist mode: every allowed action waits for a person"
    ),
}
RED_ZONE = Reason("red-zone", "Red-zone tool: people approve every use")
YELLOW_HELD = Reason(
    "yellow-zone", "Yellow-zone tool in constrained mode: a person approves before it runs"
)


def zone_of(version: BookVersion, tool_slug: str, default: str) -> str:
    for rule in tool_rules(version):
        if rule.tool == tool_slug:
            return rule.risk_zone
    return default


def book_decide(version: BookVersion, facts: ActionFacts) -> BookDecision:
    """The policy's verdict, then the book's autonomy mode and risk zones on top of it."""
    return book_decide_compiled(version, compiled_for(version), facts)


def book_decide_compiled(
    version: BookVersion,
    compiled: CompiledPolicies,
    facts: ActionFacts,
    *,
    explain: bool = True,
    native: NativeInputs | None = None,
) -> BookDecision:
    """As `book_decide`, on policies the caller parsed once (a backtest deciding a draft over
    many recorded actions); `explain` and `native` as `engine.decide` takes them."""
    verdict = decide(compiled, facts, explain=explain, native=native)
    mode = version.autonomy_mode
    if mode == AutonomyMode.OBSERVE:
        return BookDecision(
            "observe", (MODE_REASONS[AutonomyMode.OBSERVE], *verdict.reasons), verdict
        )
    if verdict.outcome != "allow":
        return BookDecision(verdict.outcome, verdict.reasons, verdict)
    if facts.tool_zone == "red":
        return BookDecision("hold", (RED_ZONE,), verdict)
    if mode == AutonomyMode.ASSIST:
        return BookDecision("hold", (MODE_REASONS[AutonomyMode.ASSIST], *verdict.reasons), verdict)
    if facts.tool_zone == "yellow":
        if mode == AutonomyMode.CONSTRAINED:
            return BookDecision("hold", (YELLOW_HELD,), verdict)
        return BookDecision("allow", verdict.reasons, verdict, spot_check=True)
    return BookDecision("allow", verdict.reasons, verdict)


def confidence_from(value: float | str | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value))


def action_facts(
    *,
    version: BookVersion,
    agent: Agent,
    tool: Tool,
    params: Mapping[str, Any],
    confidence: Decimal | None,
    at: datetime,
    segment: str = "",
    subject: str = "",
    agent_workflows: tuple[str, ...] | None = None,
) -> ActionFacts:
    """What the policy sees of one proposed action, from the registry and the book
    (`agent_workflows`: the agent's workflow slugs, sorted, when the caller has read them)."""
    amount = params.get(tool.amount_param) if tool.amount_param else None
    currency = params.get("currency")
    return ActionFacts(
        agent=agent.slug,
        agent_risk_tier=agent.risk_tier,
        agent_workflows=agent_workflows
        if agent_workflows is not None
        else tuple(sorted(agent.workflows.values_list("slug", flat=True))),
        tool=tool.slug,
        tool_zone=zone_of(version, tool.slug, tool.risk_zone),
        tool_reversible=tool.reversible,
        workflow=version.workflow.slug,
        at=at,
        params=params,
        amount=amount if type(amount) is int else None,
        currency=currency if isinstance(currency, str) else version.currency,
        confidence=confidence,
        segment=segment,
        subject=subject,
    )
