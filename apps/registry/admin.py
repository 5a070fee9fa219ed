"""The Django admin for the registry: the plumbing behind agents, keys, tools and prices.

Keys are never made here: a key is shown once, when it is made, and a form round-trip is no
place for that (see `manage.py create_agent_key`). Nor is a key's digest ever shown, anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from apps.audit.admin_trail import AuditedAdminMixin
from apps.registry.models import Agent, AgentKey, ModelPrice, Tool, Workflow
from apps.registry.services import agent_key_revoke

# Django's admin and form classes are generic only to the type checker, not at run time.
if TYPE_CHECKING:
    ToolFormBase = forms.ModelForm[Tool]
    WorkflowAdminBase = admin.ModelAdmin[Workflow]
    ToolAdminBase = admin.ModelAdmin[Tool]
    AgentAdminBase = admin.ModelAdmin[Agent]
    AgentKeyAdminBase = admin.ModelAdmin[AgentKey]
    AgentKeyInlineBase = admin.TabularInline[AgentKey, Agent]
    ModelPriceAdminBase = admin.ModelAdmin[ModelPrice]
else:
    ToolFormBase = forms.ModelForm
    WorkflowAdminBase = ToolAdminBase = AgentAdminBase = AgentKeyAdminBase = admin.ModelAdmin
    ModelPriceAdminBase = admin.ModelAdmin
    AgentKeyInlineBase = admin.TabularInline

JSON_SCHEMA_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


def schema_problem(schema: Any) -> str | None:
    """Why `schema` cannot be a tool's input schema, in words; None if it can."""
    if not isinstance(schema, dict):
        return "must be a JSON object (the schema of the action's params)"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = exc.json_path
        path = list(exc.path)
        if path and path[-1] == "type" and exc.validator == "anyOf":
            # jsonschema says only "not valid under any of the given schemas" for a bad type.
            cause = f"{exc.instance!r} is not a JSON Schema type ({', '.join(JSON_SCHEMA_TYPES)})"
        else:
            cause = exc.message
        return f"not a valid JSON Schema (draft 2020-12): at {where}, {cause}"
    if schema.get("type") != "object":
        return 'an action\'s params are a JSON object: the schema needs "type": "object"'
    return None


class ToolAdminForm(ToolFormBase):
    class Meta:
        model = Tool
        fields = (
            "slug",
            "name",
            "description",
            "risk_zone",
            "input_schema",
            "amount_param",
            "connector",
            "endpoint_url",
            "callable_path",
            "timeout_seconds",
            "max_retries",
            "supports_idempotency",
            "breaker_failure_threshold",
            "breaker_cooldown_seconds",
            "reversible",
            "undo_endpoint_url",
            "undo_callable_path",
        )

    def clean_input_schema(self) -> Any:
        schema = self.cleaned_data["input_schema"]
        problem = schema_problem(schema)
        if problem is not None:
            raise ValidationError(f"Input schema: {problem}.", code="invalid_schema")
        return schema

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        connector = cleaned.get("connector")
        if connector == Tool.Connector.HTTP and not cleaned.get("endpoint_url"):
            self.add_error("endpoint_url", "An HTTP tool needs an endpoint URL.")
        if connector == Tool.Connector.CALLABLE and not cleaned.get("callable_path"):
            self.add_error("callable_path", "An in-process tool needs a callable path.")
        if cleaned.get("reversible") and not (
            cleaned.get("undo_endpoint_url") or cleaned.get("undo_callable_path")
        ):
            self.add_error(
                "undo_endpoint_url",
                "A reversible tool needs an undo endpoint URL or an undo callable path.",
            )
        amount_param = cleaned.get("amount_param")
        schema = cleaned.get("input_schema")
        if amount_param and isinstance(schema, dict):
            properties = schema.get("properties")
            if not isinstance(properties, dict) or amount_param not in properties:
                self.add_error(
                    "amount_param",
                    f"Amount param {amount_param!r} is not one of the input schema's properties.",
                )
        return cleaned


@admin.register(Workflow)
class WorkflowAdmin(AuditedAdminMixin, WorkflowAdminBase):
    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")
    readonly_fields = ("created_at",)


