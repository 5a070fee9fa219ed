from __future__ import annotations

from typing import Any

from django import forms

from apps.registry.models import Workflow
from apps.runtime.models import Run


class RunFilterForm(forms.Form):
    state = forms.ChoiceField(
        required=False, choices=[("", "any state"), *Run.State.choices], label="State"
    )
    workflow = forms.ChoiceField(required=False, label="Workflow")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = Workflow.objects.order_by("slug").values_list("slug", flat=True)
        self.fields["workflow"].choices = [("", "any workflow"), *((s, s) for s in slugs)]  # type: ignore[attr-defined]
