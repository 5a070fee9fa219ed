"""The on-call console (oncall role): every switch with its proof, quarantined agents, circuit
breakers, the incident history; engage and release, drain, roll back. Each change goes through
a confirmation step that says what it will touch; nothing happens on the first POST. Drain and
rollback show the very actions they will touch, and act on exactly those: if the set changed
in between, the step is shown again with the new set and what changed (409)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.actions.models import Action, Status
from apps.core.http import AuthenticatedRequest
from apps.killswitches.confirmation import SetChanged
from apps.killswitches.coverage import in_scope
from apps.killswitches.drain import DrainPlan, drain_preview, drain_run
from apps.killswitches.forms import DrainForm, EngageForm, ReleaseForm, RollbackForm
from apps.killswitches.models import DrainRun, KillSwitch, RollbackRun
from apps.killswitches.proof import switch_proof
from apps.killswitches.rollback import (
    RETRYABLE,
    rollback_candidates,
    rollback_request,
    rollback_retry,
)
from apps.killswitches.selectors import (
    circuits,
    engaged_with_proof,
    incident_history,
    quarantined_agents,
    recent_switches,
)
from apps.killswitches.switches import SwitchError, switch_engage, switch_release
from apps.registry.models import Agent, Tool, Workflow

oncall_only = role_required(Role.ONCALL)


def _confirmed(request: HttpRequest) -> bool:
    return request.POST.get("confirm") == "yes"


def _state() -> dict[str, Any]:
    return {
        "proofs": engaged_with_proof(),
        "quarantined": quarantined_agents(),
        "circuits": list(circuits()),
        "released": recent_switches(10),
        "rollbacks": list(RollbackRun.objects.order_by("-created_at")[:5]),
        "history": incident_history(),
    }


def _console(
    request: HttpRequest,
    *,
    engage: EngageForm | None = None,
    drain: DrainForm | None = None,
    rollback: RollbackForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        **_state(),
        "engage_form": engage or EngageForm(prefix="engage"),
        "drain_form": drain or DrainForm(prefix="drain"),
        "rollback_form": rollback or RollbackForm(prefix="rollback"),
        "targets": _targets(),
    }
    return render(request, "killswitches/console.html", context, status=status)


def _targets() -> dict[str, list[str]]:
    return {
        "agent": list(Agent.objects.order_by("slug").values_list("slug", flat=True)),
        "workflow": list(Workflow.objects.order_by("slug").values_list("slug", flat=True)),
        "tool": list(Tool.objects.order_by("slug").values_list("slug", flat=True)),
    }


def _in_scope_counts(scope: str, target: str) -> dict[str, int]:
    actions = Action.objects.filter(in_scope(scope, target))
    return {
        "queued": actions.filter(status=Status.QUEUED).count(),
        "held": actions.filter(status=Status.PENDING_REVIEW).count(),
        "running": actions.filter(status=Status.RUNNING).count(),
    }


@require_GET
@oncall_only
def console(request: AuthenticatedRequest) -> HttpResponse:
    if request.htmx:
        return render(request, "killswitches/console.html#console-state", _state())
    return _console(request)


@require_POST
@oncall_only
def engage(request: AuthenticatedRequest) -> HttpResponse:
    form = EngageForm(request.POST, prefix="engage")
    if not form.is_valid():
        return _console(request, engage=form, status=422)
    data = form.cleaned_data
    if not _confirmed(request):
        return render(
            request,
            "killswitches/confirm.html",
            {
                "step": "engage",
                "form": form,
                "scope": data["scope"],
                "target": data["target"],
                "reason": data["reason"],
                "counts": _in_scope_counts(data["scope"], data["target"]),
            },
        )
    try:
        switch = switch_engage(
            scope=data["scope"],
            target=data["target"],
            reason=data["reason"],
            actor=request.user,
            via="console",
        )
    except SwitchError as exc:
        form.add_error(None, exc.message)
        return _console(request, engage=form, status=409)
    messages.success(request, f"Kill switch engaged on {switch.where}.")
    return redirect("killswitches:switch", switch_id=switch.pk)


@require_GET
@oncall_only
def switch_detail(request: AuthenticatedRequest, switch_id: int) -> HttpResponse:
    switch = get_object_or_404(KillSwitch, pk=switch_id)
    context = {"proof": switch_proof(switch), "switch": switch, "release_form": None}
    if request.htmx:
        return render(request, "killswitches/switch.html#proof", context)
    if switch.engaged:
        context["release_form"] = ReleaseForm(prefix="release")
    return render(request, "killswitches/switch.html", context)


@require_POST
@oncall_only
def release(request: AuthenticatedRequest, switch_id: int) -> HttpResponse:
    switch = get_object_or_404(KillSwitch, pk=switch_id)
    form = ReleaseForm(request.POST, prefix="release")
    if not form.is_valid():
        context = {"proof": switch_proof(switch), "switch": switch, "release_form": form}
        return render(request, "killswitches/switch.html", context, status=422)
    if not _confirmed(request):
        return render(
            request,
            "killswitches/confirm.html",
            {
                "step": "release",
                "form": form,
                "switch": switch,
                "reason": form.cleaned_data["reason"],
                "counts": _in_scope_counts(switch.scope, switch.target),
            },
        )
    try:
        released = switch_release(
            switch_id=switch.pk,
            reason=form.cleaned_data["reason"],
            actor=request.user,
            via="console",
        )
    except SwitchError as exc:
        messages.error(request, exc.message)
        return redirect("killswitches:switch", switch_id=switch.pk)
    note = (
        f" {released.resumed} queued action(s) sent back to the workers."
        if released.resumed
        else ""
    )
    if released.agent_reactivated:
        note += f" Agent {switch.target} is active again."
    messages.success(request, f"Kill switch on {switch.where} released.{note}")
    return redirect("killswitches:console")


def _rows(actions: list[Action], changed: SetChanged | None) -> list[dict[str, Any]]:
    """The actions of a confirmation step, each marked when it was not in the set confirmed."""
    added = changed.added_ids if changed else frozenset()
    return [{"action": action, "new": str(action.pk) in added} for action in actions]


def _drain_step(
    request: HttpRequest,
    form: DrainForm,
    plan: DrainPlan,
    changed: SetChanged | None = None,
) -> HttpResponse:
    data = form.cleaned_data
    context = {
        "step": "drain",
        "form": form,
        "scope": data["scope"],
        "target": data["target"],
        "mode": data["mode"],
        "reason": data["reason"],
        "plan": plan,
        "rows": _rows(plan.actions, changed),
        "expected": ",".join(plan.ids),
        "changed": changed,
    }
    return render(request, "killswitches/confirm.html", context, status=409 if changed else 200)


@require_POST
@oncall_only
def drain(request: AuthenticatedRequest) -> HttpResponse:
    form = DrainForm(request.POST, prefix="drain")
    if not form.is_valid():
        return _console(request, drain=form, status=422)
    data = form.cleaned_data
    if not _confirmed(request) or data["expected"] is None:
        return _drain_step(request, form, drain_preview(scope=data["scope"], target=data["target"]))
    try:
        run = drain_run(
            scope=data["scope"],
            target=data["target"],
            mode=data["mode"],
            reason=data["reason"],
            actor=request.user,
            expected=data["expected"],
        )
    except SetChanged as changed:
        return _drain_step(request, form, DrainPlan(changed.current), changed)
    except SwitchError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return _console(request, drain=form, status=422)
    return redirect("killswitches:drain_detail", run_id=run.pk)


@require_GET
@oncall_only
def drain_detail(request: AuthenticatedRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(DrainRun, pk=run_id)
    counts: dict[str, int] = {}
    for entry in run.report:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    return render(request, "killswitches/drain.html", {"run": run, "counts": counts})


def _rollback_step(
    request: HttpRequest,
    form: RollbackForm,
    chosen: list[Action],
    changed: SetChanged | None = None,
) -> HttpResponse:
    data = form.cleaned_data
    context = {
        "step": "rollback",
        "form": form,
        "scope": data["scope"],
        "target": data["target"],
        "count": data["count"],
        "reason": data["reason"],
        "chosen": chosen,
        "rows": _rows(chosen, changed),
        "expected": ",".join(str(action.pk) for action in chosen),
        "changed": changed,
    }
    return render(request, "killswitches/confirm.html", context, status=409 if changed else 200)


@require_POST
@oncall_only
def rollback(request: AuthenticatedRequest) -> HttpResponse:
    form = RollbackForm(request.POST, prefix="rollback")
    if not form.is_valid():
        return _console(request, rollback=form, status=422)
    data = form.cleaned_data
    if not _confirmed(request) or data["expected"] is None:
        chosen = rollback_candidates(
            scope=data["scope"], target=data["target"], count=data["count"]
        )
        if not chosen:
            form.add_error("target", f"{data['target']} has no succeeded action to roll back")
            return _console(request, rollback=form, status=422)
        return _rollback_step(request, form, chosen)
    try:
        run = rollback_request(
            scope=data["scope"],
            target=data["target"],
            count=data["count"],
            reason=data["reason"],
            actor=request.user,
            expected=data["expected"],
        )
    except SetChanged as changed:
        return _rollback_step(request, form, changed.current, changed)
    except SwitchError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return _console(request, rollback=form, status=422)
    return redirect("killswitches:rollback_detail", run_id=run.pk)


@require_GET
@oncall_only
def rollback_detail(request: AuthenticatedRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(RollbackRun, pk=run_id)
    counts: dict[str, int] = {}
    for entry in run.report:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    context = {"run": run, "counts": counts, "retryable": RETRYABLE}
    if request.htmx:
        return render(request, "killswitches/rollback.html#rollback-progress", context)
    return render(request, "killswitches/rollback.html", context)


@require_POST
@oncall_only
def rollback_retry_undo(
    request: AuthenticatedRequest, run_id: int, action_id: UUID
) -> HttpResponse:
    """Retry, from its row of the report, an undo that failed or whose outcome is unknown; then
    back to the report, which shows the row's new outcome."""
    run = get_object_or_404(RollbackRun, pk=run_id)
    try:
        entry = rollback_retry(run_id=run.pk, action_id=action_id, actor=request.user)
    except SwitchError as exc:
        messages.error(request, exc.message)
    else:
        text = f"Undo of {entry['subject'] or entry['action']} retried: {entry['outcome']}."
        if entry["outcome"] == "rolled_back":
            messages.success(request, text)
        else:
            messages.error(request, f"{text} {entry['detail']}")
    return redirect("killswitches:rollback_detail", run_id=run.pk)
