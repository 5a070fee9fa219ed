from __future__ import annotations

from django.urls import path

from apps.audit import views

app_name = "audit"

urlpatterns = [
    path("", views.index, name="index"),
    path("verification/", views.verification, name="verification"),
    path("verify/", views.verify, name="verify"),
    path("flight-recorder/", views.flight_recorder, name="flight_recorder"),
]
