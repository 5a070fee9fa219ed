"""Decision Book pages (risk role): workflows, the draft editor with its compiled Cedar,
validation and try-it panel (htmx), publishing, history, diff and rollback."""

from __future__ import annotations

import copy
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.books.compilation import action_facts, book_compile, book_decide, book_problems
from apps.books.forms import DraftForm, PublishForm, TryForm, WorkflowForm
from apps.books.models import BookVersion
from apps.books.selectors import (
    active_version,
    draft_of,
    history,
    version_diff,
    version_text,
    workflow_rows,
)
from apps.books.services import (
    BookError,
    PublishRefused,
    book_publish,
    book_rollback,
    draft_create,
    draft_update,
    workflow_create,
)
from apps.core.http import AuthenticatedRequest
from apps.registry.models import Agent, Tool, Workflow

risk_only = role_required(Role.RISK)


@require_http_methods(["GET", "POST"])
@risk_only
def index(request: AuthenticatedRequest) -> HttpResponse:
    form = WorkflowForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            workflow = workflow_create(user=request.user, **form.cleaned_data)
        except BookError as exc:
            form.add_error(exc.field or None, exc.message)
        else:
            messages.success(request, f"Workflow {workflow.slug} created. Write its first book.")
            return redirect("books:workflow", slug=workflow.slug)
    return render(request, "books/index.html", {"rows": workflow_rows(), "form": form})


