"""Deciding one action against a Cedar policy set.

Two questions make the three-way outcome: may the agent `execute` this action now (allow)?
Otherwise, may it `propose` it for a person (hold)? Otherwise deny. A `forbid` always wins, and
no permit means no. Each outcome names the policies that determined it.

Speed: parsing is done once per policy set (`CompiledPolicies`) and once per agent/tool pair
(`_entities`); a decision then builds one small request. Principals and resources are passed as
{type, id} dicts, which cedarpy reads about ten times faster than `Type::"id"` strings, and the
`propose` question is only asked when `execute` was refused.

Each question goes to a slice of the set: the policies whose scope can match that action on that
tool, with only the context fields they read. Cedar checks a policy's scope before its
conditions, so a policy scoped to another action or tool can neither match nor fail, and a field
no remaining policy reads cannot change the answer: the verdict is the one of the whole set, but
Cedar's cost grows with the policies it evaluates and the context it parses (the confidence
decimal above all); see docs/benchmarks.md.

Each slice is also compiled for the in-process evaluator (`native.py`), which answers the same
questions without crossing into cedarpy; a slice using a construct that evaluator does not know
is asked of cedarpy, and so is every slice when `POLICY_EVALUATOR=cedar` is set.

Text over the limits of `limits.py` (a version stored before they existed) is never given to
cedarpy: such a set decides nothing, and every action under it is denied as not evaluated.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Context, Decimal
from functools import lru_cache
from typing import Any, Literal

import cedarpy
from cedarpy import _internal

from apps.books.policy import limits
from apps.books.policy.native import CedarDecimal, EntityStore, NativePolicies, Uid

logger = logging.getLogger(__name__)

Outcome = Literal["allow", "hold", "deny"]
CEDAR_LONG_MAX = 2**63 - 1

NO_EXECUTE_PERMIT_ID = "no-permit-to-run"
NO_PROPOSE_PERMIT_ID = "no-permit-to-propose"
NOT_EVALUATED_ID = "not-evaluated"


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


@dataclass(frozen=True)
class PolicySlice:
    """The policies that can apply to one action on one tool, and the context fields they read
    (None when one of them uses the context as a whole)."""

    policy_set: Any
    fields: frozenset[str] | None
    native: NativePolicies | None = None


class CompiledPolicies:
    """A parsed policy set with the @id and @message of each policy, ready to decide."""

    def __init__(self, text: str, param_types: Mapping[str, str]) -> None:
        self.text = text
        self.param_types = dict(param_types)
        self.policy_set: Any = None
        self.policies: dict[str, dict[str, Any]] = {}
        self.reasons: dict[str, Reason] = {}
        self._sliceable = False
        self._pinned_tools: set[str] = set()
        self._slices: dict[tuple[str, str | None], PolicySlice] = {}
        # Why this set cannot decide anything ("" when it can): see `decide`.
        self.refusal = _refusal(text)
        if self.refusal:
            logger.error("policy set refused before parsing: %s", self.refusal)
            return
        policy_set = cedarpy.PolicySet.from_str(text)
        # Cedar's own JSON form of the policies (named policy0, policy1, ... in order of
        # appearance), for their annotations and scopes.
        document = json.loads(cedarpy.policies_to_json_str(text))
        policies: dict[str, dict[str, Any]] = document.get("staticPolicies", {})
        for cedar_id, policy in policies.items():
            too_deep = limits.expression_problem(policy)
            if too_deep:
                # Its slices could not be built (serde refuses the JSON), nor walked safely.
                name = (policy.get("annotations") or {}).get("id") or cedar_id
                self.refusal = f"the policy {name!r} is over the limits: {too_deep}"
                logger.error("policy set refused after parsing: %s", self.refusal)
                return
        self.policy_set = policy_set
        self.policies = policies
        self.reasons = {
            cedar_id: _reason(cedar_id, policy.get("annotations") or {})
            for cedar_id, policy in self.policies.items()
        }
        # Templates are not sliced (a book has none; a linked one is decided on the whole set).
        self._sliceable = not document.get("templates") and not document.get("templateLinks")
        self._pinned_tools = {
            scope["entity"]["id"]
            for scope in (policy["resource"] for policy in self.policies.values())
            if scope["op"] == "==" and scope.get("entity", {}).get("type") == "Tool"
        }

    def reasons_for(self, cedar_ids: list[str]) -> tuple[Reason, ...]:
        # In the order the policies are written (cedarpy's order varies from call to call).
        if len(cedar_ids) == 1:  # the commonest answer: one policy decided
            return (self.reasons.get(cedar_ids[0]) or Reason(cedar_ids[0], cedar_ids[0]),)
        ordered = sorted(cedar_ids, key=_policy_position)
        return tuple(
            self.reasons.get(cedar_id) or Reason(cedar_id, cedar_id) for cedar_id in ordered
        )

    def slice_for(self, action: str, tool: str) -> PolicySlice:
        if not self._sliceable:
            return PolicySlice(self.policy_set, None)
        # Tools no policy names by `==` all share one slice, so there are at most
        # 2 x (named tools + 1) of them, whatever tools are asked about.
        key = (action, tool if tool in self._pinned_tools else None)
        found = self._slices.get(key)
        if found is None:
            found = self._slices[key] = self._slice(action, key[1])
        return found

    def _slice(self, action: str, tool: str | None) -> PolicySlice:
        kept = {
            cedar_id: policy
            for cedar_id, policy in self.policies.items()
            if _may_apply(policy, action, tool)
        }
        # Cedar keeps the policy ids given here, so the reasons of the whole set still apply.
        policy_set = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": kept, "templates": {}, "templateLinks": []})
        )
        fields: set[str] = set()
        whole = False
        for policy in kept.values():
            for condition in policy.get("conditions", []):
                whole = not _context_fields(condition["body"], fields) or whole
        # On a named tool's slice the resource is that tool (other tools share the other one).
        resource = Uid("Tool", tool) if tool is not None else None
        # The code of the evaluator is generated on the second question: a draft book is often
        # asked once, and the closures answer that one at no cost of compiling.
        native = (
            NativePolicies.build(kept, action=action, resource=resource, generate_after=1)
            if USE_NATIVE
            else None
        )
        return PolicySlice(policy_set, None if whole else frozenset(fields), native)


def _refusal(text: str) -> str:
    """Why `text` must not reach cedarpy, in words for a deny reason; "" when it may."""
    over = limits.text_problems(
        text, max_chars=limits.MAX_POLICY_CHARS + limits.STORED_TEXT_ALLOWANCE
    )
    if not over:
        return ""
    more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
    return f"the policy text is over the limits at {over[0]}{more}"


def _policy_position(cedar_id: str) -> tuple[int, str]:
    number = cedar_id.removeprefix("policy")
    return (int(number), "") if number.isdigit() else (2**31, cedar_id)


def _reason(cedar_id: str, annotations: Mapping[str, str]) -> Reason:
    policy_id = annotations.get("id") or cedar_id
    return Reason(policy_id, annotations.get("message") or annotations.get("id") or "(no message)")


def _may_apply(policy: Mapping[str, Any], action: str, tool: str | None) -> bool:
    """False only when the policy's scope names another action, or another resource, by `==`:
    then its scope is false for every request on that action and tool."""
    scope = policy["action"]
    if scope["op"] == "==" and scope.get("entity") != {"type": "Action", "id": action}:
        return False
    scope = policy["resource"]
    return not (
        scope["op"] == "=="
        and (tool is None or scope.get("entity") != {"type": "Tool", "id": tool})
    )


_CONTEXT = {"Var": "context"}


def _context_fields(node: Any, fields: set[str]) -> bool:
    """Add the context fields an expression (Cedar JSON) reads to `fields`; False when it uses
    the context in another way (as a whole value), which needs every field."""
    if isinstance(node, dict):
        if len(node) == 1:
            ((operator, operand),) = node.items()
            if (
                operator in (".", "has")
                and isinstance(operand, dict)
                and operand.get("left") == _CONTEXT
            ):
                fields.add(operand["attr"])
                return True
        if node == _CONTEXT:
            return False
        return all(_context_fields(value, fields) for value in node.values())
    if isinstance(node, list):
        return all(_context_fields(value, fields) for value in node)
    return True


# The in-process evaluator unless told otherwise (`cedar`: every question goes to cedarpy).
USE_NATIVE = os.environ.get("POLICY_EVALUATOR", "native").strip().lower() != "cedar"

EntityKey = tuple[str, str, tuple[str, ...], str, str, bool]


def _entity_key(facts: ActionFacts) -> EntityKey:
    return (
        facts.agent,
        facts.agent_risk_tier,
        facts.agent_workflows,
        facts.tool,
        facts.tool_zone,
        facts.tool_reversible,
    )


def _entity_document(
    agent: str, risk_tier: str, workflows: tuple[str, ...], tool: str, zone: str, reversible: bool
) -> list[dict[str, Any]]:
    return [
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


@lru_cache(maxsize=4096)
def _entities(*key: Any) -> Any:
    return cedarpy.Entities.from_json_str(json.dumps(_entity_document(*key)))._inner


@lru_cache(maxsize=4096)
def _native_entities(*key: Any) -> tuple[Uid, Uid, EntityStore]:
    """The principal, the resource and the entity store of the evaluator, for one entity key."""
    agent, _, _, tool, _, _ = key
    return Uid("Agent", agent), Uid("Tool", tool), EntityStore.from_json(_entity_document(*key))


_WIDE = Context(prec=100)
# A Cedar decimal is a 64-bit integer of ten-thousandths.
_CEDAR_DECIMAL_MIN = Decimal(-(2**63)).scaleb(-4)
_CEDAR_DECIMAL_MAX = Decimal(2**63 - 1).scaleb(-4)


_SMALL = Decimal(10) ** 12
_FOUR_PLACES = Decimal("0.0001")


def cedar_confidence(value: Decimal) -> Decimal:
    """A confidence at Cedar's four places, rounded once, down (toward lower values): a value
    under a threshold of four places or fewer stays under it (0.79999 is 0.7999, never 0.8000),
    and one at or above it stays at or above it. The context is wide enough for every value
    `is_cedar_decimal` accepts, so nothing is rounded before. A value out of that range (or not
    a number), which `decide` refuses before, is returned as it is."""
    if not value.is_finite() or value.adjusted() > 50:
        return value
    return value.quantize(_FOUR_PLACES, rounding=ROUND_FLOOR, context=_WIDE)


def is_cedar_decimal(value: Decimal) -> bool:
    if value.is_finite() and -_SMALL < value < _SMALL:
        return True  # the common case (a confidence), well inside the range whatever the places
    if not value.is_finite() or value.adjusted() > 50:
        return False
    return _CEDAR_DECIMAL_MIN <= cedar_confidence(value) <= _CEDAR_DECIMAL_MAX


def _decimal_literal(value: Decimal) -> str:
    # Cedar decimals carry at most four places. A value out of Cedar's range (or not a number),
    # which `decide` refuses before, is passed on as it is for Cedar to refuse.
    rounded = cedar_confidence(value)
    return f"{rounded:f}" if rounded.is_finite() else str(rounded)


def context_values(facts: ActionFacts, param_types: Mapping[str, str]) -> dict[str, Any]:
    """The context of a decision, with the confidence as a `CedarDecimal` (see build_context
    for Cedar's JSON form). A confidence out of Cedar's range is refused by `decide` before."""
    params: dict[str, Any] = {}
    for name, cedar_type in param_types.items():
        value = facts.params.get(name)
        if (
            (cedar_type == "Long" and type(value) is int and abs(value) <= CEDAR_LONG_MAX)
            or (cedar_type == "String" and isinstance(value, str))
            or (cedar_type == "Bool" and isinstance(value, bool))
        ):
            params[name] = value
    confidence = cedar_confidence(facts.confidence) if facts.confidence is not None else Decimal(0)
    amount = facts.amount if facts.amount is not None else 0
    return {
        "workflow": facts.workflow,
        "amount": max(min(amount, CEDAR_LONG_MAX), -CEDAR_LONG_MAX),
        "has_amount": facts.amount is not None,
        "currency": facts.currency.upper(),
        "confidence": confidence,
        "has_confidence": facts.confidence is not None,
        "risk_zone": facts.tool_zone,
        "segment": facts.segment,
        "subject": facts.subject,
        "hour": facts.at.hour,
        "weekday": facts.at.isoweekday(),
        "params": params,
    }


def build_context(facts: ActionFacts, param_types: Mapping[str, str]) -> dict[str, Any]:
    """The context in Cedar's JSON form, as cedarpy reads it."""
    return _as_cedar_json(context_values(facts, param_types))


def _as_cedar_json(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: (
            {"__extn": {"fn": "decimal", "arg": _decimal_literal(value)}}
            if isinstance(value, Decimal)
            else value
        )
        for name, value in values.items()
    }


def _cedar_decimal(value: Decimal) -> CedarDecimal:
    # The one rounding of `cedar_confidence`, as cedarpy is given it, in ten-thousandths (exact:
    # four places in Cedar's range are at most 19 digits).
    return CedarDecimal(int(cedar_confidence(value).scaleb(4, context=_WIDE)))


_NO_CONFIDENCE = CedarDecimal(0)


def native_context_values(facts: ActionFacts, param_types: Mapping[str, str]) -> dict[str, Any]:
    """`context_values` as the in-process evaluator reads it (the confidence a `CedarDecimal`),
    built in one step: building the other and converting it cost as much as a question."""
    params: dict[str, Any] = {}
    given = facts.params
    for name, cedar_type in param_types.items():
        if name in given:
            value = given[name]
            if (
                (cedar_type == "String" and isinstance(value, str))
                or (cedar_type == "Long" and type(value) is int and abs(value) <= CEDAR_LONG_MAX)
                or (cedar_type == "Bool" and isinstance(value, bool))
            ):
                params[name] = value
    confidence, amount, at = facts.confidence, facts.amount, facts.at
    return {
        "workflow": facts.workflow,
        "amount": 0 if amount is None else max(min(amount, CEDAR_LONG_MAX), -CEDAR_LONG_MAX),
        "has_amount": amount is not None,
        "currency": facts.currency.upper(),
        "confidence": _NO_CONFIDENCE if confidence is None else _cedar_decimal(confidence),
        "has_confidence": confidence is not None,
        "risk_zone": facts.tool_zone,
        "segment": facts.segment,
        "subject": facts.subject,
        "hour": at.hour,
        "weekday": at.isoweekday(),
        "params": params,
    }


def _ask(policies: PolicySlice, facts: ActionFacts, action: str, context: str) -> dict[str, Any]:
    request = {
        "principal": {"type": "Agent", "id": facts.agent},
        "action": {"type": "Action", "id": action},
        "resource": {"type": "Tool", "id": facts.tool},
        "context": context,
    }
    entities = _entities(*_entity_key(facts))
    answer: dict[str, Any] = json.loads(
        _internal.is_authorized_batch([request], policies.policy_set, entities, None, False)[0]
    )
    return answer


def _not_evaluated(facts: ActionFacts, errors: tuple[str, ...]) -> PolicyVerdict:
    # The request could not be built (a confidence out of Cedar's decimal range, say), or the
    # policies were refused before parsing: no policy ran, so nothing permits the action.
    logger.warning("policy request refused for %s/%s: %s", facts.workflow, facts.tool, errors)
    cause = "; ".join(errors) or "no decision"
    return PolicyVerdict(
        "deny",
        (Reason(NOT_EVALUATED_ID, f"The policies could not evaluate this action: {cause}"),),
        errors,
    )


def context_json(context: Mapping[str, Any], fields: frozenset[str] | None) -> str:
    """The context (from `context_values` or `build_context`) as cedarpy's JSON text."""
    chosen = context if fields is None else {k: v for k, v in context.items() if k in fields}
    return json.dumps(_as_cedar_json(chosen))


NativeInputs = tuple[Uid, Uid, dict[str, Any], EntityStore]


class _Request:
    """What both questions of one decision share: the context, in Cedar's JSON form for
    cedarpy or as evaluator values (built once, whole: unread fields cost the evaluator nothing),
    the entities, and the verdicts of policies both questions reach (see native.authorize).
    Each form is built when a question first needs it."""

    __slots__ = ("_context", "_native", "compiled", "facts", "memo")

    def __init__(
        self, compiled: CompiledPolicies, facts: ActionFacts, native: NativeInputs | None = None
    ) -> None:
        self.compiled = compiled
        self.facts = facts
        self.memo: dict[str, bool | str] = {}
        self._context: dict[str, Any] | None = None
        self._native = native

    @property
    def context(self) -> dict[str, Any]:
        if self._context is None:
            self._context = context_values(self.facts, self.compiled.param_types)
        return self._context

    def native(self) -> NativeInputs:
        if self._native is None:
            self._native = native_inputs(self.facts, self.compiled.param_types)
        return self._native


def native_inputs(facts: ActionFacts, param_types: Mapping[str, str]) -> NativeInputs:
    """What the in-process evaluator reads of one decision: the principal, the resource, the
    context and the entities. The same for every version whose policies have the same
    `param_types`, so a caller deciding one action under two versions (a backtest) builds it
    once and passes it to `decide` for both. For facts `decide` evaluates (a confidence in
    Cedar's decimal range: `is_cedar_decimal`)."""
    principal, resource, store = _native_entities(*_entity_key(facts))
    return (principal, resource, native_context_values(facts, param_types), store)


_ACTIONS = {name: Uid("Action", name) for name in ("execute", "propose")}


def _ask_slice(compiled: CompiledPolicies, request: _Request, action: str) -> dict[str, Any]:
    policies = compiled.slice_for(action, request.facts.tool)
    if policies.native is not None:
        principal, resource, context, store = request.native()
        return policies.native.authorize(
            principal=principal,
            action=_ACTIONS.get(action) or Uid("Action", action),
            resource=resource,
            context=context,
            store=store,
            memo=request.memo,
        )
    return _ask(policies, request.facts, action, context_json(request.context, policies.fields))


def _errors(answer: Mapping[str, Any]) -> tuple[str, ...]:
    found = answer["diagnostics"].get("errors")
    return tuple(str(error) for error in found) if found else ()


def decide(
    compiled: CompiledPolicies,
    facts: ActionFacts,
    *,
    explain: bool = True,
    native: NativeInputs | None = None,
) -> PolicyVerdict:
    """The policies' verdict on one action, with the policies behind it as its reasons.

    `explain=False` leaves the policies' reasons out (the outcome is the same; a request that
    could not be evaluated keeps its one reason): a backtest deciding many actions needs them
    only for the few whose decision flips. `native`: the evaluator's inputs,
    when the caller built them already (see `native_inputs`)."""
    if compiled.refusal:
        # Policies over the limits were never parsed: nothing can permit the action.
        return _not_evaluated(facts, (compiled.refusal,))
    if facts.confidence is not None and not is_cedar_decimal(facts.confidence):
        # Checked here, not left to Cedar: a slice that does not read the confidence would not
        # notice, and the verdict must not depend on which policies a question reaches.
        return _not_evaluated(
            facts, (f"the confidence {facts.confidence} is out of the range of a Cedar decimal",)
        )
    request = _Request(compiled, facts, native)
    execute = _ask_slice(compiled, request, "execute")
    errors = _errors(execute)
    if execute["decision"] not in ("Allow", "Deny"):
        return _not_evaluated(facts, errors)
    if execute["decision"] == "Allow":
        if not explain:
            return PolicyVerdict("allow", (), errors)
        return PolicyVerdict(
            "allow", compiled.reasons_for(execute["diagnostics"]["reason"]), errors
        )
    propose = _ask_slice(compiled, request, "propose")
    errors += _errors(propose)
    if propose["decision"] not in ("Allow", "Deny"):
        return _not_evaluated(facts, errors)
    if errors:
        # A policy that fails to evaluate is skipped by Cedar; say so, it may be a bug.
        logger.warning("policy evaluation errors for %s/%s: %s", facts.workflow, facts.tool, errors)
    outcome: Outcome = "hold" if propose["decision"] == "Allow" else "deny"
    if not explain:
        return PolicyVerdict(outcome, (), errors)
    if outcome == "hold":
        held_by = compiled.reasons_for(execute["diagnostics"]["reason"]) or (
            Reason(NO_EXECUTE_PERMIT_ID, "No policy permits running this action without review"),
        )
        return PolicyVerdict("hold", held_by, errors)
    denied_by = compiled.reasons_for(propose["diagnostics"]["reason"]) or (
        Reason(NO_PROPOSE_PERMIT_ID, "No policy permits proposing this action"),
    )
    return PolicyVerdict("deny", denied_by, errors)
