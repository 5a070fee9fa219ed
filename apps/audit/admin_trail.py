"""Admin edits go into the audit trail too: what the Django admin logs to its own table
(added, changed with the field names, deleted) is also appended to the hash chain, in the same
transaction as the edit."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.http import HttpRequest

from apps.audit.services import audit_record


def _fields(obj: models.Model) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if "secret" in field.name:
            # The trail is read by many; a secret stays out of it (that it changed still shows).
            values[field.name] = "[redacted]"
            continue
        value = getattr(obj, field.attname)
        values[field.name] = (
            value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        )
    for field in obj._meta.many_to_many:
        values[field.name] = sorted(str(related) for related in getattr(obj, field.name).all())
    return values


class AuditedAdminMixin:
    """Mix into a ModelAdmin whose edits must reach the audit trail."""

    def log_addition(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        with transaction.atomic():
            audit_record(
                actor=request.user,
                verb=f"{obj._meta.model_name}.created",
                target=obj,
                data={"via": "admin", "after": _fields(obj)},
            )
            return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        with transaction.atomic():
            audit_record(
                actor=request.user,
                verb=f"{obj._meta.model_name}.changed",
                target=obj,
                data={"via": "admin", "change": message, "after": _fields(obj)},
            )
            return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        with transaction.atomic():
            for obj in queryset:
                audit_record(
                    actor=request.user,
                    verb=f"{obj._meta.model_name}.deleted",
                    target=obj,
                    data={"via": "admin", "before": _fields(obj)},
                )
            return super().log_deletions(request, queryset)  # type: ignore[misc]
