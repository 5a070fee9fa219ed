"""Agent keys: stored as a digest only, checked in full, scoped to the agent's workflows."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.registry.keys import split_key
from apps.registry.models import Agent, AgentKey, Workflow
from apps.registry.services import (
    KeyRejected,
    agent_key_authenticate,
    agent_key_create,
    agent_key_revoke,
    key_workflow_slugs,
)
from tests.factories import make_workflow

pytestmark = pytest.mark.django_db


def stored_values(table: str) -> list[str]:
    """Every value of every column of every row of a table, as text."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 (fixed table names only)
        return [str(value) for row in cursor.fetchall() for value in row]


def test_key_create__new_key__only_its_sha256_digest_is_stored(agent: Agent) -> None:
    # When a key is made
    issued = agent_key_create(agent=agent, actor="system:test", label="runner")
    # Then the row holds the SHA-256 of the whole key, and the key's prefix for lookup
    record = AgentKey.objects.get(pk=issued.record.pk)
    assert record.digest == hashlib.sha256(issued.key.encode()).hexdigest()
    assert issued.key.startswith(f"esk_{record.prefix}_")
    secret = issued.key.split("_", 2)[2]
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    # And neither the key nor its secret part is anywhere in the database
    for table in ("registry_agentkey", "audit_auditevent"):
        values = stored_values(table)
        assert values, table
        assert not [value for value in values if issued.key in value or secret in value], table


def test_key_create__twice__different_keys_prefixes_and_digests(agent: Agent) -> None:
    first = agent_key_create(agent=agent, actor="system:test")
    second = agent_key_create(agent=agent, actor="system:test")
    assert first.key != second.key
    assert first.record.prefix != second.record.prefix
    assert first.record.digest != second.record.digest


def test_key_create__audited_with_prefix_and_scope_not_key(agent: Agent, refunds: Workflow) -> None:
    issued = agent_key_create(agent=agent, actor="system:test", workflows=[refunds])
    event = AuditEvent.objects.get(verb="agent_key.created")
    assert (event.actor_type, event.actor) == ("system", "system:test")
    assert event.target_id == str(issued.record.pk)
    assert event.payload == {
        "agent": "refund-bot",
        "prefix": issued.record.prefix,
        "expires_at": None,
        "workflows": ["refunds"],
    }


def test_authenticate__good_key__returns_its_record_and_agent(agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test")
    record = agent_key_authenticate(issued.key)
    assert record.pk == issued.record.pk
    assert record.agent == agent


def test_authenticate__wrong_secret_with_right_prefix__unknown_key(agent: Agent) -> None:
    # Given a real key, and the same prefix with another secret
    issued = agent_key_create(agent=agent, actor="system:test")
    forged = f"esk_{issued.record.prefix}_{'A' * 43}"
    assert split_key(forged) == issued.record.prefix
    # When the forged key is presented, then it is refused like any unknown key
    with pytest.raises(KeyRejected) as caught:
        agent_key_authenticate(forged)
    assert caught.value.reason == "unknown key"
    # And the real key's record was not touched
    assert AgentKey.objects.get(pk=issued.record.pk).last_used_at is None


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not-a-key",
        "esk_",
        "esk_0123456789ab",
        "esk_0123456789ab_",
        "esk_0123_secret",
        "xyz_0123456789ab_secret",
        "Bearer esk_0123456789ab_secret",
    ],
)
def test_authenticate__malformed_key__refused_saying_so(agent: Agent, key: str) -> None:
    with pytest.raises(KeyRejected, match=r"^malformed key: expected esk_<prefix>_<secret>$"):
        agent_key_authenticate(key)


def test_authenticate__unknown_prefix__unknown_key(agent: Agent) -> None:
    agent_key_create(agent=agent, actor="system:test")
    with pytest.raises(KeyRejected, match=r"^unknown key$"):
        agent_key_authenticate(f"esk_{'f' * 12}_{'A' * 43}")


def test_authenticate__expired_key__refused_naming_expiry(agent: Agent) -> None:
    # Given a key that expired a second ago
    issued = agent_key_create(agent=agent, actor="system:test", expires_in_days=30)
    past = timezone.now() - timedelta(seconds=1)
    AgentKey.objects.filter(pk=issued.record.pk).update(expires_at=past)
    # When it is presented, then it is refused, saying when it expired
    with pytest.raises(KeyRejected, match=rf"^key {issued.record.prefix} expired at "):
        agent_key_authenticate(issued.key)


