"""A confidence is rounded once to Cedar's four places, and down: a value under the book's
threshold stays under it, whatever its number of digits, in both evaluators (the in-process one
and cedarpy) and through the gate."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.actions.gate import action_propose
from apps.books.content import ToolRule
from apps.books.models import BookVersion
from apps.books.policy import engine
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import CompiledPolicies, cedar_confidence, decide
from apps.books.policy.native import CedarDecimal
from apps.books.policy.schema import ToolParams, param_types
from apps.registry.services import IssuedKey
from tests.actions.conftest import proposal
from tests.factories import REFUND_SCHEMA, refund_facts

THRESHOLD = Decimal("0.8")
# 40 significant digits, just under the threshold: more than the 28 of Python's default decimal
# context, so a rounding in that context first (then to four places) gives 0.8000.
JUST_UNDER = Decimal("0." + "7" + "9" * 39)
JUST_OVER = Decimal("0.8" + "0" * 38 + "1")
PARAM_TYPES = param_types([ToolParams("issue_refund", REFUND_SCHEMA)])
CONTROLS = compile_controls(
    Controls(
        tools=[ToolRule(tool="issue_refund", auto_cap=5000, hard_cap=50000)],
        confidence_threshold=THRESHOLD,
    )
)


def test_just_under__has_forty_significant_digits() -> None:
    assert len(JUST_UNDER.as_tuple().digits) == 40
    assert JUST_UNDER < THRESHOLD < JUST_OVER


@pytest.mark.parametrize(
    ("confidence", "rounded"),
    [
        pytest.param(JUST_UNDER, "0.7999", id="forty-digits-under"),
        pytest.param(Decimal("0.79995"), "0.7999", id="half-way-under"),
        pytest.param(Decimal("0.79999"), "0.7999", id="five-places-under"),
        pytest.param(THRESHOLD, "0.8000", id="at"),
        pytest.param(JUST_OVER, "0.8000", id="forty-digits-over"),
        pytest.param(Decimal("0.93"), "0.9300", id="four-places"),
        pytest.param(Decimal("-0.00005"), "-0.0001", id="negative-goes-lower"),
    ],
)
def test_cedar_confidence__any_digits__rounded_once_and_never_up(
    confidence: Decimal, rounded: str
) -> None:
    # Given a confidence with more places than Cedar keeps
    # When it is made a Cedar decimal
    result = cedar_confidence(confidence)
    # Then it has four places, and is never above the value given
    assert str(result) == rounded
    assert result <= confidence


@pytest.mark.parametrize("use_native", [True, False], ids=["in-process", "cedarpy"])
def test_decide__forty_digits_just_under_threshold__held_by_confidence_control(
    use_native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the refund controls with a threshold of 0.8, decided by one evaluator
    monkeypatch.setattr(engine, "USE_NATIVE", use_native)
    compiled = CompiledPolicies(CONTROLS, PARAM_TYPES)
    # When a refund under the auto cap comes with a confidence of 40 digits just under 0.8
    verdict = decide(compiled, refund_facts(confidence=JUST_UNDER))
    # Then a person decides: the threshold's control holds it
    assert verdict.outcome == "hold"
    assert [reason.policy_id for reason in verdict.reasons] == ["confidence-threshold"]


@pytest.mark.parametrize("confidence", [JUST_UNDER, THRESHOLD, JUST_OVER, Decimal("0.79995")])
def test_contexts__same_confidence__both_evaluators_read_the_same_decimal(
    confidence: Decimal,
) -> None:
    # Given one action's facts
    facts = refund_facts(confidence=confidence)
    # When the context is built for cedarpy and for the in-process evaluator
    for_cedar = engine.build_context(facts, PARAM_TYPES)["confidence"]
    for_native = engine.native_context_values(facts, PARAM_TYPES)["confidence"]
    # Then both hold the same four-place decimal
    assert for_cedar == {"__extn": {"fn": "decimal", "arg": str(cedar_confidence(confidence))}}
    assert for_native == CedarDecimal.parse(for_cedar["__extn"]["arg"])


@pytest.mark.parametrize(
    ("confidence", "outcome"),
    [(JUST_UNDER, "hold"), (JUST_OVER, "allow")],
    ids=["just-under", "just-over"],
)
def test_gate__forty_digit_confidence__decided_against_the_threshold_as_written(
    key: IssuedKey,
    book: BookVersion,
    confidence: Decimal,
    outcome: str,
) -> None:
    # Given the refunds book (threshold 0.8, autonomous)
    # When refund-bot proposes a small refund with a confidence of 40 digits around 0.8
    result = action_propose(key=key.record, proposal=proposal(confidence=confidence))
    # Then under the threshold it waits for a person, over it it runs
    action = result.action
    assert action.decision == outcome
    if outcome == "hold":
        assert action.reasons[0]["policy"] == "confidence-threshold"