@require_GET
@risk_only
def workflow(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(Workflow, slug=slug)
    active = active_version(flow)
    return render(
        request,
        "books/workflow.html",
        {
            "workflow": flow,
            "active": active,
            "active_text": version_text(active) if active else "",
            "draft": draft_of(flow),
            "versions": history(flow),
            "rollback_form": PublishForm(),
        },
    )


@require_GET
@risk_only
def version_detail(request: AuthenticatedRequest, slug: str, number: int) -> HttpResponse:
    version = get_object_or_404(BookVersion, workflow__slug=slug, number=number)
    return render(
        request,
        "books/version.html",
        {"version": version, "workflow": version.workflow, "text": version_text(version)},
    )


@require_GET
@risk_only
def diff(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(Workflow, slug=slug)
    versions = list(history(flow))
    numbers = [version.number for version in versions]
    errors: list[str] = []

    def pick(name: str, fallback: int | None) -> int | None:
        raw = request.GET.get(name)
        if raw is None:
            return fallback
        if not raw.isdigit() or int(raw) not in numbers:
            errors.append(f"{name}: no published version {raw!r} of {flow.slug}")
            return None
        return int(raw)

    newer = pick("to", numbers[0] if numbers else None)
    older = pick("from", numbers[1] if len(numbers) > 1 else None)
    lines = []
    old = new = None
    if not errors and older is not None and newer is not None:
        old = next(v for v in versions if v.number == older)
        new = next(v for v in versions if v.number == newer)
        lines = version_diff(old, new)
    status = 400 if errors else 200
    return render(
        request,
        "books/diff.html",
        {
            "workflow": flow,
            "versions": versions,
            "old": old,
            "new": new,
            "lines": lines,
            "errors": errors,
        },
        status=status,
    )


@require_POST
@risk_only
def rollback(request: AuthenticatedRequest, slug: str, number: int) -> HttpResponse:
    version = get_object_or_404(BookVersion, workflow__slug=slug, number=number)
    form = PublishForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Rollback needs a change note saying why.")
        return redirect("books:workflow", slug=slug)
    try:
        restored = book_rollback(
            version_id=version.pk, user=request.user, change_note=form.cleaned_data["change_note"]
        )
    except BookError as exc:
        messages.error(request, exc.message)
        return redirect("books:workflow", slug=slug)
    messages.success(
        request, f"{slug} {restored.label} is active again with the content of {version.label}."
    )
    return redirect("books:workflow", slug=slug)


@require_POST
@risk_only
def draft_start(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(Workflow, slug=slug)
    draft_create(workflow=flow, user=request.user)
    return redirect("books:draft", slug=slug)


def _tools() -> list[Tool]:
    return list(Tool.objects.order_by("slug"))


def _unsaved(draft: BookVersion, form: DraftForm) -> BookVersion:
    """A copy of the draft carrying the form's content, never saved: what preview, validate
    and try-it look at, so that the author sees the effect before saving."""
    candidate = copy.copy(draft)
    for name, value in form.book_values().items():
        setattr(candidate, name, value)
    candidate.policy_text, candidate.cedar_schema = book_compile(candidate)
    return candidate


def _editor(
    request: HttpRequest,
    draft: BookVersion,
    form: DraftForm,
    *,
    publish_form: PublishForm | None = None,
    problems: list[Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    flow = draft.workflow
    agents = list(Agent.objects.filter(workflows=flow).values_list("slug", flat=True))
    context = {
        "workflow": flow,
        "draft": draft,
        "active": active_version(flow),
        "form": form,
        "publish_form": publish_form or PublishForm(),
        "problems": problems,
        "compiled": draft.policy_text,
        "schema": draft.cedar_schema,
        "try_form": TryForm(prefix="try", agents=agents, tools=[t.slug for t in form.tools]),
    }
    return render(request, "books/draft.html", context, status=status)


@require_http_methods(["GET", "POST"])
@risk_only
def draft(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(Workflow, slug=slug)
    current = draft_of(flow)
    if current is None:
        return render(
            request, "books/no_draft.html", {"workflow": flow, "active": active_version(flow)}
        )
    tools = _tools()
    if request.method == "GET":
        form = DraftForm(initial=DraftForm.initial_for(current, tools), tools=tools)
        return _editor(request, current, form)
    form = DraftForm(request.POST, tools=tools)
    publishing = "publish" in request.POST
    publish_form = PublishForm(request.POST if publishing else None)
    if not form.is_valid():
        return _editor(request, current, form, publish_form=publish_form, status=422)
    saved = draft_update(version_id=current.pk, user=request.user, values=form.book_values())
    if not publishing:
        messages.success(request, "Draft saved.")
        return redirect("books:draft", slug=slug)
    if not publish_form.is_valid():
        return _editor(request, saved, form, publish_form=publish_form, status=422)
    try:
        published = book_publish(
            version_id=saved.pk,
            user=request.user,
            change_note=publish_form.cleaned_data["change_note"],
        )
    except PublishRefused as exc:
        messages.error(request, f"Not published: {exc.message} The active version is unchanged.")
        return _editor(
            request, saved, form, publish_form=publish_form, problems=exc.problems, status=422
        )
    except BookError as exc:
        publish_form.add_error(exc.field or None, exc.message)
        return _editor(request, saved, form, publish_form=publish_form, status=422)
    messages.success(request, f"{slug} {published.label} published and active.")
    if published.number and published.number > 1:
        diff_url = reverse("books:diff", kwargs={"slug": slug})
        return redirect(f"{diff_url}?from={published.number - 1}&to={published.number}")
    return redirect("books:workflow", slug=slug)


def _draft_and_form(request: HttpRequest, slug: str) -> tuple[BookVersion, DraftForm]:
    flow = get_object_or_404(Workflow, slug=slug)
    current = draft_of(flow)
    if current is None:
        raise Http404("This workflow has no draft; start one first.")
    return current, DraftForm(request.POST, tools=_tools())


@require_POST
@risk_only
def draft_preview(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    current, form = _draft_and_form(request, slug)
    if not form.is_valid():
        return render(request, "books/draft.html#compiled-cedar", {"compiled": None, "form": form})
    candidate = _unsaved(current, form)
    return render(
        request,
        "books/draft.html#compiled-cedar",
        {"compiled": candidate.policy_text, "form": form},
    )


@require_POST
@risk_only
def draft_validate(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    current, form = _draft_and_form(request, slug)
    problems = book_problems(_unsaved(current, form)) if form.is_valid() else None
    return render(
        request,
        "books/draft.html#policy-problems",
        {"problems": problems, "form": form, "checked": True},
    )


@require_POST
@risk_only
def draft_try(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    current, form = _draft_and_form(request, slug)
    agents = list(Agent.objects.filter(workflows=current.workflow).values_list("slug", flat=True))
    try_form = TryForm(
        request.POST, prefix="try", agents=agents, tools=[t.slug for t in form.tools]
    )
    context: dict[str, Any] = {"try_form": try_form, "outcome": None}
    if form.is_valid() and try_form.is_valid():
        candidate = _unsaved(current, form)
        data = try_form.cleaned_data
        at = timezone.localtime()
        if data["hour"] is not None:
            at = at.replace(hour=data["hour"])
        facts = action_facts(
            version=candidate,
            agent=Agent.objects.get(slug=data["agent"]),
            tool=Tool.objects.get(slug=data["tool"]),
            params=data["params"],
            confidence=data["confidence"],
            segment=data["segment"],
            at=at,
        )
        problems = book_problems(candidate)
        if not problems:
            context["outcome"] = book_decide(candidate, facts)
        else:
            context["invalid_book"] = True
            context["problems"] = problems
    elif not form.is_valid():
        context["invalid_book"] = True
    return render(request, "books/draft.html#try-result", context)
