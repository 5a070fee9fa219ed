"""The in-process evaluator (`apps/books/policy/native.py`) against Cedar itself (cedarpy).

Every request here is decided both ways and must give the same decision, the same policies as
reasons and the same policies failing with an error (the wording of the errors may differ):

- a fixed corpus of policy sets that uses every construct the evaluator supports and every way a
  policy can fail at run time (the policies are not validated against a schema here, so they can
  read attributes that are missing or of another type), on hand-picked requests, as whole sets,
  as their permits alone and policy by policy;
- the same sets on requests Hypothesis makes up: principals, actions and resources that are or
  are not in the entity store, random hierarchies, contexts with extreme and ill-typed values;
- the constructs the evaluator leaves to cedarpy make `NativePolicies.build` give up;
- `engine.decide` answers the same with the evaluator switched on and off.

No database is used.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.books.content import ToolRule
from apps.books.policy import engine
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import CompiledPolicies, PolicyVerdict
from apps.books.policy.native import (
    LONG_MAX,
    LONG_MIN,
    EntityStore,
    NativePolicies,
    Uid,
    from_json,
)
from apps.books.policy.schema import ToolParams, param_types
from tests.factories import refund_facts

Json = Any
Entity = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Deciding one request both ways
# ---------------------------------------------------------------------------------------------

_ERRORED_POLICY = re.compile(r"policy `([^`]+)`")


@dataclass(frozen=True)
class Request:
    principal: Uid
    action: Uid
    resource: Uid
    context: dict[str, Json]
    entities: list[Entity]
    name: str = ""

    # Each request is parsed once for each evaluator, whatever the number of policy sets.
    @cached_property
    def for_cedar(self) -> dict[str, Json]:
        return {
            "principal": _uid_json(self.principal),
            "action": _uid_json(self.action),
            "resource": _uid_json(self.resource),
            "context": self.context,
        }

    @cached_property
    def cedar_entities(self) -> cedarpy.Entities:
        return cedarpy.Entities.from_json_str(json.dumps(self.entities))

    @cached_property
    def native_context(self) -> Any:
        return from_json(self.context)

    @cached_property
    def store(self) -> EntityStore:
        return EntityStore.from_json(self.entities)


@dataclass(frozen=True)
class Answer:
    decision: str
    reasons: frozenset[str]
    errored: frozenset[str]  # the policies named by the errors
    has_errors: bool


def _errored(errors: Sequence[str]) -> frozenset[str]:
    names: set[str] = set()
    for error in errors:
        found = _ERRORED_POLICY.search(error)
        assert found is not None, f"an error that names no policy: {error!r}"
        names.add(found.group(1))
    return frozenset(names)


def _uid_json(uid: Uid) -> dict[str, str]:
    return {"type": uid.type, "id": uid.id}


@dataclass(frozen=True)
class PolicySet:
    """One policy text, parsed for cedarpy and compiled for the native evaluator."""

    name: str
    text: str
    static: Mapping[str, Mapping[str, Json]]
    cedar: Any  # cedarpy.PolicySet
    native: NativePolicies

    @classmethod
    def parse(cls, name: str, text: str) -> PolicySet:
        document = json.loads(cedarpy.policies_to_json_str(text))
        assert not document["templates"], name
        static: dict[str, dict[str, Json]] = document["staticPolicies"]
        return cls.of(name, text, static)

    @classmethod
    def of(cls, name: str, text: str, static: Mapping[str, Mapping[str, Json]]) -> PolicySet:
        cedar = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": static, "templates": {}, "templateLinks": []})
        )
        native = NativePolicies.build(static)
        assert native is not None, f"{name}: the native evaluator refused a supported policy set"
        return cls(name, text, static, cedar, native)

    def only(self, name: str, keep: Sequence[str]) -> PolicySet:
        kept = set(keep)
        return PolicySet.of(
            f"{self.name}/{name}",
            self.text,
            {cedar_id: policy for cedar_id, policy in self.static.items() if cedar_id in kept},
        )

    @cached_property
    def permits(self) -> PolicySet:
        return self.only(
            "permits",
            [cedar_id for cedar_id, p in self.static.items() if p["effect"] == "permit"],
        )

    @cached_property
    def singles(self) -> list[PolicySet]:
        """Each policy as a set of its own."""
        return [self.only(cedar_id, [cedar_id]) for cedar_id in self.static]


def cedar_answer(policies: PolicySet, request: Request) -> Answer:
    result = cedarpy.is_authorized(request.for_cedar, policies.cedar, request.cedar_entities)
    assert result.decision in (cedarpy.Decision.Allow, cedarpy.Decision.Deny), (
        f"cedarpy refused the request {request}: {result.diagnostics.errors}"
    )
    errors = [str(error) for error in result.diagnostics.errors]
    return Answer(
        "Allow" if result.decision == cedarpy.Decision.Allow else "Deny",
        frozenset(result.diagnostics.reasons),
        _errored(errors),
        bool(errors),
    )


def native_answer(policies: PolicySet, request: Request) -> Answer:
    result = policies.native.authorize(
        principal=request.principal,
        action=request.action,
        resource=request.resource,
        context=request.native_context,
        store=request.store,
    )
    errors: list[str] = result["diagnostics"]["errors"]
    return Answer(
        result["decision"],
        frozenset(result["diagnostics"]["reason"]),
        _errored(errors),
        bool(errors),
    )


# The answers on the fixed requests, by policy set and request name, for the coverage test.
_FIXED_ANSWERS: dict[tuple[str, str], Answer] = {}


def assert_same(policies: PolicySet, request: Request) -> Answer:
    key = (policies.name, request.name)
    if request.name and key in _FIXED_ANSWERS:
        return _FIXED_ANSWERS[key]
    cedar = cedar_answer(policies, request)
    native = native_answer(policies, request)
    assert native == cedar, (
        f"{policies.name} on {request.name or request}:\n  cedar  {cedar}\n  native {native}"
    )
    if request.name:
        _FIXED_ANSWERS[key] = cedar
    return cedar


def _when(condition: str) -> str:
    return f"permit (principal, action, resource) when {{ {condition} }};"


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

SCOPES = r"""
permit (principal == Agent::"a1", action == Action::"execute", resource == Tool::"t1");
permit (principal in Workflow::"w1", action in [Action::"execute", Action::"propose"], resource);
forbid (principal in WorkflowGroup::"g2", action == Action::"execute", resource is Tool);
permit (principal is Agent, action, resource is Tool in Tool::"t2");
permit (principal is Agent in WorkflowGroup::"g1", action == Action::"propose", resource);
forbid (principal is Tool, action, resource);
permit (principal, action in Action::"other", resource in Tool::"ghost");
forbid (principal == Agent::"ghost", action, resource) when { principal.risk_tier == "high" };
permit (principal, action, resource == Agent::"a1") when { principal == resource };
forbid (principal in Workflow::"w3", action, resource in Tool::"t3");
permit (principal, action == Action::"propose", resource)
  when { action in [Action::"propose", Action::"other"] && action.owner == "x" };
