from __future__ import annotations

from django.urls import path

from apps.killswitches import views

app_name = "killswitches"

urlpatterns = [
    path("", views.console, name="console"),
]
