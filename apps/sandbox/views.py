"""The sandbox's HTTP endpoints, as a connector sees them.

Request: `POST`, a JSON object of params, `Content-Type: application/json`, `Idempotency-Key`
(required where something changes) and optionally `X-Escapement-Action`.
Answer: 2xx `{"ok": true, "result": {...}}`; 4xx `{"ok": false, "error": "...", "field": "..."}`
for anything the caller must fix (never worth a retry); 503 when the faults switch says so.
Undo endpoints name the original by `idempotency_key_of_original` and/or its reference
(`refund_id`, `invoice_id`, `grant_id`) and ignore any other field, since a connector may send
the original's result along.

These are called by machines, not browsers: no session, no CSRF token, but the credential the
sandbox issued its tools, `Authorization: Bearer <SANDBOX_TOKEN>` (a 401 without it, before
anything else is looked at). The faults switch is the exception: it is for operators, signed in
or holding the sandbox token.

Nothing here answers unless SANDBOX_ENABLED is true: a deployment without the demo has no
sandbox, and every address under /sandbox/ is the site's ordinary 404. (The check is made per
request rather than by leaving the URLs out, so that the setting can change without reloading
the URLconf, as tests do.)"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.accounts.roles import Role, user_roles
from apps.sandbox.idempotency import Answer, answer_once, run_answer
from apps.sandbox.models import AccessRole, SandboxFaults
from apps.sandbox.params import Params, SandboxError
from apps.sandbox.payloads import (
    grant_data,
    invoice_data,
    mfa_reset_data,
    order_data,
    refund_data,
)
from apps.sandbox.selectors import faults_current, order_find, refunds_for
from apps.sandbox.services import (
    MAX_DELAY_MS,
    access_grant,
    access_revoke,
    faults_set,
    faults_verdict,
    invoice_flag,
    invoice_match,
    invoice_unflag,
    invoice_unmatch,
    mfa_reset,
    refund_issue,
    refund_undo,
)

logger = logging.getLogger(__name__)

KEY_HEADER = "Idempotency-Key"
ACTION_HEADER = "X-Escapement-Action"
TOKEN_HEADER = "X-Sandbox-Token"  # noqa: S105 (a header name, not a secret)
CREDENTIAL_HEADER = "Authorization"
ORIGINAL_KEY = "idempotency_key_of_original"
ID_MAX = 100


@dataclass(frozen=True)
class Call:
    """One request, read: its params, its idempotency key ("" if none) and the action it runs."""

    params: dict[str, Any]
    key: str
    action_ref: str


Handler = Callable[[Call], Answer]


def ok(result: dict[str, Any], status: int = 200) -> Answer:
    return Answer(status, {"ok": True, "result": result})


def respond(answer: Answer) -> JsonResponse:
    response = JsonResponse(answer.body, status=answer.status)
    if answer.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def refuse(status: int, message: str, field: str | None = None) -> JsonResponse:
    return respond(Answer(status, SandboxError(status, message, field).body()))


def _json_params(request: HttpRequest) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise SandboxError(415, "must be application/json", "Content-Type")
    try:
        data = json.loads(request.body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SandboxError(400, f"is not valid JSON ({exc})", "body") from None
    if not isinstance(data, dict):
        raise SandboxError(400, "must be a JSON object of params", "body")
    return data


def _header(request: HttpRequest, name: str, *, required: bool, max_length: int) -> str:
    value = request.headers.get(name, "").strip()
    if required and not value:
        raise SandboxError(400, "is required on every request that changes something", name)
    if len(value) > max_length or not value.isprintable():
        raise SandboxError(400, f"must be at most {max_length} printable characters", name)
    return value


def _enabled() -> None:
    """The sandbox exists only where SANDBOX_ENABLED says so; elsewhere, the site's 404."""
    if not settings.SANDBOX_ENABLED:
        raise Http404("There is no sandbox in this deployment.")


