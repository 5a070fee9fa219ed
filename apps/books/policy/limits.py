"""How large and how deep policy text may be before any of it reaches cedarpy.

Why: cedarpy parses and converts policies recursively, in Rust, on the calling thread's stack.
Text nested a few hundred brackets deep overflows that stack and the process dies (SIGSEGV, no
Python exception), and long operator chains give parsed forms deeper than Python's `json` or
serde's JSON reader accept. A risk user's draft, or a version stored before these limits, must
get an error naming the limit instead.

Measured with cedarpy 4.12.2 on CPython 3.12, each probe in a subprocess of its own, each
figure the first value that fails:

- nested brackets `((((true))))`: SIGSEGV at 660 in the main thread and in a default thread
  (8 MiB stack), at 82 in a thread with a 1 MiB stack, at 40 with 512 KiB;
- nested `if ... then ...`: SIGSEGV at 4,393 (8 MiB), 540 (1 MiB), 264 (512 KiB);
- both at once, when parsed and validated: 32 brackets around 100 `if`s already die in a
  512 KiB thread, 20 around 100 do not;
- `&&`/`||` chains: parsed and validated at 30,000 terms, but `policies_to_json_str` dies at
  about 20,000 and `json.loads` of its answer raises RecursionError from 747 terms;
- the parsed form: `PolicySet.from_json_str` (the engine's slices) refuses a policy whose
  condition nests 62 operations deep (serde's depth limit of 128), so a chain of 62 terms that
  validated could not be decided at all.

The limits sit far below those figures, so that text at every limit at once still passes in a
512 KiB thread (tests/integrity/test_hostile_policy.py checks it), and far above real policies:
the demo books, the controls of `compiler.py` and the policies of the tests nest at most 4
brackets deep, use at most 8 operators in a policy and reach an expression depth of 7.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The policies of one version, controls and raw Cedar together, in characters.
MAX_POLICY_CHARS = 200_000
# A stored version's text also carries the comment headers `book_compile` writes around the two
# sections: what validated must load.
STORED_TEXT_ALLOWANCE = 1_000
# Brackets of any kind, `(`, `[` and `{`, open at once.
MAX_NESTING_DEPTH = 20
# Operators in one policy statement (`&&`, `||`, comparisons, arithmetic, `!`, `.`, and the
# keywords `in`, `has`, `like`, `is`, `if`): each can add a level to the parsed form.
MAX_OPERATORS_PER_POLICY = 100
# Levels of the parsed form of one condition: each operator, attribute access, call, set or
# record nests about one level (two of Cedar's JSON form).
MAX_EXPRESSION_DEPTH = 50

OPERATOR_NAMES = "&&, ||, ==, !=, <, <=, >, >=, +, -, *, !, ., in, has, like, is, if"

# One token of the scan. A string literal runs to its closing quote past escapes (to the end of
# the text if it has none); a comment to the end of its line. Both are skipped: brackets and
# operators in them are text, not Cedar.
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)'
    r"|//[^\n]*"
    r"|(?P<open>[(\[{])|(?P<close>[)\]}])|(?P<end>;)"
    r"|(?P<op>&&|\|\||[=!<>]=|[-+*<>!.]|\b(?:in|has|like|is|if)\b)",
    re.DOTALL,
)


@dataclass(frozen=True)
class LimitProblem:
    line: int  # 1-based, in the text given (shifted by `first_line`)
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def size_problem(chars: int, *, limit: int = MAX_POLICY_CHARS) -> str | None:
    if chars <= limit:
        return None
    return f"the policies are {chars:,} characters long, over the limit of {limit:,}"


def text_problems(
    text: str, *, first_line: int = 1, max_chars: int = MAX_POLICY_CHARS
) -> list[LimitProblem]:
    """What in `text` is over the limits: its size, or, per policy statement (ended by `;`),
    its bracket nesting and its operator count. Empty when cedarpy may be given the text."""
    too_long = size_problem(len(text), limit=max_chars)
    if too_long:
        return [LimitProblem(first_line, too_long)]
    problems: list[LimitProblem] = []
    depth = 0
    deepest = operators = 0
    start = crossed = -1  # where the statement starts, where it went too deep

    def line_at(position: int) -> int:
        return first_line + text.count("\n", 0, max(position, 0))

    def close_statement() -> None:
        if deepest > MAX_NESTING_DEPTH:
            problems.append(
                LimitProblem(
                    line_at(crossed),
                    f"nesting depth {deepest:,} is over the limit of {MAX_NESTING_DEPTH}",
                )
            )
        if operators > MAX_OPERATORS_PER_POLICY:
            problems.append(
                LimitProblem(
                    line_at(start),
                    f"{operators:,} operators in one policy is over the limit of "
                    f"{MAX_OPERATORS_PER_POLICY} ({OPERATOR_NAMES})",
                )
            )

    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind is None:
            if match.group().startswith('"') and start < 0:
                start = match.start()  # an annotation's value opens the statement
            continue
        if start < 0:
            start = match.start()
        if kind == "open":
            # Unbalanced text is Cedar's to refuse; it is counted as written.
            depth += 1
            if depth > deepest:
                deepest = depth
                if depth == MAX_NESTING_DEPTH + 1:
                    crossed = match.start()
        elif kind == "close":
            depth = max(depth - 1, 0)
        elif kind == "op":
            operators += 1
        else:  # the `;` that ends a statement
            close_statement()
            deepest, operators, start = depth, 0, -1
            crossed = match.end() if depth > MAX_NESTING_DEPTH else -1
    close_statement()
    return problems


def json_depth(node: Any) -> int:
    """How deeply lists and objects nest in a JSON value (without recursion: the value may come
    from a policy that is too deep to walk recursively)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def expression_depth(policy: Mapping[str, Any]) -> int:
    """The deepest condition of a policy in Cedar's JSON form, in expression levels (two JSON
    levels each: an operator and its operands)."""
    bodies = [condition.get("body") for condition in policy.get("conditions") or []]
    return max(((json_depth(body) + 1) // 2 for body in bodies), default=0)


def expression_problem(policy: Mapping[str, Any]) -> str | None:
    depth = expression_depth(policy)
    if depth <= MAX_EXPRESSION_DEPTH:
        return None
    return (
        f"expression depth {depth:,} is over the limit of {MAX_EXPRESSION_DEPTH}"
        " (operators nested or chained in one condition)"
    )