"""

ARITHMETIC = r"""
forbid (principal, action == Action::"execute", resource) when { context.amount > 5000 };
permit (principal, action, resource) when { context.amount <= 5000 && context.amount >= -5000 };
forbid (principal, action, resource) when { context.amount * 2 > 9000 };
permit (principal, action, resource) when { context.amount + 1 > context.amount };
permit (principal, action, resource) when { -context.amount < 0 };
forbid (principal, action, resource) when { context.amount - 9223372036854775807 < -1 };
permit (principal, action == Action::"propose", resource)
  when { context.hour >= 8 && context.hour < 18 };
forbid (principal, action == Action::"propose", resource) unless { context.weekday <= 5 };
permit (principal, action, resource) when { context.amount * context.amount >= 0 };
permit (principal, action, resource) when { context.params.amount_cents < 100 };
forbid (principal, action, resource)
  when { -9223372036854775808 == -9223372036854775807 - 1
         && context.amount == -9223372036854775808 };
permit (principal, action, resource) when { 9223372036854775807 + context.hour > 0 };
forbid (principal, action, resource) when { -(context.amount) * -1 != context.amount };
"""

STRINGS = r"""
permit (principal, action, resource) when { context.segment like "retail*" };
forbid (principal, action, resource) when { context.subject like "order:\*" };
permit (principal, action, resource) when { context.subject like "*:*" };
forbid (principal, action == Action::"execute", resource) when { context.segment like "*\**" };
permit (principal, action, resource) when { context.segment == "smb" || context.segment like "é*" };
permit (principal, action, resource) when { ["retail", "smb", "*"].contains(context.segment) };
forbid (principal, action == Action::"propose", resource) when { context.subject != 1 };
permit (principal, action, resource) when { context.segment like "" };
forbid (principal, action, resource) when { context.params.reason like "*fraud*" };
permit (principal, action == Action::"propose", resource) unless { context.subject like "?*" };
permit (principal, action, resource)
  when { context.segment like "*" && context.subject like "**\*" };
forbid (principal, action, resource) when { context.currency == "EUR" && context.segment < "z" };
"""

RECORDS = r"""
permit (principal, action, resource)
  when { context has params && context.params has currency && context.params.currency == "EUR" };
forbid (principal, action, resource) when { context.params.notify };
permit (principal, action, resource) when { context.params == {currency: "EUR", amount_cents: 1} };
forbid (principal, action, resource) when { {a: {b: context.amount}}.a.b == 0 };
permit (principal, action, resource) when { [1, true, "1"].contains(context.params.amount_cents) };
permit (principal, action, resource)
  when { [1, true, "1"].containsAny([context.amount, context.segment]) };
forbid (principal, action == Action::"execute", resource)
  when { [context.amount, 1].containsAll([1]) };
permit (principal, action, resource) when { [context.amount, context.segment].isEmpty() == false };
forbid (principal, action, resource)
  when { if context.params.notify then true else context.amount > 10 };
permit (principal, action, resource)
  when { if context has segment then context.segment != "" else false };
forbid (principal, action == Action::"propose", resource)
  when { context.params != {} && !(context.params has reason) };
permit (principal, action, resource)
  when { principal in [Workflow::"w1", Workflow::"w2"] && resource.reversible };
forbid (principal, action, resource)
  when { principal has risk_tier && principal.risk_tier == "high" };
permit (principal, action, resource) when { principal.risk_tier like "l*" };
permit (principal, action, resource) when { [principal, context.amount].contains(principal) };
forbid (principal, action == Action::"execute", resource) when { resource in [Tool::"t1", 1] };
permit (principal, action, resource)
  when { principal is Agent in [Workflow::"w3", WorkflowGroup::"g1"] };
forbid (principal, action, resource) when { resource is Agent in Workflow::"w1" };
permit (principal, action == Action::"propose", resource) when { context.params is Agent };
permit (principal, action, resource)
  when { {x: [1, {y: "1"}], z: true} == {z: true, x: [{y: "1"}, 1, 1]}
         && context.params.nested.deep.x };
forbid (principal, action, resource) when { [1, [2, 3]].contains([3, 2]) && context.amount == 0 };
permit (principal, action, resource)
  when { context has params.currency && context.params.currency != context.currency };
forbid (principal, action == Action::"propose", resource)
  when { Agent::"ghost".risk_tier == "low" };
permit (principal, action == Action::"propose", resource) when { !(Agent::"ghost" has risk_tier) };
permit (principal, action, resource) when { !context.has_amount };
forbid (principal, action, resource)
  when { [true, 1, "1"] == [1, "1", true, true] && !context.amount };
