from __future__ import annotations

from django.urls import path

from apps.killswitches import views

app_name = "killswitches"

urlpatterns = [
    path("", views.console, name="console"),
    path("engage/", views.engage, name="engage"),
    path("switches/<int:switch_id>/", views.switch_detail, name="switch"),
    path("switches/<int:switch_id>/release/", views.release, name="release"),
    path("drain/", views.drain, name="drain"),
    path("drains/<int:run_id>/", views.drain_detail, name="drain_detail"),
    path("rollback/", views.rollback, name="rollback"),
    path("rollbacks/<int:run_id>/", views.rollback_detail, name="rollback_detail"),
    path(
        "rollbacks/<int:run_id>/actions/<uuid:action_id>/retry/",
        views.rollback_retry_undo,
        name="rollback_retry",
    ),
]
