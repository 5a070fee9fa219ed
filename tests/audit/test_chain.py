"""The audit trail is one hash chain; verification finds the first event that was altered."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.audit.services import audit_record
from apps.registry.models import Workflow

pytestmark = pytest.mark.django_db


def out_of_band(sql: str, params: list[Any] | None = None) -> None:
    """Change the audit table the way an attacker with the database owner's rights could:
    with the append-only trigger switched off (inside the test's transaction only)."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params or [])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def record_events(count: int) -> Workflow:
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    for number in range(count):
        with transaction.atomic():
            audit_record(actor="system", verb="test.event", target=workflow, data={"n": number})
    return workflow


def test_chain__appended__links_each_event_to_the_one_before() -> None:
    record_events(3)
    events = list(AuditEvent.objects.order_by("sequence"))
    assert [event.sequence for event in events] == [1, 2, 3]
    assert events[0].previous_hash == "0" * 64
    assert events[1].previous_hash == events[0].hash
    assert events[2].previous_hash == events[1].hash
    assert audit_verify().intact


def test_verify__payload_tampered_out_of_band__names_that_event() -> None:
    # Given five events, and the third one's payload edited directly in the database
    record_events(5)
    out_of_band("UPDATE audit_auditevent SET payload = %s WHERE sequence = 3", ['{"n": 99}'])
    # When the chain is verified
    report = audit_verify()
    # Then it is broken at exactly that event
    assert not report.intact
    assert report.first_bad_sequence == 3
    assert report.checked == 2
    assert report.problem == "its payload does not match its digest"


def test_verify__event_removed__names_the_gap() -> None:
    record_events(4)
    out_of_band("DELETE FROM audit_auditevent WHERE sequence = 2")
    report = audit_verify()
    assert (report.intact, report.first_bad_sequence) == (False, 2)
    assert report.problem == "event #2 is missing"


def test_verify__actor_rewritten_with_digest_kept__hash_mismatch() -> None:
    record_events(2)
    out_of_band("UPDATE audit_auditevent SET actor = 'mallory' WHERE sequence = 1")
    report = audit_verify()
    assert (report.first_bad_sequence, report.problem) == (1, "its fields do not match its hash")


def test_audit_verify_command__intact_and_broken(capsys: pytest.CaptureFixture[str]) -> None:
    record_events(3)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().strip() == "audit chain intact: 3 events verified"
    out_of_band("UPDATE audit_auditevent SET verb = 'test.other' WHERE sequence = 2")
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify")
    assert exit_info.value.code == 1
    assert "audit chain broken at event #2" in capsys.readouterr().err


def test_audit_page__risk_user__sees_events_and_verdict(client_for: Any) -> None:
    client = client_for(Role.RISK)  # the risk user's creation is the chain's first event
    record_events(2)
    response = client.get("/audit/?verb=test.")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Chain intact: 3 events verified." in html
    assert html.count("<code>test.event</code>") == 2


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET actor = 'mallory' WHERE sequence = 1",
        "DELETE FROM audit_auditevent WHERE sequence = 1",
    ],
)
def test_audit_table__update_or_delete__refused_by_the_database(sql: str) -> None:
    # Given a recorded event
    record_events(1)
    # When anyone tries to change or remove it with plain SQL
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    # Then it is still there, unchanged
    event = AuditEvent.objects.get(sequence=1)
    assert event.actor == "system"
    assert audit_verify().intact


def test_audit_orm__update__refused_too() -> None:
    record_events(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(sequence=1).update(verb="x")
    assert AuditEvent.objects.get(sequence=1).verb == "test.event"