@admin.register(Tool)
class ToolAdmin(AuditedAdminMixin, ToolAdminBase):
    form = ToolAdminForm
    list_display = ("slug", "name", "connector", "risk_zone", "reversible", "updated_at")
    list_filter = ("connector", "risk_zone", "reversible")
    search_fields = ("slug", "name")
    readonly_fields = ("updated_at",)
    fieldsets = (
        (None, {"fields": ("slug", "name", "description", "risk_zone")}),
        ("Params", {"fields": ("input_schema", "amount_param")}),
        (
            "Connector",
            {
                "fields": (
                    "connector",
                    "endpoint_url",
                    "callable_path",
                    "timeout_seconds",
                    "max_retries",
                    "supports_idempotency",
                )
            },
        ),
        (
            "Circuit breaker",
            {"fields": ("breaker_failure_threshold", "breaker_cooldown_seconds")},
        ),
        ("Undo", {"fields": ("reversible", "undo_endpoint_url", "undo_callable_path")}),
        (None, {"fields": ("updated_at",)}),
    )


def key_state(key: AgentKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "expired"
    return "active"


def key_scope(key: AgentKey) -> str:
    slugs = sorted(workflow.slug for workflow in key.workflows.all())
    return ", ".join(slugs) if slugs else "all of the agent's workflows"


# The columns of a key that may be shown. The digest is not among them, on purpose.
KEY_FIELDS = (
    "prefix",
    "label",
    "scope",
    "state",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
)


class AgentKeyInline(AgentKeyInlineBase):
    model = AgentKey
    fields = KEY_FIELDS
    readonly_fields = KEY_FIELDS
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="scope")
    def scope(self, key: AgentKey) -> str:
        return key_scope(key)

    @admin.display(description="state")
    def state(self, key: AgentKey) -> str:
        return key_state(key)


@admin.register(Agent)
class AgentAdmin(AuditedAdminMixin, AgentAdminBase):
    list_display = ("slug", "name", "owner", "status", "risk_tier", "updated_at")
    list_filter = ("status", "risk_tier")
    search_fields = ("slug", "name", "owner__username")
    filter_horizontal = ("workflows", "tools")
    # The callback secret is shown for the agent's developers to copy, never edited here.
    readonly_fields = ("callback_secret", "created_at", "updated_at")
    inlines = (AgentKeyInline,)


@admin.register(AgentKey)
class AgentKeyAdmin(AgentKeyAdminBase):
    """Keys are listed and revoked here, never made or edited: see the module docstring."""

    list_display = ("__str__", "agent", *KEY_FIELDS)
    list_filter = ("revoked_at", "expires_at")
    list_select_related = ("agent",)
    search_fields = ("prefix", "label", "agent__slug")
    fields = ("agent", *KEY_FIELDS)
    readonly_fields = ("agent", *KEY_FIELDS)
    actions = ("revoke_keys",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentKey]:
        return super().get_queryset(request).prefetch_related("workflows")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AgentKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AgentKey | None = None) -> bool:
        # A revoked key stays on record, so that the audit trail's prefixes keep a referent.
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking is the one change a key admits; it needs the right to change keys.
        return super().has_change_permission(request)

    @admin.display(description="scope")
    def scope(self, key: AgentKey) -> str:
        return key_scope(key)

    @admin.display(description="state")
    def state(self, key: AgentKey) -> str:
        return key_state(key)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[AgentKey]) -> None:
        revoked: list[str] = []
        already: list[str] = []
        for key_id, prefix, revoked_at in queryset.values_list("pk", "prefix", "revoked_at"):
            if revoked_at is not None:
                already.append(prefix)
                continue
            agent_key_revoke(key_id=key_id, actor=request.user)
            revoked.append(prefix)
        if revoked:
            self.message_user(
                request,
                f"Revoked {len(revoked)} key(s): {', '.join(sorted(revoked))}.",
                messages.SUCCESS,
            )
        if already:
            self.message_user(
                request,
                f"Already revoked, left as they were: {', '.join(sorted(already))}.",
                messages.WARNING,
            )


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdminMixin, ModelPriceAdminBase):
    list_display = ("provider", "model", "input_per_1k", "output_per_1k", "currency")
    list_filter = ("provider", "currency")
    search_fields = ("provider", "model")
