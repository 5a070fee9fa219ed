"""Allow, hold or deny, and why: the Cedar engine on the compiled controls plus raw policies, then
the book's autonomy mode and risk zones on top of it (`book_decide`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import cedarpy
import pytest

from apps.accounts.roles import Role
from apps.books.compilation import book_decide
from apps.books.content import ToolRule
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import (
    NO_EXECUTE_PERMIT_ID,
    NO_PROPOSE_PERMIT_ID,
    NOT_EVALUATED_ID,
    ActionFacts,
    CompiledPolicies,
    Outcome,
    Reason,
    build_context,
    decide,
)
from apps.books.policy.schema import ToolParams, build_schema, param_types
from apps.books.policy.validation import validate_policies
from tests.factories import (
    REFUND_CONTROLS,
    REFUND_SCHEMA,
    make_published_book,
    make_tool,
    make_workflow,
    refund_facts,
)

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

# Every control of the form at once; the base action below passes all of them, and each case
# changes one thing.
CONTROLS = Controls(
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

WEDNESDAY_10 = datetime(2025, 3, 5, 10, 0, tzinfo=UTC)
SATURDAY_10 = datetime(2025, 3, 8, 10, 0, tzinfo=UTC)

BASE = refund_facts(at=WEDNESDAY_10)

# The messages are written out here, not read from the compiler, so that a changed message
# shows up as a failing test.
MESSAGES = {
    "tool-allow-list": "Only the tools listed in the Decision Book may be used "
    "(issue_refund, send_email, close_account)",
    "issue_refund-may-run": "issue_refund (yellow zone) may run without review within its limits",
    "issue_refund-review-above-5000": "issue_refund above 50.00 EUR needs a person",
    "issue_refund-never-above-50000": "issue_refund above 500.00 EUR is never allowed",
    "send_email-may-run": "send_email (green zone) may run without review within its limits",
    "close_account-red-zone": "close_account is in the red zone: people approve every use",
    "confidence-threshold": "Confidence below 0.8: a person decides",
    "segments": "Only these segments run without review: retail, smb",
    "business-hours": "Outside business hours (08:00-18:00) a person decides",
    "weekdays-only": "At weekends a person decides",
    NO_EXECUTE_PERMIT_ID: "No policy permits running this action without review",
    NO_PROPOSE_PERMIT_ID: "No policy permits proposing this action",
    # Raw policies used by the cases below.
    "order-13-reviewed": "Order 13 is under investigation: a person decides",
    "order-13-frozen": "Order 13 is frozen: no refund at all",
    "large-refunds-run-anyway": "Large refunds may run (overridden by the caps)",
    "close-small-accounts": "Closing an account may run when nobody is notified",
    "usd-reviewed": "Refunds in US dollars are reviewed",
    "refunds-agents-only": "Only agents of the refunds workflow may refund",
    "high-risk-agents-reviewed": "High-risk agents never act without review",
    "irreversible-reviewed": "Irreversible tools are reviewed",
    "lookup-may-run": "Order look-ups may run",
    "lookup-may-propose": "Order look-ups may be proposed",
}

ORDER_13_REVIEWED = """
@id("order-13-reviewed")
@message("Order 13 is under investigation: a person decides")
forbid (principal, action == Action::"execute", resource)
when { context.subject == "order:13" };
"""
ORDER_13_FROZEN = """
@id("order-13-frozen")
@message("Order 13 is frozen: no refund at all")
forbid (principal, action, resource == Tool::"issue_refund")
when { context.subject == "order:13" };
"""
LARGE_REFUNDS_RUN = """
@id("large-refunds-run-anyway")
@message("Large refunds may run (overridden by the caps)")
permit (principal, action == Action::"execute", resource == Tool::"issue_refund")
when { context.amount > 5000 };
"""
CLOSE_SMALL_ACCOUNTS = """
@id("close-small-accounts")
@message("Closing an account may run when nobody is notified")
permit (principal, action == Action::"execute", resource == Tool::"close_account")
when { context.params has notify && !context.params.notify };
"""
USD_REVIEWED = """
@id("usd-reviewed")
@message("Refunds in US dollars are reviewed")
forbid (principal, action == Action::"execute", resource == Tool::"issue_refund")
when { context.params has currency && context.params.currency == "USD" };
"""
REFUNDS_AGENTS_ONLY = """
@id("refunds-agents-only")
@message("Only agents of the refunds workflow may refund")
forbid (principal, action, resource == Tool::"issue_refund")
unless { principal in Workflow::"refunds" };
"""
HIGH_RISK_REVIEWED = """
@id("high-risk-agents-reviewed")
@message("High-risk agents never act without review")
forbid (principal, action == Action::"execute", resource)
when { principal.risk_tier == "high" };
"""
IRREVERSIBLE_REVIEWED = """
@id("irreversible-reviewed")
@message("Irreversible tools are reviewed")
forbid (principal, action == Action::"execute", resource)
unless { resource.reversible };
"""
LOOKUP_MAY_RUN = """
@id("lookup-may-run")
@message("Order look-ups may run")
permit (principal, action == Action::"execute", resource == Tool::"lookup_order");
"""
LOOKUP_MAY_PROPOSE = """
@id("lookup-may-propose")
@message("Order look-ups may be proposed")
permit (principal, action == Action::"propose", resource == Tool::"lookup_order");
"""


@dataclass(frozen=True)
class Case:
    outcome: Outcome
    reasons: frozenset[str]
    changes: dict[str, Any] = field(default_factory=dict)
    raw: str = ""
    with_controls: bool = True


def case(
    name: str,
    outcome: Outcome,
    reasons: set[str],
    *,
    raw: str = "",
    with_controls: bool = True,
    **changes: Any,
) -> Any:
    return pytest.param(Case(outcome, frozenset(reasons), changes, raw, with_controls), id=name)


def refund_of(cents: int) -> dict[str, Any]:
    return {"amount": cents, "params": {**BASE.params, "amount_cents": cents}}


def at_hour(hour: int, minute: int = 0) -> datetime:
    return WEDNESDAY_10.replace(hour=hour, minute=minute)


CLOSE_ACCOUNT: dict[str, Any] = {
    "tool": "close_account",
    "tool_zone": "red",
    "tool_reversible": False,
}

CASES = [
    # Amounts against the review-free cap (5000) and the hard cap (50000).
    case("amount-under-auto-cap", "allow", {"issue_refund-may-run"}, **refund_of(4999)),
    case("amount-at-auto-cap", "allow", {"issue_refund-may-run"}, **refund_of(5000)),
    case("amount-over-auto-cap", "hold", {"issue_refund-review-above-5000"}, **refund_of(5001)),
    case("amount-at-hard-cap", "hold", {"issue_refund-review-above-5000"}, **refund_of(50000)),
    case("amount-over-hard-cap", "deny", {"issue_refund-never-above-50000"}, **refund_of(50001)),
    # Confidence against the threshold (0.8).
    case("confidence-below", "hold", {"confidence-threshold"}, confidence=Decimal("0.7999")),
    case("confidence-at", "allow", {"issue_refund-may-run"}, confidence=Decimal("0.8")),
    case("confidence-above", "allow", {"issue_refund-may-run"}, confidence=Decimal("1")),
    case("confidence-missing", "hold", {"confidence-threshold"}, confidence=None),
    # Tools: the allow-list and the zones.
    case("tool-not-listed", "deny", {"tool-allow-list"}, tool="delete_customer"),
    case("red-zone-tool", "hold", {"close_account-red-zone"}, **CLOSE_ACCOUNT),
    case("green-zone-tool", "allow", {"send_email-may-run"}, tool="send_email", tool_zone="green"),
    # Segments.
    case("segment-allowed", "allow", {"issue_refund-may-run"}, segment="smb"),
    case("segment-not-allowed", "hold", {"segments"}, segment="enterprise"),
    case("segment-unknown", "hold", {"segments"}, segment=""),
    # Business hours (08:00-18:00, the end excluded) and weekdays.
    case("hours-before-start", "hold", {"business-hours"}, at=at_hour(7, 59)),
    case("hours-at-start", "allow", {"issue_refund-may-run"}, at=at_hour(8)),
    case("hours-last-minute", "allow", {"issue_refund-may-run"}, at=at_hour(17, 59)),
    case("hours-at-end", "hold", {"business-hours"}, at=at_hour(18)),
    case("weekend", "hold", {"weekdays-only"}, at=SATURDAY_10),
    case(
        "several-controls-at-once",
        "hold",
        {"issue_refund-review-above-5000", "confidence-threshold", "weekdays-only"},
        at=SATURDAY_10,
        confidence=Decimal("0.5"),
        **refund_of(6000),
    ),
    # Raw Cedar next to the compiled controls: forbid wins.
    case(
        "raw-forbid-beats-compiled-permit",
        "hold",
        {"order-13-reviewed"},
        raw=ORDER_13_REVIEWED,
        subject="order:13",
    ),
    case(
        "raw-forbid-on-every-action",
        "deny",
        {"order-13-frozen"},
        raw=ORDER_13_FROZEN,
        subject="order:13",
    ),
    case(
        "raw-forbid-not-matching",
        "allow",
        {"issue_refund-may-run"},
        raw=ORDER_13_FROZEN,
        subject="order:14",
    ),
    case(
        "raw-permit-cannot-lift-a-cap",
        "hold",
        {"issue_refund-review-above-5000"},
        raw=LARGE_REFUNDS_RUN,
        **refund_of(6000),
    ),
    case(
        "raw-permit-where-compiled-has-none",
        "hold",
        {"close_account-red-zone"},
        raw=CLOSE_SMALL_ACCOUNTS,
        params={"account_id": "a-1", "notify": False},
        **CLOSE_ACCOUNT,
    ),
    # Raw policies on params, workflows and entity attributes.
    case(
        "params-currency-usd",
        "hold",
        {"usd-reviewed"},
        raw=USD_REVIEWED,
        params={**BASE.params, "currency": "USD"},
    ),
    case(
        "params-currency-eur",
        "allow",
        {"issue_refund-may-run"},
        raw=USD_REVIEWED,
        params={**BASE.params, "currency": "EUR"},
    ),
    case(
        "params-currency-absent",
        "allow",
        {"issue_refund-may-run"},
        raw=USD_REVIEWED,
        params={"order_id": "1042"},
    ),
    case(
        "params-currency-wrong-type",
        "allow",
        {"issue_refund-may-run"},
        raw=USD_REVIEWED,
        params={**BASE.params, "currency": 840},
    ),
    case(
        "agent-in-workflow",
        "allow",
        {"issue_refund-may-run"},
        raw=REFUNDS_AGENTS_ONLY,
        agent_workflows=("billing", "refunds"),
    ),
    case(
        "agent-not-in-workflow",
        "deny",
        {"refunds-agents-only"},
        raw=REFUNDS_AGENTS_ONLY,
        agent_workflows=("billing",),
    ),
    case(
        "agent-high-risk-tier",
        "hold",
        {"high-risk-agents-reviewed"},
        raw=HIGH_RISK_REVIEWED,
        agent_risk_tier="high",
    ),
    case(
        "agent-low-risk-tier",
        "allow",
        {"issue_refund-may-run"},
        raw=HIGH_RISK_REVIEWED,
        agent_risk_tier="low",
    ),
    case(
        "tool-irreversible",
        "hold",
        {"irreversible-reviewed"},
        raw=IRREVERSIBLE_REVIEWED,
        tool_reversible=False,
    ),
    # Raw Cedar alone: what is not permitted does not happen.
    case(
        "raw-only-permit-to-run",
        "allow",
        {"lookup-may-run"},
        raw=LOOKUP_MAY_RUN,
        with_controls=False,
        tool="lookup_order",
    ),
    case(
        "raw-only-permit-to-propose",
        "hold",
        {NO_EXECUTE_PERMIT_ID},
        raw=LOOKUP_MAY_PROPOSE,
        with_controls=False,
        tool="lookup_order",
    ),
    case(
        "no-permit-at-all",
        "deny",
        {NO_PROPOSE_PERMIT_ID},
        raw=LOOKUP_MAY_RUN + LOOKUP_MAY_PROPOSE,
        with_controls=False,
    ),
]


def policies_for(item: Case) -> CompiledPolicies:
    controls = compile_controls(CONTROLS) if item.with_controls else ""
    return CompiledPolicies(controls + item.raw, PARAM_TYPES)


@pytest.mark.parametrize("item", CASES)
def test_decide__table__outcome_and_reasons(item: Case) -> None:
    # Given the controls (and raw policies) and an action differing from the base in one way
    compiled = policies_for(item)
    facts = dataclasses.replace(BASE, **item.changes)

    # When the engine decides it
    verdict = decide(compiled, facts)

    # Then the outcome and the policies behind it, with their messages, are the expected ones
    assert verdict.outcome == item.outcome
    assert set(verdict.reasons) == {Reason(pid, MESSAGES[pid]) for pid in item.reasons}
    assert verdict.errors == ()


def test_decide__table__covers_enough_cases() -> None:
    assert len(CASES) >= 24
    outcomes = {param.values[0].outcome for param in CASES}
    assert outcomes == {"allow", "hold", "deny"}


@pytest.mark.parametrize(
    "raw",
    [
        ORDER_13_REVIEWED,
        ORDER_13_FROZEN,
        LARGE_REFUNDS_RUN,
        CLOSE_SMALL_ACCOUNTS,
        USD_REVIEWED,
        REFUNDS_AGENTS_ONLY,
        HIGH_RISK_REVIEWED,
        IRREVERSIBLE_REVIEWED,
        LOOKUP_MAY_RUN + LOOKUP_MAY_PROPOSE,
    ],
)
def test_table_raw_policies__against_schema__validate(raw: str) -> None:
    # The table would prove little if its raw policies could not be published.
    problems = validate_policies(compile_controls(CONTROLS), raw, build_schema(PARAM_TYPES))
    assert problems == []


def test_decide__unguarded_param_read__error_reported_and_policy_skipped() -> None:
    # Given a forbid that reads an optional param without `has` (validation refuses it; here it
    # is evaluated anyway, as if it had slipped through)
    raw = """
