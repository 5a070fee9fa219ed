"""The on-call API: kill switches and their proof, drains, rollbacks. For scripts and pagers,
with a staff token (`Authorization: Bearer est_...`, see `manage.py staff_token`) or a signed-in
session (with its CSRF token); either way the user needs the oncall role.

Drains and rollbacks act on a set of actions chosen when they are asked for. To act on exactly
the set a person confirmed, read it first (`GET /drains/preview`, `GET /rollbacks/preview`) and
send its `expected_ids` back with the request: if the set chosen then is different, nothing is
done and the answer is a 409 naming `expected_ids` and what changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NoReturn
from uuid import UUID

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.security import django_auth
from pydantic import Field

from apps.accounts.api import require_role
from apps.accounts.roles import Role
from apps.accounts.staff_tokens import staff_token_auth
from apps.actions.models import Action
from apps.core.api_errors import ApiError, ErrorOut, FieldError
from apps.killswitches.confirmation import SetChanged
from apps.killswitches.drain import drain_preview, drain_run
from apps.killswitches.models import KillSwitch, RollbackRun
from apps.killswitches.proof import switch_proof
from apps.killswitches.rollback import rollback_preview, rollback_request
from apps.killswitches.selectors import switches_listed
from apps.killswitches.switches import (
    SwitchConflict,
    SwitchError,
    switch_engage,
    switch_release,
)

router = Router(tags=["on-call"], auth=[staff_token_auth, django_auth])

ScopeName = Literal["global", "workflow", "agent", "tool"]


ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 403, 404, 409, 422)}


class EngageIn(Schema):
    scope: str = Field(description="global, workflow, agent or tool")
    target: str = Field(default="", max_length=63, description="slug; empty for global")
    reason: str = Field(description="why: shown on the console and kept in the audit")


class ReleaseIn(Schema):
    reason: str = Field(description="why the stop can end")


class SwitchOut(Schema):
    id: int
    scope: str
    target: str
    kind: str = Field(description="manual (on-call) or quarantine (the behavioural firewall)")
    reason: str
    evidence: dict[str, Any]
    engaged: bool
    engaged_by: str
    engaged_via: str
    engaged_at: datetime
    released_by: str
    released_at: datetime | None
    release_reason: str


class ReleasedOut(SwitchOut):
    agent_reactivated: bool = Field(description="a released quarantine made its agent active")
    resumed: int = Field(description="queued actions sent back to the workers")


class DrainIn(Schema):
    scope: str = Field(description="global, workflow, agent or tool")
    target: str = Field(default="", max_length=63)
    mode: str = Field(description="cancel, or hand_over (to the escalation owner)")
    reason: str
    expected_ids: list[UUID] | None = Field(
        default=None,
        description="the ids of the actions confirmed, as the preview listed them; when given, "
        "drains only if the set chosen now is exactly this one, else 409 and nothing is done",
    )


class DrainOut(Schema):
    id: int
    scope: str
    target: str
    mode: str
    reason: str
    requested_by: str
    created_at: datetime
    finished_at: datetime | None
    report: list[dict[str, Any]] = Field(description="each action and what happened to it")


class RollbackIn(Schema):
    scope: str = Field(description="agent or workflow")
    target: str = Field(max_length=63)
    count: int = Field(description="how many of the most recent succeeded actions")
    reason: str
    expected_ids: list[UUID] | None = Field(
        default=None,
        description="the ids of the actions confirmed, newest first, as the preview listed "
        "them; when given, rolls back only if the set chosen now is exactly this one, in this "
        "order, else 409 and nothing is done",
    )


class PlannedOut(Schema):
    id: UUID
    agent: str
    tool: str
    subject: str
    status: str = Field(description="queued or pending_review (drain); succeeded (rollback)")
    reversible: bool = Field(description="false: a rollback lists it for remediation by hand")
    created_at: datetime
    finished_at: datetime | None


class DrainPreviewOut(Schema):
    scope: str
    target: str
    queued: int
    held: int
    expected_ids: list[UUID] = Field(description="send these back to drain exactly this set")
    actions: list[PlannedOut] = Field(description="oldest first")


class RollbackPreviewOut(Schema):
    scope: str
    target: str
    count: int
    expected_ids: list[UUID] = Field(
        description="send these back to roll back exactly this set, newest first"
    )
    actions: list[PlannedOut] = Field(description="newest first")


class RollbackOut(Schema):
    id: int
    scope: str
    target: str
    count: int
    state: str = Field(description="pending, running or finished")
    done: int
    total: int
    planned: list[str] = Field(description="the actions chosen, newest first")
    report: list[dict[str, Any]] = Field(
        description="each action undone so far: rolled_back, rollback_failed, undo_unknown "
        "(the system of record gave no definite answer: retry with "
        "`POST /actions/{id}/rollback`), manual (irreversible: remediate by hand) or skipped"
    )
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _oncall(request: HttpRequest) -> User:
    require_role(request, Role.ONCALL)
    user = request.user
    assert isinstance(user, User)
    return user


def _raise(exc: SwitchError, preview: str = "") -> NoReturn:
    if isinstance(exc, SetChanged):
        hint = f"; {preview} shows the set now" if preview else ""
        raise ApiError(409, exc.detail, [FieldError(exc.field, exc.change + hint)]) from None
    if isinstance(exc, SwitchConflict):
        errors = [FieldError(exc.field, exc.message)] if exc.field else []
        raise ApiError(409, exc.message, errors) from None
    if exc.field == "switch":
        raise ApiError(404, exc.message) from None
    errors = [FieldError(exc.field, exc.message)] if exc.field else []
    raise ApiError(422, f"Invalid input: {exc.field or 'body'}.", errors) from None


def switch_out(switch: KillSwitch) -> SwitchOut:
    return SwitchOut(
        id=switch.pk,
        scope=switch.scope,
        target=switch.target,
        kind=switch.kind,
        reason=switch.reason,
        evidence=switch.evidence,
        engaged=switch.engaged,
        engaged_by=switch.engaged_by,
        engaged_via=switch.engaged_via,
        engaged_at=switch.engaged_at,
        released_by=switch.released_by,
        released_at=switch.released_at,
        release_reason=switch.release_reason,
    )


def _switch(switch_id: int) -> KillSwitch:
    switch = KillSwitch.objects.filter(pk=switch_id).first()
    if switch is None:
        raise ApiError(404, f"No kill switch {switch_id}.")
    return switch


@router.get(
    "/killswitches",
    response={200: list[SwitchOut], **ERRORS},
    summary="List kill switches",
    description="Engaged switches first, then the most recently released (up to `limit`).",
)
def list_switches(
    request: HttpRequest, engaged: bool | None = None, limit: int = 50
) -> list[SwitchOut]:
    _oncall(request)
    if not 1 <= limit <= 500:
        raise ApiError(422, "Invalid input: limit.", [FieldError("limit", "between 1 and 500")])
    return [switch_out(switch) for switch in switches_listed(engaged=engaged, limit=limit)]


@router.post(
    "/killswitches",
    response={201: SwitchOut, **ERRORS},
    summary="Engage a kill switch",
    description="From the moment it is engaged no action in its scope starts running and the "
    "gate records new proposals there as blocked. 409 when on-call already stopped that scope.",
)
def engage(request: HttpRequest, payload: EngageIn) -> Status[SwitchOut]:
    user = _oncall(request)
    try:
        switch = switch_engage(
            scope=payload.scope,
            target=payload.target,
            reason=payload.reason,
            actor=user,
            via="api",
        )
    except SwitchError as exc:
        _raise(exc)
    return Status(201, switch_out(switch))


@router.get("/killswitches/{switch_id}", response={200: SwitchOut, **ERRORS}, summary="Read one")
def read_switch(request: HttpRequest, switch_id: int) -> SwitchOut:
    _oncall(request)
    return switch_out(_switch(switch_id))


@router.post(
    "/killswitches/{switch_id}/release",
    response={200: ReleasedOut, **ERRORS},
    summary="Release a kill switch",
    description="Queued actions it held back go to the workers again; releasing a quarantine "
    "makes its agent active again. 409 when already released.",
)
def release(request: HttpRequest, switch_id: int, payload: ReleaseIn) -> ReleasedOut:
    user = _oncall(request)
    try:
        released = switch_release(switch_id=switch_id, reason=payload.reason, actor=user, via="api")
    except SwitchError as exc:
        _raise(exc)
    return ReleasedOut(
        **switch_out(released.switch).model_dump(),
        agent_reactivated=released.agent_reactivated,
        resumed=released.resumed,
    )


@router.get(
    "/killswitches/{switch_id}/proof",
    response={200: dict[str, Any], **ERRORS},
    summary="The proof of an engagement",
    description="Engaged at T; the actions running at T and how they ended; the number started "
    "after T (must be 0; `holds` says so); proposals blocked since; queued work held back.",
)
def proof(request: HttpRequest, switch_id: int) -> dict[str, Any]:
    _oncall(request)
    return switch_proof(_switch(switch_id)).as_dict()


def planned_out(action: Action) -> PlannedOut:
    return PlannedOut(
        id=action.pk,
        agent=action.agent.slug,
        tool=action.tool.slug,
        subject=action.subject,
        status=action.status,
        reversible=action.tool.reversible,
        created_at=action.created_at,
        finished_at=action.finished_at,
    )


@router.get(
    "/drains/preview",
    response={200: DrainPreviewOut, **ERRORS},
    summary="What a drain would touch now",
    description="The queued and held actions of the scope, oldest first, and their ids to send "
    "back as `expected_ids` so that the drain touches exactly these.",
)
def drain_preview_read(request: HttpRequest, scope: str, target: str = "") -> DrainPreviewOut:
    _oncall(request)
    try:
        plan = drain_preview(scope=scope, target=target)
    except SwitchError as exc:
        _raise(exc)
    return DrainPreviewOut(
        scope=scope.strip().lower(),
        target=target.strip(),
        queued=plan.queued,
        held=plan.held,
        expected_ids=[action.pk for action in plan.actions],
        actions=[planned_out(action) for action in plan.actions],
    )


def drain_out(run: Any) -> DrainOut:
    return DrainOut(
        id=run.pk,
        scope=run.scope,
        target=run.target,
        mode=run.mode,
        reason=run.reason,
        requested_by=run.requested_by,
        created_at=run.created_at,
        finished_at=run.finished_at,
        report=run.report,
    )


@router.post(
    "/drains",
    response={200: DrainOut, **ERRORS},
    summary="Drain a scope",
    description="Queued and held actions of the scope are cancelled (`cancel`) or handed to "
    "the escalation owner (`hand_over`); the report lists each action and its outcome. With "
    "`expected_ids` (from `GET /drains/preview`), 409 and nothing drained when the queued and "
    "held actions are no longer exactly those.",
)
def drain(request: HttpRequest, payload: DrainIn) -> DrainOut:
    user = _oncall(request)
    try:
        run = drain_run(
            scope=payload.scope,
            target=payload.target,
            mode=payload.mode,
            reason=payload.reason,
            actor=user,
            expected=_ids(payload.expected_ids),
        )
    except SwitchError as exc:
        _raise(exc, preview="GET /api/v1/drains/preview")
    return drain_out(run)


def rollback_out(run: RollbackRun) -> RollbackOut:
    return RollbackOut(
        id=run.pk,
        scope=run.scope,
        target=run.target,
        count=run.count,
        state=run.state,
        done=run.done,
        total=run.total,
        planned=run.planned,
        report=run.report,
        requested_by=run.requested_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _ids(ids: list[UUID] | None) -> list[str] | None:
    return None if ids is None else [str(action_id) for action_id in ids]


@router.get(
    "/rollbacks/preview",
    response={200: RollbackPreviewOut, **ERRORS},
    summary="What a rollback would undo now",
    description="The `count` most recent succeeded actions of the agent or workflow, newest "
    "first, and their ids to send back as `expected_ids` so that the rollback undoes exactly "
    "these.",
)
def rollback_preview_read(
    request: HttpRequest, scope: str, target: str, count: int
) -> RollbackPreviewOut:
    _oncall(request)
    try:
        chosen = rollback_preview(scope=scope, target=target, count=count)
    except SwitchError as exc:
        _raise(exc)
    return RollbackPreviewOut(
        scope=scope.strip().lower(),
        target=target.strip(),
        count=count,
        expected_ids=[action.pk for action in chosen],
        actions=[planned_out(action) for action in chosen],
    )


@router.post(
    "/rollbacks",
    response={202: RollbackOut, **ERRORS},
    summary="Roll back the last N actions of an agent or workflow",
    description="Chooses the N most recent succeeded actions, newest first, and has a worker "
    "undo them through each tool's undo; poll `GET /rollbacks/{id}` for the progress and the "
    "per-action report. Irreversible ones are reported as `manual`. With `expected_ids` (from "
    "`GET /rollbacks/preview`), 409 and nothing rolled back when the most recent actions are no "
    "longer exactly those, in that order.",
)
def rollback(request: HttpRequest, payload: RollbackIn) -> Status[RollbackOut]:
    user = _oncall(request)
    try:
        run = rollback_request(
            scope=payload.scope,
            target=payload.target,
            count=payload.count,
            reason=payload.reason,
            actor=user,
            expected=_ids(payload.expected_ids),
        )
    except SwitchError as exc:
        _raise(exc, preview="GET /api/v1/rollbacks/preview")
    return Status(202, rollback_out(run))


@router.get(
    "/rollbacks/{run_id}", response={200: RollbackOut, **ERRORS}, summary="A rollback's progress"
)
def rollback_read(request: HttpRequest, run_id: int) -> RollbackOut:
    _oncall(request)
    run = RollbackRun.objects.filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, f"No rollback {run_id}.")
    return rollback_out(run)
