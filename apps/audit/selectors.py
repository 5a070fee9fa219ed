"""Reading the audit trail and proving it intact."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from apps.audit.models import AuditEvent
from apps.audit.services import GENESIS_HASH, payload_digest


@dataclass(frozen=True)
class ChainReport:
    intact: bool
    checked: int
    first_bad_sequence: int | None = None
    problem: str = ""


MISSING = "is missing"
PAYLOAD = "its payload does not match its digest"
LINK = "it does not link to the event before"
HASH = "its fields do not match its hash"


def audit_verify(*, batch: int = 50_000) -> ChainReport:
    """Walk the chain in order, recomputing every digest and link; stop at the first break.
    The database recomputes them (`_verify_in_database`)."""
    return _verify_in_database(batch=batch)


# One batch of the chain, checked by PostgreSQL: each event's sequence against its place, its
# payload against its digest (sha256 of the canonical text, and the text against the stored
# JSON), its link against the hash before it, and its hash against its fields, joined as
# `event_hash` joins them (`created_at` written as Python's isoformat() writes a UTC time).
# Returns the batch's size, last sequence and last hash, and its first bad event with what is
# wrong with it (CASE tries the checks in this order, so the text is read as JSON only once its
# digest matched). Events without canonical text (written before it was kept) skip the payload
# check here: Python does it (`_legacy_payload_problem`).
_BATCH_SQL = """
WITH batch AS (
    SELECT sequence, created_at, actor_type, actor, verb, target_type, target_id, subject,
           trace_id, payload, payload_canonical, payload_digest, previous_hash, hash,
           %(first)s + row_number() OVER (ORDER BY sequence) - 1 AS expected_sequence,
           coalesce(lag(hash) OVER (ORDER BY sequence), %(previous)s) AS expected_previous
    FROM (
        SELECT * FROM audit_auditevent WHERE sequence > %(after)s ORDER BY sequence
        LIMIT %(limit)s
    ) page
), checked AS (
    SELECT sequence, expected_sequence, hash,
        CASE
            WHEN sequence <> expected_sequence THEN 0
            WHEN payload_canonical IS NOT NULL
                 AND encode(sha256(convert_to(payload_canonical, 'UTF8')), 'hex')
                     <> payload_digest THEN 1
            WHEN payload_canonical IS NOT NULL AND payload_canonical::jsonb <> payload THEN 1
            WHEN previous_hash <> expected_previous THEN 2
            WHEN encode(sha256(convert_to(
                     sequence::text
                     || '|' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                     || CASE WHEN extract(microseconds FROM created_at)::bigint %% 1000000 = 0
                             THEN ''
                             ELSE '.' || to_char(created_at AT TIME ZONE 'UTC', 'US') END
                     || '+00:00'
                     || '|' || actor_type || '|' || actor || '|' || verb
                     || '|' || target_type || '|' || target_id || '|' || subject
                     || '|' || payload_digest || '|' || previous_hash
                     || CASE WHEN trace_id = '' THEN '' ELSE '|' || trace_id END,
                     'UTF8')), 'hex') <> hash THEN 3
        END AS problem
    FROM batch
), last AS (
    SELECT sequence, hash, expected_sequence FROM checked ORDER BY sequence DESC LIMIT 1
)
SELECT (SELECT count(*) FROM checked), last.sequence, last.hash, last.expected_sequence,
       bad.sequence, bad.expected_sequence, bad.problem
FROM last
LEFT JOIN LATERAL (
    SELECT sequence, expected_sequence, problem FROM checked
    WHERE problem IS NOT NULL ORDER BY sequence LIMIT 1
) bad ON true
"""
_PROBLEMS = (MISSING, PAYLOAD, LINK, HASH)


def _verify_in_database(*, batch: int) -> ChainReport:
    """The whole chain checked by PostgreSQL, a batch of events per statement: sha256 and the
    comparisons run in the database, and only a few numbers come back (no row is read into
    Python but events written before the canonical text was kept)."""
    previous, expected, checked, after = GENESIS_HASH, 1, 0, 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                _BATCH_SQL,
                {"after": after, "limit": batch, "first": expected, "previous": previous},
            )
            row = cursor.fetchone()
            if row is None:
                return ChainReport(True, checked)
            count, last_sequence, last_hash, last_expected, bad, bad_expected, problem = row
            found: tuple[int, int, int] | None = None  # (event, check, expected sequence)
            if bad is not None:
                found = (bad, problem, bad_expected)
            legacy = _legacy_payload_problem(cursor, after, bad or last_sequence)
            if legacy is not None and (found is None or (legacy, 1) < found[:2]):
                found = (legacy, 1, expected + _place(cursor, after, legacy))
            if found is not None:
                sequence, check, at = found
                if check == 0:
                    return ChainReport(False, checked + at - expected, at, f"event #{at} {MISSING}")
                return ChainReport(False, checked + at - expected, sequence, _PROBLEMS[check])
            checked += count
            previous, expected, after = last_hash, last_expected + 1, last_sequence


def _legacy_payload_problem(cursor: Any, after: int, upto: int) -> int | None:
    """The first event in (after, upto] without canonical text whose payload does not match its
    digest, recomputed in Python (events written before the text was kept)."""
    cursor.execute(
        "SELECT sequence, payload::text, payload_digest FROM audit_auditevent"
        " WHERE sequence > %s AND sequence <= %s AND payload_canonical IS NULL"
        " ORDER BY sequence",
        [after, upto],
    )
    for sequence, payload, digest in cursor.fetchall():
        if payload_digest(json.loads(payload)) != digest:
            return int(sequence)
    return None


def _place(cursor: Any, after: int, sequence: int) -> int:
    """How many events of the batch after `after` come before `sequence`."""
    cursor.execute(
        "SELECT count(*) FROM audit_auditevent WHERE sequence > %s AND sequence < %s",
        [after, sequence],
    )
    return int(cursor.fetchone()[0])


def recent_events(*, verb_prefix: str = "", target: str = "") -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.order_by("-sequence")
    if verb_prefix:
        events = events.filter(verb__startswith=verb_prefix)
    if target:
        events = events.filter(target_type=target)
    return events


def flight_record(
    *, subject: str = "", action_id: str = "", trace_id: str = ""
) -> QuerySet[AuditEvent]:
    """Everything that happened to one business object, or to one action, oldest first; with a
    trace id, only what the request or task of that trace did (alone: all it did)."""
    events = AuditEvent.objects.order_by("sequence")
    if trace_id:
        events = events.filter(trace_id=trace_id)
    if subject:
        return events.filter(subject=subject)
    if action_id:
        return events.filter(target_type="actions.action", target_id=action_id)
    return events
