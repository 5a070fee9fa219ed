from __future__ import annotations

from django.urls import path

from apps.ledger import views

app_name = "ledger"

urlpatterns = [
    path("", views.balance_sheet, name="balance_sheet"),
]
