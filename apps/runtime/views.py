"""The runtime's pages: runs and their steps (on-call), one run in detail, the month's model
budgets and spend (finance), and the failed runs handed to the signed-in escalation owner."""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.core.http import AuthenticatedRequest, HtmxHttpRequest
from apps.registry.models import Agent
from apps.runtime.budgets import agent_budget_set, month_of
from apps.runtime.forms import AgentBudgetForm, RunFilterForm
from apps.runtime.selectors import (
    agent_budget_rows,
    budget_alerts,
    budget_periods_of,
    provider_circuits,
    run_calls,
    run_counts,
    run_detail,
    runs_escalated_to,
    runs_needing_attention,
    runs_recent,
    spend_by_model,
)
from apps.runtime.traffic_switch import demo_traffic_set, demo_traffic_state


@require_GET
@role_required(Role.ONCALL)
def runs(request: HtmxHttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    state = workflow = ""
    if form.is_bound and form.is_valid():
        state, workflow = form.cleaned_data["state"], form.cleaned_data["workflow"]
    context = {
        "form": form,
        "runs": runs_recent(state=state, workflow=workflow),
        "attention": runs_needing_attention(),
        "alerts": budget_alerts(),
        "circuits": provider_circuits(),
        "counts": run_counts(),
        "demo_enabled": settings.DEMO_TRAFFIC,
        "demo": demo_traffic_state(),
        "query": request.GET.urlencode(),
    }
    if request.htmx:
        return render(request, "runtime/runs.html#runs-state", context)
    return render(request, "runtime/runs.html", context)


@require_GET
@role_required(Role.ONCALL)
def run(request: HttpRequest, run_id: UUID) -> HttpResponse:
    found = run_detail(run_id)
    if found is None:
        raise Http404(f"No run {run_id}.")
    return render(request, "runtime/run.html", {"run": found, "calls": run_calls(found)})


@require_POST
@role_required(Role.ONCALL)
def demo_traffic(request: AuthenticatedRequest) -> HttpResponse:
    wanted = request.POST.get("traffic", "")
    if wanted not in ("on", "off"):
        messages.error(request, f"traffic: expected on or off, got {wanted[:20]!r}.")
        return redirect("runtime:runs")
    user = request.user
    demo_traffic_set(paused=wanted == "off", by=user.get_username())
    messages.success(
        request, "Demo traffic paused." if wanted == "off" else "Demo traffic resumed."
    )
    return redirect("runtime:runs")


def _budgets_page(
    request: HttpRequest, form: AgentBudgetForm | None = None, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "runtime/budgets.html",
        {
            "month": month_of(),
            "periods": budget_periods_of(),
            "alerts": budget_alerts(),
            "spend": spend_by_model(),
            "agent_budgets": agent_budget_rows(),
            "agent_budget_form": form or AgentBudgetForm(),
        },
        status=status,
    )


@require_GET
@role_required(Role.FINANCE)
def budgets(request: HttpRequest) -> HttpResponse:
    return _budgets_page(request)


@require_POST
@role_required(Role.FINANCE)
def agent_budget(request: HttpRequest) -> HttpResponse:
    """Set or remove an agent's own monthly budget (finance), audited."""
    form = AgentBudgetForm(request.POST)
    if not form.is_valid():
        return _budgets_page(request, form, status=422)
    agent = Agent.objects.get(slug=form.cleaned_data["agent"])
    limit = form.limit_cents()
    agent_budget_set(
        agent=agent,
        monthly_limit_cents=limit,
        soft_limit_percent=form.cleaned_data["soft_limit_percent"],
        actor=request.user,
    )
    if limit is None:
        messages.success(request, f"{agent.slug} has no budget of its own any more.")
    else:
        messages.success(request, f"Budget of {agent.slug} set.")
    return redirect("runtime:budgets")


@require_GET
@login_required
def escalations(request: AuthenticatedRequest) -> HttpResponse:
    user = request.user
    return render(request, "runtime/escalations.html", {"runs": runs_escalated_to(user)})
