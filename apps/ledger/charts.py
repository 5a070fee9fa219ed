"""The balance sheet's charts, built with plotly in Python and handed to the page as JSON
(the page's script only calls Plotly.newPlot: no inline script under the CSP).

Plotly takes numbers, so amounts are converted to float here, for drawing only: every figure a
person reads or exports comes from the table, in Decimal."""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]

from apps.ledger.selectors import BalanceSheet, TrendPoint, to_major

LAYOUT: dict[str, Any] = {
    "margin": {"l": 56, "r": 16, "t": 40, "b": 48},
    "height": 320,
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "legend": {"orientation": "h", "y": -0.2},
    "font": {"family": "system-ui, sans-serif", "size": 12},
}


def _figure(traces: list[Any], title: str, **layout: Any) -> dict[str, Any]:
    """The figure as plotly JSON. Built in one go, traces and whole layout: plotly checks every
    attribute once (each later update would check the figure again)."""
    figure = go.Figure(data=traces, layout={"title": {"text": title, "x": 0}, **LAYOUT, **layout})
    figure_json: dict[str, Any] = json.loads(figure.to_json())
    return figure_json


def spend_chart(sheet: BalanceSheet) -> dict[str, Any]:
    """Model spend per day of the month, one line per workflow."""
    traces = [
        go.Scatter(
            x=[day.isoformat() for day, _ in days],
            y=[float(to_major(cents) or 0) for _, cents in days],
            mode="lines+markers",
            name=slug,
        )
        for slug, days in sorted(sheet.spend_by_day.items())
    ]
    return _figure(
        traces,
        f"Model spend per day, {sheet.month:%B %Y}",
        yaxis={"title": {"text": "model spend (major units)"}, "rangemode": "tozero"},
    )


OUTCOMES = (
    ("autonomous", "autonomous"),
    ("after_review", "after review"),
    ("rejected", "rejected"),
    ("expired", "expired"),
    ("rolled_back", "rolled back"),
)


def outcome_chart(sheet: BalanceSheet) -> dict[str, Any]:
    """What became of the month's actions, per workflow, stacked."""
    rows = [row for row in sheet.rows if row.active]
    traces = [
        go.Bar(
            x=[row.workflow.slug for row in rows],
            y=[getattr(row, attribute) for row in rows],
            name=label,
        )
        for attribute, label in OUTCOMES
    ]
    return _figure(traces, "Outcome mix", barmode="stack", yaxis={"title": {"text": "actions"}})


def cost_trend_chart(trend: dict[str, list[TrendPoint]]) -> dict[str, Any]:
    """Cost per successful outcome, month by month, one line per workflow (a gap where a
    month had no success)."""
    traces = [
        go.Scatter(
            x=[point.month.strftime("%Y-%m") for point in points],
            y=[
                float(to_major(point.cost_per_success_cents) or 0)
                if point.cost_per_success_cents is not None
                else None
                for point in points
            ],
            mode="lines+markers",
            name=slug,
            connectgaps=False,
        )
        for slug, points in trend.items()
    ]
    return _figure(
        traces,
        "Cost per successful outcome, last 6 months",
        xaxis={"type": "category"},
        yaxis={"title": {"text": "cost per successful outcome"}, "rangemode": "tozero"},
    )
