"""Reading the audit trail and proving it intact."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from apps.audit.models import AuditEvent
from apps.audit.services import GENESIS_HASH, event_hash, payload_digest


@dataclass(frozen=True)
class ChainReport:
    intact: bool
    checked: int
    first_bad_sequence: int | None = None
    problem: str = ""


def audit_verify(*, batch: int = 5000) -> ChainReport:
    """Walk the chain in order, recomputing every digest and link; stop at the first break."""
    expected_previous = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    last = 0
    fields = (
        "sequence", "created_at", "actor_type", "actor", "verb", "target_type", "target_id",
        "subject", "trace_id", "payload", "payload_digest", "previous_hash", "hash",
    )  # fmt: skip
    while True:
        rows = list(
            AuditEvent.objects.filter(sequence__gt=last)
            .order_by("sequence")
            .values(*fields)[:batch]
        )
        if not rows:
            return ChainReport(True, checked)
        for row in rows:
            sequence = row["sequence"]
            if sequence != expected_sequence:
                return ChainReport(
                    False, checked, expected_sequence, f"event #{expected_sequence} is missing"
                )
            if payload_digest(row["payload"]) != row["payload_digest"]:
                return ChainReport(
                    False, checked, sequence, "its payload does not match its digest"
                )
            if row["previous_hash"] != expected_previous:
                return ChainReport(False, checked, sequence, "it does not link to the event before")
            recomputed = event_hash(
                sequence=sequence,
                created_at=row["created_at"],
                actor_type=row["actor_type"],
                actor=row["actor"],
                verb=row["verb"],
                target_type=row["target_type"],
                target_id=row["target_id"],
                subject=row["subject"],
                digest=row["payload_digest"],
                previous_hash=row["previous_hash"],
                trace_id=row["trace_id"],
            )
            if recomputed != row["hash"]:
                return ChainReport(False, checked, sequence, "its fields do not match its hash")
            expected_previous = row["hash"]
            expected_sequence += 1
            checked += 1
        last = rows[-1]["sequence"]


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