def _credential_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the request carries the sandbox's credential; a 401 naming the header
    otherwise. Compared in constant time, so that timing tells nothing of the token."""
    expected: str = settings.SANDBOX_TOKEN
    scheme, _, given = request.headers.get(CREDENTIAL_HEADER, "").partition(" ")
    if (
        expected
        and scheme.lower() == "bearer"
        and secrets.compare_digest(given.strip().encode(), expected.encode())
    ):
        return None
    if scheme:
        message = "does not carry the sandbox's credential"
    else:
        message = "is required: send the credential the sandbox issued, as Bearer <token>"
    response = refuse(401, message, CREDENTIAL_HEADER)
    response["WWW-Authenticate"] = 'Bearer realm="sandbox"'
    return response


def sandbox_endpoint(name: str, *, mutating: bool = True) -> Callable[[Handler], Any]:
    """Turn a handler into a view: the credential checked, POST only, faults applied, JSON read,
    and (when `mutating`) answered at most once per idempotency key. `name` scopes the keys."""

    def decorator(handler: Handler) -> Callable[[HttpRequest], HttpResponse]:
        @csrf_exempt
        @wraps(handler)
        def view(request: HttpRequest) -> HttpResponse:
            _enabled()
            # First of all: a caller without the credential learns nothing, and cannot make
            # the sandbox wait (slow mode) or count towards its flaky answers.
            refusal = _credential_refusal(request)
            if refusal is not None:
                return refusal
            if request.method != "POST":
                response = refuse(405, f"{request.method} is not allowed here; use POST")
                response["Allow"] = "POST"
                return response
            verdict = faults_verdict()
            if verdict.fail:
                logger.info("sandbox %s failed on purpose (%s)", name, verdict.mode)
                response = refuse(503, f"the sandbox is {verdict.mode} on purpose; try again")
                response["Retry-After"] = "1"
                return response
            if verdict.delay_ms:
                time.sleep(verdict.delay_ms / 1000)
            try:
                call = Call(
                    params=_json_params(request),
                    key=_header(request, KEY_HEADER, required=mutating, max_length=255),
                    action_ref=_header(request, ACTION_HEADER, required=False, max_length=ID_MAX),
                )
            except SandboxError as exc:
                return respond(Answer(exc.status, exc.body()))
            if not mutating:
                return respond(run_answer(lambda: handler(call)))
            answer = answer_once(
                endpoint=name,
                key=call.key,
                params=call.params,
                action_ref=call.action_ref,
                perform=lambda: handler(call),
            )
            return respond(answer)

        return view

    return decorator


def _original(call: Call, reference: str) -> tuple[str | None, str | None]:
    """(original key, reference) named by an undo. Other fields are ignored: a connector may
    send the original's result along."""
    return Params(call.params, None).original(ORIGINAL_KEY, reference)


# Orders and refunds


