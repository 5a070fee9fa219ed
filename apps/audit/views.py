from __future__ import annotations

import re
from uuid import UUID

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify, flight_record, recent_events

# A trace id as the flight recorder shows it (and OpenTelemetry writes it): 32 hex digits.
TRACE_ID = re.compile(r"[0-9a-f]{32}")


@require_GET
@role_required(Role.RISK)
def index(request: HttpRequest) -> HttpResponse:
    """The audit trail, newest first, with the chain's verdict at the top."""
    verb = request.GET.get("verb", "").strip()
    events = recent_events(verb_prefix=verb)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {"page": page, "verb": verb, "report": audit_verify()}
    return render(request, "audit/index.html", context)


@require_GET
@role_required(Role.RISK, Role.SUPERVISOR, Role.ONCALL)
def flight_recorder(request: HttpRequest) -> HttpResponse:
    """Everything that ever happened to one subject (`?subject=order:1042`) or one action
    (`?action=<id>`), in order; `?trace=<trace id>` narrows it to what one traced request or
    task did, or, alone, shows all it did."""
    subject = request.GET.get("subject", "").strip()[:200]
    action_id = request.GET.get("action", "").strip()
    trace_id = request.GET.get("trace", "").strip()[:200]
    error = ""
    events: list[AuditEvent] = []
    if action_id:
        try:
            action_id = str(UUID(action_id))
        except ValueError:
            error = f"action: {action_id!r} is not an action id"
    if trace_id and not error and not TRACE_ID.fullmatch(trace_id):
        error = f"trace: {trace_id!r} is not a trace id (32 lowercase hexadecimal digits)"
    if not error and (subject or action_id or trace_id):
        events = list(flight_record(subject=subject, action_id=action_id, trace_id=trace_id)[:2000])
    context = {
        "subject": subject,
        "action_id": action_id,
        "trace_id": trace_id,
        "events": events,
        "error": error,
    }
    return render(request, "audit/flight_recorder.html", context, status=400 if error else 200)
