"""The agent API: propose an action, read its state, roll it back (staff).

Agents authenticate with `Authorization: Bearer <key>`; staff with their signed-in session."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.security import HttpBearer, django_auth
from pydantic import Field

from apps.accounts.roles import Role, user_roles
from apps.actions.execution import RollbackRefused, UndoUnknown, action_rollback
from apps.actions.gate import GateRefusal, Proposal, action_propose
from apps.actions.models import Action
from apps.actions.states import IllegalTransition
from apps.audit.log import proof_document
from apps.audit.models import AuditEvent
from apps.audit.selectors import flight_record
from apps.core.api_errors import ApiError, FieldError
from apps.core.api_errors import ErrorOut as ErrorOut  # (re-exported: others import it here)
from apps.registry.models import AgentKey
from apps.registry.services import KeyRejected, agent_key_authenticate
from apps.registry.snapshot import registry_view

router = Router(tags=["actions"])

STAFF_ROLES = (Role.SUPERVISOR, Role.RISK, Role.ONCALL, Role.ADMIN)


class AgentKeyAuth(HttpBearer):
    """`Authorization: Bearer esk_...`: the agent's API key."""

    def authenticate(self, request: HttpRequest, token: str) -> AgentKey:
        # The request's view of the registry: the gate reads through the same one.
        registry = registry_view()
        try:
            key = agent_key_authenticate(token, registry=registry)
        except KeyRejected as exc:
            raise ApiError(401, f"Invalid agent key: {exc.reason}.") from None
        request.agent_key = key  # type: ignore[attr-defined]
        request.registry = registry  # type: ignore[attr-defined]
        return key


agent_auth = AgentKeyAuth()


class Usage(Schema):
    """The model call behind a proposal: priced from the model price table."""

    model: str = Field(min_length=1, max_length=120, description="model name as priced")
    provider: str = Field(default="", max_length=40, description="provider, as priced")
    input_tokens: int = Field(ge=0, le=100_000_000, description="tokens sent to the model")
    output_tokens: int = Field(ge=0, le=100_000_000, description="tokens the model returned")


class ProposalIn(Schema):
    workflow: str = Field(min_length=1, max_length=63, description="slug of the workflow")
    tool: str = Field(min_length=1, max_length=63, description="slug of the tool")
    params: dict[str, Any] = Field(description="validated against the tool's input schema")
    subject: str = Field(
        default="", max_length=200, description='the business object, such as "order:1042"'
    )
    confidence: Decimal | None = Field(
        default=None, ge=0, le=1, max_digits=6, decimal_places=4, description="0 to 1"
    )
    reasoning: str = Field(default="", max_length=10_000, description="why, in short")
    evidence: list[Any] = Field(default_factory=list, max_length=200, description="retrieval trace")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the same key from the same agent returns the first action, never a second",
    )
    usage: Usage | None = Field(
        default=None, description="model usage of the step that proposed it, for cost records"
    )
    trace_id: str = Field(
        default="", max_length=100, description="the agent's trace id, kept with every record"
    )
    segment: str = Field(default="", max_length=63, description="customer segment, if known")


class ReasonOut(Schema):
    policy: str = Field(description="the @id of the policy (or rule) that determined the decision")
    message: str = Field(description="its message, for people")


class ActionOut(Schema):
    id: UUID = Field(description="the action's id")
    status: str = Field(
        description="proposed, denied, observed, blocked, pending_review, approved, rejected, "
        "expired, queued, running, succeeded, failed, cancelled, rolled_back or rollback_failed"
    )
    decision: Literal["allow", "hold", "deny", "observe"] = Field(
        description="the gate's verdict: allow (runs now), hold (a person decides), deny, or "
        "observe (logged, never run)"
    )
    reasons: list[ReasonOut] = Field(description="the policies that determined the decision")
    book_version: int | None = Field(description="the Decision Book version that governed it")
    workflow: str = Field(description="slug of the workflow")
    tool: str = Field(description="slug of the tool")
    subject: str = Field(description="the business object")
    spot_check: bool = Field(description="picked for a person's check after it runs")
    result: dict[str, Any] | None = Field(description="what the system of record answered")
    error: str = Field(description="why it failed, when it did")
    created_at: datetime = Field(description="when it was proposed")
    queued_at: datetime | None = Field(description="when it was handed to a worker")
    started_at: datetime | None = Field(description="when a worker started it")
    finished_at: datetime | None = Field(description="when it succeeded or failed")
    rolled_back_at: datetime | None = Field(description="when it was undone")


def action_out(action: Action) -> ActionOut:
    return ActionOut(
        id=action.pk,
        status=action.status,
        decision=action.decision,  # type: ignore[arg-type]
        reasons=[ReasonOut(**reason) for reason in action.reasons],
        book_version=action.book_version.number if action.book_version else None,
        workflow=action.workflow.slug,
        tool=action.tool.slug,
        subject=action.subject,
        spot_check=action.spot_check,
        result=action.result,
        error=action.error,
        created_at=action.created_at,
        queued_at=action.queued_at,
        started_at=action.started_at,
        finished_at=action.finished_at,
        rolled_back_at=action.rolled_back_at,
    )


