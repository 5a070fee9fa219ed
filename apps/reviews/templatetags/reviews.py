from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from django import template
from django.utils import timezone

from apps.actions.models import Action
from apps.reviews.selectors import action_currency, due_text, money

register = template.Library()


@register.filter
def amount(action: Action) -> str:
    return money(action)


@register.filter
def param_rows(action: Action) -> list[dict[str, Any]]:
    """The params as (name, shown value, edit value, is_amount) rows for a readable table."""
    rows = []
    currency = action_currency(action)
    for name, value in (action.params or {}).items():
        # (An amount stored as a whole float, from before params were normalized, is an
        # amount too: shown and edited in major units like any other.)
        is_amount = (
            name == action.tool.amount_param
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and float(value).is_integer()
        )
        if is_amount:
            shown = money(action)
            edit = f"{Decimal(int(value)).scaleb(-2):.2f}"
        elif isinstance(value, dict | list):
            shown = edit = json.dumps(value, ensure_ascii=False)
        else:
            shown = edit = "" if value is None else str(value)
        rows.append(
            {
                "name": name,
                "shown": shown,
                "edit": edit,
                "is_amount": is_amount,
                "currency": currency,
            }
        )
    return rows


@register.filter
def minutes_left(deadline: datetime) -> str:
    return due_text(deadline, timezone.now())


@register.filter
def is_overdue(deadline: datetime) -> bool:
    return deadline < timezone.now()


@register.filter
def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