"""

DECIMALS = r"""
forbid (principal, action == Action::"execute", resource)
  unless { context.confidence.greaterThanOrEqual(decimal("0.8")) };
permit (principal, action, resource) when { context.confidence.lessThan(decimal("-0.0001")) };
permit (principal, action, resource)
  when { context.confidence.greaterThan(decimal("922337203685477.5807")) };
permit (principal, action, resource)
  when { context.confidence.lessThanOrEqual(decimal("-922337203685477.5808")) };
forbid (principal, action, resource) when { context.confidence == decimal("0.9000") };
permit (principal, action, resource)
  when { decimal("0.9") == decimal("0.90") && context.confidence != decimal("-0.0") };
forbid (principal, action, resource) when { context.confidence.greaterThan(decimal("1.23456")) };
permit (principal, action, resource) when { context.confidence.greaterThan(context.amount) };
permit (principal, action, resource) when { [decimal("0.5"), 1].contains(context.confidence) };
forbid (principal, action == Action::"propose", resource)
  when { context.confidence.lessThanOrEqual(decimal("922337203685477.5808")) };
permit (principal, action == Action::"propose", resource)
  when { decimal("-0.0001").lessThan(decimal("0.0"))
         && context.confidence.greaterThanOrEqual(decimal("0.0")) };
forbid (principal, action, resource) when { context.confidence < context.amount };
permit (principal, action, resource) when { context.confidence.lessThan(decimal("1.0\n")) };
permit (principal, action, resource)
  when { context.confidence.lessThan(decimal("\u{661}.\u{660}")) };
"""

# Permits and forbids of every kind together, so that forbids win over permits of the others.
MIXED = r"""
permit (principal, action, resource);
forbid (principal, action == Action::"execute", resource) when { context.amount > 5000 };
forbid (principal, action, resource) when { context.params.notify };
forbid (principal, action, resource)
  unless { context.confidence.greaterThanOrEqual(decimal("0.8")) };
