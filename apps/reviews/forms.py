"""The queue's filters and the decision form."""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from django import forms

from apps.actions.params import INTEGER_MAX
from apps.registry.models import RiskZone, Tool, Workflow
from apps.reviews.models import Kind, Verdict
from apps.reviews.services import APPROVE_REASONS, REJECT_REASONS


class QueueFilterForm(forms.Form):
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label="All workflows",
    )
    zone = forms.ChoiceField(
        choices=[("", "All zones"), *[(value, value) for value in RiskZone.values]],
        required=False,
    )
    kind = forms.ChoiceField(choices=[("", "All kinds"), *Kind.choices], required=False)
    age = forms.ChoiceField(
        choices=[
            ("", "Any age"),
            ("15m", "Older than 15 min"),
            ("1h", "Older than 1 hour"),
            ("4h", "Older than 4 hours"),
            ("1d", "Older than 1 day"),
        ],
        required=False,
    )
    overdue = forms.BooleanField(required=False, label="Overdue only")
    mine = forms.BooleanField(required=False, label="Claimed by or escalated to me")
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)


class DecisionForm(forms.Form):
    verdict = forms.ChoiceField(choices=Verdict.choices)
    reason_code = forms.CharField(required=False, max_length=40)
    reason_text = forms.CharField(required=False, max_length=2000, strip=True)


def reason_choices() -> dict[str, dict[str, str]]:
    return {"approve": APPROVE_REASONS, "reject": REJECT_REASONS}


# The largest number the edit form takes where a tool's schema asks for any number.
NUMBER_MAX = Decimal(10) ** 15


def _minor_units(raw: str, currency: str) -> tuple[int, str]:
    """An amount typed in major units (12.50) as minor units (1250), or the problem with it."""
    example = f"must be an amount in {currency}, such as 12.50"
    try:
        major = Decimal(raw)
    except InvalidOperation:
        return 0, example
    if not major.is_finite():
        return 0, example
    largest = Decimal(INTEGER_MAX).scaleb(-2).quantize(Decimal(1), rounding=ROUND_DOWN)
    if abs(major) > largest:
        return 0, f"must be at most {largest:,} {currency}"
    minor = major.scaleb(2)
    if minor != minor.to_integral_value():
        return 0, f"must be an amount in {currency} with at most 2 decimals"
    return int(minor), ""


def edited_params(
    tool: Tool, current: dict[str, Any], data: Any, *, currency: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The params a person typed into the edit form (fields `param.<name>`), converted to the
    types the tool's schema names. The amount param is typed in major units (12.50 EUR) and
    stored in minor units (1250)."""
    properties = tool.input_schema.get("properties", {}) if tool.input_schema else {}
    params = dict(current)
    errors: list[tuple[str, str]] = []
    for name in current:
        key = f"param.{name}"
        if key not in data:
            continue
        raw = str(data.get(key, "")).strip()
        kind = properties.get(name, {}).get("type")
        field = f"params.{name}"
        if name == tool.amount_param:
            minor_units, problem = _minor_units(raw, currency)
            if problem:
                errors.append((field, problem))
                continue
            params[name] = minor_units
        elif kind == "integer":
            try:
                whole = int(raw)
            except ValueError:
                errors.append((field, "must be a whole number"))
                continue
            if abs(whole) > INTEGER_MAX:
                errors.append((field, f"must be between -{INTEGER_MAX} and {INTEGER_MAX}"))
                continue
            params[name] = whole
        elif kind == "number":
            try:
                number = Decimal(raw)
            except InvalidOperation:
                errors.append((field, "must be a number"))
                continue
            if not number.is_finite() or abs(number) > NUMBER_MAX:
                errors.append((field, f"must be a number between -{NUMBER_MAX} and {NUMBER_MAX}"))
                continue
            params[name] = int(number) if number == number.to_integral_value() else float(number)
        elif kind == "boolean":
            params[name] = raw.lower() in ("1", "true", "on", "yes")
        elif kind in ("object", "array") or isinstance(current[name], dict | list):
            try:
                params[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append((field, f"must be JSON: {exc.msg} at character {exc.pos}"))
        else:
            params[name] = raw
    return params, errors
