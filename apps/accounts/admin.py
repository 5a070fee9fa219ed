"""Users and groups in the Django admin, audited: every user made there, every change of a
user's roles, flags, permissions or identity, every password change and every deletion is
written to the audit trail in the admin's own transaction, naming the admin who did it.

A role is a group of the role's name (apps/accounts/roles.py), so the role groups cannot be
renamed or deleted here: either would take a role from, or give it to, every member at once,
without a trace per person."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse

from apps.accounts.services import ROLE_NAMES, user_changes_record, user_state
from apps.audit.admin_trail import AuditedAdminMixin
from apps.audit.services import audit_record

# Django's admin classes are generic only to the type checker, not at run time.
if TYPE_CHECKING:
    UserAdminBase = DjangoUserAdmin[User]
    GroupAdminBase = DjangoGroupAdmin
else:
    UserAdminBase = DjangoUserAdmin
    GroupAdminBase = DjangoGroupAdmin

VIA = "admin"


def _deletion_record(request: HttpRequest, user: User) -> None:
    state = user_state(user)
    audit_record(
        actor=request.user,
        verb="user.deleted",
        target=user,
        subject=f"user:{state.username}",
        data={
            "via": VIA,
            "username": state.username,
            "roles": sorted(state.groups & ROLE_NAMES),
            "is_superuser": state.is_superuser,
        },
    )


class AuditedUserAdmin(UserAdminBase):
    def save_related(
        self, request: HttpRequest, form: ModelForm[User], formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            # The add form makes the user (its groups, if any, are saved just above).
            user_changes_record(actor=request.user, user=form.instance, before=None, via=VIA)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """A change is audited as the difference between the user before and after the view,
        in one transaction: whatever the form saved (fields, groups, permissions), and nothing
        when it saved nothing (an invalid form)."""
        if request.method != "POST" or object_id is None:
            return super().changeform_view(request, object_id, form_url, extra_context)
        with transaction.atomic():
            user = _locked_user(object_id)
            before = user_state(user) if user is not None else None
            response = super().changeform_view(request, object_id, form_url, extra_context)
            if user is not None and before is not None:
                user.refresh_from_db()
                user_changes_record(actor=request.user, user=user, before=before, via=VIA)
        return response

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        if request.method != "POST":
            return super().user_change_password(request, id, form_url)
        with transaction.atomic():
            user = _locked_user(id)
            response = super().user_change_password(request, id, form_url)
            if user is not None:
                before = user.password
                user.refresh_from_db(fields=["password"])
                if user.password != before:
                    # That it changed, and whether a password can still sign in; never the hash.
                    audit_record(
                        actor=request.user,
                        verb="user.password_changed",
                        target=user,
                        subject=f"user:{user.username}",
                        data={"via": VIA, "usable": user.has_usable_password()},
                    )
        return response

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        with transaction.atomic():
            _deletion_record(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        with transaction.atomic():
            for user in queryset.order_by("pk"):
                _deletion_record(request, user)
            super().delete_queryset(request, queryset)


def _locked_user(object_id: str) -> User | None:
    """The user a view is about, locked until its transaction ends (so that its state before
    and after are those of this edit alone); None for an id that names no one."""
    try:
        pk = int(unquote(object_id))
    except ValueError:
        return None
    return User.objects.select_for_update().filter(pk=pk).first()


class RoleGroupAdmin(AuditedAdminMixin, GroupAdminBase):
    """Groups, audited; a role's group keeps its name and cannot be deleted. (No other group
    can take a role's name: names are unique, and the role groups always exist.)"""

    def get_readonly_fields(self, request: HttpRequest, obj: Group | None = None) -> Any:
        if obj is not None and obj.name in ROLE_NAMES:
            return ("name",)
        return super().get_readonly_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        if obj is not None and obj.name in ROLE_NAMES:
            return False
        return super().has_delete_permission(request, obj)


admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, RoleGroupAdmin)
