from __future__ import annotations

from django.urls import path

from apps.ledger import views

app_name = "ledger"

urlpatterns = [
    path("", views.balance_sheet, name="balance_sheet"),
    path("balance-sheet.csv", views.balance_sheet_csv, name="balance_sheet_csv"),
    path("slos/", views.slos, name="slos"),
    path("backtests/<slug:slug>/", views.backtest_start, name="backtest_start"),
    path(
        "backtests/<slug:slug>/<uuid:backtest_id>/", views.backtest_status, name="backtest_status"
    ),
]
