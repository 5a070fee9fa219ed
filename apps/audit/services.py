"""Appending to the audit trail. Call `audit_record` inside the transaction of the change it
records, so that the change and its record commit or fail together."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, ChainHead
from apps.core.tracing import current_trace_id

GENESIS_HASH = "0" * 64


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)


def payload_digest(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def event_hash(
    *,
    sequence: int,
    created_at: datetime,
    actor_type: str,
    actor: str,
    verb: str,
    target_type: str,
    target_id: str,
    subject: str,
    digest: str,
    previous_hash: str,
    trace_id: str = "",
) -> str:
    """The event's hash. A trace id is covered too, so that no one can later tie an event to
    another request than the one that made it; it is added only when there is one, so events
    written without it (before it was kept, or while tracing is off) hash as they always did."""
    fields = [
        str(sequence),
        created_at.isoformat(),
        actor_type,
        actor,
        verb,
        target_type,
        target_id,
        subject,
        digest,
        previous_hash,
    ]
    if trace_id:
        fields.append(trace_id)
    return hashlib.sha256("|".join(fields).encode()).hexdigest()


def _actor(actor: AbstractBaseUser | AnonymousUser | str | None) -> tuple[str, str]:
    """(type, name): a user by username; an agent as "agent:<slug>"; anything else is system."""
    if actor is None:
        return AuditEvent.ActorType.SYSTEM, "system"
    if isinstance(actor, str):
        if actor.startswith("agent:"):
            return AuditEvent.ActorType.AGENT, actor.removeprefix("agent:")
        return AuditEvent.ActorType.SYSTEM, actor
    return AuditEvent.ActorType.USER, actor.get_username() or "anonymous"


@dataclass
class _Pending:
    created_at: datetime
    actor_type: str
    actor: str
    verb: str
    target_type: str
    target_id: str
    subject: str
    payload: Any
    digest: str
    trace_id: str
    canonical: str | None = None  # the text digested; None: computed from `payload` on append


_batch: ContextVar[list[_Pending] | None] = ContextVar("audit_batch", default=None)


@contextmanager
def audit_batch() -> Iterator[None]:
    """Collect the events recorded inside and append them to the chain together when the block
    ends: one lock of the chain head and one insert for the lot, the same chain. Use it inside
    the transaction of the change; nested blocks join the outer one."""
    if _batch.get() is not None:
        yield
        return
    pending: list[_Pending] = []
    token = _batch.set(pending)
    try:
        yield
    finally:
        _batch.reset(token)
    if pending:
        _append(pending)


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | str | None,
    verb: str,
    target: models.Model,
    data: dict[str, Any] | None = None,
    subject: str = "",
) -> AuditEvent | None:
    """Append one event to the chain (or to the open `audit_batch`, which returns None).

    Writers are serialised by a row lock on the chain head, so concurrent transactions cannot
    fork the chain; the lock is held to the end of the caller's transaction, which keeps the
    chain in commit order."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    actor_type, actor_name = _actor(actor)
    # Stored exactly as digested: through JSON and back, so Decimals and datetimes become the
    # strings the verifier will read.
    payload = json.loads(canonical_json(data or {}))
    canonical = canonical_json(payload)
    entry = _Pending(
        created_at=timezone.now(),
        actor_type=actor_type,
        actor=actor_name,
        verb=verb,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        subject=subject,
        payload=payload,
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
        trace_id=current_trace_id() or "",
        canonical=canonical,
    )
    batch = _batch.get()
    if batch is not None:
        batch.append(entry)
        return None
    return _append([entry])[0]


def _append(entries: list[_Pending]) -> list[AuditEvent]:
    head = ChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        ChainHead.objects.get_or_create(pk=1)
        head = ChainHead.objects.select_for_update().get(pk=1)
    sequence, previous = head.last_sequence, head.last_hash
    events = []
    for entry in entries:
        sequence += 1
        this_hash = event_hash(
            sequence=sequence,
            created_at=entry.created_at,
            actor_type=entry.actor_type,
            actor=entry.actor,
            verb=entry.verb,
            target_type=entry.target_type,
            target_id=entry.target_id,
            subject=entry.subject,
            digest=entry.digest,
            previous_hash=previous,
            trace_id=entry.trace_id,
        )
        events.append(
            AuditEvent(
                sequence=sequence,
                created_at=entry.created_at,
                actor_type=entry.actor_type,
                actor=entry.actor,
                verb=entry.verb,
                target_type=entry.target_type,
                target_id=entry.target_id,
                subject=entry.subject,
                trace_id=entry.trace_id,
                payload=entry.payload,
                payload_digest=entry.digest,
                payload_canonical=(
                    canonical_json(entry.payload) if entry.canonical is None else entry.canonical
                ),
                previous_hash=previous,
                hash=this_hash,
            )
        )
        previous = this_hash
    AuditEvent.objects.bulk_create(events)
    ChainHead.objects.filter(pk=1).update(last_sequence=sequence, last_hash=previous)
    return events
