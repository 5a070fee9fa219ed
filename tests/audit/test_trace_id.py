"""Each audit event keeps the trace id of the request or task that wrote it (when tracing is on):
covered by its leaf in the log, shown on the flight recorder, and a way to filter it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer, use_span

from apps.accounts.roles import Role
from apps.audit.log import log_integrate
from apps.audit.models import AuditEvent
from apps.audit.selectors import REWRITTEN, audit_verify
from apps.audit.services import audit_record
from apps.core import tracing
from apps.registry.models import Workflow
from tests.audit.conftest import out_of_band

pytestmark = pytest.mark.django_db


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    """Tracing on (spans go nowhere), and a tracer to open spans with."""
    provider = TracerProvider()
    tracing.tracing_use(provider)
    try:
        yield provider.get_tracer("tests")
    finally:
        tracing.tracing_use(None)
        provider.shutdown()


def record(workflow: Workflow, verb: str, subject: str = "order:1042") -> AuditEvent:
    with transaction.atomic():
        event = audit_record(actor="system", verb=verb, target=workflow, subject=subject)
    assert event is not None
    return event


def record_in_span(tracer: Tracer, workflow: Workflow, verb: str, subject: str) -> str:
    """Record one event inside a span of its own; the span's trace id."""
    with tracer.start_as_current_span(verb) as span:
        record(workflow, verb, subject)
        return format(span.get_span_context().trace_id, "032x")


@pytest.fixture
def workflow(db: Any) -> Workflow:
    return Workflow.objects.create(slug="claims", name="Claims")


def test_audit_record__inside_a_span__carries_its_trace_id(
    tracer: Tracer, workflow: Workflow
) -> None:
    # Given tracing on
    # When one event is recorded inside a span, and one outside any
    trace_id = record_in_span(tracer, workflow, "test.traced", "order:1042")
    untraced = record(workflow, "test.untraced")

    # Then the first carries the span's trace id, the second none, and the chain is intact
    assert AuditEvent.objects.get(verb="test.traced").trace_id == trace_id
    assert untraced.trace_id == ""
    assert audit_verify().intact


def test_audit_record__tracing_off__no_trace_id(workflow: Workflow) -> None:
    assert not tracing.tracing_enabled()
    assert record(workflow, "test.event").trace_id == ""


def test_log__covers_the_trace_id__a_rewritten_one_is_found(
    tracer: Tracer, workflow: Workflow
) -> None:
    # Given a traced event and an untraced one, taken into the log
    record_in_span(tracer, workflow, "test.traced", "order:1042")
    record(workflow, "test.untraced")
    log_integrate()

    # When the traced one is tied to another trace, directly in the database
    traced = AuditEvent.objects.get(verb="test.traced")
    out_of_band("UPDATE audit_auditevent SET trace_id = %s WHERE id = %s", ["a" * 32, traced.pk])

    # Then verification names it
    report = audit_verify()
    assert (report.intact, report.first_bad_index, report.first_bad_sequence) == (
        False,
        0,
        traced.sequence,
    )
    assert report.problem.endswith(REWRITTEN)


def test_flight_recorder__each_event_shows_its_trace_id_linked_to_its_trace(
    tracer: Tracer, workflow: Workflow, client_for: Any
) -> None:
    # Given an event of order:1042 written in a traced request
    trace_id = record_in_span(tracer, workflow, "test.traced", "order:1042")

    # When a supervisor opens the subject's flight recorder
    response = client_for(Role.SUPERVISOR).get("/audit/flight-recorder/", {"subject": "order:1042"})

    # Then the event shows its trace id, which leads to everything that trace did
    assert response.status_code == 200
    assert (
        f'trace <a class="trace-id" href="?trace={trace_id}"><code>{trace_id}</code></a>'
        in response.content.decode()
    )


def test_flight_recorder__trace__only_that_traces_events(
    tracer: Tracer, workflow: Workflow, client_for: Any
) -> None:
    # Given two traced requests that touched order:1042, one of which also touched order:7
    first = tracer.start_span("first")
    with use_span(first, end_on_exit=True):
        record(workflow, "test.first", "order:1042")
        record(workflow, "test.first-other", "order:7")
    second = record_in_span(tracer, workflow, "test.second", "order:1042")
    first_trace = format(first.get_span_context().trace_id, "032x")
    risk = client_for(Role.RISK)

    # When risk filters by the first trace alone, and by the second within order:1042
    alone = risk.get("/audit/flight-recorder/", {"trace": first_trace})
    within = risk.get("/audit/flight-recorder/", {"subject": "order:1042", "trace": second})

    # Then each shows exactly the events of that trace (and of that subject), in order
    assert alone.status_code == within.status_code == 200
    assert [event.verb for event in alone.context["events"]] == ["test.first", "test.first-other"]
    assert [event.verb for event in within.context["events"]] == ["test.second"]
    assert f'value="{first_trace}"' in alone.content.decode()


@pytest.mark.parametrize(
    "value",
    [
        "4BF92F3577B34DA6A3CE929D0E0E4736",  # upper case
        "4bf92f3577b34da6a3ce929d0e0e473",  # 31 digits
        "4bf92f3577b34da6a3ce929d0e0e47360",  # 33 digits
        "4bf92f3577b34da6a3ce929d0e0e473g",  # not hexadecimal
        "trace-1",
    ],
)
def test_flight_recorder__bad_trace__400_naming_the_field(
    value: str, workflow: Workflow, client_for: Any
) -> None:
    record(workflow, "test.event")
    response = client_for(Role.RISK).get(
        "/audit/flight-recorder/", {"subject": "order:1042", "trace": value}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "trace: &#x27;" in html
    assert "is not a trace id (32 lowercase hexadecimal digits)" in html
    assert response.context["events"] == []
