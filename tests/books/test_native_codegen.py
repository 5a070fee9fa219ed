"""The generated evaluator (`native._SliceSource`, `native._generate`) against the closures it
stands in for, and both against Cedar.

The generated code must give the closures' answer exactly (decision, reasons, error texts), and
should only hand a policy back to its closures when evaluating it fails: otherwise it is correct
but slow. Checked on a table of expressions with contexts of every type (error cases included),
on the corpus of test_native_equivalence and on requests Hypothesis makes up; plus the cases the
generated code leaves to the closures on purpose, the memo, and the engine's context.

No database is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.books.policy import engine
from apps.books.policy.engine import CompiledPolicies
from apps.books.policy.native import (
    LONG_MAX,
    LONG_MIN,
    CedarDecimal,
    EntityStore,
    Env,
    NativePolicies,
    NativePolicy,
    Uid,
)
from tests.books.test_native_equivalence import (
    AGENT,
    BASE_FACTS,
    CONTROLS,
    EXECUTE,
    FACTS,
    FIXED_REQUESTS,
    PARAM_TYPES,
    POLICY_SETS,
    PROPOSE,
    RAW_POLICIES,
    TOOL,
    WORLD,
    PolicySet,
    Request,
    assert_same,
    dec,
    requests,
)

Json = Any

# ---------------------------------------------------------------------------------------------
# Both evaluators on one request, and which policies the generated code handed back
# ---------------------------------------------------------------------------------------------


def _both(
    native: NativePolicies, request: Request, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(generated answer, closures' answer, policies the generated code left to the closures)."""
    assert native.generated is not None
    handed_back: set[str] = set()
    original = NativePolicy.verdict

    def recording(self: NativePolicy, env: Env, store: EntityStore) -> bool | str:
        handed_back.add(self.cedar_id)
        return original(self, env, store)

    arguments: dict[str, Any] = {
        "principal": request.principal,
        "action": request.action,
        "resource": request.resource,
        "context": request.native_context,
        "store": request.store,
    }
    with monkeypatch.context() as patch:
        patch.setattr(NativePolicy, "verdict", recording)
        generated = native.authorize(**arguments)
    by_closures = native.authorize_by_closures(**arguments)
    return generated, by_closures, handed_back


def _errored(answer: dict[str, Any], native: NativePolicies) -> set[str]:
    errors: list[str] = answer["diagnostics"]["errors"]
    return {p.cedar_id for p in native.policies if any(f"`{p.cedar_id}`" in e for e in errors)}


