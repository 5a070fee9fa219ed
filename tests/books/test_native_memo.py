"""One request, two questions: policies both questions reach are evaluated once, unless their
conditions read `action`, and the verdicts are those of Cedar either way."""

from __future__ import annotations

from typing import Any

import pytest

from apps.books.content import ToolRule
from apps.books.policy import engine
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import CompiledPolicies, decide
from apps.books.policy.native import NativePolicy
from tests.factories import refund_facts

REFUND = ToolRule(tool="issue_refund", risk_zone="yellow", auto_cap=5000, hard_cap=50000)
ACTION_AWARE = """
@id("no-proposals-on-weekend-orders")
@message("Orders flagged for the weekend team are not proposed")
forbid (principal, action, resource)
when { action == Action::"propose" && context.subject like "order:9*" };
"""
TYPES = {"amount_cents": "Long", "currency": "String", "order_id": "String", "reason": "String"}


@pytest.mark.parametrize("native", [True, False], ids=["native", "cedarpy"])
@pytest.mark.parametrize(
    ("subject", "amount", "outcome", "reason"),
    [
        ("order:1042", 3000, "allow", "issue_refund-may-run"),
        ("order:1042", 30000, "hold", "issue_refund-review-above-5000"),
        ("order:9001", 30000, "deny", "no-proposals-on-weekend-orders"),
        # Execute is allowed, so the action-aware forbid (propose only) never decides.
        ("order:9001", 3000, "allow", "issue_refund-may-run"),
    ],
)
def test_decide__policy_reading_action__judged_per_question(
    monkeypatch: pytest.MonkeyPatch,
    native: bool,
    subject: str,
    amount: int,
    outcome: str,
    reason: str,
) -> None:
    monkeypatch.setattr(engine, "USE_NATIVE", native)
    compiled = CompiledPolicies(compile_controls(Controls(tools=[REFUND])) + ACTION_AWARE, TYPES)
    facts = refund_facts(
        subject=subject, amount=amount, params={**refund_facts().params, "amount_cents": amount}
    )
    verdict = decide(compiled, facts)
    assert (verdict.outcome, verdict.reasons[0].policy_id) == (outcome, reason)
    assert verdict.errors == ()


def test_hold_path__shared_policies__evaluated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the refund controls, whose forbids apply to both questions, asked for the first
    # time (so the closures answer: the code is generated for the next question)
    monkeypatch.setattr(engine, "USE_NATIVE", True)
    compiled = CompiledPolicies(compile_controls(Controls(tools=[REFUND])), TYPES)
    calls: list[str] = []
    original = NativePolicy.applies

    def counting(self: NativePolicy, env: object, store: object) -> bool:
        calls.append(self.cedar_id)
        return original(self, env, store)  # type: ignore[arg-type]

    monkeypatch.setattr(NativePolicy, "applies", counting)
    # When a hold (both questions) is decided
    facts = refund_facts(amount=30000, params={**refund_facts().params, "amount_cents": 30000})
    assert decide(compiled, facts).outcome == "hold"
    # Then no policy was evaluated twice
    assert len(calls) == len(set(calls))
    assert "policy0" in calls  # the tool allow-list, which both questions reach


class _RecordingMemo(dict[str, bool | str]):
    """A memo that records every verdict stored in it."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[str] = []

    def __setitem__(self, key: str, value: bool | str) -> None:
        self.stored.append(key)
        super().__setitem__(key, value)


def test_hold_path__generated_code__shared_policies_evaluated_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the refund controls, decided once so that both slices run generated code
    monkeypatch.setattr(engine, "USE_NATIVE", True)
    compiled = CompiledPolicies(compile_controls(Controls(tools=[REFUND])), TYPES)
    facts = refund_facts(amount=30000, params={**refund_facts().params, "amount_cents": 30000})
    assert decide(compiled, facts).outcome == "hold"
    for action in ("execute", "propose"):
        native = compiled.slice_for(action, facts.tool).native
        assert native is not None
        assert native.generated is not None
    memos: list[_RecordingMemo] = []
    original = engine._Request.__init__

    def recording(self: engine._Request, *args: Any) -> None:
        original(self, *args)
        self.memo = _RecordingMemo()
        memos.append(self.memo)

    monkeypatch.setattr(engine._Request, "__init__", recording)
    # When a hold (both questions) is decided again
    assert decide(compiled, facts).outcome == "hold"
    # Then no verdict was stored twice: the second question took the first one's
    (memo,) = memos
    assert len(memo.stored) == len(set(memo.stored))
    assert "policy0" in memo.stored  # the tool allow-list, which both questions reach
