from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from apps.accounts import views as accounts_views
from apps.core import views as core_views
from controlplane.api import api
from controlplane.metrics import metrics

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
    path("accounts/", include("apps.accounts.urls")),
    path("reviews/", include("apps.reviews.urls")),
    path("books/", include("apps.books.urls")),
    path("audit/", include("apps.audit.urls")),
    path("ledger/", include("apps.ledger.urls")),
    path("oncall/", include("apps.killswitches.urls")),
    # The demo's system of record: a 404 unless SANDBOX_ENABLED, and then only for holders of
    # its credential (checked per request by apps/sandbox/views.py, not by leaving this out, so
    # that the setting can change without reloading the URLconf).
    path("sandbox/", include("apps.sandbox.urls")),
    path("runtime/", include("apps.runtime.urls")),
    path("", accounts_views.home, name="home"),
]

handler400 = "apps.core.views.bad_request"
handler403 = "apps.accounts.views.permission_denied"
handler404 = "apps.core.views.page_not_found"
handler500 = "apps.core.views.server_error"
