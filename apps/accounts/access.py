"""Role checks for pages. Every page view is wrapped in `role_required` (or `login_required` for
pages open to any signed-in user); the 403 page names the role that was missing."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from apps.accounts.roles import Role, user_roles

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponseBase])


class MissingRole(PermissionDenied):
    def __init__(self, needed: tuple[Role, ...], held: frozenset[Role]) -> None:
        self.needed = needed
        self.held = held
        names = " or ".join(role.value for role in needed)
        super().__init__(f"This page needs the {names} role.")


def check_roles(request: HttpRequest, roles: tuple[Role, ...]) -> None:
    held = user_roles(request.user)
    if not held.intersection(roles):
        raise MissingRole(roles, held)


def role_required(*roles: Role) -> Callable[[ViewFunc], ViewFunc]:
    """Open the view to signed-in users holding any of `roles`; others get 403 naming the role.

    An anonymous visitor is sent to the login page; for an htmx request (whose response would be
    swapped into the page) the browser is told to navigate there instead.
    """
    if not roles:
        raise ValueError("role_required needs at least one role")

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return login_redirect(request)
            check_roles(request, roles)
            return view(request, *args, **kwargs)

        wrapper.required_roles = roles  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def login_redirect(request: HttpRequest) -> HttpResponse:
    response = redirect_to_login(request.get_full_path())
    if getattr(request, "htmx", False):
        htmx_response = HttpResponse(status=204)
        htmx_response["HX-Redirect"] = response["Location"]
        return htmx_response
    return response
