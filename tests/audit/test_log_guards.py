"""The log against those who can write to its tables: what the database refuses, what the
sequencer refuses to build on, and what verification still finds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from escapement_client.transparency import note_sign, signer_key_generate

from apps.audit import tasks
from apps.audit.log import log_integrate, signer_key, verifier_key, witness_append
from apps.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf
from apps.audit.selectors import REWRITTEN, audit_verify, pending_count
from tests.audit.conftest import out_of_band, record_events

pytestmark = pytest.mark.django_db


def insert(sql: str, params: list[Any] | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


EVENT = (
    "INSERT INTO audit_auditevent (sequence, writer_xid, created_at, actor_type, actor, verb,"
    " target_type, target_id, subject, trace_id, payload, payload_digest)"
    " VALUES (-1, 0, {at}, 'user', 'alice', 'action.approved', 'actions.action', '1', '', '',"
    " '{{}}', 'digest')"
)


def test_event_inserted_with_its_own_number_and_transaction__the_databases_are_written() -> None:
    record_events(1)
    insert(EVENT.format(at="now()"))
    forged = AuditEvent.objects.get(actor="alice")
    assert forged.sequence > AuditEvent.objects.get(actor="system").sequence
    assert forged.writer_xid > 0


@pytest.mark.parametrize("at", ["'2020-01-01'", "'infinity'", "now() + interval '1 hour'"])
def test_event_inserted_at_another_time__refused(at: str) -> None:
    with pytest.raises(DatabaseError, match="is not now"):
        insert(EVENT.format(at=at))


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO audit_auditleaf (index, event_id, hash) SELECT -1, max(id), %s"
        " FROM audit_auditevent",
        "INSERT INTO audit_auditnode (level, index, hash) VALUES (0, 5, %s)",
    ],
)
def test_leaf_or_node_outside_the_tree__refused(sql: str) -> None:
    record_events(1)
    with pytest.raises(IntegrityError):
        insert(sql, [bytes(32)])


def test_leaf_written_beyond_the_log__sequencer_stops_verification_names_the_gap() -> None:
    record_events(2)
    log_integrate()
    record_events(1)
    insert(
        "INSERT INTO audit_auditleaf (index, event_id, hash) SELECT 7, max(id), %s"
        " FROM audit_auditevent",
        [bytes(32)],
    )
    assert log_integrate() is None
    report = audit_verify()
    assert (report.intact, report.problem) == (False, "entry 2 is missing from the log")


def test_event_kept_out_of_the_log__found_once_it_is_old() -> None:
    record_events(2)
    log_integrate()
    record_events(1)
    out_of_band(
        "UPDATE audit_auditevent SET created_at = now() - interval '20 minutes'"
        " WHERE id = (SELECT max(id) FROM audit_auditevent)"
    )
    report = audit_verify()
    assert not report.intact
    assert "1 event was written over 10 minutes ago and never taken into the log" in report.problem


def test_floor_above_this_clusters_transactions__reset_new_events_still_taken_in() -> None:
    record_events(2)
    log_integrate()
    out_of_band("UPDATE audit_auditcheckpoint SET xid_floor = 1000000000000")
    record_events(1)
    checkpoint = log_integrate()
    assert checkpoint is not None
    assert checkpoint.size == 3
    assert pending_count() == 0


def test_frontier_rewritten__sequencer_stops(caplog: pytest.LogCaptureFixture) -> None:
    record_events(3)
    log_integrate()
    out_of_band("UPDATE audit_auditcheckpoint SET frontier = %s", ['["' + "00" * 32 + '"]'])
    record_events(1)
    assert log_integrate() is None
    assert "its frontier" in caplog.text


def test_witness_holds_another_tree__sequencer_stops(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a checkpoint the witness kept, then the log rewritten and re-signed from scratch
    settings.AUDIT_WITNESS_FILE = str(tmp_path / "witness.txt")
    record_events(3)
    checkpoint = log_integrate()
    assert checkpoint is not None
    witness_append(Path(settings.AUDIT_WITNESS_FILE), checkpoint.note)
    out_of_band("DELETE FROM audit_auditcheckpoint")
    out_of_band("DELETE FROM audit_auditnode")
    out_of_band("DELETE FROM audit_auditleaf")
    out_of_band("UPDATE audit_auditevent SET actor = 'mallory'")
    # Then the sequencer will not start the log again from nothing
    assert log_integrate() is None
    assert "the witness file holds a checkpoint at size 3, beyond it" in caplog.text
    assert not AuditCheckpoint.objects.exists()


def test_witness_holds_a_fork_at_the_same_size__sequencer_stops(
    settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings.AUDIT_WITNESS_FILE = str(tmp_path / "witness.txt")
    record_events(3)
    checkpoint = log_integrate()
    assert checkpoint is not None
    # Given the witness holding another tree's checkpoint at the same size, signed by the key
    other = (
        checkpoint.note.replace(checkpoint.note.split("\n")[2], "A" * 43 + "=", 1).split("\n\n")[0]
        + "\n"
    )
    witness_append(Path(settings.AUDIT_WITNESS_FILE), note_sign(other, signer_key()))
    record_events(1)
    assert log_integrate() is None
    assert "it forks the witness's" in caplog.text


def test_function_made_in_the_schema__cannot_hide_a_rewrite() -> None:
    # Given a log, an event rewritten, and a convert_to for varchar made in the trail's schema
    # that answers the same bytes whatever the text
    record_events(3)
    log_integrate()
    out_of_band("UPDATE audit_auditevent SET actor = 'mallory' WHERE verb = 'test.event'")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION public.convert_to(character varying, name) RETURNS bytea"
            " LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$"
        )
    # Then verification still recomputes with PostgreSQL's own and finds it
    report = audit_verify()
    assert (report.intact, report.first_bad_index) == (False, 0)
    assert report.problem.endswith(REWRITTEN)


def test_key_rotated__sequencer_goes_on_with_the_past_key_known(settings: Any) -> None:
    record_events(2)
    log_integrate()
    settings.AUDIT_PAST_VERIFIER_KEYS = [verifier_key()]
    settings.AUDIT_SIGNING_KEY = signer_key_generate("escapement.local/audit")
    record_events(1)
    assert log_integrate() is not None
    assert audit_verify().intact


def test_verifier_key_given__served_without_the_signing_key(settings: Any, client: Any) -> None:
    given = verifier_key()
    settings.AUDIT_SIGNING_KEY = ""
    settings.AUDIT_VERIFIER_KEY = given
    assert client.get("/api/v1/audit/key").content.decode().strip() == given


def test_torn_witness_file__background_verification_records_a_broken_verdict(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_events(2)
    log_integrate()
    torn = tmp_path / "witness.txt"
    torn.write_text("escapement.local/audit\n2\n")
    settings.AUDIT_WITNESS_FILE = str(torn)
    monkeypatch.setattr(tasks, "progress_store", lambda: _NoStore())
    tasks.verify("")
    verdict = AuditEvent.objects.get(verb="audit.verified").payload
    assert not verdict["intact"]
    assert verdict["problem"].startswith("the witness file cannot be read")
    assert AuditCheckpoint.objects.count() == 1
    assert AuditLeaf.objects.count() == 2


class _NoStore:
    """Stands in for Redis where a test looks only at the recorded verdict."""

    def get(self, *_: Any) -> None:
        return None

    def set(self, *_: Any, **__: Any) -> None:
        return None

    def delete(self, *_: Any) -> None:
        return None
