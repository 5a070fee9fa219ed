"""The Django admin for Decision Book versions: a window onto the history, not a way around it.

Published and superseded versions are read-only here, as everywhere (the database refuses too).
A draft may be edited by someone who also holds the risk role, through the same service as the
Decision Book pages, so that it is recompiled and audited; drafts are opened and published there,
never here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import JSONField
from django.http import HttpRequest

from apps.accounts.roles import Role, user_roles
from apps.books.models import BookVersion
from apps.books.services import CONTENT_FIELDS, draft_update

if TYPE_CHECKING:
    BookVersionAdminBase = admin.ModelAdmin[BookVersion]
    BookVersionFormBase = forms.ModelForm[BookVersion]
else:
    BookVersionAdminBase = admin.ModelAdmin
    BookVersionFormBase = forms.ModelForm

# Form fields are named after model fields, not their columns.
EDITABLE_FIELDS = tuple(name.removesuffix("_id") for name in CONTENT_FIELDS)
RECORD_FIELDS = (
    "workflow",
    "number",
    "status",
    "based_on",
    "change_note",
    "created_by",
    "created_at",
    "updated_at",
    "published_by",
    "published_at",
    "superseded_at",
    "policy_text",
    "cedar_schema",
)


class BookVersionForm(BookVersionFormBase):
    class Meta:
        model = BookVersion
        fields = EDITABLE_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The admin's change view runs in one transaction: lock the row so that a publish
        # cannot slip in between this check and the save.
        status = (
            BookVersion.objects.select_for_update()
            .filter(pk=self.instance.pk)
            .values_list("status", flat=True)
            .first()
        )
        if status != BookVersion.Status.DRAFT:
            raise ValidationError(
                f"This version is {status or 'gone'} now and can no longer be changed.",
                code="not_draft",
            )
        # An emptied JSON box means "nothing", which the column stores as its empty default,
        # not as NULL (which it refuses).
        for name in EDITABLE_FIELDS:
            field = BookVersion._meta.get_field(name)
            if isinstance(field, JSONField) and name in cleaned and cleaned[name] is None:
                cleaned[name] = field.get_default()
        return cleaned


@admin.register(BookVersion)
class BookVersionAdmin(BookVersionAdminBase):
    form = BookVersionForm
    list_display = ("workflow", "number", "status", "published_at", "published_by")
    list_filter = ("status", "workflow")
    list_select_related = ("workflow", "published_by")
    search_fields = ("workflow__slug", "change_note")
    ordering = ("workflow__slug", "-number")
    fieldsets = (
        ("Version", {"fields": RECORD_FIELDS}),
        ("Content", {"fields": EDITABLE_FIELDS}),
    )

    def get_readonly_fields(
        self, request: HttpRequest, obj: BookVersion | None = None
    ) -> tuple[str, ...]:
        if obj is not None and obj.is_draft and self.has_change_permission(request, obj):
            return RECORD_FIELDS
        return RECORD_FIELDS + EDITABLE_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Drafts are opened from the active version on the Decision Book pages.
        return False

    def has_change_permission(self, request: HttpRequest, obj: BookVersion | None = None) -> bool:
        if obj is None:
            return super().has_change_permission(request)
        return self._draft_writer(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: BookVersion | None = None) -> bool:
        if obj is None:
            return super().has_delete_permission(request)
        return self._draft_writer(request, obj) and super().has_delete_permission(request, obj)

    def _draft_writer(self, request: HttpRequest, obj: BookVersion) -> bool:
        """Only a draft may change, and only by someone who may write Decision Books."""
        return obj.is_draft and Role.RISK in user_roles(request.user)

    def save_model(self, request: HttpRequest, obj: BookVersion, form: Any, change: bool) -> None:
        # The service locks, recompiles the policy text and audits; a plain save would not.
        draft_update(
            version_id=obj.pk,
            user=cast(User, request.user),
            values={name: getattr(obj, name) for name in CONTENT_FIELDS},
        )
