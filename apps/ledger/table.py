"""The balance sheet's table as cells: the page and the CSV export are both rendered from
`sheet_table`, so the export is exactly what the table shows, column for column."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from apps.ledger.selectors import BalanceSheet, SheetRow, to_major


def _money(cents: Decimal | None) -> str:
    major = to_major(cents)
    return "" if major is None else f"{major:f}"


def _minutes(minutes: Decimal) -> str:
    return f"{minutes.quantize(Decimal('0.01')):f}"


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    cell: Callable[[SheetRow], str]
    numeric: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("workflow", "Workflow", lambda row: row.workflow.slug, numeric=False),
    Column("currency", "Currency", lambda row: row.currency, numeric=False),
    Column("autonomous", "Autonomous", lambda row: str(row.autonomous)),
    Column("after_review", "After review", lambda row: str(row.after_review)),
    Column("rejected", "Rejected", lambda row: str(row.rejected)),
    Column("expired", "Expired", lambda row: str(row.expired)),
    Column("rolled_back", "Rolled back", lambda row: str(row.rolled_back)),
    Column("successful", "Successful outcomes", lambda row: str(row.successful)),
    Column("model_calls", "Model calls", lambda row: str(row.model_calls)),
    Column("model_spend", "Model spend", lambda row: _money(row.model_spend_cents)),
    Column("review_minutes", "Review minutes", lambda row: _minutes(row.review_minutes)),
    Column("time_saved", "Human time saved (min)", lambda row: _minutes(row.time_saved_minutes)),
    Column("edits", "Supervisor edits", lambda row: str(row.edits)),
    Column("rework", "Rework", lambda row: str(row.rework)),
    Column(
        "cost_per_success",
        "Cost per successful outcome",
        lambda row: _money(row.cost_per_success_cents),
    ),
    Column("budget", "Budget", lambda row: _money(row.budget_cents)),
    Column("budget_left", "Budget left", lambda row: _money(row.budget_left_cents)),
    Column(
        "budget_used",
        "Budget used (%)",
        lambda row: "" if row.budget_used_percent is None else f"{row.budget_used_percent:f}",
    ),
)


@dataclass(frozen=True)
class Table:
    headers: list[Column]
    rows: list[list[tuple[str, bool]]]


def shown_rows(sheet: BalanceSheet) -> list[SheetRow]:
    """The workflows the table lists: those with anything recorded in the month."""
    return [row for row in sheet.rows if row.active]


def sheet_table(sheet: BalanceSheet) -> Table:
    return Table(
        headers=list(COLUMNS),
        rows=[
            [(column.cell(row), column.numeric) for column in COLUMNS] for row in shown_rows(sheet)
        ],
    )


def sheet_csv(sheet: BalanceSheet) -> str:
    table = sheet_table(sheet)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([column.title for column in table.headers])
    for cells in table.rows:
        writer.writerow([value for value, _ in cells])
    return out.getvalue()
