"""The controls form compiled to Cedar: text a person can read, that validates against the
schema, and whose messages say amounts the way people write them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.books.content import ToolRule
from apps.books.policy.compiler import Controls, compile_controls, money
from apps.books.policy.engine import ActionFacts, CompiledPolicies, Reason, decide
from apps.books.policy.schema import ToolParams, build_schema, param_types
from apps.books.policy.source import split_statements
from apps.books.policy.validation import validate_policies
from tests.factories import REFUND_SCHEMA

SMALL = Controls(
    tools=[
        ToolRule(tool="issue_refund", risk_zone="yellow", auto_cap=12345, hard_cap=100000),
        ToolRule(tool="close_account", risk_zone="red"),
    ],
    confidence_threshold=Decimal("0.7500"),
    allowed_segments=["retail", "smb"],
    business_hours=(9, 17),
    weekdays_only=True,
    currency="USD",
)

SMALL_CEDAR = """\
@id("tool-allow-list")
@message("Only the tools listed in the Decision Book may be used (issue_refund, close_account)")
forbid (principal, action, resource)
unless { resource in [Tool::"issue_refund", Tool::"close_account"] };

@id("currency-usd-only")
@message("Amounts in a currency other than USD need a person: the caps are in USD")
forbid (principal, action == Action::"execute", resource)
when { context.has_amount && context.currency != "USD" };

@id("issue_refund-may-propose")
@message("issue_refund may be proposed for a person to decide")
permit (principal, action == Action::"propose", resource == Tool::"issue_refund");

@id("issue_refund-may-run")
@message("issue_refund (yellow zone) may run without review within its limits")
permit (principal, action == Action::"execute", resource == Tool::"issue_refund");

@id("issue_refund-review-above-12345")
@message("issue_refund above 123.45 USD needs a person")
forbid (principal, action == Action::"execute", resource == Tool::"issue_refund")
when { context.currency == "USD" && context.amount > 12345 };

@id("issue_refund-never-above-100000")
@message("issue_refund above 1,000.00 USD is never allowed")
forbid (principal, action, resource == Tool::"issue_refund")
when { context.currency == "USD" && context.amount > 100000 };

@id("close_account-may-propose")
@message("close_account may be proposed for a person to decide")
permit (principal, action == Action::"propose", resource == Tool::"close_account");

@id("close_account-red-zone")
@message("close_account is in the red zone: people approve every use")
forbid (principal, action == Action::"execute", resource == Tool::"close_account");

@id("confidence-threshold")
@message("Confidence below 0.75: a person decides")
forbid (principal, action == Action::"execute", resource)
unless { context.confidence.greaterThanOrEqual(decimal("0.75")) };

@id("segments")
@message("Only these segments run without review: retail, smb")
forbid (principal, action == Action::"execute", resource)
unless { ["retail", "smb"].contains(context.segment) };

@id("business-hours")
@message("Outside business hours (09:00-17:00) a person decides")
forbid (principal, action == Action::"execute", resource)
unless { context.hour >= 9 && context.hour < 17 };

