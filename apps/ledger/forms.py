from __future__ import annotations

from django import forms

from apps.ledger.backtest import MAX_LIMIT


class BacktestForm(forms.Form):
    limit = forms.IntegerField(
        label="Last N actions",
        min_value=1,
        max_value=MAX_LIMIT,
        initial=10_000,
        help_text="the workflow's most recent recorded actions, decided by both versions",
    )
