from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.access import MissingRole
from apps.accounts.roles import Role, user_roles


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The first page after signing in: the roles the person holds, and the pages they open."""
    roles = user_roles(request.user)
    held = [(role, role in roles) for role in Role]
    return render(request, "accounts/home.html", {"roles": held})


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 403 page: says which role the page needs and which roles the user has."""
    needed: list[str] = []
    message = "You do not have access to this page."
    if isinstance(exception, MissingRole):
        needed = [role.value for role in exception.needed]
        message = str(exception)
    elif isinstance(exception, PermissionDenied) and str(exception):
        message = str(exception)
    held = sorted(role.value for role in user_roles(request.user))
    context = {"message": message, "needed_roles": needed, "held_roles": held}
    return render(request, "403.html", context, status=403)