def assert_generated_same(
    policies: PolicySet, request: Request, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated, by_closures, handed_back = _both(policies.native, request, monkeypatch)
    where = f"{policies.name} on {request.name or request}"
    assert generated == by_closures, f"{where}:\n  generated {generated}\n  closures  {by_closures}"
    # Handed back exactly when the policy fails: a policy that evaluates never takes the slow way.
    assert handed_back == _errored(by_closures, policies.native), where


# ---------------------------------------------------------------------------------------------
# A table of expressions, on contexts of every type
# ---------------------------------------------------------------------------------------------

EXPRESSIONS = [
    # Longs: comparisons, arithmetic and overflow, a Bool where a Long is wanted
    "context.n > 5000",
    "context.n <= 5000",
    "5000 < context.n",
    "context.n >= context.m",
    "context.n + 1 > 0",
    "context.n - 1 < 0",
    "context.n * 2 == 6000",
    "context.n * context.n >= 0",
    "-context.n < 0",
    "-(-context.n) == context.n",
    "9223372036854775807 + context.n > 0",
    "-9223372036854775808 == context.n",
    "context.n == 3000",
    "context.n != 3000",
    "3000 == context.n",
    "context.n == context.m",
    "context.n == true",
    "context.b == 1",
    # Bools: `&&` and `||` short-circuit and check their operands
    "context.b",
    "!context.b",
    "context.b == true",
    "context.b != false",
    "true == context.b",
    "context.b && context.n > 1",
    "context.n > 1 && context.b",
    "context.b || context.n > 1",
    "context.n > 1 || context.b",
    "context.b && context.b",
    "!(context.n > 1) || !context.b",
    "if context.b then context.n > 1 else false",
    "if context.b then context.n else true",
    "if context.n > 1 then context.b else context.b",
    # Strings
    'context.s == "acb"',
    'context.s != "acb"',
    '"acb" == context.s',
    'context.s like "a*b"',
    'context.s like "acb"',
    'context.s like "*"',
    'context.s < "z"',
    '["acb", "x"].contains(context.s)',
    '[1, "1", true].contains(context.s)',
    # Records and `has`
    "context has s",
    "context has missing",
    "context.r has a",
    "context.r.a == 1",
    "context.r.a.b == 1",
    "context.r == {a: 1}",
    "context.r != {}",
    "{a: context.n}.a == context.n",
    "{a: context.n} == {a: 3000}",
    # Sets
    "context.set.contains(1)",
    "context.set.containsAll([1])",
    'context.set.containsAny([1, "x"])',
    "context.set.isEmpty()",
    "[context.n, 1].contains(1)",
    "[context.n, 1] == [1, context.n]",
    "[1].containsAll(context.set)",
    "context.set == [1, 2]",
    # Decimals
    'context.d.lessThan(decimal("0.5"))',
    'context.d.lessThanOrEqual(decimal("0.5"))',
    'context.d.greaterThan(decimal("-0.0001"))',
    "context.d.greaterThanOrEqual(context.d)",
    'decimal("0.5").lessThan(context.d)',
    'context.d == decimal("0.5")',
    'context.d != decimal("0.50")',
    'context.d.lessThan(decimal("1.23456"))',
    "context.d.lessThan(context.n)",
    "context.d < context.n",
    # Entities: `in`, `is`, attributes
    'principal in Workflow::"w1"',
    'principal in [Workflow::"w1", Workflow::"w2"]',
    'principal in [Workflow::"w1", 1]',
    "principal in context.e",
    'context.e in Workflow::"w1"',
    'context.e in [Workflow::"w1", WorkflowGroup::"g2"]',
    "principal is Agent",
    'principal is Agent in Workflow::"w1"',
    'principal is Agent in [Workflow::"w1", WorkflowGroup::"g1"]',
    "context.e is Agent",
    'context.e is Agent in Workflow::"w1"',
    'principal.risk_tier == "low"',
    "principal has risk_tier",
    "resource.reversible",
    'context.e.risk_tier == "low"',
    "context.e has risk_tier",
    'context.e == Agent::"a1"',
    "context.e == principal",
    'Agent::"ghost".risk_tier == "low"',
    'action == Action::"execute"',
    'action in [Action::"execute", Action::"other"]',
]

_BASE: dict[str, Json] = {
    "n": 3000,
    "m": 3000,
    "b": True,
    "s": "acb",
    "r": {"a": 1},
    "set": [1, 2],
    "d": dec("0.5"),
    "e": {"__entity": {"type": "Agent", "id": "a1"}},
}
_VARIANTS: dict[str, list[Json]] = {
    "n": [0, -1, 5001, LONG_MAX, LONG_MIN, True, "5", dec("1.0"), None],
    "m": [LONG_MAX, -1, None],
    "b": [False, 1, "true", None],
    "s": ["x", "", "a*b", 1, None],
    "r": [{"a": True}, {"a": {"b": 1}}, {}, "r", [1], None],
    "set": [[], [1], ["x", 1], [[1]], 1, None],
    "d": [dec("-0.0001"), dec("0.50"), dec("922337203685477.5807"), "0.5", 1, None],
    "e": [
        {"__entity": {"type": "Agent", "id": "a2"}},
        {"__entity": {"type": "Agent", "id": "ghost"}},
        {"__entity": {"type": "Workflow", "id": "w1"}},
        {"__entity": {"type": "Tool", "id": "t1"}},
        "a1",
        None,
    ],
}


def _table_contexts() -> Iterator[tuple[str, dict[str, Json]]]:
    """The base context, then each field changed (None: left out) with the others at base."""
    yield "base", dict(_BASE)
    for name, variants in _VARIANTS.items():
        for value in variants:
            changed = {**_BASE, name: value}
            yield f"{name}={value!r}", {k: v for k, v in changed.items() if v is not None}


# Each expression as a `when` of a permit and as an `unless` of a forbid, in two sets, so that
# every policy that applies is named (a set's forbids would hide its permits).
TABLES = [
    PolicySet.parse(
        f"table of {kind}",
        "\n".join(
            f"{effect} (principal, action, resource) {kind} {{ {expression} }};"
            for expression in EXPRESSIONS
        ),
    )
    for effect, kind in (("permit", "when"), ("forbid", "unless"))
]
TABLE_REQUESTS = [
    Request(principal, action, TOOL[tool], context, WORLD, f"{who} {name}")
    for name, context in _table_contexts()
    for who, principal, action, tool in (
        ("a1", AGENT["a1"], EXECUTE, "t1"),
        ("a3", AGENT["a3"], PROPOSE, "t2"),
    )
]


def test_generated__expression_table__same_as_closures_and_cedar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held: set[str] = set()
    refuted: set[str] = set()
    failed: set[str] = set()
    for when, unless in [TABLES]:
        for table in (when, unless):
            assert table.native.generated is not None
            assert table.native.generated.closures_only == []  # type: ignore[attr-defined]
        for request in TABLE_REQUESTS:
            for table, outcomes in ((when, held), (unless, refuted)):
                assert_generated_same(table, request, monkeypatch)
                answer = assert_same(table, request)
                outcomes |= answer.reasons
                failed |= answer.errored
    # The table is not trivial: most expressions are true somewhere, false somewhere and fail
    # somewhere (some can only be one or two of those, as `context has s`).
    assert len(held) >= len(EXPRESSIONS) * 9 // 10
    assert len(refuted) >= len(EXPRESSIONS) * 2 // 3
    assert len(failed) >= len(EXPRESSIONS) * 4 // 5


def test_generated__corpus_fixed_requests__same_as_closures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for policies in POLICY_SETS.values():
        assert policies.native.generated is not None
        assert policies.native.generated.closures_only == []  # type: ignore[attr-defined]
        for request in FIXED_REQUESTS:
            assert_generated_same(policies, request, monkeypatch)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(requests)
def test_generated__generated_requests__same_as_closures(
    monkeypatch: pytest.MonkeyPatch, generated: Request
) -> None:
    for policies in POLICY_SETS.values():
        assert_generated_same(policies, generated, monkeypatch)


# ---------------------------------------------------------------------------------------------
# What the generated code leaves to the closures
# ---------------------------------------------------------------------------------------------


def _policy(effect: str, body: Json, *, kind: str = "when") -> dict[str, Json]:
    return {
        "effect": effect,
        "principal": {"op": "All"},
        "action": {"op": "All"},
        "resource": {"op": "All"},
        "conditions": [{"kind": kind, "body": body}],
    }


FLAG = {".": {"left": {"Var": "context"}, "attr": "flag"}}


def test_generated__expression_too_deep_for_python__left_to_its_closures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a condition nested deeper than Python's parser accepts, next to an ordinary one
    deep: Json = FLAG
    for _ in range(300):
        deep = {"!": {"arg": deep}}
    static = {"deep": _policy("permit", deep), "shallow": _policy("forbid", FLAG)}
    native = NativePolicies.build(static)
    # Then only the deep one is left to its closures, and the answers are the closures'
    assert native is not None
    assert native.generated is not None
    assert native.generated.closures_only == ["deep"]  # type: ignore[attr-defined]
    for flag in (True, False, 1, None):
        context = {} if flag is None else {"flag": flag}
        request = Request(AGENT["a1"], EXECUTE, TOOL["t1"], context, [])
        generated, by_closures, handed_back = _both(native, request, monkeypatch)
        assert generated == by_closures
        assert "deep" in handed_back


@pytest.mark.parametrize(
    ("context", "principal"),
    [
        ("a text", AGENT["a1"]),
        ([1, 2], AGENT["a1"]),
        ({"flag": True}, "Agent::a1"),
        ({"flag": True}, {"type": "Agent", "id": "a1"}),
    ],
    ids=["context text", "context set", "principal text", "principal record"],
)
def test_generated__request_of_other_types__answered_by_the_closures(
    context: Json, principal: Json
) -> None:
    native = NativePolicies.build(
        {
            "reads": _policy("forbid", FLAG),
            "scoped": {
                **_policy("permit", {"Value": True}),
                "principal": {"op": "is", "entity_type": "Agent"},
            },
        }
    )
    assert native is not None
    assert native.generated is not None
    arguments: dict[str, Any] = {
        "principal": principal,
        "action": EXECUTE,
        "resource": TOOL["t1"],
        "context": context,
        "store": EntityStore({}, {}),
    }
    try:
        expected: Any = native.authorize_by_closures(**arguments)
    except AttributeError as exc:  # a scope on something that is not an entity
        expected = type(exc)
    try:
        answer: Any = native.authorize(**arguments)
    except AttributeError as exc:
        answer = type(exc)
    assert answer == expected


def test_generated__memo__shared_verdicts_reused_others_evaluated() -> None:
    # Given a set asked about `execute` only: one policy shared by the questions of a request,
    # one that reads `action` (so each question evaluates it)
    static = {
        "shared": _policy("forbid", FLAG),
        "reads-action": _policy(
            "permit",
            {
                "==": {
                    "left": {"Var": "action"},
                    "right": {"Value": {"__entity": {"type": "Action", "id": "execute"}}},
                }
            },
        ),
    }
    native = NativePolicies.build(static, action="execute")
    assert native is not None
    assert native.generated is not None
    # When the memo already holds a verdict for the shared one (as from an earlier question)
    seeded = "error while evaluating policy `shared`: seeded"
    memo: dict[str, bool | str] = {"shared": seeded, "reads-action": True}
    answer = native.authorize(
        principal=AGENT["a1"],
        action=EXECUTE,
        resource=TOOL["t1"],
        context={"flag": True},
        store=EntityStore({}, {}),
        memo=memo,
    )
    # Then that verdict is used, and the other policy is evaluated afresh
    assert answer == {
        "decision": "Allow",
        "diagnostics": {"reason": ["reads-action"], "errors": [seeded]},
    }
    # And a fresh memo receives the shared verdict only
    fresh: dict[str, bool | str] = {}
    native.authorize(
        principal=AGENT["a1"],
        action=EXECUTE,
        resource=TOOL["t1"],
        context={"flag": False},
        store=EntityStore({}, {}),
        memo=fresh,
    )
    assert fresh == {"shared": False}


def test_build__generate_after__closures_answer_first() -> None:
    static = POLICY_SETS["mixed"].static
    native = NativePolicies.build(static, generate_after=2)
    assert native is not None
    request = FIXED_REQUESTS[0]
    arguments: dict[str, Any] = {
        "principal": request.principal,
        "action": request.action,
        "resource": request.resource,
        "context": request.native_context,
        "store": request.store,
    }
    answers = []
    for _ in range(2):
        assert native.generated is None
        answers.append(native.authorize(**arguments))
    assert native.generated is not None  # generated after the second question, for the third
    answers.append(native.authorize(**arguments))
    assert answers[0] == answers[1] == answers[2]
    never = NativePolicies.build(static, generate=False)
    assert never is not None
    for _ in range(3):
        never.authorize(**arguments)
    assert never.generated is None


def test_build__fixed_resource__same_answers_on_that_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = POLICY_SETS["scopes"]
    for action in ("execute", "propose"):
        for tool in ("t1", "t2", "t3"):
            fixed = NativePolicies.build(whole.static, action=action, resource=TOOL[tool])
            assert fixed is not None
            assert fixed.generated is not None
            # Policies pinned to another resource by `==` are dropped.
            kept = {p.cedar_id for p in fixed.policies}
            assert ("policy0" in kept) == (action == "execute" and tool == "t1")
            pinned = PolicySet("scopes fixed", whole.text, whole.static, whole.cedar, fixed)
            for request in FIXED_REQUESTS:
                on_it = replace(request, action=Uid("Action", action), resource=TOOL[tool])
                assert_same(pinned, on_it)
                assert_generated_same(pinned, on_it, monkeypatch)


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


def test_engine__book_policies__handed_back_only_when_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a book's controls and raw policies, asked often enough to use the generated code
    compiled = CompiledPolicies(CONTROLS + RAW_POLICIES, PARAM_TYPES)
    cases = [replace(BASE_FACTS, **case.changes) for case in FACTS]
    cases = [facts for facts in cases if engine.is_cedar_decimal(facts.confidence or Decimal(0))]
    first = [engine.decide(compiled, facts) for facts in cases]
    # When they are decided again
    handed_back: list[bool | str] = []
    original = NativePolicy.verdict

    def recording(self: NativePolicy, env: Env, store: EntityStore) -> bool | str:
        handed_back.append(verdict := original(self, env, store))
        return verdict

    monkeypatch.setattr(NativePolicy, "verdict", recording)
    again = [engine.decide(compiled, facts) for facts in cases]
    # Then the verdicts are the same, and the closures were only asked about failing policies
    assert again == first
    assert {verdict.outcome for verdict in again} == {"allow", "hold", "deny"}
    assert handed_back  # the overflowing policy fails on some cases
    assert all(isinstance(verdict, str) for verdict in handed_back)


def _native_context_before(facts: engine.ActionFacts) -> dict[str, Any]:
    """The evaluator's context as `decide` built it before `native_context_values`."""
    values = engine.context_values(facts, PARAM_TYPES)
    confidence = values["confidence"]
    units = int(confidence.scaleb(4).to_integral_value(rounding=ROUND_HALF_EVEN))
    return {**values, "confidence": CedarDecimal(units)}


# The confidences out of Cedar's range are refused by `decide` before any context is built.
DECIDED = [
    case
    for case in FACTS
    if engine.is_cedar_decimal(replace(BASE_FACTS, **case.changes).confidence or Decimal(0))
]


@pytest.mark.parametrize("case", DECIDED, ids=[case.name for case in DECIDED])
def test_native_context_values__facts__same_as_before(case: Any) -> None:
    facts = replace(BASE_FACTS, **case.changes)
    assert engine.native_context_values(facts, PARAM_TYPES) == _native_context_before(facts)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.decimals(
        min_value=Decimal("-922337203685477.5807"),
        max_value=Decimal("922337203685477.5807"),
        allow_nan=False,
        allow_infinity=False,
    ),
    st.one_of(st.none(), st.integers(), st.booleans(), st.text(max_size=3)),
)
def test_native_context_values__decimals_and_params__same_as_before(
    confidence: Decimal, amount_cents: Any
) -> None:
    params = {**BASE_FACTS.params, "amount_cents": amount_cents}
    facts = replace(BASE_FACTS, confidence=confidence, params=params)
    assert engine.native_context_values(facts, PARAM_TYPES) == _native_context_before(facts)


def test_reasons_for__one_or_several__in_written_order() -> None:
    compiled = CompiledPolicies(CONTROLS + RAW_POLICIES, PARAM_TYPES)
    last, first = f"policy{len(compiled.policies) - 1}", "policy0"
    assert compiled.reasons_for([first]) == (compiled.reasons[first],)
    assert compiled.reasons_for([last, first]) == (compiled.reasons[first], compiled.reasons[last])
    assert compiled.reasons_for(["unknown"]) == (engine.Reason("unknown", "unknown"),)
