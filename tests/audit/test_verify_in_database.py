"""Verification inside PostgreSQL names the first bad event in any batch size, checks the
canonical text it keeps, and still checks events written before that text was kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.selectors import (
    HASH,
    LINK,
    PAYLOAD,
    ChainReport,
    _verify_in_database,
    audit_verify,
)
from apps.audit.services import GENESIS_HASH, audit_record, canonical_json, payload_digest
from apps.audit.services import event_hash as hash_of
from apps.registry.models import Workflow
from tests.audit.test_chain import out_of_band, record_events

pytestmark = pytest.mark.django_db

# Payloads whose canonical text is not trivial: nesting, key order, non-ASCII, numbers.
PAYLOADS: list[dict[str, Any]] = [
    {"n": 1},
    {"b": [1, 2.5, {"z": None, "a": True}], "a": "Zoë → 10 €"},
    {},
    {"amount": "70.00", "reasons": ["policy refunds-cap", 'second "quoted"']},
]


def record_mixed() -> None:
    workflow = Workflow.objects.create(slug="mixed", name="Mixed")
    for number, payload in enumerate(PAYLOADS * 2):
        with transaction.atomic():
            audit_record(actor="agent:bot", verb="test.mixed", target=workflow, data=payload)
            if number == 3:
                # One event with a whole second as its time: isoformat() writes no fraction.
                event = AuditEvent.objects.order_by("-sequence").first()
                assert event is not None
                out_of_band(
                    "UPDATE audit_auditevent SET created_at = %s, hash = %s WHERE sequence = %s",
                    [
                        datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC),
                        "to be rehashed",
                        event.sequence,
                    ],
                )
    rehash_from(1)


def rehash_from(sequence: int) -> None:
    """Recompute every hash from `sequence` on, as a forger with the owner's rights would after
    changing an event: the chain is then consistent again, field for field."""
    previous = GENESIS_HASH
    for event in AuditEvent.objects.order_by("sequence"):
        if event.sequence >= sequence:
            fresh = hash_of(
                sequence=event.sequence,
                created_at=event.created_at,
                actor_type=event.actor_type,
                actor=event.actor,
                verb=event.verb,
                target_type=event.target_type,
                target_id=event.target_id,
                subject=event.subject,
                digest=event.payload_digest,
                previous_hash=previous,
                trace_id=event.trace_id,
            )
            out_of_band(
                "UPDATE audit_auditevent SET previous_hash = %s, hash = %s WHERE sequence = %s",
                [previous, fresh, event.sequence],
            )
            previous = fresh
        else:
            previous = event.hash


def test_verify__intact_mixed_chain__intact_in_any_batch_size() -> None:
    record_mixed()
    for batch in (1, 3, 5, 50_000):
        assert _verify_in_database(batch=batch) == ChainReport(True, len(PAYLOADS) * 2)
    assert audit_verify() == ChainReport(True, len(PAYLOADS) * 2)


def test_verify__traced_event_with_a_whole_second__hash_recomputed_by_the_database() -> None:
    record_mixed()
    out_of_band("UPDATE audit_auditevent SET trace_id = %s WHERE sequence = 6", ["ab" * 16])
    rehash_from(6)
    assert _verify_in_database(batch=50_000) == ChainReport(True, len(PAYLOADS) * 2)


Tamper = Callable[[], None]
TAMPERS: dict[str, tuple[Tamper, int, str]] = {
    "payload": (
        lambda: out_of_band(
            "UPDATE audit_auditevent SET payload = %s WHERE sequence = 5", ['{"n": 2}']
        ),
        5,
        PAYLOAD,
    ),
    "link": (
        lambda: out_of_band(
            "UPDATE audit_auditevent SET previous_hash = %s WHERE sequence = 4", ["f" * 64]
        ),
        4,
        LINK,
    ),
    "subject": (
        lambda: out_of_band("UPDATE audit_auditevent SET subject = 'order:1' WHERE sequence = 7"),
        7,
        HASH,
    ),
    "time": (
        lambda: out_of_band(
            "UPDATE audit_auditevent SET created_at = created_at + interval '1 microsecond'"
            " WHERE sequence = 2"
        ),
        2,
        HASH,
    ),
    "removed": (
        lambda: out_of_band("DELETE FROM audit_auditevent WHERE sequence = 6"),
        6,
        "event #6 is missing",
    ),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_verify__tampered__first_bad_event_named_in_any_batch_size(tamper: str) -> None:
    record_mixed()
    change, sequence, problem = TAMPERS[tamper]
    change()
    for batch in (1, 3, 50_000):
        report = _verify_in_database(batch=batch)
        assert (report.intact, report.first_bad_sequence, report.problem) == (
            False,
            sequence,
            problem,
        )
        assert report.checked == sequence - 1


def test_verify__canonical_text_rewritten__payload_named() -> None:
    record_mixed()
    out_of_band(
        "UPDATE audit_auditevent SET payload_canonical = %s WHERE sequence = 3", ['{"n":3}']
    )
    report = _verify_in_database(batch=50_000)
    assert (report.intact, report.first_bad_sequence, report.problem) == (False, 3, PAYLOAD)


def test_verify__canonical_text_and_payload_rewritten_together__digest_names_it() -> None:
    record_mixed()
    forged = {"amount": "7.00"}
    out_of_band(
        "UPDATE audit_auditevent SET payload = %s, payload_canonical = %s WHERE sequence = 4",
        [json.dumps(forged), canonical_json(forged)],
    )
    report = _verify_in_database(batch=50_000)
    assert (report.first_bad_sequence, report.problem) == (4, PAYLOAD)


def test_verify__events_written_before_the_canonical_text__checked_in_python() -> None:
    # Given a chain whose first events carry no canonical text (written before it was kept)
    record_events(6)
    out_of_band("UPDATE audit_auditevent SET payload_canonical = NULL WHERE sequence <= 4")
    assert _verify_in_database(batch=2) == ChainReport(True, 6)

    # When an old event's payload is changed
    out_of_band("UPDATE audit_auditevent SET payload = %s WHERE sequence = 3", ['{"n": 7}'])

    # Then it is named, in any batch size
    for batch in (1, 2, 4, 50_000):
        assert _verify_in_database(batch=batch) == ChainReport(False, 2, 3, PAYLOAD)


def test_verify__old_event_bad_and_later_gap__the_earlier_is_named() -> None:
    record_events(6)
    out_of_band("UPDATE audit_auditevent SET payload_canonical = NULL WHERE sequence = 2")
    out_of_band("UPDATE audit_auditevent SET payload = %s WHERE sequence = 2", ['{"n": 9}'])
    out_of_band("DELETE FROM audit_auditevent WHERE sequence = 5")
    assert _verify_in_database(batch=50_000) == ChainReport(False, 1, 2, PAYLOAD)


def test_append__canonical_text_is_what_was_digested() -> None:
    record_mixed()
    for event in AuditEvent.objects.all():
        assert event.payload_canonical == canonical_json(event.payload)
        assert payload_digest(event.payload) == event.payload_digest
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_auditevent WHERE payload_canonical IS NULL")
        assert cursor.fetchone() == (0,)
