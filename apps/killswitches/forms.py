"""The console's forms. Each checks its input with the same rules as the services (so a bad
scope, target or reason is reported next to its field) before the confirmation step.

Drain and rollback carry, from their confirmation step, the ids of the actions it showed
(`expected`, hidden): the service acts only if they are still the set it selects."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.killswitches.confirmation import expected_ids_check
from apps.killswitches.drain import drain_mode_check
from apps.killswitches.models import DrainRun, Scope
from apps.killswitches.rollback import COUNT_MAX, rollback_count_check, rollback_scope_check
from apps.killswitches.switches import REASON_MAX, SwitchInvalid, reason_check, scope_check

REASON_WIDGET = forms.Textarea(attrs={"rows": 2, "maxlength": REASON_MAX})
TARGET_WIDGET = forms.TextInput(
    attrs={"list": "target-options", "autocomplete": "off", "placeholder": "e.g. refund-bot"}
)


class _Checked(forms.Form):
    """Runs a service-side check and files its error under the field it names."""

    def _checked(self, check: Any, *args: Any) -> Any:
        try:
            return check(*args)
        except SwitchInvalid as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, exc.message)
            return None


class _Confirmed(_Checked):
    """A form whose confirmation step shows a set of actions and sends their ids back."""

    expected = forms.CharField(required=False, widget=forms.HiddenInput)

    def _expected(self) -> list[str] | None:
        """The ids confirmed; None when the submit carries no set (the first post, which only
        asks for confirmation). An empty value is a confirmed empty set."""
        if self.add_prefix("expected") not in self.data:
            return None
        try:
            return expected_ids_check(self.cleaned_data.get("expected", ""))
        except SwitchInvalid as exc:
            self.add_error(None, f"The confirmed set {exc.message}: look at it again.")
            return None


class EngageForm(_Checked):
    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.AGENT)
    target = forms.CharField(required=False, max_length=63, widget=TARGET_WIDGET)
    reason = forms.CharField(required=False, widget=REASON_WIDGET)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "scope" in data:
            checked = self._checked(scope_check, data["scope"], data.get("target", ""))
            if checked:
                data["scope"], data["target"] = checked
        data["reason"] = self._checked(reason_check, data.get("reason", ""))
        return data


class ReleaseForm(_Checked):
    reason = forms.CharField(required=False, widget=REASON_WIDGET)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["reason"] = self._checked(reason_check, data.get("reason", ""))
        return data


class DrainForm(_Confirmed):
    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.AGENT)
    target = forms.CharField(required=False, max_length=63, widget=TARGET_WIDGET)
    mode = forms.ChoiceField(
        choices=[
            (DrainRun.Mode.CANCEL, "Cancel it: queued and held work ends as cancelled"),
            (
                DrainRun.Mode.HAND_OVER,
                "Hand it to people: held work and the queued work (as fallbacks) go to the "
                "escalation owner",
            ),
        ],
        widget=forms.RadioSelect,
        initial=DrainRun.Mode.HAND_OVER,
    )
    reason = forms.CharField(required=False, widget=REASON_WIDGET)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "scope" in data:
            checked = self._checked(scope_check, data["scope"], data.get("target", ""))
            if checked:
                data["scope"], data["target"] = checked
        if "mode" in data:
            data["mode"] = self._checked(drain_mode_check, data["mode"])
        data["reason"] = self._checked(reason_check, data.get("reason", ""))
        data["expected"] = self._expected()
        return data


class RollbackForm(_Confirmed):
    scope = forms.ChoiceField(
        choices=[(Scope.AGENT, "agent"), (Scope.WORKFLOW, "workflow")], initial=Scope.AGENT
    )
    target = forms.CharField(required=False, max_length=63, widget=TARGET_WIDGET)
    count = forms.CharField(
        initial="3",
        widget=forms.NumberInput(attrs={"min": 1, "max": COUNT_MAX}),
        help_text=f"the most recent succeeded actions, newest first (at most {COUNT_MAX})",
    )
    reason = forms.CharField(required=False, widget=REASON_WIDGET)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "scope" in data:
            checked = self._checked(rollback_scope_check, data["scope"], data.get("target", ""))
            if checked:
                data["scope"], data["target"] = checked
        if "count" in data:
            data["count"] = self._checked(rollback_count_check, data["count"])
        data["reason"] = self._checked(reason_check, data.get("reason", ""))
        data["expected"] = self._expected()
        return data
