"""What a policy author is told before a draft may be published: each problem names the section,
the line, the policy's @id and the cause."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.books.compilation import book_problems
from apps.books.content import ToolRule
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.schema import ToolParams, build_schema, param_types
from apps.books.policy.source import split_statements
from apps.books.policy.validation import PolicyProblem, validate_policies
from apps.books.services import draft_create, draft_update
from tests.factories import REFUND_CONTROLS, REFUND_SCHEMA, make_tool, make_workflow

SCHEMA = build_schema(param_types([ToolParams("issue_refund", REFUND_SCHEMA)]))
CONTROLS = compile_controls(
    Controls(
        tools=[ToolRule(tool="issue_refund", auto_cap=5000, hard_cap=50000)],
        confidence_threshold=Decimal("0.8"),
    )
)

# A valid policy and a comment come first, so that the broken one starts on line 7.
PREAMBLE = """@id("usd-reviewed")
@message("Refunds in US dollars are reviewed")
forbid (principal, action == Action::"execute", resource)
when { context.params has currency && context.params.currency == "USD" };

// The policy under test.
"""
LINE = 7


def raw_problems(policy: str) -> list[PolicyProblem]:
    return validate_policies(CONTROLS, PREAMBLE + policy, SCHEMA)


@pytest.mark.parametrize(
    ("policy", "policy_id", "cause"),
    [
        pytest.param(
            '@id("bad-syntax")\n@message("m")\n'
            "forbid (principal, action, resource) when { context.amount > };",
            "bad-syntax",
            "Syntax: unexpected token `}`",
            id="syntax-error",
        ),
        pytest.param(
            '@id("colour")\n@message("m")\n'
            'forbid (principal, action, resource) when { context.colour == "red" };',
            "colour",
            "Attribute `colour` in context not found",
            id="unknown-context-attribute",
        ),
        pytest.param(
            '@id("tier")\n@message("m")\n'
            'forbid (principal, action, resource) when { principal.tier == "high" };',
            "tier",
            "Attribute `tier` on entity type `Agent` not found",
            id="unknown-entity-attribute",
        ),
        pytest.param(
            '@id("amount-as-text")\n@message("m")\n'
            'forbid (principal, action, resource) when { context.amount > "ten" };',
            "amount-as-text",
            "Unexpected type: expected Long but saw String",
            id="wrong-type",
        ),
        pytest.param(
            '@id("delete")\n@message("m")\n'
            'permit (principal, action == Action::"delete", resource);',
            "delete",
            'Unrecognized action `Action::"delete"`',
            id="unknown-action",
        ),
        pytest.param(
            '@id("users")\n@message("m")\npermit (principal == User::"ann", action, resource);',
            "users",
            "Unrecognized entity type `User`",
            id="unknown-entity-type",
        ),
        pytest.param(
            '@message("m")\npermit (principal, action, resource);',
            "",
            'Every policy needs an @id("...")',
            id="missing-id",
        ),
        pytest.param(
            '@id("silent")\npermit (principal, action, resource);',
            "silent",
            'Every policy needs a @message("...") saying why, in plain words',
            id="missing-message",
        ),
        pytest.param(
            '@id("usd-reviewed")\n@message("m")\npermit (principal, action, resource);',
            "usd-reviewed",
            "The @id 'usd-reviewed' is already used at line 1",
            id="duplicate-id-in-raw",
        ),
        pytest.param(
            '@id("confidence-threshold")\n@message("m")\npermit (principal, action, resource);',
            "confidence-threshold",
            "The @id 'confidence-threshold' is already used at line 29 of the controls",
            id="duplicate-id-of-a-control",
        ),
        pytest.param(
            '@id("unguarded")\n@message("m")\n'
            "forbid (principal, action, resource) when { context.params.amount_cents > 100 };",
            "unguarded",
            "Unable to guarantee safety of access to optional attribute `params.amount_cents` "
            "in context",
            id="unguarded-optional-param",
        ),
    ],
)
def test_validate_policies__broken_raw_policy__one_problem_naming_line_id_and_cause(
    policy: str, policy_id: str, cause: str
) -> None:
    # Given a valid raw policy followed by a broken one
    # When the set is validated
    problems = raw_problems(policy)

    # Then exactly the broken one is reported, at its line, by its @id, with the cause
    assert problems == [PolicyProblem("raw", LINE, policy_id, cause)]
    name = f" {policy_id}" if policy_id else ""
    assert str(problems[0]) == f"raw line {LINE}{name}: {cause}"


def test_validate_policies__several_problems__each_at_its_own_line() -> None:
    raw = (
        '@id("a")\n@message("m")\npermit (principal, action, resource);\n'
        '@id("a")\n@message("m")\npermit (principal, action, resource);\n'
        "\n"
        '@id("b")\npermit (principal, action, resource);\n'
    )

    problems = validate_policies(CONTROLS, raw, SCHEMA)

    assert [(problem.line, problem.policy_id) for problem in problems] == [(4, "a"), (8, "b")]


def test_validate_policies__type_error_in_multiline_policy__line_of_its_first_line() -> None:
    raw = (
        "// Refund rules\n"
        "\n"
        '@id("late-refunds")\n'
        '@message("Late refunds are reviewed")\n'
        'forbid (principal, action == Action::"execute", resource)\n'
        "when {\n"
        '  context.hour > "17"\n'
        "};\n"
    )

    problems = validate_policies(CONTROLS, raw, SCHEMA)

    assert [(p.section, p.line, p.policy_id) for p in problems] == [("raw", 3, "late-refunds")]
    assert "expected Long but saw String" in problems[0].message


def test_validate_policies__valid_set__no_problems() -> None:
    raw = (
        PREAMBLE
        + """@id("refunds-agents-only")
