from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from apps.accounts.access import check_roles
from apps.accounts.roles import Role, user_roles

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


class EscapementAdminSite(admin.AdminSite):
    """The Django admin, open only to the admin role.

    A signed-in user without the role gets the product's 403 page naming the role, rather than
    the admin's login form (which would suggest that signing in again could help).
    """

    site_header = "Escapement administration"
    site_title = "Escapement admin"
    index_title = "Registry and plumbing"

    def has_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and Role.ADMIN in user_roles(request.user))

    def admin_view(self, view: ViewT, cacheable: bool = False) -> ViewT:
        inner = super().admin_view(view, cacheable)

        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.user.is_authenticated:
                check_roles(request, (Role.ADMIN,))
            response: HttpResponse = inner(request, *args, **kwargs)
            return response

        return cast(ViewT, guarded)
