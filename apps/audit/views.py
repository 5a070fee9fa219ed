from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.audit.log import latest_checkpoint
from apps.audit.models import AuditEvent
from apps.audit.selectors import flight_record, last_verification, pending_count, recent_events
from apps.audit.tasks import verification_progress, verification_start

# A trace id as the flight recorder shows it (and OpenTelemetry writes it): 32 hex digits.
TRACE_ID = re.compile(r"[0-9a-f]{32}")


@require_GET
@role_required(Role.RISK)
def index(request: HttpRequest) -> HttpResponse:
    """The audit trail, newest first, under the log's latest signed checkpoint and its last
    full verification (run from here, in the background: a page load verifies nothing)."""
    verb = request.GET.get("verb", "").strip()
    events = recent_events(verb_prefix=verb)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {"page": page, "verb": verb, **_log_state()}
    return render(request, "audit/index.html", context)


def _log_state() -> dict[str, Any]:
    checkpoint = latest_checkpoint()
    return {
        "checkpoint": checkpoint,
        "root_hex": bytes(checkpoint.root_hash).hex() if checkpoint else "",
        "pending": pending_count(),
        "last_verification": last_verification(),
        "progress": verification_progress(),
    }


@require_GET
@role_required(Role.RISK)
def verification(request: HttpRequest) -> HttpResponse:
    """The verification panel alone: the page polls it while a verification runs."""
    return render(request, "audit/index.html#verification", _log_state())


@require_POST
@role_required(Role.RISK)
def verify(request: HttpRequest) -> HttpResponse:
    """Start a full verification of the log on a worker."""
    if verification_start(user=request.user):
        messages.success(request, "Verification started: the whole log is being recomputed.")
    else:
        messages.info(request, "A verification is already running.")
    return redirect("audit:index")


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
