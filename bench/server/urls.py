"""The product's URLs plus the bare endpoint at /bench/insert (see bare.py)."""

from __future__ import annotations

from django.urls import path

from bench.server import bare
from controlplane.urls import (  # noqa: F401 (the product's error handlers, served alike)
    handler400,
    handler403,
    handler404,
    handler500,
)
from controlplane.urls import urlpatterns as product_urlpatterns

# (As typed by controlplane/urls.py, whose list mixes paths and includes.)
urlpatterns: list[object] = [
    path("bench/", bare.api.urls),
    *product_urlpatterns,
]
