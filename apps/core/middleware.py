from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from apps.core.api_errors import error_response
from apps.core.request_context import accept_request_id, reset_request_id, set_request_id
from apps.core.tracing import server_span, server_span_status, trace_id_of, tracing_configure

logger = logging.getLogger("escapement.request")

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Gives each request an id (the caller's X-Request-ID when it is safe), logs it on every
    line written while serving the request, returns it in the response, and logs one line per
    request with its outcome and duration."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        tracing_configure()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Traced, the request id is the trace id (unless the caller chose one), so that a log
        # line leads to its trace and back; untraced, a caller's traceparent still gives it.
        with server_span(request) as trace_id:
            return self._serve(
                request,
                request.headers.get(REQUEST_ID_HEADER)
                or trace_id
                or trace_id_of(request.headers.get("traceparent")),
            )

    def _serve(self, request: HttpRequest, candidate: str | None) -> HttpResponse:
        request_id = accept_request_id(candidate)
        token = set_request_id(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            server_span_status(response.status_code)
            logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response
        finally:
            reset_request_id(token)


DATABASE_DOWN_RETRY_AFTER = 5  # seconds, for clients and load balancers

_DATABASE_DOWN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Escapement: database unavailable</title></head>
<body><main><h1>The database is unavailable</h1>
<p>Escapement cannot reach its database at the moment, so nothing can be shown or changed.
Nothing you did was lost. This page works again by itself as soon as the database is back:
reload it in a few seconds.</p></main></body></html>
"""


class DatabaseUnavailableMiddleware:
    """A view that cannot reach the database (PostgreSQL stopped, restarting or unreachable)
    answers 503 with a body saying so, JSON on the API and a page elsewhere, instead of a 500.
    Nothing needs restarting afterwards: Django drops the broken connection at the end of the
    request and the next request connects afresh."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.error(
            "database unavailable: %s %s answered 503 (%s)",
            request.method,
            request.path,
            type(exception).__name__,
            extra={"method": request.method, "path": request.path, "status": 503},
        )
        response: HttpResponse
        if request.path.startswith("/api/"):
            response = error_response(
                503,
                "The database is unavailable. Try again shortly: resending a proposal with the "
                "same idempotency key never makes a second action.",
            )
        else:
            response = HttpResponse(
                _DATABASE_DOWN_PAGE, status=503, content_type="text/html; charset=utf-8"
            )
        response["Retry-After"] = str(DATABASE_DOWN_RETRY_AFTER)
        return response