forbid (principal, action, resource) when { context.subject like "order:\*" };
forbid (principal in WorkflowGroup::"g2", action == Action::"execute", resource is Tool);
permit (principal in Workflow::"w1", action, resource) when { context.amount * 4 < 100000 };
"""

CORPUS: dict[str, str] = {
    "scopes": SCOPES,
    "arithmetic": ARITHMETIC,
    "strings": STRINGS,
    "records": RECORDS,
    "decimals": DECIMALS,
    "mixed": MIXED,
}
POLICY_SETS: dict[str, PolicySet] = {
    name: PolicySet.parse(name, text) for name, text in CORPUS.items()
}


def _entity(kind: str, id_: str, attrs: dict[str, Json], *parents: tuple[str, str]) -> Entity:
    return {
        "uid": {"type": kind, "id": id_},
        "attrs": attrs,
        "parents": [{"type": t, "id": i} for t, i in parents],
    }


G1, G2 = ("WorkflowGroup", "g1"), ("WorkflowGroup", "g2")
W1, W2, W3 = ("Workflow", "w1"), ("Workflow", "w2"), ("Workflow", "w3")
WORLD: list[Entity] = [
    _entity("Agent", "a1", {"risk_tier": "low"}, W1),
    _entity("Agent", "a2", {"risk_tier": "high"}, W2, W3),
    _entity("Agent", "a3", {"risk_tier": 7}, G1),
    _entity("Workflow", "w1", {}, G1),
    _entity("Workflow", "w2", {}, G2),
    _entity("Workflow", "w3", {}),
    _entity("WorkflowGroup", "g1", {}, G2),
    _entity("WorkflowGroup", "g2", {}),
    _entity("Tool", "t1", {"risk_zone": "yellow", "reversible": True}),
    _entity("Tool", "t2", {"risk_zone": "red", "reversible": False}),
    _entity("Tool", "t3", {"risk_zone": "green"}),
]


def dec(text: str) -> dict[str, Json]:
    return {"__extn": {"fn": "decimal", "arg": text}}


BASE_CONTEXT: dict[str, Json] = {
    "workflow": "refunds",
    "amount": 3000,
    "has_amount": True,
    "currency": "EUR",
    "confidence": dec("0.9"),
    "has_confidence": True,
    "risk_zone": "yellow",
    "segment": "retail",
    "subject": "order:1042",
    "hour": 10,
    "weekday": 3,
    "params": {"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "damaged"},
}

AGENT = {name: Uid("Agent", name) for name in ("a1", "a2", "a3", "ghost")}
TOOL = {name: Uid("Tool", name) for name in ("t1", "t2", "t3", "ghost")}
EXECUTE, PROPOSE, OTHER = (Uid("Action", name) for name in ("execute", "propose", "other"))


def request(
    name: str,
    principal: Uid = AGENT["a1"],
    action: Uid = EXECUTE,
    resource: Uid = TOOL["t1"],
    entities: list[Entity] | None = None,
    drop: Sequence[str] = (),
    **context: Json,
) -> Request:
    merged = {k: v for k, v in {**BASE_CONTEXT, **context}.items() if k not in drop}
    return Request(
        principal, action, resource, merged, WORLD if entities is None else entities, name
    )


def params(**changes: Json) -> dict[str, Json]:
    base: dict[str, Json] = dict(BASE_CONTEXT["params"])
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


FIXED_REQUESTS: list[Request] = [
    request("base"),
    request("base/propose", action=PROPOSE),
    request("other action on the ghost tool", action=OTHER, resource=TOOL["ghost"]),
    request("a2 on t2", principal=AGENT["a2"], resource=TOOL["t2"]),
    request("a2 proposes on t3", principal=AGENT["a2"], action=PROPOSE, resource=TOOL["t3"]),
    request("a3 (ill-typed tier) proposes", principal=AGENT["a3"], action=PROPOSE),
    request("a3 on t2", principal=AGENT["a3"], resource=TOOL["t2"]),
    request("ghost agent", principal=AGENT["ghost"]),
    request("ghost agent proposes", principal=AGENT["ghost"], action=PROPOSE),
    request("tool as principal", principal=TOOL["t1"], resource=TOOL["t2"]),
    request("agent on itself", resource=AGENT["a1"]),
    request("agent on itself/propose", action=PROPOSE, resource=AGENT["a1"]),
    request("empty store", entities=[]),
    request("empty store/propose", action=PROPOSE, entities=[], resource=TOOL["t3"]),
    request("amount at the cap", amount=5000, params=params(amount_cents=5000)),
    request("amount above the cap", amount=5001),
    request("amount 4501 (x2 above 9000)", amount=4501),
    request("amount zero", amount=0, has_amount=False),
    request("amount -1", amount=-1),
    request("amount max", amount=LONG_MAX),
    request("amount max/propose", amount=LONG_MAX, action=PROPOSE),
    request("amount min", amount=LONG_MIN),
    request("amount min/propose", amount=LONG_MIN, action=PROPOSE, hour=LONG_MAX),
    request("amount 2^32 (square overflows)", amount=2**32),
    request("amount as a string", amount="5000"),
    request("amount as a bool", amount=True, action=PROPOSE),
    request("amount missing", drop=["amount"]),
    request("amount false", amount=False),
    request("amount as a decimal", amount=dec("0.5")),
    request("midnight", hour=0),
    request("confidence at the threshold", confidence=dec("0.8")),
    request("confidence just under", confidence=dec("0.7999")),
    request("confidence 0.9000", confidence=dec("0.9000")),
    request("confidence -0.0001", confidence=dec("-0.0001")),
    request("confidence -0.0", confidence=dec("-0.0")),
    request("confidence -0.5 proposes", confidence=dec("-0.5"), action=PROPOSE),
    request("confidence max", confidence=dec("922337203685477.5807")),
    request("confidence max/propose", confidence=dec("922337203685477.5807"), action=PROPOSE),
    request("confidence min", confidence=dec("-922337203685477.5808")),
    request("confidence 0.5", confidence=dec("0.5")),
    request("confidence as a string", confidence="0.9"),
    request("confidence as a Long", confidence=1, action=PROPOSE),
    request("confidence missing", drop=["confidence"]),
    request("segment smb", segment="smb"),
    request("segment *", segment="*"),
    request("segment with a star", segment="re*tail", action=PROPOSE),
    request("segment accented", segment="éclair"),
    request("segment empty", segment=""),
    request("segment unicode", segment="日本*", subject="注文:*"),
    request("segment missing", drop=["segment"]),
    request("segment as a Long", segment=1),
    request("subject with a literal star", subject="order:*"),
    request("subject order:1*", subject="order:1*"),
    request("subject ending in a star", subject="x*", segment="x"),
    request("subject ?x", subject="?x", action=PROPOSE),
    request("subject as 1", subject=1, action=PROPOSE),
    request("subject as '1'", subject="1", action=PROPOSE),
    request("subject with a newline", subject="order:\n*"),
    request("params empty", params={}),
    request("params empty/propose", params={}, action=PROPOSE),
    request("params without reason/propose", params=params(reason=None), action=PROPOSE),
    request("params notify true", params=params(notify=True)),
    request("params notify false", params=params(notify=False), action=PROPOSE),
    request("params notify as a string", params=params(notify="yes")),
    request("params amount_cents as a bool", params=params(amount_cents=True)),
    request("params amount_cents 1", params=params(amount_cents=1)),
    request("params amount_cents '1'", params=params(amount_cents="1")),
    request("params USD", params=params(currency="USD")),
    request("params currency as a set", params=params(currency=["EUR"])),
    request("params fraud", params=params(reason="suspected fraud")),
    request("params reason as a record", params=params(reason={"text": "fraud"})),
    request("params exactly", params={"currency": "EUR", "amount_cents": 1}),
    request(
        "params nested",
        params=params(nested={"deep": {"x": True}}),
        amount=0,
    ),
    request("params nested wrongly", params=params(nested={"deep": [1]})),
    request("params as an entity", params={"__entity": {"type": "Agent", "id": "a1"}}),
    request(
        "params as an entity/propose", action=PROPOSE, params={"__entity": _uid_json(AGENT["a2"])}
    ),
    request("params missing", drop=["params"]),
    request("params as a string", params="EUR"),
    request("params as a string/propose", params="EUR", action=PROPOSE),
    request("weekend proposal", action=PROPOSE, weekday=6),
    request("night proposal", action=PROPOSE, hour=23),
    request("empty context", drop=list(BASE_CONTEXT)),
    request("empty context/propose", drop=list(BASE_CONTEXT), action=PROPOSE),
]


@pytest.mark.parametrize("name", list(POLICY_SETS))
def test_native_evaluator__fixed_corpus__same_as_cedar(name: str) -> None:
    whole = POLICY_SETS[name]
    for fixed in FIXED_REQUESTS:
        assert_same(whole, fixed)
        assert_same(whole.permits, fixed)
        for single in whole.singles:
            assert_same(single, fixed)


# What the fixed requests do to each policy of the corpus, by number: the policies that never
# apply (they always fail, or cannot be true), and those that cannot fail (scopes alone, or
# conditions that read nothing that may be missing or of another type).
NEVER_APPLIES: dict[str, set[int]] = {
    "scopes": {7, 10},
    "arithmetic": {12},
    "strings": {11},
    "records": {15, 22},
    "decimals": {2, 6, 9, 12, 13},
    "mixed": set(),
}
NEVER_FAILS: dict[str, set[int]] = {
    "scopes": {0, 1, 2, 3, 4, 5, 6, 8, 9},
    "arithmetic": set(),
    "strings": set(),
    "records": {9, 12, 16, 17, 23},
    "decimals": set(),
    "mixed": {0, 5},
}


def test_fixed_corpus__each_policy__applies_and_fails_as_listed() -> None:
    """The corpus is worth something only if it exercises things: every policy applies to some
    fixed request unless it cannot, fails on some unless it cannot, and in every set a forbid
    overrides a permit that applies."""
    forbid_won: set[str] = set()
    for name, whole in POLICY_SETS.items():
        applied: set[int] = set()
        failed: set[int] = set()
        for fixed in FIXED_REQUESTS:
            answer = assert_same(whole, fixed)
            if answer.decision == "Deny" and assert_same(whole.permits, fixed).reasons:
                forbid_won.add(name)
            for number, single in enumerate(whole.singles):
                alone = assert_same(single, fixed)
                applied |= {number} if alone.reasons else set()
                failed |= {number} if alone.has_errors else set()
        every = set(range(len(whole.static)))
        assert every - applied == NEVER_APPLIES[name], name
        assert every - failed == NEVER_FAILS[name], name
    assert forbid_won == set(POLICY_SETS)
    assert sum(len(policies.static) for policies in POLICY_SETS.values()) >= 40


# ---------------------------------------------------------------------------------------------
# Requests made up by Hypothesis
# ---------------------------------------------------------------------------------------------

EXTREME_LONGS = [LONG_MIN, LONG_MIN + 1, -(2**32), -5001, -1, 0, 1, 2, 4500, 4501, 5000, 5001]
EXTREME_LONGS += [2**31, 2**32, 3037000499, 3037000500, 2**62, LONG_MAX - 1, LONG_MAX]
longs = st.one_of(st.sampled_from(EXTREME_LONGS), st.integers(LONG_MIN, LONG_MAX))
# Any character but lone surrogates (which JSON cannot carry to Cedar), with the stars and
# escapes `like` cares about, and a few words the policies look for.
texts = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    st.text(st.sampled_from("*\\:?é日o1"), max_size=6),
    st.sampled_from(["", "*", "retail", "retailer", "smb", "order:*", "order:1042", "éclair"]),
    st.sampled_from(["1", "EUR", "USD", "x*", "suspected fraud", "low", "high"]),
)


def decimal_text(units: int, places: int, zeros: str) -> str:
    """A Cedar decimal literal of `units` ten-thousandths, with at least `places` places (at
    most four) and `zeros` in front."""
    whole, fraction = divmod(abs(units), 10_000)
    digits = f"{fraction:04d}"
    places = max(places, len(digits.rstrip("0")))
    return f"{'-' if units < 0 else ''}{zeros}{whole}.{digits[:places]}"


# Strategies are built once, here: building them inside a draw is what makes Hypothesis slow.
decimal_units = st.one_of(
    st.integers(-20_000, 20_000),
    st.sampled_from([LONG_MIN, LONG_MIN + 1, -1, 0, 1, 7999, 8000, 9000, LONG_MAX]),
    st.integers(LONG_MIN, LONG_MAX),
)
decimal_texts = st.one_of(
    st.builds(decimal_text, decimal_units, st.integers(1, 4), st.sampled_from(["", "0", "00"])),
    st.sampled_from(["-0.0", "-0.0001", "922337203685477.5807", "-922337203685477.5808", "0.80"]),
)
decimals = decimal_texts.map(dec)
entity_refs = st.sampled_from(
    [{"__entity": _uid_json(uid)} for uid in [*AGENT.values(), *TOOL.values()]]
)
scalars = st.one_of(longs, texts, st.booleans(), decimals, entity_refs)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "x", "deep", "currency"]), inner, max_size=3),
    ),
    max_leaves=6,
)


_TENTHS = st.integers(0, 9)


def field_of(
    typical: st.SearchStrategy[Json],
    missing: int = 1,
    anything: st.SearchStrategy[Json] = scalars,
) -> st.SearchStrategy[Json]:
    """None (a field left out) `missing` times in ten, a value of any type one time in ten,
    else a value of the expected type. (Not `one_of(typical, typical, ...)`: Hypothesis merges
    the repeated branches, and would choose among the distinct ones evenly.)"""

    @st.composite
    def draw_field(draw: st.DrawFn) -> Json:
        tenths = draw(_TENTHS)
        if tenths < missing:
            return None
        return draw(anything if tenths == 9 else typical)

    return draw_field()


def present(fields: Mapping[str, Json]) -> dict[str, Json]:
    return {name: value for name, value in fields.items() if value is not None}


param_records = st.builds(
    present,
    st.fixed_dictionaries(
        {
            "order_id": field_of(texts, missing=3),
            "amount_cents": field_of(longs, missing=3),
            "currency": field_of(st.sampled_from(["EUR", "USD", "eur"]), missing=3),
            "reason": field_of(texts, missing=3),
            "notify": field_of(st.booleans(), missing=3),
            "nested": field_of(values, missing=6, anything=values),
        }
    ),
)
contexts = st.builds(
    present,
    st.fixed_dictionaries(
        {
            "workflow": field_of(texts),
            "amount": field_of(longs),
            "has_amount": field_of(st.booleans()),
            "currency": field_of(st.sampled_from(["EUR", "USD"])),
            "confidence": field_of(decimals),
            "has_confidence": field_of(st.booleans()),
            "risk_zone": field_of(st.sampled_from(["green", "yellow", "red"])),
            "segment": field_of(texts),
            "subject": field_of(texts),
            "hour": field_of(st.one_of(st.integers(0, 23), longs)),
            "weekday": field_of(st.integers(1, 7)),
            "params": field_of(param_records, anything=values),
        }
    ),
)


def _parents(*candidates: tuple[str, str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Any subset of the candidates, drawn as one bit mask (one choice, not one per parent)."""
    return st.integers(0, 2 ** len(candidates) - 1).map(
        lambda mask: [parent for bit, parent in enumerate(candidates) if mask >> bit & 1]
    )


