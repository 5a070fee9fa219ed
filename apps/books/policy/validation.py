"""Checking a book's policies before it may be published: each problem names the section,
the line, the policy's @id and the cause, in words a policy author can act on.

Each statement is held to the limits of `limits.py` before cedarpy sees it: text too large, too
deeply nested or with too many operators is reported as a problem, never parsed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

import cedarpy

from apps.books.policy import limits
from apps.books.policy.source import Statement, split_statements

Section = Literal["controls", "raw"]

_FOR_ACTION = re.compile(r' for Action::"\w+"')
_CONSEQUENCE = "Unable to find an applicable action"


@dataclass(frozen=True)
class PolicyProblem:
    section: Section
    line: int
    policy_id: str
    message: str

    def __str__(self) -> str:
        name = f" {self.policy_id}" if self.policy_id else ""
        return f"{self.section} line {self.line}{name}: {self.message}"


def _clean(cause: str) -> str:
    # Cedar says "for policy `policy3`, ..."; the caller already names the policy by its @id.
    if cause.startswith("for policy `") and "`, " in cause:
        cause = cause.split("`, ", 1)[1]
    return cause[:1].upper() + cause[1:]


def _expression_problem(statement: Statement) -> str | None:
    """The parsed form's depth, from Cedar's JSON form of a statement within the text limits."""
    try:
        document = json.loads(cedarpy.policies_to_json_str(statement.text))
    except ValueError:
        return None  # parsed by `PolicySet.from_str` already; nothing more to say
    for policy in (document.get("staticPolicies") or {}).values():
        problem = limits.expression_problem(policy)
        if problem:
            return problem
    return None


def validate_policies(compiled_controls: str, raw: str, schema: str) -> list[PolicyProblem]:
    """Check the limits, parse, check annotations, then type-check the whole set against the
    schema."""
    # The size first, before the text is even split: the rest of the work grows with it.
    too_long = limits.size_problem(len(compiled_controls) + len(raw))
    if too_long:
        section: Section = "raw" if raw.strip() else "controls"
        return [PolicyProblem(section, 1, "", _clean(too_long) + " (controls and raw together)")]
    located: list[tuple[Section, Statement]] = [
        ("controls", statement) for statement in split_statements(compiled_controls)
    ] + [("raw", statement) for statement in split_statements(raw)]
    problems: list[PolicyProblem] = []
    seen_ids: dict[str, tuple[Section, int]] = {}
    for section, statement in located:
        over = limits.text_problems(statement.text, first_line=statement.line)
        if over:
            problems += [
                PolicyProblem(section, problem.line, statement.policy_id, _clean(problem.message))
                for problem in over
            ]
            continue  # never given to cedarpy
        try:
            cedarpy.PolicySet.from_str(statement.text)
        except ValueError as exc:
            problems.append(
                PolicyProblem(section, statement.line, statement.policy_id, f"Syntax: {exc}")
            )
            continue
        too_deep = _expression_problem(statement)
        if too_deep:
            problems.append(
                PolicyProblem(section, statement.line, statement.policy_id, _clean(too_deep))
            )
        if section == "raw":
            if not statement.policy_id:
                problems.append(
                    PolicyProblem(section, statement.line, "", 'Every policy needs an @id("...")')
                )
            if not statement.message:
                problems.append(
                    PolicyProblem(
                        section,
                        statement.line,
                        statement.policy_id,
                        'Every policy needs a @message("...") saying why, in plain words',
                    )
                )
        if statement.policy_id:
            if statement.policy_id in seen_ids:
                first_section, first_line = seen_ids[statement.policy_id]
                # Line numbers count within each section: name the other one.
                where = "" if first_section == section else f" of the {first_section}"
                problems.append(
                    PolicyProblem(
                        section,
                        statement.line,
                        statement.policy_id,
                        f"The @id {statement.policy_id!r} is already used at line "
                        f"{first_line}{where}",
                    )
                )
            else:
                seen_ids[statement.policy_id] = (section, statement.line)
    if problems:
        return problems
    text = "\n".join(statement.text for _, statement in located)
    result = cedarpy.validate_policies(text, cedarpy.Schema.from_str(schema))
    causes: dict[int, list[str]] = {}
    for error in result.errors:
        policy = error.policy_id
        index = int(policy.removeprefix("policy")) if policy.startswith("policy") else 0
        # The same mistake is reported once per action; say it once.
        cause = _FOR_ACTION.sub("", _clean(error.error))
        if cause not in causes.setdefault(index, []):
            causes[index].append(cause)
    for index, found in sorted(causes.items()):
        section, statement = located[min(index, len(located) - 1)]
        # "No applicable action" follows from an unknown action or entity type: keep the cause.
        primary = [cause for cause in found if not cause.startswith(_CONSEQUENCE)] or found
        for cause in primary:
            problems.append(PolicyProblem(section, statement.line, statement.policy_id, cause))
    return problems