@id("unguarded-amount")
@message("Refund params above 100.00 are reviewed")
forbid (principal, action == Action::"execute", resource)
when { context.params.amount_cents > 10000 };
"""
    compiled = CompiledPolicies(compile_controls(CONTROLS) + raw, PARAM_TYPES)

    # When an action without that param is decided
    verdict = decide(compiled, dataclasses.replace(BASE, params={"order_id": "1042"}))

    # Then Cedar skips the failing policy, and the verdict says so rather than hiding it
    assert verdict.outcome == "allow"
    assert len(verdict.errors) == 1
    assert "amount_cents" in verdict.errors[0]


@pytest.mark.parametrize("confidence", ["1000000000000000", "1e30", "1e80", "NaN", "Infinity"])
def test_decide__confidence_out_of_cedar_range__denied_not_raised(confidence: str) -> None:
    # Given a confidence Cedar cannot hold as a decimal
    facts = dataclasses.replace(BASE, confidence=Decimal(confidence))

    # When the action is decided
    verdict = decide(policies_for(Case("deny", frozenset())), facts)

    # Then no policy ran, so it is denied, with Cedar's cause in the reason
    assert verdict.outcome == "deny"
    assert [reason.policy_id for reason in verdict.reasons] == [NOT_EVALUATED_ID]
    assert "decimal" in verdict.reasons[0].message
    assert verdict.errors


def test_decide__amount_beyond_cedar_long__clamped_and_denied() -> None:
    # Given an amount larger than a Cedar Long
    facts = dataclasses.replace(BASE, amount=2**70, params={"order_id": "1042"})

    # When it is decided, Then it is compared as the largest Long: above the hard cap
    verdict = decide(policies_for(Case("deny", frozenset())), facts)
    assert verdict.outcome == "deny"
    assert {reason.policy_id for reason in verdict.reasons} == {"issue_refund-never-above-50000"}


# Book level: the autonomy mode and the risk zones on top of the policy's verdict.


@pytest.fixture
def publish(user_for: Any) -> Any:
    """publish(mode, zone) -> a published refund book in that mode, issue_refund in that zone."""

    def make(mode: str, zone: str = "yellow") -> Any:
        make_tool()
        tools = [{**REFUND_CONTROLS["tools"][0], "risk_zone": zone}]
        values = {**REFUND_CONTROLS, "autonomy_mode": mode, "tools": tools}
        return make_published_book(
            workflow=make_workflow(), author=user_for(Role.RISK), values=values
        )

    return make


def book_facts(zone: str = "yellow", **changes: Any) -> ActionFacts:
    return dataclasses.replace(
        BASE, tool_zone=zone, params={"amount_cents": 3000}, segment="", **changes
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "policy_outcome"), [(3000, "allow"), (6000, "hold"), (60000, "deny")]
)
def test_book_decide__observe__always_observe(
    publish: Any, amount: int, policy_outcome: str
) -> None:
    # Given a book in observe mode
    version = publish("observe")

    # When any action is decided
    decision = book_decide(version, book_facts(amount=amount))

    # Then it is only observed, and the policy's verdict is kept for the log
    assert decision.decision == "observe"
    assert decision.reasons[0].policy_id == "autonomy-observe"
    assert decision.policy.outcome == policy_outcome
    assert decision.reasons[1:] == decision.policy.reasons
    assert decision.spot_check is False


@pytest.mark.django_db
def test_book_decide__assist_and_allowed__held_for_a_person(publish: Any) -> None:
    version = publish("assist")

    decision = book_decide(version, book_facts())

    assert decision.policy.outcome == "allow"
    assert decision.decision == "hold"
    assert [reason.policy_id for reason in decision.reasons] == [
        "autonomy-assist",
        "issue_refund-may-run",
    ]


@pytest.mark.django_db
def test_book_decide__constrained_and_yellow__held_by_zone(publish: Any) -> None:
    version = publish("constrained")

    decision = book_decide(version, book_facts())

    assert decision.policy.outcome == "allow"
    assert decision.decision == "hold"
    assert [reason.policy_id for reason in decision.reasons] == ["yellow-zone"]
    assert decision.spot_check is False


@pytest.mark.django_db
def test_book_decide__constrained_and_green__allowed(publish: Any) -> None:
    version = publish("constrained", zone="green")

    decision = book_decide(version, book_facts(zone="green"))

    assert decision.decision == "allow"
    assert decision.spot_check is False


@pytest.mark.django_db
def test_book_decide__autonomous_and_yellow__allowed_with_spot_check(publish: Any) -> None:
    version = publish("autonomous")

    decision = book_decide(version, book_facts())

    assert decision.decision == "allow"
    assert decision.spot_check is True
    assert [reason.policy_id for reason in decision.reasons] == ["issue_refund-may-run"]


@pytest.mark.django_db
def test_book_decide__autonomous_and_green__allowed_without_spot_check(publish: Any) -> None:
    version = publish("autonomous", zone="green")

    decision = book_decide(version, book_facts(zone="green"))

    assert decision.decision == "allow"
    assert decision.spot_check is False
    assert [reason.policy_id for reason in decision.reasons] == ["issue_refund-may-run"]


@pytest.mark.django_db
def test_book_decide__autonomous_and_red__held_by_policy(publish: Any) -> None:
    # Given issue_refund in the red zone: the compiled policy forbids running it
    version = publish("autonomous", zone="red")

    decision = book_decide(version, book_facts(zone="red"))

    assert decision.decision == "hold"
    assert [reason.policy_id for reason in decision.reasons] == ["issue_refund-red-zone"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "outcome", "reason"),
    [
        ({"amount": 6000}, "hold", "issue_refund-review-above-5000"),
        ({"confidence": Decimal("0.5")}, "hold", "confidence-threshold"),
        ({"amount": 60000}, "deny", "issue_refund-never-above-50000"),
        ({"tool": "delete_customer"}, "deny", "tool-allow-list"),
    ],
)
def test_book_decide__autonomous_and_policy_refuses__policy_verdict_stands(
    publish: Any, changes: dict[str, Any], outcome: str, reason: str
) -> None:
    version = publish("autonomous")

    decision = book_decide(version, book_facts(**changes))

    assert decision.decision == outcome
    assert [r.policy_id for r in decision.reasons] == [reason]
    assert decision.spot_check is False


# Slicing: each question reaches only the policies whose scope can match it, with only the
# context fields they read. The verdict must be the one of the whole set.


def whole_set_verdict(text: str, facts: ActionFacts) -> tuple[str, set[str], int]:
    """The outcome, reason ids and error count from Cedar on the whole set and whole context,
    through cedarpy's public API: the reference the sliced engine must agree with."""
    compiled = CompiledPolicies(text, PARAM_TYPES)
    entities: list[dict[str, Any]] = [
        {
            "uid": {"type": "Agent", "id": facts.agent},
            "attrs": {"risk_tier": facts.agent_risk_tier},
            "parents": [{"type": "Workflow", "id": slug} for slug in facts.agent_workflows],
        },
        *({"uid": {"type": "Workflow", "id": slug}, "attrs": {}, "parents": []}
          for slug in facts.agent_workflows),
        {
            "uid": {"type": "Tool", "id": facts.tool},
            "attrs": {"risk_zone": facts.tool_zone, "reversible": facts.tool_reversible},
            "parents": [],
        },
    ]  # fmt: skip
    context = build_context(facts, PARAM_TYPES)

    def ask(action: str) -> Any:
        request = {
            "principal": {"type": "Agent", "id": facts.agent},
            "action": {"type": "Action", "id": action},
            "resource": {"type": "Tool", "id": facts.tool},
            "context": context,
        }
        return cedarpy.is_authorized_batch([request], text, entities)[0]

    def ids(result: Any) -> set[str]:
        return {reason.policy_id for reason in compiled.reasons_for(result.diagnostics.reasons)}

    execute = ask("execute")
    if execute.allowed:
        return "allow", ids(execute), len(execute.diagnostics.errors)
    propose = ask("propose")
    errors = len(execute.diagnostics.errors) + len(propose.diagnostics.errors)
    if propose.allowed:
        return "hold", ids(execute) or {NO_EXECUTE_PERMIT_ID}, errors
    return "deny", ids(propose) or {NO_PROPOSE_PERMIT_ID}, errors


