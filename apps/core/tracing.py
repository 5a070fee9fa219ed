"""OpenTelemetry traces: one trace from the web request through the Celery task and the tool's
call to the system of record (which, when it is served by Escapement too, like the sandbox,
continues the same trace).

Off unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set: then spans
are batched and exported over OTLP/HTTP (the exporter reads the standard OTEL_EXPORTER_OTLP_*
variables: headers, timeout, certificate), under OTEL_SERVICE_NAME (default `escapement`). While
off, every hook here returns at once: no span, no context, no header.

The context travels in W3C `traceparent` headers: on the HTTP request to the system of record,
on the Celery message (as a message header), and on the notice that announces a queued action
(in its text). A request's id, in every log line, is its
trace id when it is traced, so that logs and traces find each other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

if TYPE_CHECKING:
    from django.http import HttpRequest

_provider: TracerProvider | None = None
_task_spans: dict[str, tuple[trace.Span, object]] = {}

# traceparent: version-traceid-parentid-flags, the trace id 32 hex digits, not all zero.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def tracing_use(provider: TracerProvider | None) -> None:
    """Trace with this provider from now on (the tests give one with an in-memory exporter);
    None turns tracing off."""
    global _provider
    _provider = provider


def tracing_enabled() -> bool:
    return _provider is not None


def tracing_configure(env: Mapping[str, str] = os.environ) -> None:
    """Turn tracing on when an OTLP endpoint is configured; once per process (web processes
    when their first middleware is made, worker processes when they start)."""
    if _provider is not None:
        return
    if not (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return
    # Only a process that exports loads the exporter (and the HTTP and protobuf stacks under it).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "escapement")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracing_use(provider)


def _tracer() -> trace.Tracer:
    assert _provider is not None
    return _provider.get_tracer("escapement")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent header, if it is one."""
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else None


@contextmanager
def server_span(request: HttpRequest) -> Iterator[str | None]:
    """A span for one request served, continuing the caller's trace (`traceparent`) if any;
    yields its trace id (32 hex digits), or None while tracing is off."""
    if _provider is None:
        yield None
        return
    parent = propagate.extract(request.headers)
    with _tracer().start_as_current_span(
        f"{request.method} {request.path}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": str(request.method), "url.path": request.path},
    ) as span:
        yield format(span.get_span_context().trace_id, "032x")


def server_span_status(status: int) -> None:
    if _provider is not None:
        span = trace.get_current_span()
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(trace.StatusCode.ERROR)


@contextmanager
def client_span(name: str, attributes: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """A span for one outgoing call; yields the headers that carry its context to the callee
    (empty while tracing is off)."""
    if _provider is None:
        yield {}
        return
    with _tracer().start_as_current_span(
        name, kind=trace.SpanKind.CLIENT, attributes=dict(attributes)
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers


def inject_into(headers: dict[str, Any]) -> None:
    """Put the current context into a message's headers (a Celery task being sent)."""
    if _provider is not None:
        propagate.inject(headers)


def context_carried() -> str:
    """The current context as a `traceparent` value, for a carrier that has no headers (a
    PostgreSQL notice); empty while tracing is off."""
    if _provider is None:
        return ""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers.get("traceparent", "")


@contextmanager
def consumer_span(name: str, traceparent: str) -> Iterator[None]:
    """A span for work a notice started, as a child of the context the notice carried
    (`context_carried`), current for the work's own calls."""
    if _provider is None:
        yield
        return
    carrier = {"traceparent": traceparent} if traceparent else {}
    with _tracer().start_as_current_span(
        name, context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER
    ):
        yield


def task_span_start(task_id: str, name: str, request: Any) -> None:
    """Start the span of a task run by a worker, as a child of the context its message carried,
    and make it current for the task's own calls."""
    if _provider is None:
        return
    carrier = {
        key: value
        for key in ("traceparent", "tracestate")
        if isinstance(value := getattr(request, key, None), str)
    }
    span = _tracer().start_span(
        f"task {name}", context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    _task_spans[task_id] = (span, token)


def task_span_end(task_id: str, state: str | None) -> None:
    found = _task_spans.pop(task_id, None)
    if found is None:
        return
    span, token = found
    if state:
        span.set_attribute("celery.state", state)
        if state == "FAILURE":
            span.set_status(trace.StatusCode.ERROR)
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]


def current_trace_id() -> str | None:
    if _provider is None:
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