@sandbox_endpoint("refunds")
def refunds(call: Call) -> Answer:
    params = Params(call.params, ("order_id", "amount_cents", "currency", "reason"))
    refund = refund_issue(
        order_id=params.text("order_id", max_length=ID_MAX),
        amount_cents=params.integer("amount_cents", minimum=1),
        currency=params.currency("currency"),
        reason=params.text("reason", max_length=500, allow_empty=True),
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok({**refund_data(refund), "order": order_data(refund.order)}, status=201)


@sandbox_endpoint("refunds/undo")
def refunds_undo(call: Call) -> Answer:
    original_key, refund_id = _original(call, "refund_id")
    refund, changed = refund_undo(
        refund_id=refund_id, original_key=original_key, idempotency_key=call.key
    )
    return ok(
        {"refund": refund_data(refund), "order": order_data(refund.order), "changed": changed}
    )


@sandbox_endpoint("orders/lookup", mutating=False)
def orders_lookup(call: Call) -> Answer:
    params = Params(call.params, ("order_id",))
    order_id = params.text("order_id", max_length=ID_MAX)
    order = order_find(order_id)
    if order is None:
        raise SandboxError(404, f"there is no order {order_id!r}", "order_id")
    found = [refund_data(refund) for refund in refunds_for(order.pk)]
    return ok({"order": order_data(order), "refunds": found})


@sandbox_endpoint("noop", mutating=False)
def noop(call: Call) -> Answer:
    """The undo of a read: there is nothing to take back."""
    return ok({})


# Supplier invoices


@sandbox_endpoint("invoices/match")
def invoices_match(call: Call) -> Answer:
    params = Params(call.params, ("invoice_id", "po_number", "amount_cents", "currency"))
    invoice = invoice_match(
        invoice_id=params.text("invoice_id", max_length=ID_MAX),
        po_number=params.text("po_number", max_length=ID_MAX),
        amount_cents=params.integer("amount_cents", minimum=1),
        currency=params.currency("currency"),
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok({"invoice": invoice_data(invoice)})


@sandbox_endpoint("invoices/unmatch")
def invoices_unmatch(call: Call) -> Answer:
    original_key, invoice_id = _original(call, "invoice_id")
    invoice, changed = invoice_unmatch(
        invoice_id=invoice_id,
        original_key=original_key,
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok({"invoice": invoice_data(invoice), "changed": changed})


@sandbox_endpoint("invoices/flag")
def invoices_flag(call: Call) -> Answer:
    params = Params(call.params, ("invoice_id", "note"))
    invoice = invoice_flag(
        invoice_id=params.text("invoice_id", max_length=ID_MAX),
        note=params.text("note", max_length=1000, allow_empty=True),
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok({"invoice": invoice_data(invoice)})


@sandbox_endpoint("invoices/unflag")
def invoices_unflag(call: Call) -> Answer:
    original_key, invoice_id = _original(call, "invoice_id")
    invoice, changed = invoice_unflag(
        invoice_id=invoice_id,
        original_key=original_key,
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok({"invoice": invoice_data(invoice), "changed": changed})


# Access to internal systems


@sandbox_endpoint("access/grant")
def access_grants(call: Call) -> Answer:
    params = Params(call.params, ("employee_id", "system", "role", "duration_days"))
    grant = access_grant(
        employee_id=params.text("employee_id", max_length=ID_MAX),
        system=params.text("system", max_length=ID_MAX),
        role=params.choice("role", AccessRole.values),
        duration_days=params.integer("duration_days", minimum=1, maximum=90),
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok(grant_data(grant), status=201)


@sandbox_endpoint("access/revoke")
def access_revokes(call: Call) -> Answer:
    original_key, grant_id = _original(call, "grant_id")
    grant, changed = access_revoke(
        grant_id=grant_id, original_key=original_key, idempotency_key=call.key
    )
    return ok({"grant": grant_data(grant), "changed": changed})


@sandbox_endpoint("access/reset-mfa")
def access_reset_mfa(call: Call) -> Answer:
    params = Params(call.params, ("employee_id",))
    reset = mfa_reset(
        employee_id=params.text("employee_id", max_length=ID_MAX),
        idempotency_key=call.key,
        action_ref=call.action_ref,
    )
    return ok(mfa_reset_data(reset), status=201)


# The operators' faults switch


def faults_data(faults: SandboxFaults) -> dict[str, Any]:
    return {"mode": faults.mode, "delay_ms": faults.delay_ms}


def _operator_refusal(request: HttpRequest) -> JsonResponse | None:
    """None for an operator: the sandbox token when one is configured, or a signed-in user with
    the oncall or admin role."""
    expected: str = getattr(settings, "SANDBOX_TOKEN", "")
    given = request.headers.get(TOKEN_HEADER, "")
    if expected and given:
        if secrets.compare_digest(given.encode(), expected.encode()):
            return None
        return refuse(401, "does not match the sandbox token", TOKEN_HEADER)
    if not request.user.is_authenticated:
        return refuse(401, f"sign in with the oncall or admin role, or send {TOKEN_HEADER}")
    if not user_roles(request.user) & {Role.ONCALL, Role.ADMIN}:
        return refuse(403, "the faults switch needs the oncall or admin role")
    return None


@csrf_exempt
def faults(request: HttpRequest) -> HttpResponse:
    """GET: the switch as it stands. POST {"mode": ..., "delay_ms": N}: set it.

    Exempt from CSRF for scripts holding the token; a browser session is safe anyway because
    only application/json is read, which no cross-site form can send."""
    _enabled()
    if request.method not in ("GET", "POST"):
        response = refuse(405, f"{request.method} is not allowed here; use GET or POST")
        response["Allow"] = "GET, POST"
        return response
    refusal = _operator_refusal(request)
    if refusal is not None:
        return refusal
    if request.method == "GET":
        return respond(ok(faults_data(faults_current())))
    try:
        params = Params(_json_params(request), ("mode", "delay_ms"))
        mode = params.text("mode", max_length=20)
        delay_ms = (
            params.integer("delay_ms", minimum=0, maximum=MAX_DELAY_MS)
            if params.has("delay_ms")
            else None
        )
        switched = faults_set(mode=mode, delay_ms=delay_ms)
    except SandboxError as exc:
        return respond(Answer(exc.status, exc.body()))
    return respond(ok(faults_data(switched)))


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """A JSON 404 for any other path: callers of a system of record never read HTML."""
    _enabled()
    refusal = _credential_refusal(request)
    if refusal is not None:
        return refusal
    return refuse(404, f"there is no sandbox endpoint {request.path}")
