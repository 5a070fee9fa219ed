from __future__ import annotations

from django.urls import path

from apps.runtime import views

app_name = "runtime"

urlpatterns = [
    path("", views.runs, name="runs"),
    path("runs/<uuid:run_id>/", views.run, name="run"),
    path("demo-traffic/", views.demo_traffic, name="demo_traffic"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/agents/", views.agent_budget, name="agent_budget"),
    path("escalations/", views.escalations, name="escalations"),
]