@id("weekdays-only")
@message("At weekends a person decides")
forbid (principal, action == Action::"execute", resource)
when { context.weekday > 5 };
"""

SCHEMA = build_schema(param_types([ToolParams("issue_refund", REFUND_SCHEMA)]))

REFUND = ToolRule(tool="issue_refund", risk_zone="yellow", auto_cap=5000, hard_cap=50000)


def test_compile_controls__small_form__exact_cedar() -> None:
    assert compile_controls(SMALL) == SMALL_CEDAR


def test_compile_controls__only_a_tool__allow_list_and_permits() -> None:
    controls = Controls(tools=[ToolRule(tool="send_email", risk_zone="green")])

    assert compile_controls(controls) == (
        '@id("tool-allow-list")\n'
        '@message("Only the tools listed in the Decision Book may be used (send_email)")\n'
        "forbid (principal, action, resource)\n"
        'unless { resource in [Tool::"send_email"] };\n'
        "\n"
        '@id("send_email-may-propose")\n'
        '@message("send_email may be proposed for a person to decide")\n'
        'permit (principal, action == Action::"propose", resource == Tool::"send_email");\n'
        "\n"
        '@id("send_email-may-run")\n'
        '@message("send_email (green zone) may run without review within its limits")\n'
        'permit (principal, action == Action::"execute", resource == Tool::"send_email");\n'
    )


def test_compile_controls__no_tools__one_forbid_for_everything() -> None:
    assert compile_controls(Controls(tools=[])) == (
        '@id("tool-allow-list")\n'
        '@message("Only the tools listed in the Decision Book may be used; none is listed")\n'
        "forbid (principal, action, resource);\n"
    )


@pytest.mark.parametrize(
    "controls",
    [
        pytest.param(SMALL, id="everything"),
        pytest.param(Controls(tools=[]), id="no-tools"),
        pytest.param(Controls(tools=[REFUND]), id="one-tool-with-caps"),
        pytest.param(
            Controls(tools=[ToolRule(tool="issue_refund", auto_cap=0)]), id="auto-cap-zero"
        ),
        pytest.param(
            Controls(tools=[ToolRule(tool="issue_refund", hard_cap=1)]), id="hard-cap-only"
        ),
        pytest.param(
            Controls(tools=[REFUND], confidence_threshold=Decimal("1")), id="threshold-one"
        ),
        pytest.param(
            Controls(tools=[REFUND], confidence_threshold=Decimal("0")), id="threshold-zero"
        ),
        pytest.param(
            Controls(tools=[REFUND], confidence_threshold=Decimal("0.1234")),
            id="threshold-four-places",
        ),
        pytest.param(
            Controls(tools=[REFUND], allowed_segments=['say "hi"', "back\\slash"]),
            id="segments-needing-escapes",
        ),
        pytest.param(Controls(tools=[REFUND], business_hours=(0, 24)), id="hours-all-day"),
        pytest.param(
            Controls(
                tools=[
                    REFUND,
                    ToolRule(tool="send_email", risk_zone="green"),
                    ToolRule(tool="close_account", risk_zone="red", hard_cap=0),
                ],
                weekdays_only=True,
            ),
            id="three-zones",
        ),
    ],
)
def test_compile_controls__combinations__validate_against_schema(controls: Controls) -> None:
    # Given controls as the form may produce them
    # When compiled and validated against the schema of the book's tools
    text = compile_controls(controls)
    problems = validate_policies(text, "", SCHEMA)

    # Then Cedar accepts them, and every policy carries an @id and a message
    assert problems == []
    statements = split_statements(text)
    assert statements
    assert all(statement.policy_id and statement.message for statement in statements)
    assert len({statement.policy_id for statement in statements}) == len(statements)


@pytest.mark.parametrize(
    ("threshold", "literal"),
    [
        (Decimal("0.8"), 'decimal("0.8")'),
        (Decimal("0.80"), 'decimal("0.8")'),
        (Decimal("0.7500"), 'decimal("0.75")'),
        (Decimal("1"), 'decimal("1.0")'),
        (Decimal("0"), 'decimal("0.0")'),
        (Decimal("0.0001"), 'decimal("0.0001")'),
    ],
)
def test_compile_controls__confidence_threshold__cedar_decimal_literal(
    threshold: Decimal, literal: str
) -> None:
    text = compile_controls(Controls(tools=[REFUND], confidence_threshold=threshold))

    assert literal in text
    assert validate_policies(text, "", SCHEMA) == []


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (0, "EUR", "0.00 EUR"),
        (1, "EUR", "0.01 EUR"),
        (99, "EUR", "0.99 EUR"),
        (5000, "EUR", "50.00 EUR"),
        (12345, "USD", "123.45 USD"),
        (100000, "USD", "1,000.00 USD"),
        (123456789, "GBP", "1,234,567.89 GBP"),
        # Beyond what a float holds to the cent.
        (10**17 + 1, "EUR", "1,000,000,000,000,000.01 EUR"),
    ],
)
def test_money__minor_units__two_places_and_thousands(
    minor: int, currency: str, shown: str
) -> None:
    assert money(minor, currency) == shown


def test_compile_controls__caps__messages_in_the_book_currency() -> None:
    controls = Controls(
        tools=[ToolRule(tool="issue_refund", auto_cap=250050, hard_cap=1000000)], currency="CHF"
    )

    messages = {s.policy_id: s.message for s in split_statements(compile_controls(controls))}

    assert messages["issue_refund-review-above-250050"] == (
        "issue_refund above 2,500.50 CHF needs a person"
    )
    assert messages["issue_refund-never-above-1000000"] == (
        "issue_refund above 10,000.00 CHF is never allowed"
    )


def test_compile_controls__segment_with_quotes__matched_and_named_verbatim() -> None:
    # Given a segment whose name needs escaping in Cedar
    segment = 'key "A" accounts'
    controls = Controls(tools=[REFUND], allowed_segments=[segment])
    compiled = CompiledPolicies(compile_controls(controls), {})
    facts = ActionFacts(
        agent="refund-bot",
        agent_risk_tier="low",
        agent_workflows=("refunds",),
        tool="issue_refund",
        tool_zone="yellow",
        tool_reversible=True,
        workflow="refunds",
        at=datetime(2025, 3, 5, 10, tzinfo=UTC),
        amount=100,
        currency="EUR",
        segment=segment,
    )

    # When an action in that segment, then one in another, is decided
    inside = decide(compiled, facts)
    outside = decide(compiled, dataclasses.replace(facts, segment="key A accounts"))

    # Then the segment matches exactly, and the reason shows its name without Cedar's escapes
    assert inside.outcome == "allow"
    assert outside.outcome == "hold"
    assert outside.reasons == (
        Reason("segments", 'Only these segments run without review: key "A" accounts'),
    )