@router.post(
    "/actions",
    auth=agent_auth,
    response={200: ActionOut, 201: ActionOut, **{c: ErrorOut for c in (400, 401, 403, 409, 422)}},
    summary="Propose an action",
    description=(
        "The gate checks the key, the agent's status and scope, kill switches, the params "
        "against the tool's schema and the workflow's active Decision Book, records the action "
        "with its decision, and answers 201. An allowed action is queued for execution at once. "
        "A repeated idempotency key answers 200 with the first action. 401: bad key; 403: "
        "agent or key out of scope; 409: the idempotency key was used for a different action; "
        "422: invalid input, naming the field."
    ),
)
def propose(request: HttpRequest, payload: ProposalIn) -> Status[ActionOut]:
    key: AgentKey = request.agent_key  # type: ignore[attr-defined]
    proposal = Proposal(
        workflow=payload.workflow,
        tool=payload.tool,
        params=payload.params,
        subject=payload.subject,
        confidence=payload.confidence,
        reasoning=payload.reasoning,
        evidence=payload.evidence,
        idempotency_key=payload.idempotency_key,
        usage=payload.usage.model_dump() if payload.usage else {},
        trace_id=payload.trace_id,
        segment=payload.segment,
    )
    try:
        outcome = action_propose(
            key=key, proposal=proposal, registry=getattr(request, "registry", None)
        )
    except GateRefusal as refusal:
        errors = [FieldError(refusal.field, refusal.message)] if refusal.field else []
        raise ApiError(refusal.status, refusal.detail, errors) from None
    return Status(201 if outcome.created else 200, action_out(outcome.action))


def _visible_action(request: HttpRequest, action_id: UUID) -> Action:
    action = (
        Action.objects.select_related("workflow", "tool", "book_version", "agent")
        .filter(pk=action_id)
        .first()
    )
    key: AgentKey | None = getattr(request, "agent_key", None)
    if action is None or (key is not None and action.agent_id != key.agent_id):
        # Another agent's action is as invisible as a missing one.
        raise ApiError(404, f"No action {action_id}.")
    if key is None and not user_roles(request.user).intersection(STAFF_ROLES):
        raise ApiError(403, "Reading actions needs the supervisor, risk, oncall or admin role.")
    return action


@router.get(
    "/actions/{action_id}",
    auth=[agent_auth, django_auth],
    response={200: ActionOut, **{c: ErrorOut for c in (401, 403, 404, 422)}},
    summary="Read an action",
    description="State, decision, reasons, result or error and timestamps. An agent sees its own "
    "actions; staff (supervisor, risk, oncall, admin) see all.",
)
def read(request: HttpRequest, action_id: UUID) -> ActionOut:
    return action_out(_visible_action(request, action_id))


class ProvenEventOut(Schema):
    leaf_index: int = Field(description="the event's place in the log")
    leaf_hash: str = Field(description="SHA-256 of 0x00 and the entry, hex")
    entry: str = Field(description="the event's entry encoding, base64")
    audit_path: list[str] = Field(description="RFC 9162 inclusion proof, hex hashes")
    tree_size: int = Field(description="the size of the checkpoint it is proven against")
    root_hash: str = Field(description="that checkpoint's root hash, hex")
    payload_canonical: str | None = Field(description="the payload as digested (canonical JSON)")
    event: dict[str, Any] = Field(description="the entry's fields, decoded")


class PendingEventOut(Schema):
    sequence: int
    verb: str
    created_at: datetime


class ProofOut(Schema):
    checkpoint: str | None = Field(description="the signed note the events are proven against")
    tree_size: int
    root_hash: str | None
    events: list[ProvenEventOut]
    pending: list[PendingEventOut] = Field(
        description="events not yet taken into the log (it takes them within seconds)"
    )


@router.get(
    "/actions/{action_id}/proof",
    auth=[agent_auth, django_auth],
    response={200: ProofOut, **{c: ErrorOut for c in (401, 403, 404, 422)}},
    summary="Prove an action's record",
    description="Every audit event of the action with an RFC 9162 inclusion proof against the "
    "log's latest signed checkpoint. Check it with the stand-alone verifier "
    "(`python -m escapement_client.transparency verify-proof`) and the key of "
    "`/api/v1/audit/key`. An agent proves its own actions, without the events its reviewers "
    "wrote; staff any, whole.",
)
def proof(request: HttpRequest, action_id: UUID) -> dict[str, Any]:
    action = _visible_action(request, action_id)
    events = list(flight_record(action_id=str(action.pk)))
    if getattr(request, "agent_key", None) is not None:
        # An agent proves what it and the product did; who among the staff decided, and why,
        # stays with the staff (as in the action it reads).
        events = [event for event in events if event.actor_type != AuditEvent.ActorType.USER]
    return proof_document(events)


@router.post(
    "/actions/{action_id}/rollback",
    auth=django_auth,
    response={200: ActionOut, **{c: ErrorOut for c in (401, 403, 404, 409, 422, 504)}},
    summary="Roll back an action (staff)",
    description="Calls the tool's undo: `rolled_back`, or `rollback_failed` with the error. A "
    "`rollback_failed` action can be rolled back again (a retry of the same undo). 409 when the "
    "action has neither succeeded nor failed to roll back, or its tool is irreversible; 504 when "
    "the system of record gave no definite answer, even to the same undo sent again (the action "
    "keeps its status: retry later). Needs the oncall or admin role.",
)
def rollback(request: HttpRequest, action_id: UUID) -> ActionOut:
    if not user_roles(request.user).intersection((Role.ONCALL, Role.ADMIN)):
        raise ApiError(403, "Rolling back needs the oncall or admin role.")
    action = _visible_action(request, action_id)
    user = request.user
    assert isinstance(user, User)
    try:
        action = action_rollback(action_id=action.pk, actor=user)
    except IllegalTransition as exc:
        raise ApiError(
            409, f"Action is {exc.current}; only a succeeded action can be rolled back."
        ) from None
    except RollbackRefused as exc:
        raise ApiError(409, str(exc)) from None
    except UndoUnknown as exc:
        raise ApiError(504, f"{exc.message[0].upper()}{exc.message[1:]}.") from None
    return action_out(_visible_action(request, action.pk))
