from __future__ import annotations

from django.urls import path

from apps.reviews import views

app_name = "reviews"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("feedback.jsonl", views.feedback_export, name="feedback_export"),
    path("<int:item_id>/", views.item_detail, name="item"),
    path("<int:item_id>/status", views.item_status, name="item_status"),
    path("<int:item_id>/claim", views.claim, name="claim"),
    path("<int:item_id>/unclaim", views.unclaim, name="unclaim"),
    path("<int:item_id>/decide", views.decide, name="decide"),
]
