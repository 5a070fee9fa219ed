from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.registry.keys import digest_matches, new_key, split_key
from apps.registry.models import Agent, AgentKey, Workflow
from apps.registry.snapshot import RegistryView


class KeyRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedKey:
    key: str  # shown once
    record: AgentKey


@transaction.atomic
def agent_key_create(
    *,
    agent: Agent,
    actor: AbstractBaseUser | AnonymousUser | str | None,
    label: str = "",
    expires_in_days: int | None = None,
    workflows: list[Workflow] | None = None,
) -> IssuedKey:
    """Make a new key for an agent, optionally limited to some of its workflows."""
    if expires_in_days is not None and expires_in_days <= 0:
        raise ValueError("expires in days must be a positive number")
    served = set(agent.workflows.values_list("pk", flat=True))
    scope = workflows or []
    outside = [workflow.slug for workflow in scope if workflow.pk not in served]
    if outside:
        raise ValueError(f"{agent.slug} does not serve {', '.join(outside)}")
    key, prefix, digest = new_key()
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    record = AgentKey.objects.create(
        agent=agent, prefix=prefix, digest=digest, label=label, expires_at=expires_at
    )
    record.workflows.set(scope)
    audit_record(
        actor=actor,
        verb="agent_key.created",
        target=record,
        data={
            "agent": agent.slug,
            "prefix": prefix,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "workflows": sorted(workflow.slug for workflow in scope),
        },
    )
    return IssuedKey(key=key, record=record)


@transaction.atomic
def agent_key_revoke(
    *, key_id: int, actor: AbstractBaseUser | AnonymousUser | str | None
) -> AgentKey:
    record = AgentKey.objects.select_for_update().get(pk=key_id)
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            verb="agent_key.revoked",
            target=record,
            data={"agent": record.agent.slug, "prefix": record.prefix},
        )
    return record


def agent_key_authenticate(key: str, *, registry: RegistryView | None = None) -> AgentKey:
    """The key's record if the key is valid, unexpired and unrevoked; else KeyRejected saying
    which. Records the time of use (at most once a minute per key, to spare the database).
    Read through `registry` (the request's view of the registry) when given."""
    prefix = split_key(key)
    if prefix is None:
        raise KeyRejected("malformed key: expected esk_<prefix>_<secret>")
    kept = registry.key(prefix) if registry is not None else None
    if registry is not None:
        # (a copy: the kept record is shared by the requests of this process)
        record = copy.copy(kept)
    else:
        record = AgentKey.objects.select_related("agent").filter(prefix=prefix).first()
    if record is None or not digest_matches(key, record.digest):
        raise KeyRejected("unknown key")
    now = timezone.now()
    if record.revoked_at is not None:
        raise KeyRejected(f"key {prefix} was revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise KeyRejected(f"key {prefix} expired at {record.expires_at:%Y-%m-%d %H:%M} UTC")
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
        AgentKey.objects.filter(pk=record.pk).update(last_used_at=now)
        record.last_used_at = now
        if kept is not None:
            kept.last_used_at = now
    return record


def key_workflow_slugs(record: AgentKey, *, served: Iterable[str] | None = None) -> set[str]:
    """The workflows a key may act in: its own scope within the agent's, or all the agent's
    (`served`, when the caller has already read them)."""
    served = set(
        served if served is not None else record.agent.workflows.values_list("slug", flat=True)
    )
    scoped = set(record.workflows.values_list("slug", flat=True))
    return scoped & served if scoped else served