def _maybe_entity(
    kind: str,
    id_: str,
    attrs: Mapping[str, st.SearchStrategy[Json]],
    parents: st.SearchStrategy[list[tuple[str, str]]] | None = None,
) -> st.SearchStrategy[Entity | None]:
    """The entity four times out of five (else None: it is not in the store), each attribute
    usually of the expected type and sometimes missing."""

    def make(attrs: Mapping[str, Json], parents: list[tuple[str, str]]) -> Entity:
        return _entity(kind, id_, present(attrs), *parents)

    entity = st.builds(
        make,
        st.fixed_dictionaries({name: field_of(value, 2) for name, value in attrs.items()}),
        parents if parents is not None else st.just([]),
    )
    return field_of(entity, missing=2, anything=entity)


TIERS = st.sampled_from(["low", "high", "medium"])
ZONES = st.sampled_from(["green", "yellow", "red"])
# Agents in workflows and groups, workflows in groups, g1 in g2 and never the other way round
# (Cedar refuses cycles), tools; a parent may be an entity that is not in the store. Agent a3
# and tool t3 are never there (nor the ghosts).
entity_stores = st.builds(
    lambda *entities: [entity for entity in entities if entity is not None],
    *[
        _maybe_entity("Agent", name, {"risk_tier": TIERS}, _parents(W1, W2, W3, G1, G2))
        for name in ("a1", "a2")
    ],
    *[_maybe_entity(*workflow, {}, _parents(G1, G2)) for workflow in (W1, W2, W3)],
    _maybe_entity(*G1, {}, _parents(G2)),
    _maybe_entity(*G2, {}),
    *[
        _maybe_entity("Tool", name, {"risk_zone": ZONES, "reversible": st.booleans()})
        for name in ("t1", "t2")
    ],
)
PRINCIPALS = [*AGENT.values(), TOOL["t1"], Uid("Workflow", "w1")]
ACTIONS = [EXECUTE, PROPOSE, OTHER]
RESOURCES = [*TOOL.values(), AGENT["a1"]]