@message("Only agents of the refunds workflow may refund")
forbid (principal, action, resource == Tool::"issue_refund")
unless { principal in Workflow::"refunds" };

@id("high-risk-reviewed")
@message("High-risk agents never act without review; see \\"risk tiers\\"")
forbid (principal, action == Action::"execute", resource)
when { principal.risk_tier == "high" || !resource.reversible };

@id("low-confidence-large")
@message("Large refunds need a confident agent")
forbid (principal, action == Action::"execute", resource)
when { context.amount > 2000 && context.confidence.lessThan(decimal("0.95")) };
// A closing comment with "quotes" in it.
"""
    )

    assert validate_policies(CONTROLS, raw, SCHEMA) == []


def test_validate_policies__no_raw_policies__no_problems() -> None:
    assert validate_policies(CONTROLS, "", SCHEMA) == []


def test_split_statements__trailing_comment_with_quotes__not_a_statement() -> None:
    # A comment with a quote in it after the last policy used to count as an empty policy
    # without @id or @message.
    raw = '@id("a")\n@message("m")\npermit (principal, action, resource);\n// the "end"\n'

    statements = split_statements(raw)

    assert [(s.policy_id, s.line) for s in statements] == [("a", 1)]
    assert validate_policies("", raw, SCHEMA) == []


def test_param_types__list_typed_param__left_out_not_raised() -> None:
    # JSON Schema allows "type": ["string", "null"]; it is not one simple type.
    schema = {
        "properties": {
            "note": {"type": ["string", "null"]},
            "amount_cents": {"type": "integer"},
            "nested": {"type": "object"},
            "bad-name": {"type": "string"},
        }
    }

    assert param_types([ToolParams("t", schema)]) == {"amount_cents": "Long"}


def test_param_types__name_typed_differently_by_two_tools__left_out() -> None:
    tools = [
        ToolParams("a", {"properties": {"ref": {"type": "string"}, "n": {"type": "integer"}}}),
        ToolParams("b", {"properties": {"ref": {"type": "integer"}, "n": {"type": "integer"}}}),
    ]

    assert param_types(tools) == {"n": "Long"}


# Book level: problems outside Cedar (tools, hours) are reported next to the Cedar ones.


@pytest.fixture
def draft_with(user_for: Any) -> Any:
    """draft_with(**values) -> a refund book draft with REFUND_CONTROLS changed by values."""

    def make(**values: Any) -> Any:
        author = user_for(Role.RISK)
        make_tool()
        draft = draft_create(workflow=make_workflow(), user=author)
        content = {"escalation_owner_id": author.pk, **REFUND_CONTROLS, **values}
        return draft_update(version_id=draft.pk, user=author, values=content)

    return make


@pytest.mark.django_db
def test_book_problems__valid_draft__none(draft_with: Any) -> None:
    assert book_problems(draft_with()) == []


@pytest.mark.django_db
def test_book_problems__unknown_tool__named(draft_with: Any) -> None:
    # Given a draft listing a registered tool and one nobody registered
    tools = [*REFUND_CONTROLS["tools"], {"tool": "wire_money", "risk_zone": "red"}]
    draft = draft_with(tools=tools)

    # When its problems are listed
    problems = book_problems(draft)

    # Then the unknown tool is named, at its position in the list
    assert problems == [PolicyProblem("controls", 2, "tools", "No tool 'wire_money' is registered")]


@pytest.mark.django_db
@pytest.mark.parametrize(("start", "end"), [(18, 8), (9, 9)])
def test_book_problems__business_hours_start_not_before_end__reported(
    draft_with: Any, start: int, end: int
) -> None:
    draft = draft_with(business_hours_start=start, business_hours_end=end)

    problems = book_problems(draft)

    assert (
        PolicyProblem("controls", 1, "business-hours", "The start hour must come before the end")
        in problems
    )


@pytest.mark.django_db
def test_book_problems__raw_policy_broken__reported_with_raw_line(draft_with: Any) -> None:
    raw = '\n\n@id("colour")\n@message("m")\nforbid (principal, action, resource)\n' + (
        'when { context.colour == "red" };\n'
    )
    draft = draft_with(raw_policies=raw)

    problems = book_problems(draft)

    assert problems == [
        PolicyProblem("raw", 3, "colour", "Attribute `colour` in context not found")
    ]


@pytest.mark.django_db
def test_book_problems__no_tools__compiles_and_validates(draft_with: Any) -> None:
    # With nothing listed everything is forbidden; that used to be an empty Cedar set literal,
    # which Cedar refuses.
    assert book_problems(draft_with(tools=[])) == []
