from __future__ import annotations

from django.urls import path, re_path

from apps.sandbox import views

app_name = "sandbox"

urlpatterns = [
    path("refunds", views.refunds, name="refunds"),
    path("refunds/undo", views.refunds_undo, name="refunds-undo"),
    path("orders/lookup", views.orders_lookup, name="orders-lookup"),
    path("noop", views.noop, name="noop"),
    path("invoices/match", views.invoices_match, name="invoices-match"),
    path("invoices/unmatch", views.invoices_unmatch, name="invoices-unmatch"),
    path("invoices/flag", views.invoices_flag, name="invoices-flag"),
    path("invoices/unflag", views.invoices_unflag, name="invoices-unflag"),
    path("access/grant", views.access_grants, name="access-grant"),
    path("access/revoke", views.access_revokes, name="access-revoke"),
    path("access/reset-mfa", views.access_reset_mfa, name="access-reset-mfa"),
    path("faults", views.faults, name="faults"),
    re_path(r"^(?P<path>.*)$", views.not_found, name="not-found"),
]
