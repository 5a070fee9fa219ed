"""GET /api/v1/actions/{id}/proof: every event of an action proven in the audit log against its
latest signed checkpoint, checked by the stand-alone verifier; only the proposer or staff."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from escapement_client.transparency import TransparencyError, proof_verify

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.audit.log import log_integrate, verifier_key
from apps.audit.services import audit_record
from apps.books.models import BookVersion
from apps.registry.models import Agent
from apps.registry.services import IssuedKey, agent_key_create
from tests.actions.conftest import proposal_body, propose, verbs_of
from tests.announced import Announced
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposed(client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced) -> str:
    answer = propose(client, key.key, proposal_body())
    assert answer.status_code == 201, answer.content
    action_id: str = answer.json()["id"]
    return action_id


def flip_hex(value: str) -> str:
    """The same hash with its first byte changed."""
    return f"{int(value[:2], 16) ^ 1:02x}" + value[2:]


def flip_last_byte(encoded: str) -> str:
    data = base64.b64decode(encoded)
    return base64.b64encode(data[:-1] + bytes([data[-1] ^ 1])).decode()


def proof_of(client: Client, action_id: str, **headers: str) -> Any:
    return client.get(f"/api/v1/actions/{action_id}/proof", headers=headers)


def test_proof__before_the_sequencer__events_pending_nothing_proven(
    client: Client, key: IssuedKey, proposed: str
) -> None:
    answer = proof_of(client, proposed, Authorization=f"Bearer {key.key}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["events"] == []
    assert [event["verb"] for event in body["pending"]] == verbs_of(proposed)


def test_proof__the_proposer__every_event_proven_by_the_stand_alone_verifier(
    client: Client, key: IssuedKey, proposed: str
) -> None:
    # Given the action's events taken into the log, and more after them
    log_integrate()
    # When its agent asks for the proof
    answer = proof_of(client, proposed, Authorization=f"Bearer {key.key}")
    # Then the stand-alone verifier accepts it, and it covers each of the action's events
    assert answer.status_code == 200
    body = answer.json()
    entries = proof_verify(body, verifier_key())
    assert [entry["verb"] for entry in entries] == verbs_of(proposed)
    assert {entry["target_id"] for entry in entries} == {proposed}
    assert body["pending"] == []


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("leaf_hash", lambda e: e.update(leaf_hash=flip_hex(e["leaf_hash"]))),
        ("audit_path", lambda e: e["audit_path"].__setitem__(0, flip_hex(e["audit_path"][0]))),
        ("entry", lambda e: e.update(entry=flip_last_byte(e["entry"]))),
        ("payload_canonical", lambda e: e.update(payload_canonical='{"amount":"1"}')),
        ("event", lambda e: e["event"].update(actor="mallory")),
    ],
)
def test_proof__one_byte_changed__the_verifier_refuses(
    client: Client, key: IssuedKey, proposed: str, where: str, change: Any
) -> None:
    log_integrate()
    body = proof_of(client, proposed, Authorization=f"Bearer {key.key}").json()
    forged = copy.deepcopy(body)
    change(forged["events"][-1])
    with pytest.raises(TransparencyError, match=where):
        proof_verify(forged, verifier_key())


def test_proof__checkpoint_text_changed__the_signature_refuses(
    client: Client, key: IssuedKey, proposed: str
) -> None:
    log_integrate()
    body = proof_of(client, proposed, Authorization=f"Bearer {key.key}").json()
    size = str(body["tree_size"])
    body["checkpoint"] = body["checkpoint"].replace(f"\n{size}\n", f"\n{int(size) + 1}\n", 1)
    with pytest.raises(TransparencyError, match="checkpoint"):
        proof_verify(body, verifier_key())


def test_proof__another_agent__as_if_missing(
    client: Client, proposed: str, agent: Agent, user_for: Any
) -> None:
    other = make_agent("other-bot", owner=user_for(Role.ADMIN), workflows=[], tools=[])
    other_key = agent_key_create(agent=other, actor="system:test", label="tests")
    answer = proof_of(client, proposed, Authorization=f"Bearer {other_key.key}")
    assert answer.status_code == 404


def test_proof__staff_yes__no_role_no__nobody_401(
    client: Client, client_for: Any, proposed: str
) -> None:
    log_integrate()
    assert proof_of(client_for(Role.ONCALL), proposed).status_code == 200
    assert proof_of(client_for(None), proposed).status_code == 403
    assert proof_of(client, proposed).status_code == 401
    assert proof_of(client_for(Role.RISK), "not-a-uuid").status_code == 422


def test_proof__events_written_by_staff__proven_to_staff_only(
    client: Client, client_for: Any, key: IssuedKey, proposed: str, user_for: Any
) -> None:
    # Given a person's event on the action (a supervisor's note, say), taken into the log
    with transaction.atomic():
        audit_record(
            actor=user_for(Role.SUPERVISOR),
            verb="action.noted",
            target=Action.objects.get(pk=proposed),
            data={"note": "called the customer"},
        )
    log_integrate()
    # Then the agent's proof leaves it out, staff's holds it, and both verify
    mine = proof_of(client, proposed, Authorization=f"Bearer {key.key}").json()
    staff = proof_of(client_for(Role.RISK), proposed).json()
    assert "action.noted" not in [entry["verb"] for entry in proof_verify(mine, verifier_key())]
    assert "action.noted" in [entry["verb"] for entry in proof_verify(staff, verifier_key())]


def test_proof__checked_for_another_logs_origin__refused(
    client: Client, key: IssuedKey, proposed: str
) -> None:
    log_integrate()
    body = proof_of(client, proposed, Authorization=f"Bearer {key.key}").json()
    assert proof_verify(body, verifier_key(), origin="escapement.local/audit")
    with pytest.raises(TransparencyError, match=r"of the log 'escapement\.local/audit'"):
        proof_verify(body, verifier_key(), origin="staging.example/audit")
