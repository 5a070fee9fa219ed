"""Common controls, edited as a form, compiled to Cedar that a person can read.

Every restriction is a `forbid` with its own @id and message, so that a held or denied action
always names the control that stopped it; the permits say what may happen at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from apps.books.content import ToolRule


@dataclass(frozen=True)
class Controls:
    tools: Sequence[ToolRule]
    confidence_threshold: Decimal | None = None
    allowed_segments: Sequence[str] = ()
    business_hours: tuple[int, int] | None = None
    weekdays_only: bool = False
    currency: str = "EUR"
    notes: list[str] = field(default_factory=list)


def money(minor: int, currency: str) -> str:
    # Decimal, not float: a float cannot hold every large amount to the cent.
    return f"{Decimal(minor).scaleb(-2):,.2f} {currency}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _policy(policy_id: str, message: str, effect: str, scope: str, condition: str = "") -> str:
    text = f"@id({_quote(policy_id)})\n@message({_quote(message)})\n{effect} ({scope})"
    if condition:
        text += f"\n{condition}"
    return text + ";"


def _tool(slug: str) -> str:
    return f"Tool::{_quote(slug)}"


def compile_controls(controls: Controls) -> str:
    parts: list[str] = []
    slugs = [rule.tool for rule in controls.tools]
    listed = ", ".join(_tool(slug) for slug in slugs)
    parts.append(
        _policy(
            "tool-allow-list",
            "Only the tools listed in the Decision Book may be used"
            + (f" ({', '.join(slugs)})" if slugs else "; none is listed"),
            "forbid",
            "principal, action, resource",
            # Cedar refuses an empty set literal: with no tool listed, everything is forbidden.
            f"unless {{ resource in [{listed}] }}" if slugs else "",
        )
    )
    currency = _quote(controls.currency.upper())
    if any(rule.auto_cap is not None or rule.hard_cap is not None for rule in controls.tools):
        # The caps are amounts in the book's currency: compared with an amount in another
        # currency they would mean nothing (4,900 KWD is not 49.00 EUR), so such an action is
        # never allowed on its own, and no cap decides it.
        parts.append(
            _policy(
                f"currency-{controls.currency.lower()}-only",
                f"Amounts in a currency other than {controls.currency.upper()} need a person: "
                f"the caps are in {controls.currency.upper()}",
                "forbid",
                'principal, action == Action::"execute", resource',
                f"when {{ context.has_amount && context.currency != {currency} }}",
            )
        )
    same_currency = f"context.currency == {currency}"
    for rule in controls.tools:
        tool = _tool(rule.tool)
        parts.append(
            _policy(
                f"{rule.tool}-may-propose",
                f"{rule.tool} may be proposed for a person to decide",
                "permit",
                f'principal, action == Action::"propose", resource == {tool}',
            )
        )
        if rule.risk_zone == "red":
            parts.append(
                _policy(
                    f"{rule.tool}-red-zone",
                    f"{rule.tool} is in the red zone: people approve every use",
                    "forbid",
                    f'principal, action == Action::"execute", resource == {tool}',
                )
            )
        else:
            parts.append(
                _policy(
                    f"{rule.tool}-may-run",
                    f"{rule.tool} ({rule.risk_zone} zone) may run without review within its limits",
                    "permit",
                    f'principal, action == Action::"execute", resource == {tool}',
                )
            )
        if rule.auto_cap is not None:
            parts.append(
                _policy(
                    f"{rule.tool}-review-above-{rule.auto_cap}",
                    f"{rule.tool} above {money(rule.auto_cap, controls.currency)} needs a person",
                    "forbid",
                    f'principal, action == Action::"execute", resource == {tool}',
                    f"when {{ {same_currency} && context.amount > {rule.auto_cap} }}",
                )
            )
        if rule.hard_cap is not None:
            parts.append(
                _policy(
                    f"{rule.tool}-never-above-{rule.hard_cap}",
                    f"{rule.tool} above {money(rule.hard_cap, controls.currency)} is never allowed",
                    "forbid",
                    f"principal, action, resource == {tool}",
                    f"when {{ {same_currency} && context.amount > {rule.hard_cap} }}",
                )
            )
    if controls.confidence_threshold is not None:
        threshold = f"{controls.confidence_threshold.normalize():f}"
        if "." not in threshold:
            threshold += ".0"
        parts.append(
            _policy(
                "confidence-threshold",
                f"Confidence below {threshold}: a person decides",
                "forbid",
                'principal, action == Action::"execute", resource',
                f'unless {{ context.confidence.greaterThanOrEqual(decimal("{threshold}")) }}',
            )
        )
    if controls.allowed_segments:
        segments = ", ".join(_quote(segment) for segment in controls.allowed_segments)
        parts.append(
            _policy(
                "segments",
                "Only these segments run without review: " + ", ".join(controls.allowed_segments),
                "forbid",
                'principal, action == Action::"execute", resource',
                f"unless {{ [{segments}].contains(context.segment) }}",
            )
        )
    if controls.business_hours is not None:
        start, end = controls.business_hours
        parts.append(
            _policy(
                "business-hours",
                f"Outside business hours ({start:02d}:00-{end:02d}:00) a person decides",
                "forbid",
                'principal, action == Action::"execute", resource',
                f"unless {{ context.hour >= {start} && context.hour < {end} }}",
            )
        )
    if controls.weekdays_only:
        parts.append(
            _policy(
                "weekdays-only",
                "At weekends a person decides",
                "forbid",
                'principal, action == Action::"execute", resource',
                "when { context.weekday > 5 }",
            )
        )
    return "\n\n".join(parts) + "\n"
