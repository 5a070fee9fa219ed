"""The ledger's pages: the Autonomy Balance Sheet and its CSV (finance), the SLO dashboard with
its alerts (on-call), and the backtest panel of the Decision Book editor (risk)."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.books.selectors import draft_of
from apps.core.http import AuthenticatedRequest
from apps.ledger.backtest import BacktestError, backtest_request, backtests_of
from apps.ledger.charts import cost_trend_chart, outcome_chart, spend_chart
from apps.ledger.forms import BacktestForm
from apps.ledger.models import Backtest
from apps.ledger.selectors import (
    MonthError,
    cost_per_outcome_trend,
    month_parse,
    next_month,
    previous_month,
)
from apps.ledger.selectors import (
    balance_sheet as sheet_for,
)
from apps.ledger.slos import open_alerts, slo_dashboard
from apps.ledger.table import sheet_csv, sheet_table
from apps.registry.models import Workflow


def _month_choices(selected: date) -> list[date]:
    """The last twelve months up to this one, and the selected month if it is older."""
    months = [timezone.localdate().replace(day=1)]
    for _ in range(11):
        months.append(previous_month(months[-1]))
    if selected not in months:
        months.append(selected)
    return months


@require_GET
@role_required(Role.FINANCE)
def balance_sheet(request: AuthenticatedRequest) -> HttpResponse:
    try:
        month = month_parse(request.GET.get("month"))
    except MonthError as exc:
        return render(request, "ledger/balance_sheet.html", {"error": str(exc)}, status=400)
    sheet = sheet_for(month)
    table = sheet_table(sheet)
    this_month = timezone.localdate().replace(day=1)
    context = {
        "month": month,
        "months": _month_choices(month),
        "previous": previous_month(month),
        "next": next_month(month) if month < this_month else None,
        "table": table,
        "charts": [
            ("spend-chart", "Model spend over time by workflow", spend_chart(sheet)),
            ("outcome-chart", "Outcome mix by workflow", outcome_chart(sheet)),
            (
                "cost-trend-chart",
                "Cost per successful outcome, trend",
                cost_trend_chart(cost_per_outcome_trend(month)),
            ),
        ],
    }
    return render(request, "ledger/balance_sheet.html", context)


@require_GET
@role_required(Role.FINANCE)
def balance_sheet_csv(request: AuthenticatedRequest) -> HttpResponse:
    try:
        month = month_parse(request.GET.get("month"))
    except MonthError as exc:
        return HttpResponse(str(exc) + "\n", status=400, content_type="text/plain; charset=utf-8")
    response = HttpResponse(sheet_csv(sheet_for(month)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="balance-sheet-{month:%Y-%m}.csv"'
    return response


@require_GET
@role_required(Role.ONCALL)
def slos(request: AuthenticatedRequest) -> HttpResponse:
    context = {"dashboard": slo_dashboard(), "alerts": open_alerts()}
    if request.htmx:
        return render(request, "ledger/slos.html#slo-alerts", context)
    return render(request, "ledger/slos.html", context)


def _panel(request: HttpRequest, flow: Workflow, **extra: object) -> dict[str, object]:
    return {"workflow": flow, "backtests": backtests_of(flow), **extra}


@require_POST
@role_required(Role.RISK)
def backtest_start(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    flow = get_object_or_404(Workflow, slug=slug)
    form = BacktestForm(request.POST, prefix="backtest")
    draft = draft_of(flow)
    if not form.is_valid():
        context = _panel(request, flow, backtest_form=form)
        return render(request, "ledger/backtest_panel.html#backtest-panel", context, status=422)
    try:
        backtest = backtest_request(
            workflow=flow, draft=draft, user=request.user, limit=form.cleaned_data["limit"]
        )
    except BacktestError as exc:
        form.add_error(exc.field, exc.message)
        context = _panel(request, flow, backtest_form=form)
        return render(request, "ledger/backtest_panel.html#backtest-panel", context, status=422)
    context = _panel(
        request, flow, backtest_form=BacktestForm(prefix="backtest"), backtest=backtest
    )
    return render(request, "ledger/backtest_panel.html#backtest-panel", context)


@require_GET
@role_required(Role.RISK)
def backtest_status(request: AuthenticatedRequest, slug: str, backtest_id: UUID) -> HttpResponse:
    backtest = get_object_or_404(
        Backtest.objects.select_related("draft", "active", "workflow"),
        pk=backtest_id,
        workflow__slug=slug,
    )
    return render(
        request,
        "ledger/backtest_panel.html#backtest-result",
        {"backtest": backtest, "workflow": backtest.workflow},
    )