requests = st.builds(
    Request,
    principal=st.sampled_from(PRINCIPALS),
    action=st.sampled_from(ACTIONS),
    resource=st.sampled_from(RESOURCES),
    context=contexts,
    entities=entity_stores,
)


# Making a request takes some 150 choices: on a loaded machine Hypothesis may find that slow.
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(requests)
def test_native_evaluator__generated_requests__same_as_cedar(generated: Request) -> None:
    for policies in POLICY_SETS.values():
        assert_same(policies, generated)
        assert_same(policies.permits, generated)


# `like` patterns as Cedar writes them: `*` is a wildcard, `\*` a literal star.
PATTERN_TOKENS = ["a", "b", "ab", "é", "*", "*", r"\*", ":", " "]
patterns = st.lists(st.sampled_from(PATTERN_TOKENS), max_size=8).map("".join)
like_texts = st.one_of(st.text(st.sampled_from("ab*é: "), max_size=12), texts)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
)
@given(st.lists(patterns, min_size=1, max_size=4), like_texts)
def test_like__generated_patterns__same_as_cedar(pattern_list: list[str], text: str) -> None:
    policies = PolicySet.parse(
        "like",
        "\n".join(_when(f'context.s like "{pattern}"') for pattern in pattern_list),
    )
    assert_same(policies, Request(EXECUTE, EXECUTE, EXECUTE, {"s": text}, []))


def test_like__many_wildcards_on_a_long_text__answers_at_once() -> None:
    # A regular expression `.*a.*a...` took 6 s on 40 characters (backtracking); Cedar does not.
    policies = PolicySet.parse("like", _when('context.s like "*a*a*a*a*a*a*a*a*a*a*b"'))
    started = time.perf_counter()
    for text in ("a" * 40, "a" * 5000 + "c", "ab" * 2000):
        assert_same(policies, Request(EXECUTE, EXECUTE, EXECUTE, {"s": text}, []))
    assert time.perf_counter() - started < 1


# ---------------------------------------------------------------------------------------------
# Constructs left to cedarpy
# ---------------------------------------------------------------------------------------------


UNSUPPORTED: dict[str, str] = {
    "template principal": "permit (principal == ?principal, action, resource);",
    "template in": "permit (principal in ?principal, action, resource == ?resource);",
    "template is in": "permit (principal is Agent in ?principal, action, resource);",
    "ip": _when('ip("10.0.0.1").isIpv4()'),
    "ip isInRange": _when('ip("10.0.0.1").isInRange(ip("10.0.0.0/8"))'),
    "ip in a set": _when('[ip("10.0.0.1")].contains(context.ip)'),
    "datetime": _when('datetime("2024-01-01") < datetime("2025-01-01")'),
    "datetime offset": _when(
        'datetime("2024-01-01").offset(duration("1d")) == datetime("2024-01-02")'
    ),
    "duration": _when('context.d < duration("1h")'),
    "getTag": _when('principal.getTag("x") == 1'),
    "hasTag": _when('principal.hasTag("x")'),
    "decimal of the context": _when('decimal(context.x).lessThan(decimal("1.0"))'),
    "decimal of the context, right": _when("context.c.lessThan(decimal(context.x))"),
    "decimal of a concatenation": _when('context.c == decimal(if true then "1.0" else "2.0")'),
    "decimal method with two arguments": _when("context.c.lessThan(context.d, context.e)"),
    "unsupported after supported": "permit (principal, action, resource);\n"
    + _when('ip("127.0.0.1").isLoopback()'),
}


