"""Writers share no lock: an open transaction holding an event never blocks another writer, and
its event still enters the log when it commits, after events written later. Each checkpoint
leaves the database for the witness file and the witness URL once it has committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from apps.audit.log import log_integrate, log_integrate_all, witness_read
from apps.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf
from apps.audit.selectors import audit_verify, pending_count
from apps.audit.services import audit_record
from apps.registry.models import Workflow
from tests.audit.conftest import out_of_band

pytestmark = pytest.mark.django_db(transaction=True)

# Far above what a healthy run needs on a busy machine.
WAIT_SECONDS = 30


def test_writers__one_transaction_open__another_writes_and_commits_without_waiting() -> None:
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    written, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                audit_record(actor="system", verb="test.slow", target=workflow)
                written.set()
                assert release.wait(WAIT_SECONDS)
        except BaseException as exc:  # noqa: BLE001 (reported to the test's thread)
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert written.wait(WAIT_SECONDS)
        # When another writer appends while the first transaction is open, with any lock wait
        # turned into an error
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            audit_record(actor="system", verb="test.fast", target=workflow)
        # Then it committed, and the sequencer takes it in while the first is still open
        assert log_integrate() is not None
        assert list(AuditLeaf.objects.values_list("event__verb", flat=True)) == ["test.fast"]
    finally:
        release.set()
        thread.join(WAIT_SECONDS)
    assert not failure

    # When the first commits, its event (written earlier) enters the log after the later one
    assert log_integrate_all() == 2
    assert list(AuditLeaf.objects.order_by("index").values_list("event__verb", flat=True)) == [
        "test.fast",
        "test.slow",
    ]
    assert pending_count() == 0
    assert audit_verify().intact


class _Witness(BaseHTTPRequestHandler):
    received: list[tuple[str, str]] = []
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append((self.headers["Content-Type"], self.rfile.read(length).decode()))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def witness_url() -> Iterator[str]:
    """A local HTTP witness that keeps what it is sent."""
    _Witness.received = []
    _Witness.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Witness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/checkpoints"
    finally:
        server.shutdown()
        server.server_close()


def test_checkpoint__committed__in_the_witness_file_and_sent_to_the_witness(
    settings: Any, tmp_path: Path, witness_url: str
) -> None:
    settings.AUDIT_WITNESS_FILE = str(tmp_path / "witness" / "checkpoints.txt")
    settings.AUDIT_WITNESS_URL = witness_url
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    for verb in ("test.one", "test.two"):
        with transaction.atomic():
            audit_record(actor="system", verb=verb, target=workflow)
        log_integrate()
    notes = list(AuditCheckpoint.objects.order_by("size").values_list("note", flat=True))
    assert len(notes) == 2
    assert witness_read(Path(settings.AUDIT_WITNESS_FILE)) == notes
    assert _Witness.received == [("text/plain; charset=utf-8", note) for note in notes]
    # ... and what the witness kept verifies the log
    assert audit_verify(kept=notes).intact


def test_checkpoint__witness_refuses__checkpoint_kept_and_the_refusal_logged(
    settings: Any, witness_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings.AUDIT_WITNESS_URL = witness_url
    _Witness.status = 503
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    with transaction.atomic():
        audit_record(actor="system", verb="test.one", target=workflow)
    checkpoint = log_integrate()
    assert checkpoint is not None
    assert AuditCheckpoint.objects.filter(size=1).exists()
    assert "audit checkpoint 1 not sent to the witness" in caplog.text


def test_checkpoint__transaction_rolled_back__nothing_leaves_the_database(
    settings: Any, tmp_path: Path
) -> None:
    settings.AUDIT_WITNESS_FILE = str(tmp_path / "checkpoints.txt")
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    with transaction.atomic():
        audit_record(actor="system", verb="test.one", target=workflow)

    def integrate_then_fail() -> None:
        with transaction.atomic():
            assert log_integrate() is not None
            raise RuntimeError("the caller's transaction fails after the checkpoint")

    with pytest.raises(RuntimeError):
        integrate_then_fail()
    assert not Path(settings.AUDIT_WITNESS_FILE).exists()
    assert not AuditCheckpoint.objects.exists()
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize(
    "forgery",
    [
        "UPDATE audit_auditcheckpoint SET root_hash = %s",
        "INSERT INTO audit_auditleaf (index, event_id, hash) SELECT 99, max(id), %s"
        " FROM audit_auditevent",
    ],
)
def test_integrate__state_written_by_another_hand__sequencer_stops_and_says_so(
    forgery: str, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    with transaction.atomic():
        audit_record(actor="system", verb="test.one", target=workflow)
    assert log_integrate() is not None
    with transaction.atomic():
        audit_record(actor="system", verb="test.two", target=workflow)
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(forgery, [bytes(32)])
        cursor.execute("SET session_replication_role = origin")
    assert log_integrate() is None
    assert "the sequencer stops at the checkpoint of size 1" in caplog.text
    assert AuditCheckpoint.objects.count() == 1


def test_verify__outside_a_transaction__batches_side_by_side_find_the_same_problems() -> None:
    # Given 9 committed entries in the log
    workflow = Workflow.objects.create(slug="claims", name="Claims")
    for number in range(9):
        with transaction.atomic():
            audit_record(actor="system", verb="test.event", target=workflow, data={"n": number})
    log_integrate_all()
    assert audit_verify(batch=2) == audit_verify(batch=50_000)
    assert audit_verify(batch=2).checked == 9
    # When entry 5's event is rewritten, then entry 3's leaf removed, out of band
    fifth = AuditEvent.objects.order_by("sequence")[5]
    with transaction.atomic():
        out_of_band("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [fifth.pk])
    # Then every batch size names it
    for batch in (1, 2, 3, 4, 50_000):
        report = audit_verify(batch=batch)
        assert (report.intact, report.checked, report.first_bad_index) == (False, 5, 5), batch
    with transaction.atomic():
        out_of_band("DELETE FROM audit_auditleaf WHERE index = 3")
    for batch in (1, 2, 3, 50_000):
        report = audit_verify(batch=batch)
        assert (report.checked, report.problem) == (3, "entry 3 is missing from the log"), batch
