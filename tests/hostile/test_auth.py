"""Credentials under attack: every API operation refuses a caller without credentials, with a
malformed one, or with the wrong kind (an agent key where staff is needed, a staff token where
an agent key is); an expired key is refused saying so; a key of another agent neither sees nor
acts for refund-bot."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.actions.models import Action
from apps.audit.models import AuditEvent
from apps.registry.models import AgentKey
from tests.actions.conftest import proposal_body, propose
from tests.hostile.conftest import Hostile
from tests.hostile.test_api_fuzz import OPERATIONS

pytestmark = pytest.mark.django_db

PATH_VALUES = {
    "{action_id}": "6f1c2a4e-93a7-4c53-9d53-2b1f0d4c1a11",
    "{switch_id}": "1",
    "{run_id}": "1",
}
BODIES = {
    "/api/v1/actions": proposal_body(),
    "/api/v1/users": {"username": "mallory", "password": "pw", "roles": ["admin"]},
    "/api/v1/killswitches": {"scope": "global", "reason": "attack"},
    "/api/v1/drains": {"scope": "global", "mode": "cancel", "reason": "attack"},
    "/api/v1/rollbacks": {"scope": "agent", "target": "refund-bot", "count": 1, "reason": "x"},
}


def call(client: Client, method: str, path: str, **headers: str) -> Any:
    for name, value in PATH_VALUES.items():
        path = path.replace(name, value)
    if method == "GET":
        return client.get(path, headers=headers)
    body = BODIES.get(path, {"reason": "attack"})
    return client.post(path, body, content_type="application/json", headers=headers)


def wrong_kind(scheme: str, hostile: Hostile) -> str:
    """A valid credential of the kind the operation does not take."""
    return hostile.staff_token if scheme == "AgentKeyAuth" else hostile.agent_key


# The audit log's checkpoints, key and consistency proofs answer anyone, as transparency logs'
# do (apps/audit/api.py); nothing else may.
PUBLIC = {
    ("GET", "/api/v1/audit/checkpoint"),
    ("GET", "/api/v1/audit/checkpoints"),
    ("GET", "/api/v1/audit/checkpoints/{size}"),
    ("GET", "/api/v1/audit/consistency"),
    ("GET", "/api/v1/audit/key"),
}
GUARDED = [operation for operation in OPERATIONS if operation[2] != "public"]


def test_public_operations__only_the_audit_logs_reads() -> None:
    assert {(m, p) for m, p, scheme in OPERATIONS if scheme == "public"} == PUBLIC


@pytest.mark.parametrize(
    ("method", "path", "scheme"), GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED]
)
def test_operation__without_or_with_bad_credentials__401_and_nothing_recorded(
    client: Client, hostile: Hostile, method: str, path: str, scheme: str
) -> None:
    # Given the records as they are
    before = (Action.objects.count(), AuditEvent.objects.count())

    # When the operation is called without credentials, with a malformed bearer, with a bearer
    # of the right shape but unknown, and with a valid credential of the wrong kind
    answers = [
        call(client, method, path),
        call(client, method, path, Authorization="Bearer not-a-key"),
        call(client, method, path, Authorization="Bearer esk_000000000000_forged"),
        call(client, method, path, Authorization="Basic ZXJpbjpwYXNzd29yZA=="),
        call(client, method, path, Authorization=f"Bearer {wrong_kind(scheme, hostile)}"),
    ]

    # Then every answer is 401 in the API's error format, and nothing was recorded
    for answer in answers:
        assert answer.status_code == 401, answer.content
        body = answer.json()
        assert set(body) == {"detail", "errors"}
        assert body["detail"]
    assert (Action.objects.count(), AuditEvent.objects.count()) == before


def test_read__expired_key__401_saying_it_expired(client: Client, hostile: Hostile) -> None:
    # Given refund-bot's key, expired a minute ago
    prefix = hostile.agent_key.split("_")[1]
    AgentKey.objects.filter(prefix=prefix).update(expires_at=timezone.now() - timedelta(minutes=1))

    # When it reads one of refund-bot's own actions, and proposes
    read = client.get(
        f"/api/v1/actions/{hostile.action_ids[0]}",
        headers={"Authorization": f"Bearer {hostile.agent_key}"},
    )
    proposed = propose(client, hostile.agent_key, proposal_body(idempotency_key="late"))

    # Then both are refused, saying the key expired, and nothing is recorded
    for answer in (read, proposed):
        assert answer.status_code == 401
        assert "expired" in answer.json()["detail"]
    assert not Action.objects.filter(idempotency_key="late").exists()


def test_other_agents_key__reads_refund_bots_action__404_as_if_missing(
    client: Client, hostile: Hostile
) -> None:
    # When audit-bot's valid key reads an action of refund-bot, and one of its own
    theirs = client.get(
        f"/api/v1/actions/{hostile.action_ids[0]}",
        headers={"Authorization": f"Bearer {hostile.other_agent_key}"},
    )
    own = client.get(
        f"/api/v1/actions/{hostile.other_action_id}",
        headers={"Authorization": f"Bearer {hostile.other_agent_key}"},
    )

    # Then refund-bot's is as invisible as a missing one, and its own is there
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": f"No action {hostile.action_ids[0]}.", "errors": []}
    assert own.status_code == 200
    assert own.json()["id"] == hostile.other_action_id


def test_other_agents_key__proposes_in_refund_bots_workflow__403_naming_workflow(
    client: Client, hostile: Hostile
) -> None:
    # Given the records as they are
    before = Action.objects.count()

    # When audit-bot's key proposes a refund in refunds (refund-bot's workflow and tool)
    answer = propose(client, hostile.other_agent_key, proposal_body(idempotency_key="stolen"))

    # Then it is refused naming the workflow, and nothing is recorded
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["field"] == "workflow"
    assert Action.objects.count() == before


def test_other_agents_key__rolls_back_refund_bots_action__401_and_untouched(
    client: Client, hostile: Hostile
) -> None:
    # When an agent key tries the staff-only rollback
    answer = client.post(
        f"/api/v1/actions/{hostile.action_ids[0]}/rollback",
        headers={"Authorization": f"Bearer {hostile.other_agent_key}"},
    )

    # Then it is refused and the action keeps its state
    assert answer.status_code == 401
    action = Action.objects.get(pk=hostile.action_ids[0])
    assert action.rolled_back_at is None
