from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from apps.registry.models import Agent, Workflow
from apps.runtime.models import Run

# Ten million a month in major units: far above any model budget, well inside the column.
LIMIT_MAX = Decimal(10_000_000)


class RunFilterForm(forms.Form):
    state = forms.ChoiceField(
        required=False, choices=[("", "any state"), *Run.State.choices], label="State"
    )
    workflow = forms.ChoiceField(required=False, label="Workflow")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = Workflow.objects.order_by("slug").values_list("slug", flat=True)
        self.fields["workflow"].choices = [("", "any workflow"), *((s, s) for s in slugs)]  # type: ignore[attr-defined]


class AgentBudgetForm(forms.Form):
    """An agent's own monthly model budget, in major units (150.00), as finance sets it."""

    agent = forms.ChoiceField(label="Agent")
    monthly_limit = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_value=LIMIT_MAX,
        max_digits=12,
        decimal_places=2,
        label="Monthly limit",
        help_text="in major units (150.00); empty: no limit of its own",
    )
    soft_limit_percent = forms.IntegerField(
        min_value=1, max_value=100, initial=80, label="Soft limit (%)"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = Agent.objects.order_by("slug").values_list("slug", flat=True)
        self.fields["agent"].choices = [(slug, slug) for slug in slugs]  # type: ignore[attr-defined]

    def limit_cents(self) -> int | None:
        limit: Decimal | None = self.cleaned_data["monthly_limit"]
        return None if limit is None else int(limit * 100)
