from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()

STATE_BADGES = {
    "succeeded": "badge-ok",
    "failed": "badge-bad",
    "waiting": "badge-warn",
    "pending_review": "badge-warn",
    "denied": "badge-bad",
    "rejected": "badge-bad",
    "expired": "badge-bad",
    "blocked": "badge-bad",
    "rollback_failed": "badge-bad",
}


@register.filter
def state_badge(state: str) -> str:
    """The badge class of a run, step or action state."""
    return STATE_BADGES.get(state, "")


@register.filter
def cents(value: Decimal | int | None) -> str:
    """Minor units as major units with enough digits to show a fraction of a cent:
    Decimal("12.345678") -> "0.1235"."""
    if value is None:
        return "—"
    major = Decimal(value) / 100
    if major and abs(major) < Decimal("0.01"):
        return f"{major:.6f}"
    return f"{major:.4f}" if major != major.quantize(Decimal("0.01")) else f"{major:.2f}"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"
