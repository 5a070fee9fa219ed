"""Policy decisions in-process, at 50 policies (target: p50 < 100 us; PRODUCT.md section 6).

The policy set is a refund book's compiled controls plus generated raw policies of the shapes
risk teams write (subjects under investigation, params, segments and hours, risk tiers, workflow
membership, confidence on other tools, currencies), each with an @id and a @message, validated
against the schema like a published book. The policy set is parsed once, as for a published
version; each timed call is one `decide()`, as the gate makes it.

Rows: the allow path (one question: `execute`) and the hold path (two: `execute` refused,
`propose` permitted) as the gate decides them, on the in-process evaluator; the same two through
cedarpy for comparison; and what one cedarpy question costs: its floor (one policy, empty
context), without the confidence decimal, on the whole set, and Cedar's own metrics.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import cedarpy

from apps.books.content import ToolRule
from apps.books.policy import engine
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import (
    CompiledPolicies,
    PolicySlice,
    _ask,
    build_context,
    context_json,
    decide,
)
from apps.books.policy.schema import ToolParams, build_schema, param_types
from apps.books.policy.source import split_statements
from apps.books.policy.validation import validate_policies
from tests.factories import refund_facts

POLICIES = 50
N = int(os.environ.get("BENCH_POLICY_N", "20000"))
WARMUP = max(N // 10, 100)
TARGET_P50_US = 100.0

TOOLS = [
    ToolParams(
        "issue_refund",
        {
            "properties": {
                "order_id": {"type": "string"},
                "amount_cents": {"type": "integer"},
                "currency": {"type": "string"},
                "reason": {"type": "string"},
            }
        },
    ),
    ToolParams(
        "cancel_order",
        {"properties": {"order_id": {"type": "string"}, "restock": {"type": "boolean"}}},
    ),
    ToolParams("send_email", {"properties": {"to": {"type": "string"}}}),
    ToolParams("close_account", {"properties": {"account_id": {"type": "string"}}}),
]

CONTROLS = Controls(
    tools=[
        ToolRule(tool="issue_refund", risk_zone="yellow", auto_cap=5000, hard_cap=50000),
        ToolRule(tool="cancel_order", risk_zone="yellow", auto_cap=20000),
        ToolRule(tool="send_email", risk_zone="green"),
        ToolRule(tool="close_account", risk_zone="red"),
    ],
    confidence_threshold=Decimal("0.8"),
    allowed_segments=["retail", "smb"],
    business_hours=(8, 18),
    weekdays_only=True,
)

REASONS = ["chargeback", "fraud-suspected", "goodwill", "duplicate", "late-delivery"]
CURRENCIES = ["JPY", "CHF", "SEK", "NOK", "DKK", "PLN"]


def _raw_policy(index: int) -> str:
    """One raw policy of one of seven shapes; none of them matches the timed actions."""
    shape, n = index % 7, index // 7
    policy_id, message, body = {
        0: (
            f"order-{1300 + n}-frozen",
            f"Order {1300 + n} is under investigation: no refund",
            'forbid (principal, action, resource == Tool::"issue_refund")\n'
            f'when {{ context.subject == "order:{1300 + n}" }};',
        ),
        1: (
            f"refund-reason-{REASONS[n % len(REASONS)]}",
            f"Refunds for {REASONS[n % len(REASONS)]} are reviewed",
            'forbid (principal, action == Action::"execute", resource == Tool::"issue_refund")\n'
            "when { context.params has reason && "
            f'context.params.reason == "{REASONS[n % len(REASONS)]}" }};',
        ),
        2: (
            f"emails-{n}-office-hours",
            f"E-mails to segment vip-{n} go out after 09:00",
            'forbid (principal, action == Action::"execute", resource == Tool::"send_email")\n'
            f'when {{ context.segment == "vip-{n}" && context.hour < 9 }};',
        ),
        3: (
            f"high-risk-cancel-above-{(n + 1) * 1000}",
            f"High-risk agents cancel orders above {(n + 1) * 10}.00 with review",
            'forbid (principal, action == Action::"execute", resource == Tool::"cancel_order")\n'
            f'when {{ principal.risk_tier == "high" && context.amount > {(n + 1) * 1000} }};',
        ),
        4: (
            f"accounts-team-{n}",
            "Only agents of the accounts workflows close accounts",
            'forbid (principal, action, resource == Tool::"close_account")\n'
            'unless { principal in Workflow::"accounts" || '
            f'principal in Workflow::"accounts-{n}" }};',
        ),
        5: (
            f"confident-cancel-{n}",
            f"Cancelling orders above {(n + 2) * 50}.00 needs a confident agent",
            'forbid (principal, action == Action::"execute", resource == Tool::"cancel_order")\n'
            f"when {{ context.amount > {(n + 2) * 5000} && "
            f'context.confidence.lessThan(decimal("0.9{n}")) }};',
        ),
        6: (
            f"currency-{CURRENCIES[n % len(CURRENCIES)].lower()}-reviewed",
            f"Amounts in {CURRENCIES[n % len(CURRENCIES)]} are reviewed",
            'forbid (principal, action == Action::"execute", resource)\n'
            "when { context.has_amount && "
            f'context.currency == "{CURRENCIES[n % len(CURRENCIES)]}" }};',
        ),
    }[shape]
    return f'@id("{policy_id}")\n@message("{message}")\n{body}\n'


def policy_set() -> tuple[str, str, dict[str, str]]:
    """(compiled controls, raw policies, param types), 50 policies in all, checked as a book's."""
    types = param_types(TOOLS)
    controls = compile_controls(CONTROLS)
    compiled_count = len(split_statements(controls))
    raw = "\n".join(_raw_policy(i) for i in range(POLICIES - compiled_count))
    problems = validate_policies(controls, raw, build_schema(types))
    if problems:
        raise RuntimeError(
            "the benchmark's policies do not validate: " + "; ".join(map(str, problems))
        )
    total = compiled_count + len(split_statements(raw))
    if total != POLICIES:
        raise RuntimeError(f"the benchmark has {total} policies, not {POLICIES}")
    return controls, raw, types


