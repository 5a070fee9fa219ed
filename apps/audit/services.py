"""Appending to the audit trail. Call `audit_record` inside the transaction of the change it
records, so that the change and its record commit or fail together. Writers take no shared lock:
the sequencer (`apps/audit/log.py`) takes committed events into the Merkle log."""

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
from django.db import connection, models, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.tracing import current_trace_id


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)


def payload_digest(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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
# Set inside `audit_collected`: the events are kept for the caller's own statement.
_collecting: ContextVar[bool] = ContextVar("audit_collecting", default=False)


@contextmanager
def audit_batch() -> Iterator[None]:
    """Collect the events recorded inside and write them together when the block ends: one
    insert for the lot. Use it inside the transaction of the change; nested blocks join the
    outer one."""
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


@contextmanager
def audit_collected() -> Iterator[list[_Pending]]:
    """Collect the events recorded inside without writing them, for a change written as one
    statement outside a transaction: the caller puts them in that statement (`audit_rows`), so
    that the change and its record still commit or fail together."""
    pending: list[_Pending] = []
    batch_token = _batch.set(pending)
    collecting_token = _collecting.set(True)
    try:
        yield pending
    finally:
        _collecting.reset(collecting_token)
        _batch.reset(batch_token)


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | str | None,
    verb: str,
    target: models.Model,
    data: dict[str, Any] | None = None,
    subject: str = "",
) -> AuditEvent | None:
    """Write one event (or add it to the open `audit_batch`, which returns None). It enters the
    Merkle log when its transaction has committed and the sequencer next runs."""
    if not _collecting.get() and not transaction.get_connection().in_atomic_block:
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


# Every field an event is written with; the database adds its number and writing transaction.
_WRITTEN = (
    "created_at",
    "actor_type",
    "actor",
    "verb",
    "target_type",
    "target_id",
    "subject",
    "trace_id",
    "payload",
    "payload_digest",
    "payload_canonical",
)
_ROW = "(" + ", ".join("%s::jsonb" if name == "payload" else "%s" for name in _WRITTEN) + ")"


def audit_rows(entries: list[_Pending]) -> tuple[str, str, list[Any]]:
    """The column list, the rows of a VALUES list and their params that write `entries`."""
    params: list[Any] = []
    for entry in entries:
        canonical = canonical_json(entry.payload) if entry.canonical is None else entry.canonical
        entry.canonical = canonical
        params.extend(
            (
                entry.created_at,
                entry.actor_type,
                entry.actor,
                entry.verb,
                entry.target_type,
                entry.target_id,
                entry.subject,
                entry.trace_id,
                canonical,
                entry.digest,
                canonical,
            )
        )
    return f"({', '.join(_WRITTEN)})", ", ".join([_ROW] * len(entries)), params


def _append(entries: list[_Pending]) -> list[AuditEvent]:
    """One INSERT for the lot, written out (it runs in every audited change: composing it with
    the ORM cost more than the statement itself)."""
    columns, rows, params = audit_rows(entries)
    events = [
        AuditEvent(
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
            payload_canonical=entry.canonical,
        )
        for entry in entries
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO audit_auditevent {columns} VALUES {rows}"  # noqa: S608 (constant names)
            " RETURNING id, sequence, writer_xid",
            params,
        )
        for event, (pk, sequence, writer_xid) in zip(events, cursor.fetchall(), strict=True):
            event.pk, event.sequence, event.writer_xid = pk, sequence, writer_xid
            event._state.adding = False
    return events