ALL_RAW = (
    ORDER_13_REVIEWED
    + LARGE_REFUNDS_RUN
    + CLOSE_SMALL_ACCOUNTS
    + USD_REVIEWED
    + REFUNDS_AGENTS_ONLY
    + HIGH_RISK_REVIEWED
    + IRREVERSIBLE_REVIEWED
    + LOOKUP_MAY_PROPOSE
    + """
@id("unguarded-amount")
@message("Refund params above 100.00 are reviewed")
forbid (principal, action == Action::"execute", resource)
when { context.params.amount_cents > 10000 };
"""
)


@pytest.mark.parametrize("item", CASES)
@pytest.mark.parametrize("raw", ["own", "all"])
def test_decide__sliced__same_verdict_as_whole_set(item: Case, raw: str) -> None:
    # Given each action of the table, with its own raw policies, then with all of them at once
    # (one of which fails to evaluate for actions without an amount_cents param)
    controls = compile_controls(CONTROLS) if item.with_controls else ""
    text = controls + (item.raw if raw == "own" else ALL_RAW)
    facts = dataclasses.replace(BASE, **item.changes)

    # When the engine decides it on its slices
    verdict = decide(CompiledPolicies(text, PARAM_TYPES), facts)

    # Then outcome, reasons and errors are those of the whole set on the whole context
    outcome, reason_ids, error_count = whole_set_verdict(text, facts)
    assert (verdict.outcome, {r.policy_id for r in verdict.reasons}) == (outcome, reason_ids)
    assert len(verdict.errors) == error_count


