"""OpenTelemetry traces across the hops of an action: the web request that proposes it, the
worker's run of it (heard from the notice the gate's commit sent), the tool's HTTP call, and the
system of record (the sandbox, served by the live server) answering it, all in one trace, linked
through the notice's text and real HTTP headers. The worker runs in a thread of the test process,
so that every span reaches the same in-memory exporter. Also: tracing stays off, and costs
nothing, unless an OTLP endpoint is configured."""

from __future__ import annotations

import gc
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import Client
from kombu import Queue
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from apps.accounts.roles import Role
from apps.actions import connectors
from apps.actions.dispatch import EXECUTE
from apps.actions.models import Action, Status
from apps.audit.selectors import flight_record
from apps.core import tracing
from apps.core.workers import task_send
from apps.demo.sandbox import sandbox_seed
from apps.registry.services import agent_key_create
from controlplane.celery import app as celery_app
from tests.actions.conftest import proposal_body, propose
from tests.conftest import other_sessions_ended
from tests.factories import make_agent, make_published_book, make_tool, make_workflow
from tests.sandbox.conftest import sandbox_open


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.tracing_use(provider)
    try:
        yield exporter
    finally:
        tracing.tracing_use(None)
        provider.shutdown()


@pytest.fixture
def in_process_worker() -> Iterator[None]:
    """A Celery worker in a thread of this process, on a queue of the test's own."""
    queue = f"test-trace-{uuid.uuid4().hex[:8]}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    try:
        with start_worker(
            celery_app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=30
        ):
            yield
    finally:
        celery_app.conf.task_default_queue = previous
        with celery_app.connection_for_write() as connection:
            Queue(queue).bind(connection.default_channel).delete()
        # The worker's thread kept its database connection between tasks (as workers do); with
        # the thread gone, it is closed once collected.
        gc.collect()
        other_sessions_ended()


