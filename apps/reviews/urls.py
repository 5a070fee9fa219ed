from __future__ import annotations

from django.urls import path

from apps.reviews import views

app_name = "reviews"

urlpatterns = [
    path("", views.queue, name="queue"),
]