ALLOW = refund_facts(at=datetime(2025, 3, 5, 10, 30, tzinfo=UTC), confidence=Decimal("0.92"))
# Above the review-free cap: `execute` is refused, `propose` permitted.
HOLD = dataclasses.replace(
    ALLOW, amount=12000, params={**ALLOW.params, "amount_cents": 12000}, subject="order:1043"
)


def measure(call: Callable[[], object], n: int) -> list[int]:
    """n timings in nanoseconds, after a warm-up; the collector runs as it would in service."""
    for _ in range(WARMUP):
        call()
    gc.collect()
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        start = clock()
        call()
        samples[i] = clock() - start
    return samples


def measure_side_by_side(calls: list[Callable[[], object]], n: int) -> list[list[int]]:
    """n timings of each call, taken in alternating batches, so that every call meets the same
    phases of a machine whose speed drifts (this one's changes threefold within a minute)."""
    for call in calls:
        for _ in range(WARMUP):
            call()
    gc.collect()
    clock = time.perf_counter_ns
    batch = 250
    samples: list[list[int]] = [[] for _ in calls]
    while len(samples[0]) < n:
        for call, taken in zip(calls, samples, strict=True):
            for _ in range(min(batch, n - len(taken))):
                start = clock()
                call()
                taken.append(clock() - start)
    return samples


def percentile(sorted_values: list[float], fraction: float) -> float:
    # Nearest rank: the smallest value with at least `fraction` of the values at or below it.
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def row(case: str, samples_us: list[float], *, target: bool, rate: bool = True) -> dict[str, Any]:
    ordered = sorted(samples_us)
    p50 = percentile(ordered, 0.50)
    return {
        "bench": "policy",
        "case": case,
        "n": len(ordered),
        "p50_us": p50,
        "p90_us": percentile(ordered, 0.90),
        "p99_us": percentile(ordered, 0.99),
        "per_second": len(ordered) / (sum(ordered) / 1e6) if rate else None,
        "target": f"p50 < {TARGET_P50_US:.0f} us" if target else "",
        "met": p50 < TARGET_P50_US if target else None,
    }


