from __future__ import annotations

from django.urls import path

from apps.books import views

app_name = "books"

urlpatterns = [
    path("", views.index, name="index"),
    path("<slug:slug>/", views.workflow, name="workflow"),
    path("<slug:slug>/diff/", views.diff, name="diff"),
    path("<slug:slug>/draft/", views.draft, name="draft"),
    path("<slug:slug>/draft/start/", views.draft_start, name="draft_start"),
    path("<slug:slug>/draft/preview/", views.draft_preview, name="draft_preview"),
    path("<slug:slug>/draft/validate/", views.draft_validate, name="draft_validate"),
    path("<slug:slug>/draft/try/", views.draft_try, name="draft_try"),
    path("<slug:slug>/v<int:number>/", views.version_detail, name="version"),
    path("<slug:slug>/v<int:number>/rollback/", views.rollback, name="rollback"),
]
