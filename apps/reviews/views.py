"""The supervisor's workplace: the queue, an item's full story, claiming and deciding.

Pages answer htmx requests with the fragment they replace and plain requests with the whole
page, so everything also works without JavaScript."""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.actions.models import Status
from apps.actions.params import params_digest
from apps.core.http import AuthenticatedRequest
from apps.reviews.forms import DecisionForm, QueueFilterForm, edited_params, reason_choices
from apps.reviews.models import ReviewDecision, ReviewItem, Verdict
from apps.reviews.selectors import (
    OVERDUE_COUNT_CAP,
    action_currency,
    feedback_lines,
    prior_actions,
    queue_counts,
    queue_page,
)
from apps.reviews.services import (
    DecisionInput,
    ReviewError,
    ReviewInvalid,
    review_claim,
    review_decide,
    review_unclaim,
)

# While the action is on its way, the item's status panel asks again every second or two.
IN_FLIGHT = frozenset({Status.APPROVED, Status.QUEUED, Status.RUNNING})


@require_GET
@role_required(Role.SUPERVISOR)
def queue(request: AuthenticatedRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    now = timezone.now()
    context = {
        "form": form,
        "filters": filters,
        "page": queue_page(filters, request.user, now),
        "counts": queue_counts(now),
        "now": now,
        "query": _without_page(request),
        "overdue_cap": OVERDUE_COUNT_CAP,
    }
    template = "reviews/queue.html#queue-list" if request.htmx else "reviews/queue.html"
    valid = not form.is_bound or form.is_valid()
    return render(request, template, context, status=200 if valid else 422)


def _without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _item(item_id: int) -> ReviewItem:
    try:
        return ReviewItem.objects.select_related(
            "workflow",
            "action__agent__owner",
            "action__tool",
            "action__workflow",
            "action__book_version",
            "claimed_by",
            "escalated_to",
            "retry",
        ).get(pk=item_id)
    except ReviewItem.DoesNotExist:
        raise Http404("No such review item") from None


def _item_context(
    request: AuthenticatedRequest, item: ReviewItem, **extra: object
) -> dict[str, object]:
    user = request.user
    decisions = list(ReviewDecision.objects.filter(item=item).select_related("user"))
    followed = item.retry if item.retry is not None else item.action
    if item.pending_params is not None and item.is_open:
        # Edited params waiting for more approvals are what an approval now would run: shown
        # in place of the action's own (this copy is for the page; nothing is saved).
        item.action.params = dict(item.pending_params)
    digest = params_digest(item.action.params)
    for decision in decisions:
        # An approval of other params (before an edit) no longer counts for these.
        decision.counts = decision.params_digest in ("", digest)  # type: ignore[attr-defined]
    return {
        "item": item,
        "action": item.action,
        "followed": followed,
        "in_flight": followed.status in IN_FLIGHT,
        "decisions": decisions,
        "prior": prior_actions(item.action),
        "reasons": reason_choices(),
        "reasons_json": json.dumps(reason_choices()),
        "own_agent": item.action.agent.owner_id == user.pk,
        "already_decided_by_me": any(
            d.user_id == user.pk and d.params_digest in ("", digest) for d in decisions
        ),
        "claimed_by_other": item.claimed_by_id not in (None, user.pk),
        "can_edit": item.action.status in (Status.PENDING_REVIEW, Status.FAILED, Status.CANCELLED),
        "form": extra.pop("form", None) or DecisionForm(),
        "params_digest": digest,
        **extra,
    }


@require_GET
@role_required(Role.SUPERVISOR)
def item_detail(request: AuthenticatedRequest, item_id: int) -> HttpResponse:
    item = _item(item_id)
    return render(request, "reviews/item.html", _item_context(request, item))


@require_GET
@role_required(Role.SUPERVISOR)
def item_status(request: AuthenticatedRequest, item_id: int) -> HttpResponse:
    item = _item(item_id)
    return render(request, "reviews/item_status.html#item-status", _item_context(request, item))


def _panel(
    request: AuthenticatedRequest, item_id: int, *, status: int = 200, **extra: object
) -> HttpResponse:
    item = _item(item_id)
    if request.htmx:
        return render(
            request,
            "reviews/item.html#item-panel",
            _item_context(request, item, **extra),
            status=status,
        )
    if status >= 400:
        return render(
            request, "reviews/item.html", _item_context(request, item, **extra), status=status
        )
    return redirect(reverse("reviews:item", args=[item_id]))


@require_POST
@role_required(Role.SUPERVISOR)
def claim(request: AuthenticatedRequest, item_id: int) -> HttpResponse:
    try:
        review_claim(item_id=item_id, user=request.user)
    except ReviewError as exc:
        return _panel(request, item_id, status=409, problem=exc.message)
    return _panel(request, item_id)


@require_POST
@role_required(Role.SUPERVISOR)
def unclaim(request: AuthenticatedRequest, item_id: int) -> HttpResponse:
    try:
        review_unclaim(item_id=item_id, user=request.user)
    except ReviewError as exc:
        return _panel(request, item_id, status=409, problem=exc.message)
    return _panel(request, item_id)


@require_POST
@role_required(Role.SUPERVISOR)
def decide(request: AuthenticatedRequest, item_id: int) -> HttpResponse:
    item = _item(item_id)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _panel(request, item_id, status=422, form=form)
    verdict = form.cleaned_data["verdict"]
    params = None
    if verdict == Verdict.EDIT_APPROVE:
        currency = action_currency(item.action)
        params, problems = edited_params(
            item.action.tool, item.action.params, request.POST, currency=currency
        )
        if problems:
            for name, message in problems:
                form.add_error(None, f"{name}: {message}")
            return _panel(request, item_id, status=422, form=form, param_errors=dict(problems))
    given = DecisionInput(
        verdict=verdict,
        reason_code=form.cleaned_data["reason_code"],
        reason_text=form.cleaned_data["reason_text"],
        params=params,
        seen_digest=str(request.POST.get("params_digest", ""))[:64],
    )
    try:
        result = review_decide(item_id=item_id, user=request.user, given=given)
    except ReviewInvalid as exc:
        for name, message in exc.errors:
            if name in form.fields:
                form.add_error(name, message)
            else:
                form.add_error(None, f"{name}: {message}")
        return _panel(request, item_id, status=422, form=form, param_errors=dict(exc.errors))
    except ReviewError as exc:
        return _panel(request, item_id, status=409, problem=exc.message)
    return _panel(request, item_id, notice=" ".join(result.messages))


@require_GET
@role_required(Role.RISK)
def feedback_export(request: AuthenticatedRequest) -> HttpResponseBase:
    """Every human decision as JSON Lines: {context, correction, rationale} and who/when."""

    response = StreamingHttpResponse(feedback_lines(), content_type="application/x-ndjson")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="escapement-feedback-{stamp}.jsonl"'
    return response
