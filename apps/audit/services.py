"""Appending to the audit trail. Call `audit_record` inside the transaction of the change it
records, so that the change and its record commit or fail together."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, ChainHead

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
) -> str:
    material = "|".join(
        [
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
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _actor(actor: AbstractBaseUser | AnonymousUser | str | None) -> tuple[str, str]:
    """(type, name): a user by username; an agent as "agent:<slug>"; anything else is system."""
    if actor is None:
        return AuditEvent.ActorType.SYSTEM, "system"
    if isinstance(actor, str):
        if actor.startswith("agent:"):
            return AuditEvent.ActorType.AGENT, actor.removeprefix("agent:")
        return AuditEvent.ActorType.SYSTEM, actor
    return AuditEvent.ActorType.USER, actor.get_username() or "anonymous"


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | str | None,
    verb: str,
    target: models.Model,
    data: dict[str, Any] | None = None,
    subject: str = "",
) -> AuditEvent:
    """Append one event to the chain. Writers are serialised by a row lock on the chain head, so
    concurrent transactions cannot fork the chain; the lock is held to the end of the caller's
    transaction, which keeps the chain in commit order."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    ChainHead.objects.get_or_create(pk=1)
    head = ChainHead.objects.select_for_update().get(pk=1)
    actor_type, actor_name = _actor(actor)
    # Stored exactly as digested: through JSON and back, so Decimals and datetimes become the
    # strings the verifier will read.
    payload = json.loads(canonical_json(data or {}))
    digest = payload_digest(payload)
    sequence = head.last_sequence + 1
    created_at = timezone.now()
    target_type = target._meta.label_lower
    target_id = str(target.pk)
    this_hash = event_hash(
        sequence=sequence,
        created_at=created_at,
        actor_type=actor_type,
        actor=actor_name,
        verb=verb,
        target_type=target_type,
        target_id=target_id,
        subject=subject,
        digest=digest,
        previous_hash=head.last_hash,
    )
    event = AuditEvent.objects.create(
        sequence=sequence,
        created_at=created_at,
        actor_type=actor_type,
        actor=actor_name,
        verb=verb,
        target_type=target_type,
        target_id=target_id,
        subject=subject,
        payload=payload,
        payload_digest=digest,
        previous_hash=head.last_hash,
        hash=this_hash,
    )
    ChainHead.objects.filter(pk=1).update(last_sequence=sequence, last_hash=this_hash)
    return event