def wait_for(condition: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_process_worker")
def test_trace__proposal_to_sandbox__one_trace_across_web_worker_connector_sandbox(
    spans: InMemorySpanExporter, live_server: Any, user_for: Any, settings: Any
) -> None:
    # Given refund-bot whose issue_refund reaches the sandbox over HTTP, and tracing on
    sandbox_seed()
    owner = user_for(Role.RISK)
    workflow = make_workflow()
    tool = make_tool()
    tool.endpoint_url = f"{live_server.url}/sandbox/refunds"
    tool.credential_secret = sandbox_open(settings)
    tool.save()
    agent = make_agent(owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    make_published_book(workflow=workflow, author=owner)
    key = agent_key_create(agent=agent, actor="system:test").key

    try:
        # When refund-bot proposes a refund the book allows, and the worker executes it
        answer = propose(
            Client(), key, proposal_body(params={**proposal_body()["params"], "order_id": "1003"})
        )
        assert answer.status_code == 201, answer.content
        action_id = answer.json()["id"]
        wait_for(
            lambda: Action.objects.get(pk=action_id).status in (Status.SUCCEEDED, Status.FAILED)
        )
        assert Action.objects.get(pk=action_id).status == Status.SUCCEEDED
        wait_for(lambda: any(s.name.startswith("pickup ") for s in spans.get_finished_spans()))
    finally:
        connectors._pool.clear()

    # Then the four hops are four spans of one trace, each the child of the one before
    finished = spans.get_finished_spans()

    def one(kind: SpanKind, name: str) -> ReadableSpan:
        (found,) = [s for s in finished if s.kind == kind and s.name == name]
        return found

    web = one(SpanKind.SERVER, "POST /api/v1/actions")
    # (the worker heard the action announced by the gate's commit: no broker message)
    task = one(SpanKind.CONSUMER, "pickup actions.execute")
    call = one(SpanKind.CLIENT, "POST /sandbox/refunds")
    sandbox = one(SpanKind.SERVER, "POST /sandbox/refunds")
    chain = [web, task, call, sandbox]
    trace_ids = {span.context.trace_id for span in chain if span.context is not None}
    assert len(trace_ids) == 1
    assert web.parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert parent.context is not None
        assert child.parent.span_id == parent.context.span_id, (parent.name, child.name)
    assert sandbox.attributes is not None
    assert sandbox.attributes["http.response.status_code"] == 201
    # ... and the request id the API answered with (in every log line) is that trace id
    trace_id = format(trace_ids.pop(), "032x")
    assert answer["X-Request-ID"] == trace_id
    # ... and so is the trace id of every event on the action's flight recorder, those the web
    # wrote and those the worker wrote
    events = list(flight_record(action_id=action_id).values_list("verb", "trace_id"))
    assert [verb for verb, _ in events] == [
        "action.proposed", "action.approved", "action.queued", "action.running", "action.succeeded"
    ]  # fmt: skip
    assert {trace for _, trace in events} == {trace_id}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_process_worker")
def test_trace__task_through_the_broker__its_span_a_child_of_the_sender(
    spans: InMemorySpanExporter,
) -> None:
    # Given a message sent through the broker inside a span (a retry, the requeue sweep's
    # reminder), for an action that does not exist
    with tracing.client_span("send", {}):
        sender = trace.get_current_span().get_span_context()
        task_send(EXECUTE, str(uuid.uuid4()))

    # When the worker runs it, the task's span continues the sender's, and records the failure
    wait_for(lambda: any(s.name == "task actions.execute" for s in spans.get_finished_spans()))
    (task,) = [s for s in spans.get_finished_spans() if s.name == "task actions.execute"]
    assert task.kind == SpanKind.CONSUMER
    assert task.parent is not None
    assert task.parent.span_id == sender.span_id
    assert task.context is not None
    assert task.context.trace_id == sender.trace_id
    assert task.attributes is not None
    assert task.attributes["celery.state"] == "FAILURE"


@pytest.mark.django_db
def test_trace__caller_sends_traceparent__request_joins_the_callers_trace(
    spans: InMemorySpanExporter,
) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    answer = Client().get(
        "/accounts/login/", headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"}
    )
    (span,) = spans.get_finished_spans()
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == caller_trace
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert answer["X-Request-ID"] == caller_trace


@pytest.mark.django_db
def test_trace__off__no_span_and_traceparent_still_names_the_request(client: Client) -> None:
    # Given tracing off (no OTLP endpoint configured)
    assert not tracing.tracing_enabled()

    # When a request arrives with a caller's traceparent, and one with a malformed one
    traced = client.get(
        "/accounts/login/",
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    malformed = client.get("/accounts/login/", headers={"traceparent": "00-zz-00-01"})

    # Then its logs carry the caller's trace id; a malformed one is ignored
    assert traced["X-Request-ID"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert len(malformed["X-Request-ID"]) == 32
    assert malformed["X-Request-ID"] != "4bf92f3577b34da6a3ce929d0e0e4736"
    # ... and the hooks do nothing at all
    headers: dict[str, Any] = {}
    tracing.inject_into(headers)
    with tracing.client_span("POST /x", {}) as extra:
        assert extra == {}
    assert headers == {}


def test_configure__without_endpoint_off__with_endpoint_on_with_otlp_exporter() -> None:
    try:
        tracing.tracing_configure({})
        assert not tracing.tracing_enabled()
        tracing.tracing_configure(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SERVICE_NAME": "esc-a"}
        )
        assert tracing.tracing_enabled()
        provider = tracing._provider
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "esc-a"
        (processor,) = provider._active_span_processor._span_processors
        assert isinstance(processor, BatchSpanProcessor)
        assert isinstance(processor.span_exporter, OTLPSpanExporter)
    finally:
        provider = tracing._provider
        tracing.tracing_use(None)
        if provider is not None:
            provider.shutdown()