def test_authenticate__unexpired_key__accepted_until_its_expiry(agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test", expires_in_days=1)
    expires_at = issued.record.expires_at
    assert expires_at is not None
    assert timedelta(hours=23, minutes=59) < expires_at - timezone.now() <= timedelta(days=1)
    assert agent_key_authenticate(issued.key).pk == issued.record.pk


def test_authenticate__revoked_key__refused(agent: Agent) -> None:
    # Given a key that worked, then was revoked
    issued = agent_key_create(agent=agent, actor="system:test")
    agent_key_authenticate(issued.key)
    agent_key_revoke(key_id=issued.record.pk, actor="system:test")
    # Then it no longer works
    with pytest.raises(KeyRejected, match=rf"^key {issued.record.prefix} was revoked$"):
        agent_key_authenticate(issued.key)


def test_revoke__twice__first_time_stands_and_one_audit_event(agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test")
    first = agent_key_revoke(key_id=issued.record.pk, actor="system:test").revoked_at
    second = agent_key_revoke(key_id=issued.record.pk, actor="system:other").revoked_at
    assert first is not None
    assert second == first
    assert AuditEvent.objects.filter(verb="agent_key.revoked").count() == 1


def test_authenticate__first_use__stamps_last_used_at(agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test")
    assert issued.record.last_used_at is None
    before = timezone.now()
    agent_key_authenticate(issued.key)
    stamped = AgentKey.objects.get(pk=issued.record.pk).last_used_at
    assert stamped is not None
    assert before <= stamped <= timezone.now()


def test_authenticate__used_within_a_minute__stamp_not_rewritten(agent: Agent) -> None:
    # Given a key used 30 seconds ago
    issued = agent_key_create(agent=agent, actor="system:test")
    recent = timezone.now() - timedelta(seconds=30)
    AgentKey.objects.filter(pk=issued.record.pk).update(last_used_at=recent)
    # When it is used again, then the stamp stays (to spare the database a write per call)
    agent_key_authenticate(issued.key)
    assert AgentKey.objects.get(pk=issued.record.pk).last_used_at == recent


def test_authenticate__last_used_over_a_minute_ago__stamp_moves(agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test")
    old = timezone.now() - timedelta(minutes=5)
    AgentKey.objects.filter(pk=issued.record.pk).update(last_used_at=old)
    record = agent_key_authenticate(issued.key)
    stored = AgentKey.objects.get(pk=issued.record.pk).last_used_at
    assert stored is not None
    assert stored > old + timedelta(minutes=4)
    assert record.last_used_at == stored


def test_scope__key_limited_to_one_workflow__only_that_one(agent: Agent, refunds: Workflow) -> None:
    issued = agent_key_create(agent=agent, actor="system:test", workflows=[refunds])
    assert key_workflow_slugs(agent_key_authenticate(issued.key)) == {"refunds"}


def test_scope__unscoped_key__all_of_the_agents_workflows(agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test")
    assert key_workflow_slugs(agent_key_authenticate(issued.key)) == {"refunds", "payments"}


def test_scope__agent_stops_serving_a_scoped_workflow__key_loses_it(
    agent: Agent, refunds: Workflow, payments: Workflow
) -> None:
    # Given a key scoped to both workflows
    issued = agent_key_create(agent=agent, actor="system:test", workflows=[refunds, payments])
    # When the agent no longer serves payments
    agent.workflows.remove(payments)
    # Then the key no longer reaches it either: a scope never widens what the agent may do
    assert key_workflow_slugs(issued.record) == {"refunds"}


def test_scope__workflow_outside_the_agents__refused_and_no_key_made(agent: Agent) -> None:
    # Given a workflow the agent does not serve
    invoices = make_workflow("invoices", "Invoice matching")
    # When a key is asked for it, then it is refused naming the workflow
    with pytest.raises(ValueError, match=r"^refund-bot does not serve invoices$"):
        agent_key_create(agent=agent, actor="system:test", workflows=[invoices])
    assert not AgentKey.objects.exists()
    assert not AuditEvent.objects.filter(verb="agent_key.created").exists()


@pytest.mark.parametrize("days", [0, -1])
def test_key_create__non_positive_expiry__refused(agent: Agent, days: int) -> None:
    with pytest.raises(ValueError, match=r"^expires in days must be a positive number$"):
        agent_key_create(agent=agent, actor="system:test", expires_in_days=days)
    assert not AgentKey.objects.exists()
