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
    """Walk the chain in order, recomputing every digest and link; stop at the first break.

    Read with plain tuples, a batch at a time: this walks every event ever recorded, so the
    per-row cost of model instances or dicts would be most of its time."""
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
            .values_list(*fields)[:batch]
        )
        if not rows:
            return ChainReport(True, checked)
        for (
            sequence, created_at, actor_type, actor, verb, target_type, target_id, subject,
            trace_id, payload, digest, previous_hash, stored_hash,
        ) in rows:  # fmt: skip
            if sequence != expected_sequence:
                return ChainReport(
                    False, checked, expected_sequence, f"event #{expected_sequence} is missing"
                )
            if payload_digest(payload) != digest:
                return ChainReport(
                    False, checked, sequence, "its payload does not match its digest"
                )
            if previous_hash != expected_previous:
                return ChainReport(False, checked, sequence, "it does not link to the event before")
            recomputed = event_hash(
                sequence=sequence,
                created_at=created_at,
                actor_type=actor_type,
                actor=actor,
                verb=verb,
                target_type=target_type,
                target_id=target_id,
                subject=subject,
                digest=digest,
                previous_hash=previous_hash,
                trace_id=trace_id,
            )
            if recomputed != stored_hash:
                return ChainReport(False, checked, sequence, "its fields do not match its hash")
            expected_previous = stored_hash
            expected_sequence += 1
            checked += 1
        last = rows[-1][0]


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
