"""The Decision Book editor's forms. Money is entered in major units (50.00) and stored in minor
units (5000); every error names its field."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth.models import User
from pydantic import ValidationError as PydanticError

from apps.books.content import DataSource, ModelRoute, Slos
from apps.books.models import AutonomyMode, BookVersion
from apps.registry.models import RiskZone, Tool, Workflow, slug_validator


def money_field(help_text: str = "") -> forms.DecimalField:
    """An optional amount in major units (50.00)."""
    return forms.DecimalField(
        max_digits=14, decimal_places=2, min_value=Decimal(0), required=False, help_text=help_text
    )


def rate_field(*, required: bool = True, help_text: str = "") -> forms.DecimalField:
    """A share from 0 to 1."""
    return forms.DecimalField(
        max_digits=5,
        decimal_places=4,
        min_value=Decimal(0),
        max_value=Decimal(1),
        required=required,
        help_text=help_text,
    )


def to_minor(value: Decimal | None) -> int | None:
    return None if value is None else int((value * 100).to_integral_value())


def to_major(value: int | None) -> Decimal | None:
    return None if value is None else (Decimal(value) / 100).quantize(Decimal("0.01"))


class WorkflowForm(forms.Form):
    slug = forms.CharField(max_length=63, validators=[slug_validator], help_text="e.g. refunds")
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"]
        if Workflow.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"A workflow {slug!r} exists already.")
        return slug


class DraftForm(forms.Form):
    objective = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    autonomy_mode = forms.ChoiceField(choices=AutonomyMode.choices)
    escalation_owner = forms.ModelChoiceField(
        queryset=User.objects.filter(is_active=True).order_by("username"),
        required=False,
        help_text="who receives fallbacks, overdue items and open-circuit actions",
    )
    confidence_threshold = rate_field(help_text="below it, a person decides")
    allowed_segments = forms.CharField(
        required=False, help_text="comma-separated; empty means any segment"
    )
    business_hours_start = forms.IntegerField(min_value=0, max_value=23, required=False)
    business_hours_end = forms.IntegerField(min_value=1, max_value=24, required=False)
    weekdays_only = forms.BooleanField(required=False)
    raw_policies = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "class": "code", "spellcheck": "false"}),
        help_text='Cedar permit/forbid policies, each with @id("...") and @message("...")',
    )
    spot_check_rate = rate_field(help_text="share of yellow-zone actions checked")
    red_two_approvers = forms.BooleanField(required=False)
    sla_minutes = forms.IntegerField(min_value=1, help_text="time a held action may wait")
    per_outcome_cap = money_field()
    monthly_budget = money_field()
    currency = forms.CharField(min_length=3, max_length=3)
    baseline_minutes = forms.DecimalField(
        max_digits=7, decimal_places=2, min_value=Decimal(0), help_text="a person's time per task"
    )
    data_sources = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="one per line: name | freshness in minutes (optional)",
    )
    step_latency_p95_ms = forms.IntegerField(min_value=1, required=False)
    min_approval_rate = rate_field(required=False)
    max_override_rate = rate_field(required=False)
    max_human_in_loop_rate = rate_field(required=False)
    model_policy = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "class": "code", "spellcheck": "false"}),
        help_text='JSON: {"task type": {"tier": "small", "escalate_below_confidence": 0.7}}',
    )

    def __init__(self, *args: Any, tools: list[Tool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tools = tools
        for tool in tools:
            self.fields[f"tool__{tool.slug}__allowed"] = forms.BooleanField(required=False)
            self.fields[f"tool__{tool.slug}__zone"] = forms.ChoiceField(
                choices=[(zone.value, zone.value) for zone in RiskZone], initial=tool.risk_zone
            )
            self.fields[f"tool__{tool.slug}__auto_cap"] = money_field()
            self.fields[f"tool__{tool.slug}__hard_cap"] = money_field()

    @staticmethod
    def initial_for(version: BookVersion, tools: list[Tool]) -> dict[str, Any]:
        slos = version.slos or {}
        initial: dict[str, Any] = {
            "objective": version.objective,
            "autonomy_mode": version.autonomy_mode,
            "escalation_owner": version.escalation_owner_id,
            "confidence_threshold": version.confidence_threshold,
            "allowed_segments": ", ".join(version.allowed_segments or []),
            "business_hours_start": version.business_hours_start,
            "business_hours_end": version.business_hours_end,
            "weekdays_only": version.weekdays_only,
            "raw_policies": version.raw_policies,
            "spot_check_rate": version.spot_check_rate,
            "red_two_approvers": version.red_two_approvers,
            "sla_minutes": version.sla_minutes,
            "per_outcome_cap": to_major(version.per_outcome_cap_cents),
            "monthly_budget": to_major(version.monthly_budget_cents),
            "currency": version.currency,
            "baseline_minutes": version.baseline_minutes,
            "data_sources": "\n".join(
                source["name"]
                + (
                    f" | {source['freshness_minutes']}"
                    if source.get("freshness_minutes") is not None
                    else ""
                )
                for source in version.data_sources or []
            ),
            "model_policy": json.dumps(version.model_policy, indent=2)
            if version.model_policy
            else "",
            **{key: slos.get(key) for key in Slos.model_fields},
        }
        rules = {entry.get("tool"): entry for entry in version.tools or []}
        for tool in tools:
            rule = rules.get(tool.slug)
            initial[f"tool__{tool.slug}__allowed"] = rule is not None
            initial[f"tool__{tool.slug}__zone"] = (
                rule.get("risk_zone", tool.risk_zone) if rule else tool.risk_zone
            )
            initial[f"tool__{tool.slug}__auto_cap"] = (
                to_major(rule.get("auto_cap")) if rule else None
            )
            initial[f"tool__{tool.slug}__hard_cap"] = (
                to_major(rule.get("hard_cap")) if rule else None
            )
        return initial

    def tool_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "tool": tool,
                "allowed": self[f"tool__{tool.slug}__allowed"],
                "zone": self[f"tool__{tool.slug}__zone"],
                "auto_cap": self[f"tool__{tool.slug}__auto_cap"],
                "hard_cap": self[f"tool__{tool.slug}__hard_cap"],
            }
            for tool in self.tools
        ]

    def clean_currency(self) -> str:
        currency: str = self.cleaned_data["currency"].strip().upper()
        if not currency.isalpha():
            raise forms.ValidationError("Use a three-letter currency code such as EUR.")
        return currency

    def clean_allowed_segments(self) -> list[str]:
        raw: str = self.cleaned_data["allowed_segments"]
        return [segment.strip() for segment in raw.split(",") if segment.strip()]

    def clean_data_sources(self) -> list[dict[str, Any]]:
        sources = []
        for number, line in enumerate(self.cleaned_data["data_sources"].splitlines(), start=1):
            if not line.strip():
                continue
            name, _, fresh = line.partition("|")
            try:
                minutes = int(fresh) if fresh.strip() else None
                sources.append(
                    DataSource(name=name.strip(), freshness_minutes=minutes).model_dump()
                )
            except (ValueError, PydanticError):
                raise forms.ValidationError(
                    f"Line {number}: write 'name | minutes' with a whole number of minutes."
                ) from None
        return sources

    def clean_model_policy(self) -> dict[str, Any]:
        raw: str = self.cleaned_data["model_policy"].strip()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} at line {exc.lineno}."
            ) from None
        if not isinstance(data, dict):
            raise forms.ValidationError("Give an object of task type -> route.")
        routes = {}
        for task, route in data.items():
            try:
                routes[task] = ModelRoute.model_validate(route).model_dump(exclude_none=True)
            except PydanticError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "route"
                raise forms.ValidationError(f"{task}.{where}: {first['msg']}") from None
        return routes

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("business_hours_start"), cleaned.get("business_hours_end")
        if (start is None) != (end is None):
            self.add_error(
                "business_hours_end", "Give both the start and the end hour, or neither."
            )
        elif start is not None and end is not None and start >= end:
            self.add_error("business_hours_end", "The end hour must come after the start hour.")
        for tool in self.tools:
            auto = cleaned.get(f"tool__{tool.slug}__auto_cap")
            hard = cleaned.get(f"tool__{tool.slug}__hard_cap")
            if auto is not None and hard is not None and auto > hard:
                self.add_error(
                    f"tool__{tool.slug}__auto_cap",
                    f"{tool.slug}: the review-free limit cannot be above the hard cap.",
                )
        return cleaned

    def book_values(self) -> dict[str, Any]:
        """The cleaned form as values for `draft_update`."""
        data = self.cleaned_data
        owner = data["escalation_owner"]
        tools = [
            {
                "tool": tool.slug,
                "risk_zone": data[f"tool__{tool.slug}__zone"],
                "auto_cap": to_minor(data[f"tool__{tool.slug}__auto_cap"]),
                "hard_cap": to_minor(data[f"tool__{tool.slug}__hard_cap"]),
            }
            for tool in self.tools
            if data[f"tool__{tool.slug}__allowed"]
        ]
        slos = {key: data[key] for key in Slos.model_fields if data.get(key) is not None}
        return {
            "objective": data["objective"],
            "autonomy_mode": data["autonomy_mode"],
            "escalation_owner_id": owner.pk if owner else None,
            "confidence_threshold": data["confidence_threshold"],
            "allowed_segments": data["allowed_segments"],
            "business_hours_start": data["business_hours_start"],
            "business_hours_end": data["business_hours_end"],
            "weekdays_only": data["weekdays_only"],
            "raw_policies": data["raw_policies"],
            "spot_check_rate": data["spot_check_rate"],
            "red_two_approvers": data["red_two_approvers"],
            "sla_minutes": data["sla_minutes"],
            "per_outcome_cap_cents": to_minor(data["per_outcome_cap"]),
            "monthly_budget_cents": to_minor(data["monthly_budget"]),
            "currency": data["currency"],
            "baseline_minutes": data["baseline_minutes"],
            "data_sources": data["data_sources"],
            "slos": {
                key: (float(value) if isinstance(value, Decimal) else value)
                for key, value in slos.items()
            },
            "model_policy": data["model_policy"],
            "tools": tools,
        }


class PublishForm(forms.Form):
    change_note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="what changed and why; kept with the version for good",
    )


class TryForm(forms.Form):
    """A sample action to evaluate against the draft."""

    agent = forms.ChoiceField()
    tool = forms.ChoiceField()
    params = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "class": "code", "spellcheck": "false"}),
        initial="{}",
        help_text="JSON object",
    )
    confidence = rate_field(required=False)
    segment = forms.CharField(required=False)
    hour = forms.IntegerField(min_value=0, max_value=23, required=False, help_text="default: now")

    def __init__(self, *args: Any, agents: list[str], tools: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        agent_field = self.fields["agent"]
        tool_field = self.fields["tool"]
        assert isinstance(agent_field, forms.ChoiceField)
        assert isinstance(tool_field, forms.ChoiceField)
        agent_field.choices = [(slug, slug) for slug in agents]
        tool_field.choices = [(slug, slug) for slug in tools]

    def clean_params(self) -> dict[str, Any]:
        try:
            params = json.loads(self.cleaned_data["params"] or "{}")
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} at line {exc.lineno}."
            ) from None
        if not isinstance(params, dict):
            raise forms.ValidationError('Give a JSON object, such as {"amount_cents": 3000}.')
        return params
