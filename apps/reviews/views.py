from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.access import role_required
from apps.accounts.roles import Role


@require_GET
@role_required(Role.SUPERVISOR)
def queue(request: HttpRequest) -> HttpResponse:
    return render(request, "reviews/queue.html")