def _cedarpy_only(text: str, types: dict[str, str]) -> CompiledPolicies:
    """The same policies, every question asked of cedarpy (as with POLICY_EVALUATOR=cedar)."""
    saved = engine.USE_NATIVE
    engine.USE_NATIVE = False
    try:
        compiled = CompiledPolicies(text, types)
        for action in ("execute", "propose"):
            compiled.slice_for(action, ALLOW.tool)  # slices are built now, without the evaluator
    finally:
        engine.USE_NATIVE = saved
    return compiled


def main() -> list[dict[str, Any]]:
    controls, raw, types = policy_set()
    compiled = CompiledPolicies(controls + raw, types)
    through_cedarpy = _cedarpy_only(controls + raw, types)

    for policies in (compiled, through_cedarpy):
        allow, hold = decide(policies, ALLOW), decide(policies, HOLD)
        if allow.outcome != "allow" or hold.outcome != "hold" or allow.errors or hold.errors:
            raise RuntimeError(f"unexpected verdicts: allow path {allow}, hold path {hold}")
    if compiled.slice_for("execute", ALLOW.tool).native is None:
        raise RuntimeError("the benchmark's policies should run on the in-process evaluator")

    allow_ns, hold_ns = measure_side_by_side(
        [lambda: decide(compiled, ALLOW), lambda: decide(compiled, HOLD)], N
    )
    rows = [
        row("allow path: decide(), 1 question, in-process evaluator", _us(allow_ns), target=True),
        row("hold path: decide(), 2 questions, in-process evaluator", _us(hold_ns), target=True),
        row(
            "comparison: allow path, every question through cedarpy",
            _us(measure(lambda: decide(through_cedarpy, ALLOW), N)),
            target=False,
        ),
        row(
            "comparison: hold path, every question through cedarpy",
            _us(measure(lambda: decide(through_cedarpy, HOLD), N)),
            target=False,
        ),
    ]

    # What one cedarpy question costs, and why: (a) its floor, one policy and an empty context;
    # (b) the allow path's question without the confidence decimal (not a valid decision: the
    # confidence policy fails and is skipped), to show what parsing the decimal costs; (c) on
    # the whole set and the whole context, as before slicing.
    sliced = through_cedarpy.slice_for("execute", ALLOW.tool)
    whole = PolicySlice(compiled.policy_set, None)
    floor = PolicySlice(cedarpy.PolicySet.from_str("permit (principal, action, resource);"), None)

    def empty_request() -> object:
        return _ask(floor, ALLOW, "execute", "{}")

    def without_decimal() -> object:
        context = build_context(ALLOW, compiled.param_types)
        del context["confidence"]
        return _ask(sliced, ALLOW, "execute", context_json(context, sliced.fields))

    def whole_set() -> object:
        context = build_context(ALLOW, compiled.param_types)
        return _ask(whole, ALLOW, "execute", context_json(context, None))

    for case, call in (
        ("cedarpy floor: one policy, empty context", empty_request),
        ("cedarpy: allow question without the confidence decimal", without_decimal),
        ("cedarpy: allow question on all 50 policies, whole context", whole_set),
    ):
        rows.append(row(case, _us(measure(call, N)), target=False))

    # Cedar's own account of the allow path's question through cedarpy: building the request
    # (parsing the context, decimal included) and authorizing it.
    context = context_json(build_context(ALLOW, compiled.param_types), sliced.fields)
    metrics = [_ask(sliced, ALLOW, "execute", context)["metrics"] for _ in range(N // 4)]
    for key, case in (
        ("build_request_duration_micros", "cedarpy allow question, Cedar's metric: build request"),
        ("authz_duration_micros", "cedarpy allow question, Cedar's metric: authorization"),
    ):
        rows.append(row(case, [float(m[key]) for m in metrics], target=False, rate=False))
    return rows


def _us(samples_ns: list[int]) -> list[float]:
    return [sample / 1000 for sample in samples_ns]