@pytest.mark.parametrize("text", list(UNSUPPORTED.values()), ids=list(UNSUPPORTED))
def test_native_build__unsupported_construct__returns_none(text: str) -> None:
    document = json.loads(cedarpy.policies_to_json_str(text))  # Cedar accepts the text
    policies = {**document["staticPolicies"], **document["templates"]}
    assert policies
    assert NativePolicies.build(policies) is None


# Constructs the parser of cedarpy 4.12 refuses, so no policy set can carry them.
REFUSED_BY_CEDAR: dict[str, str] = {
    "escaped star in a string": _when(r'"a\*b" == "a*b"'),
    "unknown extension function": _when('nosuchfn("1")'),
    "has on a computed name": _when("context has (context.name)"),
}


@pytest.mark.parametrize("text", list(REFUSED_BY_CEDAR.values()), ids=list(REFUSED_BY_CEDAR))
def test_cedar_parser__refused_construct__raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - cedarpy raises a bare ValueError
        cedarpy.policies_to_json_str(text)


# ---------------------------------------------------------------------------------------------
# The engine, with the native evaluator on and off
# ---------------------------------------------------------------------------------------------

REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount_cents": {"type": "integer"},
        "currency": {"type": "string"},
        "reason": {"type": "string"},
    },
}
EMAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"to": {"type": "string"}, "template": {"type": "string"}},
}
ACCOUNT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"account_id": {"type": "string"}, "notify": {"type": "boolean"}},
}
PARAM_TYPES = param_types(
    [
        ToolParams("issue_refund", REFUND_SCHEMA),
        ToolParams("send_email", EMAIL_SCHEMA),
        ToolParams("close_account", ACCOUNT_SCHEMA),
    ]
)
CONTROLS = compile_controls(
    Controls(
        tools=[
            ToolRule(tool="issue_refund", risk_zone="yellow", auto_cap=5000, hard_cap=50000),
            ToolRule(tool="send_email", risk_zone="green"),
            ToolRule(tool="close_account", risk_zone="red"),
        ],
        confidence_threshold=Decimal("0.8"),
        allowed_segments=["retail", "smb"],
        business_hours=(8, 18),
        weekdays_only=True,
    )
)
RAW_POLICIES = r"""
@id("fraud-reviewed")
@message("Suspected fraud is reviewed")
forbid (principal, action == Action::"execute", resource == Tool::"issue_refund")
when { context.params has reason && context.params.reason like "*fraud*" };

@id("high-risk-irreversible")
@message("High-risk agents never use irreversible tools")
forbid (principal, action, resource)
when { principal.risk_tier == "high" && resource.reversible == false };

@id("workflow-bound")
@message("Only agents of the refunds or billing workflows")
forbid (principal, action, resource)
unless { principal in [Workflow::"refunds", Workflow::"billing"] };

@id("email-templates")
@message("Templated e-mails in euros may run")
permit (principal, action == Action::"execute", resource == Tool::"send_email")
when { context.currency == "EUR" && context.params has template };

@id("literal-star-subjects")
@message("Subjects with a star are suspicious")
forbid (principal, action, resource) when { context.subject like "order:\*" };

@id("overflowing")
@message("Fails on a missing or huge amount_cents")
forbid (principal, action == Action::"execute", resource)
when { context.params.amount_cents * 1000000000 > 10 };

@id("notify-is-bool")
@message("Silent closes may run")
permit (principal, action == Action::"execute", resource == Tool::"close_account")
when { context.params has notify && !context.params.notify };
"""
WHOLE_CONTEXT = r"""
@id("whole-context")
@message("Reads the context as a whole")
permit (principal, action == Action::"propose", resource)
when { context != {} && context has segment && context.segment like "*s*" };
"""
IP_POLICY = r"""
@id("loopback")
@message("Left to cedarpy")
forbid (principal, action == Action::"execute", resource == Tool::"send_email")
when { ip("127.0.0.1").isLoopback() && context.amount > 100 };
"""
BOOKS: dict[str, str] = {
    "controls": CONTROLS,
    "controls and raw policies": CONTROLS + RAW_POLICIES,
    "raw policies and the whole context": RAW_POLICIES + WHOLE_CONTEXT,
    "controls with a construct left to cedarpy": CONTROLS + IP_POLICY + WHOLE_CONTEXT,
}

BASE_FACTS = refund_facts(confidence=Decimal("0.92"))
EMAIL: dict[str, Any] = {"tool": "send_email", "tool_zone": "green", "amount": None}
CLOSE: dict[str, Any] = {"tool": "close_account", "tool_zone": "red", "tool_reversible": False}


@dataclass(frozen=True)
class FactsCase:
    name: str
    changes: dict[str, Any] = field(default_factory=dict)


