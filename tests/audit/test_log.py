"""The audit trail as a Merkle log: the sequencer takes committed events in, in the order they were
written; signed checkpoints fix its size and root; verification recomputes every entry from its
event and finds a changed, removed or truncated log against any checkpoint kept."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from escapement_client.transparency import (
    checkpoint_parse,
    consistency_verify,
    entry_encode,
    leaf_hash,
    note_verify,
    root_from_leaf_hashes,
    signer_key_generate,
    verifier_key_for,
)

from apps.audit.log import (
    SEQUENCER_LOCK,
    consistency_proof,
    event_fields,
    log_integrate,
    log_integrate_all,
    verifier_key,
    witness_append,
    witness_read,
)
from apps.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf, AuditNode
from apps.audit.selectors import PAYLOAD, REWRITTEN, audit_verify, pending_count
from apps.audit.services import audit_record
from tests.audit.conftest import out_of_band, record_events

pytestmark = pytest.mark.django_db

TRAIL = ("audit_auditevent", "audit_auditleaf", "audit_auditnode", "audit_auditcheckpoint")


def expected_root(events: list[AuditEvent]) -> bytes:
    """The root computed in Python alone, from the entry encoding of the stand-alone verifier."""
    return root_from_leaf_hashes([leaf_hash(entry_encode(**event_fields(e))) for e in events])


# --- Writing and sequencing -------------------------------------------------------------------


def test_integrate__committed_events__leaves_in_writing_order_under_a_signed_checkpoint() -> None:
    # Given three events, the last with text that is not ASCII, a subject and a whole second
    workflow = record_events(2)
    with transaction.atomic():
        audit_record(
            actor="agent:bot", verb="test.odd", target=workflow, subject="Zoë → 10 €", data={}
        )
    out_of_band(
        "UPDATE audit_auditevent SET created_at = %s WHERE verb = 'test.odd'",
        [datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)],
    )
    events = list(AuditEvent.objects.order_by("sequence"))
    assert not AuditLeaf.objects.exists()

    # When the sequencer runs
    checkpoint = log_integrate()

    # Then each event is a leaf in the order written, and the signed checkpoint's root is the
    # one the stand-alone verifier computes from the events alone
    assert checkpoint is not None
    assert list(AuditLeaf.objects.order_by("index").values_list("event_id", flat=True)) == [
        event.pk for event in events
    ]
    assert (checkpoint.size, bytes(checkpoint.root_hash)) == (3, expected_root(events))
    signed = checkpoint_parse(note_verify(checkpoint.note, verifier_key()))
    assert (signed.origin, signed.size, signed.root_hash) == (
        "escapement.local/audit",
        3,
        expected_root(events),
    )
    # ... and nothing new means no new checkpoint
    assert log_integrate() is None


def test_integrate__in_batches__each_batch_a_checkpoint_and_every_root_right() -> None:
    record_events(11)
    sizes = []
    while (checkpoint := log_integrate(limit=4)) is not None:
        sizes.append(checkpoint.size)
    assert sizes == [4, 8, 11]
    events = list(AuditEvent.objects.order_by("sequence"))
    for size in sizes:
        assert bytes(AuditCheckpoint.objects.get(size=size).root_hash) == expected_root(
            events[:size]
        )
    # The perfect subtrees of 11 leaves: 5 pairs, 2 fours, 1 eight
    assert sorted(AuditNode.objects.values_list("level", "index")) == [
        (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1), (3, 0)
    ]  # fmt: skip
    assert pending_count() == 0


def test_integrate__another_sequencer_running__returns_at_once() -> None:
    record_events(2)
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [SEQUENCER_LOCK])
        assert log_integrate() is None
        assert pending_count() == 2
        # (released here: a closed connection's backend may hold it a moment longer)
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [SEQUENCER_LOCK])
    finally:
        other.close()
    assert log_integrate() is not None


def test_consistency_proof__between_checkpoints__verifies_and_fails_on_one_byte() -> None:
    record_events(5)
    log_integrate()
    record_events(8)
    log_integrate()
    first, second = (AuditCheckpoint.objects.get(size=size) for size in (5, 13))
    proof = consistency_proof(first=5, second=13)
    roots = {"first_root": bytes(first.root_hash), "second_root": bytes(second.root_hash)}
    assert consistency_verify(first=5, second=13, path=proof, **roots)
    for position in range(len(proof)):
        changed = list(proof)
        changed[position] = bytes([changed[position][0] ^ 1]) + changed[position][1:]
        assert not consistency_verify(first=5, second=13, path=changed, **roots)


# --- The database refuses changes --------------------------------------------------------------


@pytest.mark.parametrize("table", TRAIL)
@pytest.mark.parametrize(
    "statement",
    ["UPDATE {table} SET {column} = {column}", "DELETE FROM {table}", "TRUNCATE {table} CASCADE"],
)
def test_trail_tables__update_delete_truncate__refused_even_to_the_owner(
    table: str, statement: str
) -> None:
    record_events(2)
    log_integrate()
    column = "size" if table == "audit_auditcheckpoint" else "hash"
    column = "verb" if table == "audit_auditevent" else column
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(table=table, column=column))
    assert audit_verify().intact
    assert AuditLeaf.objects.count() == 2


# --- Verification -----------------------------------------------------------------------------


def kept_notes() -> list[str]:
    """What a witness kept: every checkpoint signed so far."""
    return list(AuditCheckpoint.objects.order_by("size").values_list("note", flat=True))


def test_verify__untouched_log__intact_against_every_checkpoint() -> None:
    record_events(3)
    log_integrate()
    record_events(2)
    log_integrate()
    record_events(1)  # not yet in the log
    report = audit_verify(kept=kept_notes())
    assert (report.intact, report.checked, report.checkpoints, report.pending) == (True, 5, 4, 1)


def test_verify__payload_rewritten__names_the_entry() -> None:
    record_events(5)
    log_integrate()
    third = AuditEvent.objects.order_by("sequence")[2]
    out_of_band("UPDATE audit_auditevent SET payload = %s WHERE id = %s", ['{"n": 99}', third.pk])
    report = audit_verify()
    assert (report.intact, report.first_bad_index, report.first_bad_sequence) == (
        False,
        2,
        third.sequence,
    )
    assert report.problem == f"entry 2 (event #{third.sequence}): {PAYLOAD}"


def test_verify__field_rewritten__names_the_entry() -> None:
    record_events(3)
    log_integrate()
    first = AuditEvent.objects.order_by("sequence")[0]
    out_of_band("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [first.pk])
    report = audit_verify()
    assert (report.intact, report.first_bad_index, report.checked) == (False, 0, 0)
    assert report.problem.endswith(REWRITTEN)


def rehash_everything() -> None:
    """What a forger with the owner's rights does after rewriting an event: every leaf, every
    kept subtree and every stored checkpoint's row recomputed to match (the notes cannot be
    signed again without the key, which is not in the database)."""
    out_of_band("DELETE FROM audit_auditnode")
    out_of_band("DELETE FROM audit_auditcheckpoint")
    events = list(AuditEvent.objects.order_by("sequence"))
    for index, event in enumerate(events):
        digest = leaf_hash(entry_encode(**event_fields(event)))
        out_of_band("UPDATE audit_auditleaf SET hash = %s WHERE index = %s", [digest, index])


def test_verify__rewritten_and_rehashed__fails_the_kept_checkpoint_naming_its_size(
    tmp_path: Path,
) -> None:
    # Given a log of 6 entries and the checkpoints a witness kept
    record_events(4)
    log_integrate()
    record_events(2)
    log_integrate()
    witness = tmp_path / "witness.txt"
    for note in kept_notes():
        witness_append(witness, note)
    # When entry 4 is rewritten and everything after recomputed, stored checkpoints removed
    fifth = AuditEvent.objects.order_by("sequence")[4]
    out_of_band("UPDATE audit_auditevent SET verb = 'test.nothing' WHERE id = %s", [fifth.pk])
    rehash_everything()

    # Then the database alone looks whole, but the kept checkpoint at size 6 does not match
    assert audit_verify().intact
    report = audit_verify(kept=witness_read(witness))
    assert (report.intact, report.bad_size) == (False, 6)
    assert report.problem == (
        "the log's first 6 entries do not match the kept checkpoint at size 6: "
        "an entry before it was changed; it matched up to size 4"
    )


def test_verify__stored_checkpoint_row_rewritten__its_signature_tells() -> None:
    record_events(3)
    log_integrate()
    out_of_band("UPDATE audit_auditcheckpoint SET root_hash = %s", [bytes(32)])
    report = audit_verify()
    assert (report.intact, report.bad_size) == (False, 3)
    assert "does not match the note signed for it" in report.problem


def test_verify__newest_events_deleted__missing_tail_named_against_the_kept_checkpoint() -> None:
    # Given 9 entries and the witness's checkpoints
    record_events(9)
    log_integrate()
    kept = kept_notes()
    # When the newest two are deleted with their leaves, subtrees and checkpoints
    out_of_band("DELETE FROM audit_auditcheckpoint")
    out_of_band("DELETE FROM audit_auditnode")
    out_of_band("DELETE FROM audit_auditleaf WHERE index >= 7")
    out_of_band(
        "DELETE FROM audit_auditevent WHERE id NOT IN (SELECT event_id FROM audit_auditleaf)"
    )
    # Then the kept checkpoint shows what is missing
    report = audit_verify(kept=kept)
    assert (report.intact, report.checked, report.bad_size) == (False, 7, 9)
    assert report.problem == (
        "the log holds 7 entries, but the kept checkpoint at size 9: 2 entries are missing"
    )


def test_verify__truncated__every_entry_missing() -> None:
    record_events(4)
    log_integrate()
    kept = kept_notes()
    out_of_band("TRUNCATE " + ", ".join(TRAIL))
    report = audit_verify(kept=kept)
    assert (report.intact, report.checked, report.bad_size) == (False, 0, 4)
    assert report.problem.startswith("the log holds 0 entries")


def test_verify__a_leaf_removed_from_the_middle__named() -> None:
    record_events(4)
    log_integrate()
    out_of_band("DELETE FROM audit_auditleaf WHERE index = 1")
    report = audit_verify()
    assert (report.intact, report.first_bad_index) == (False, 1)
    assert report.problem == "entry 1 is missing from the log"


def test_verify__an_event_removed_its_leaf_kept__named() -> None:
    record_events(3)
    log_integrate()
    second = AuditEvent.objects.order_by("sequence")[1]
    # (the leaf's foreign key would refuse it: the forger drops that first)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'audit_auditleaf'::regclass"
            " AND contype = 'f'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE audit_auditleaf DROP CONSTRAINT "{name}"')
    out_of_band("DELETE FROM audit_auditevent WHERE id = %s", [second.pk])
    report = audit_verify()
    assert (report.intact, report.first_bad_index) == (False, 1)
    assert report.problem == "entry 1: its event is missing"


def test_verify__kept_checkpoint_signed_by_another_key__refused() -> None:
    record_events(2)
    checkpoint = log_integrate()
    assert checkpoint is not None
    report = audit_verify(kept=[checkpoint.note], key=verifier_key_for(signer_key_generate("x")))
    assert not report.intact
    assert report.problem.startswith("the checkpoint signed at size 2: ")


# --- The command --------------------------------------------------------------------------------


def test_audit_verify_command__intact_then_truncated_against_a_kept_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record_events(3)
    log_integrate_all()
    kept = tmp_path / "kept.txt"
    for note in kept_notes():
        witness_append(kept, note)
    out = StringIO()
    call_command("audit_verify", "--checkpoint", str(kept), stdout=out)
    assert out.getvalue().strip() == (
        "audit log intact: 3 entries verified against 2 signed checkpoints "
        "(1 kept outside the database); 0 events not yet in the log"
    )
    out_of_band("TRUNCATE " + ", ".join(TRAIL))
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify", "--checkpoint", str(kept))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "audit log broken: the log holds 0 entries, but the kept checkpoint at size 3: "
        "3 entries are missing"
    )


def test_audit_verify_command__unreadable_or_malformed_file__names_the_option(
    tmp_path: Path,
) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"--checkpoint: cannot read .*missing\.txt"):
        call_command("audit_verify", "--checkpoint", str(tmp_path / "missing.txt"))
    cut = tmp_path / "cut.txt"
    cut.write_text("escapement.local/audit\n3\n")
    with pytest.raises(CommandError, match=r"--checkpoint: .*cut short"):
        call_command("audit_verify", "--checkpoint", str(cut))


def test_audit_key_command__prints_the_verifier_key() -> None:
    out = StringIO()
    call_command("audit_key", stdout=out)
    assert out.getvalue().strip() == verifier_key()
    assert verifier_key().startswith("escapement.local/audit+")


def test_verify__key_rotated__old_checkpoints_verify_with_the_past_key(settings: Any) -> None:
    # Given checkpoints signed with the first key, then one with a new key
    record_events(2)
    log_integrate()
    old = verifier_key()
    settings.AUDIT_SIGNING_KEY = signer_key_generate("escapement.local/audit")
    record_events(1)
    log_integrate()
    # Then without the old key the first checkpoint does not verify; with it, all do
    report = audit_verify()
    assert (report.intact, report.bad_size) == (False, 2)
    settings.AUDIT_PAST_VERIFIER_KEYS = [old]
    assert audit_verify().intact


def test_verify__event_written_before_canonical_text_was_kept__digest_checked_in_python() -> None:
    # Given an event without canonical text (as written before it was kept), in the log
    record_events(2)
    second = AuditEvent.objects.order_by("sequence")[1]
    out_of_band("UPDATE audit_auditevent SET payload_canonical = NULL WHERE id = %s", [second.pk])
    log_integrate()
    assert audit_verify().intact
    # When its payload is changed, Python's recomputation of its digest finds it
    out_of_band("UPDATE audit_auditevent SET payload = '{\"n\": 7}' WHERE id = %s", [second.pk])
    report = audit_verify()
    assert (report.intact, report.first_bad_index) == (False, 1)
    assert report.problem.endswith(PAYLOAD)


@pytest.mark.parametrize("batch", [1, 2, 3, 50_000])
def test_verify__any_batch_size__same_verdicts(batch: int) -> None:
    record_events(3)
    log_integrate()
    record_events(4)
    log_integrate()
    assert audit_verify(batch=batch).checked == 7
    fifth = AuditEvent.objects.order_by("sequence")[4]
    out_of_band("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [fifth.pk])
    report = audit_verify(batch=batch)
    assert (report.intact, report.checked, report.first_bad_index) == (False, 4, 4)
    out_of_band("DELETE FROM audit_auditleaf WHERE index = 2")
    report = audit_verify(batch=batch)
    assert (report.checked, report.problem) == (2, "entry 2 is missing from the log")
