"""Deciding one action against a Cedar policy set.

Two questions make the three-way outcome: may the agent `execute` this action now (allow)?
Otherwise, may it `propose` it for a person (hold)? Otherwise deny. A `forbid` always wins, and
no permit means no. Each outcome names the policies that determined it.

Speed: parsing is done once per policy set (`CompiledPolicies`) and once per agent/tool pair
(`_entities`); a decision then builds one small request. Principals and resources are passed as
{type, id} dicts, which cedarpy reads about ten times faster than `Type::"id"` strings, and the
`propose` question is only asked when `execute` was refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

import cedarpy
from cedarpy import _internal

from apps.books.policy.source import split_statements

logger = logging.getLogger(__name__)

Outcome = Literal["allow", "hold", "deny"]
CEDAR_LONG_MAX = 2**63 - 1

NO_EXECUTE_PERMIT_ID = "no-permit-to-run"
NO_PROPOSE_PERMIT_ID = "no-permit-to-propose"


@dataclass(frozen=True)
class Reason:
    policy_id: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"policy": self.policy_id, "message": self.message}


@dataclass(frozen=True)
class PolicyVerdict:
    outcome: Outcome
    reasons: tuple[Reason, ...]
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionFacts:
    """What a decision is about, in the words of the schema (see schema.CONTEXT_FIELDS)."""

    agent: str
    agent_risk_tier: str
    agent_workflows: tuple[str, ...]
    tool: str
    tool_zone: str
    tool_reversible: bool
    workflow: str
    at: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    amount: int | None = None
    currency: str = ""
    confidence: Decimal | None = None
    segment: str = ""
    subject: str = ""


class CompiledPolicies:
    """A parsed policy set with the @id and @message of each policy, ready to decide."""

    def __init__(self, text: str, param_types: Mapping[str, str]) -> None:
        self.text = text
        self.param_types = dict(param_types)
        self.policy_set = cedarpy.PolicySet.from_str(text)
        # Cedar names policies policy0, policy1, ... in order of appearance.
        self.reasons = {
            f"policy{index}": Reason(
                statement.policy_id or f"policy{index}",
                statement.message or statement.policy_id or "(no message)",
            )
            for index, statement in enumerate(split_statements(text))
        }

    def reasons_for(self, cedar_ids: list[str]) -> tuple[Reason, ...]:
        return tuple(
            self.reasons.get(cedar_id, Reason(cedar_id, cedar_id)) for cedar_id in cedar_ids
        )


@lru_cache(maxsize=4096)
def _entities(
    agent: str, risk_tier: str, workflows: tuple[str, ...], tool: str, zone: str, reversible: bool
) -> Any:
    document = [
        {
            "uid": {"type": "Agent", "id": agent},
            "attrs": {"risk_tier": risk_tier},
            "parents": [{"type": "Workflow", "id": slug} for slug in workflows],
        },
        *(
            {"uid": {"type": "Workflow", "id": slug}, "attrs": {}, "parents": []}
            for slug in workflows
        ),
        {
            "uid": {"type": "Tool", "id": tool},
            "attrs": {"risk_zone": zone, "reversible": reversible},
            "parents": [],
        },
    ]
    return cedarpy.Entities.from_json_str(json.dumps(document))._inner


def _decimal_literal(value: Decimal) -> str:
    # Cedar decimals carry at most four places.
    return f"{value.quantize(Decimal('0.0001')):f}"


def build_context(facts: ActionFacts, param_types: Mapping[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, cedar_type in param_types.items():
        value = facts.params.get(name)
        if (
            (cedar_type == "Long" and type(value) is int and abs(value) <= CEDAR_LONG_MAX)
            or (cedar_type == "String" and isinstance(value, str))
            or (cedar_type == "Bool" and isinstance(value, bool))
        ):
            params[name] = value
    confidence = facts.confidence if facts.confidence is not None else Decimal(0)
    amount = facts.amount if facts.amount is not None else 0
    return {
        "workflow": facts.workflow,
        "amount": max(min(amount, CEDAR_LONG_MAX), -CEDAR_LONG_MAX),
        "has_amount": facts.amount is not None,
        "currency": facts.currency.upper(),
        "confidence": {"__extn": {"fn": "decimal", "arg": _decimal_literal(confidence)}},
        "has_confidence": facts.confidence is not None,
        "risk_zone": facts.tool_zone,
        "segment": facts.segment,
        "subject": facts.subject,
        "hour": facts.at.hour,
        "weekday": facts.at.isoweekday(),
        "params": params,
    }


def _ask(
    compiled: CompiledPolicies, facts: ActionFacts, action: str, context: str
) -> dict[str, Any]:
    request = {
        "principal": {"type": "Agent", "id": facts.agent},
        "action": {"type": "Action", "id": action},
        "resource": {"type": "Tool", "id": facts.tool},
        "context": context,
    }
    entities = _entities(
        facts.agent,
        facts.agent_risk_tier,
        facts.agent_workflows,
        facts.tool,
        facts.tool_zone,
        facts.tool_reversible,
    )
    answer: dict[str, Any] = json.loads(
        _internal.is_authorized_batch([request], compiled.policy_set, entities, None, False)[0]
    )
    return answer


def decide(compiled: CompiledPolicies, facts: ActionFacts) -> PolicyVerdict:
    context = json.dumps(build_context(facts, compiled.param_types))
    execute = _ask(compiled, facts, "execute", context)
    errors = tuple(str(error) for error in execute["diagnostics"].get("errors", []))
    if execute["decision"] == "Allow":
        return PolicyVerdict(
            "allow", compiled.reasons_for(execute["diagnostics"]["reason"]), errors
        )
    held_by = compiled.reasons_for(execute["diagnostics"]["reason"]) or (
        Reason(NO_EXECUTE_PERMIT_ID, "No policy permits running this action without review"),
    )
    propose = _ask(compiled, facts, "propose", context)
    errors += tuple(str(error) for error in propose["diagnostics"].get("errors", []))
    if errors:
        # A policy that fails to evaluate is skipped by Cedar; say so, it may be a bug.
        logger.warning("policy evaluation errors for %s/%s: %s", facts.workflow, facts.tool, errors)
    if propose["decision"] == "Allow":
        return PolicyVerdict("hold", held_by, errors)
    denied_by = compiled.reasons_for(propose["diagnostics"]["reason"]) or (
        Reason(NO_PROPOSE_PERMIT_ID, "No policy permits proposing this action"),
    )
    return PolicyVerdict("deny", denied_by, errors)
