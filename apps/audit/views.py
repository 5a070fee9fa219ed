from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.audit.selectors import audit_verify, recent_events


@require_GET
@role_required(Role.RISK)
def index(request: HttpRequest) -> HttpResponse:
    """The audit trail, newest first, with the chain's verdict at the top."""
    verb = request.GET.get("verb", "").strip()
    events = recent_events(verb_prefix=verb)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {"page": page, "verb": verb, "report": audit_verify()}
    return render(request, "audit/index.html", context)