FACTS: list[FactsCase] = [
    FactsCase("base"),
    FactsCase("above the auto cap", {"amount": 5001}),
    FactsCase("above the hard cap", {"amount": 50_001}),
    FactsCase("huge amount", {"amount": 2**70}),
    FactsCase("negative amount", {"amount": -(2**70)}),
    FactsCase("no amount", {"amount": None}),
    FactsCase("no confidence", {"confidence": None}),
    FactsCase("confidence under the threshold", {"confidence": Decimal("0.79995")}),
    FactsCase("confidence rounded to the threshold", {"confidence": Decimal("0.79996")}),
    FactsCase("confidence at the threshold", {"confidence": Decimal("0.8")}),
    FactsCase("negative confidence", {"confidence": Decimal("-0.5")}),
    FactsCase("tiny negative confidence", {"confidence": Decimal("-0.00005")}),
    FactsCase("largest confidence", {"confidence": Decimal("922337203685477.5807")}),
    FactsCase("confidence out of range", {"confidence": Decimal("922337203685477.5808")}),
    FactsCase("confidence not a number", {"confidence": Decimal("NaN")}),
    FactsCase("segment smb", {"segment": "smb"}),
    FactsCase("segment unknown", {"segment": "enterprise"}),
    FactsCase("segment star", {"segment": "*"}),
    FactsCase("saturday", {"at": datetime(2025, 3, 8, 10, 0, tzinfo=UTC)}),
    FactsCase("at night", {"at": datetime(2025, 3, 5, 23, 0, tzinfo=UTC)}),
    FactsCase("high-risk agent", {"agent_risk_tier": "high"}),
    FactsCase("agent of billing", {"agent_workflows": ("billing",)}),
    FactsCase("agent of no workflow", {"agent_workflows": ()}),
    FactsCase("agent of two workflows", {"agent_workflows": ("support", "refunds")}),
    FactsCase("fraud", {"params": {**BASE_FACTS.params, "reason": "fraud ring"}}),
    FactsCase("no params", {"params": {}}),
    FactsCase("huge amount_cents", {"params": {**BASE_FACTS.params, "amount_cents": 2**62}}),
    FactsCase("ill-typed amount_cents", {"params": {**BASE_FACTS.params, "amount_cents": "30"}}),
    FactsCase("literal star subject", {"subject": "order:*"}),
    FactsCase("e-mail", {**EMAIL, "params": {"to": "a@b.c", "template": "sorry"}}),
    FactsCase("e-mail in dollars", {**EMAIL, "currency": "usd", "params": {"template": "x"}}),
    FactsCase("e-mail without template", {**EMAIL, "params": {"to": "a@b.c"}}),
    FactsCase("close silently", {**CLOSE, "params": {"notify": False}}),
    FactsCase("close with notice", {**CLOSE, "params": {"notify": True}}),
    FactsCase("close, notify ill-typed", {**CLOSE, "params": {"notify": "no"}}),
    FactsCase("high-risk close", {**CLOSE, "agent_risk_tier": "high"}),
    FactsCase("unknown tool", {"tool": "lookup_order", "tool_zone": "green"}),
    FactsCase("unknown tool, high risk", {"tool": "wipe", "agent_risk_tier": "high"}),
]


@dataclass(frozen=True)
class Verdict:
    """A `PolicyVerdict` up to the order of its reasons (cedarpy gives them in no particular
    order) and the wording of its errors."""

    outcome: str
    reasons: tuple[tuple[str, str], ...]
    errors: int

    @classmethod
    def of(cls, verdict: PolicyVerdict) -> Verdict:
        return cls(
            verdict.outcome,
            tuple(sorted((r.policy_id, r.message) for r in verdict.reasons)),
            len(verdict.errors),
        )


def _decide_all(text: str) -> tuple[CompiledPolicies, list[Verdict]]:
    """A fresh `CompiledPolicies` (slices are cached per instance and built with the evaluator
    chosen when they are first needed) and its verdict on every case."""
    compiled = CompiledPolicies(text, PARAM_TYPES)
    verdicts = [
        Verdict.of(engine.decide(compiled, replace(BASE_FACTS, **c.changes))) for c in FACTS
    ]
    return compiled, verdicts


def _native_slices(compiled: CompiledPolicies) -> list[NativePolicies | None]:
    tools = {str(c.changes.get("tool", BASE_FACTS.tool)) for c in FACTS}
    return [
        compiled.slice_for(action, tool).native
        for action in ("execute", "propose")
        for tool in sorted(tools)
    ]


@pytest.mark.parametrize("name", list(BOOKS))
def test_engine_decide__native_on_and_off__same_verdicts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = BOOKS[name]
    monkeypatch.setattr(engine, "USE_NATIVE", False)
    with_cedar, by_cedar = _decide_all(text)
    assert all(native is None for native in _native_slices(with_cedar))

    monkeypatch.setattr(engine, "USE_NATIVE", True)
    with_native, by_native = _decide_all(text)
    natives = _native_slices(with_native)
    assert any(native is not None for native in natives)
    if "left to cedarpy" in name:
        assert any(native is None for native in natives)
    else:
        assert all(native is not None for native in natives)

    for case, cedar, native in zip(FACTS, by_cedar, by_native, strict=True):
        assert native == cedar, f"{name} / {case.name}:\n  cedar  {cedar}\n  native {native}"
    # The cases are not all alike.
    assert {verdict.outcome for verdict in by_cedar} == {"allow", "hold", "deny"}


@pytest.mark.parametrize("name", list(BOOKS))
def test_engine_decide__unexplained_or_on_inputs_built_once__same_outcomes(name: str) -> None:
    # What a backtest asks: the outcome without its reasons, and on evaluator inputs built once
    # for two versions, must be the outcome of the full decision.
    compiled = CompiledPolicies(BOOKS[name], PARAM_TYPES)
    other = CompiledPolicies(BOOKS[name], PARAM_TYPES)
    outcomes = set()
    for case in FACTS:
        facts = replace(BASE_FACTS, **case.changes)
        full = engine.decide(compiled, facts)
        bare = engine.decide(compiled, facts, explain=False)
        # (a decision that could not be evaluated keeps its one reason: nothing to leave out)
        unexplained = full.reasons if full.reasons[0].policy_id == engine.NOT_EVALUATED_ID else ()
        assert (bare.outcome, bare.reasons, bare.errors) == (
            full.outcome,
            unexplained,
            full.errors,
        ), case
        if not unexplained:  # (inputs are built only for facts the policies can evaluate)
            shared = engine.native_inputs(facts, PARAM_TYPES)
            assert engine.decide(other, facts, explain=False, native=shared).outcome == full.outcome
            assert engine.decide(compiled, facts, native=shared) == full, case
        outcomes.add(full.outcome)
    assert outcomes == {"allow", "hold", "deny"}
