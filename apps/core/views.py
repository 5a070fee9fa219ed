from __future__ import annotations

import logging

from celery import current_app
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.core.api_errors import error_response
from apps.core.health import health_report

logger = logging.getLogger(__name__)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Readiness for load balancers and on-call: 200 when the database and broker are reachable
    and a worker answers, 503 otherwise, with each check's verdict."""
    healthy, report = health_report(current_app)
    return JsonResponse(report, status=200 if healthy else 503)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return error_response(404, f"Not found: {request.path}")
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return error_response(500, "Internal error; it has been logged with the request id.")
    # No request context: the context processors may be what failed.
    return HttpResponse(loader.get_template("500.html").render(), status=500)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return error_response(400, "Bad request.")
    return render(request, "400.html", status=400)