def test_slice_for__propose_on_a_tool__only_its_policies_and_fields() -> None:
    compiled = CompiledPolicies(compile_controls(CONTROLS), PARAM_TYPES)

    propose = compiled.slice_for("propose", "issue_refund")
    execute = compiled.slice_for("execute", "issue_refund")

    # Proposing reads the hard cap only (an amount in the book's currency): no confidence
    # decimal for Cedar to parse.
    assert propose.fields == frozenset({"amount", "currency"})
    assert len(propose.policy_set) == 3  # the allow-list, may-propose, never-above
    assert execute.fields == frozenset(
        {"amount", "has_amount", "currency", "confidence", "segment", "hour", "weekday"}
    )


def test_slice_for__tools_no_policy_names__share_one_slice() -> None:
    compiled = CompiledPolicies(compile_controls(CONTROLS), PARAM_TYPES)

    first = compiled.slice_for("execute", "delete_customer")
    second = compiled.slice_for("execute", "wire_money")

    assert first is second
    assert compiled.slice_for("execute", "send_email") is not first


def test_slice_for__policy_using_the_whole_context__every_field_passed() -> None:
    raw = """
@id("empty-context")
@message("An empty context is suspicious")
forbid (principal, action, resource) when { context == {} };
"""
    compiled = CompiledPolicies(compile_controls(CONTROLS) + raw, PARAM_TYPES)

    assert compiled.slice_for("propose", "issue_refund").fields is None
    assert decide(compiled, BASE).outcome == "allow"
