"""Same idempotency key from the same agent = same action, never a second one and never a second
execution: sequential repeats, other agents' keys, and bursts of concurrent duplicates through
the gate and through HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from pytest_django.live_server_helper import LiveServer

from apps.accounts.roles import Role
from apps.actions.gate import GateResult, action_propose
from apps.actions.models import Action, Status
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.books.models import BookVersion
from apps.registry.models import Agent, AgentKey, Tool, Workflow
from apps.registry.services import IssuedKey, agent_key_create
from tests.actions.conftest import (
    CaptureCallbacks,
    proposal,
    proposal_body,
    propose,
    recorded,
    refund_params,
    verbs_of,
)
from tests.announced import Announced
from tests.concurrency import at_once
from tests.factories import make_agent


@pytest.fixture
def other_key(user_for: Any, refunds: Workflow, refund_tool: Tool) -> IssuedKey:
    """A key of refund-bot-2, a second agent on the same workflow and tool."""
    other = make_agent(
        "refund-bot-2", owner=user_for(Role.ADMIN), workflows=[refunds], tools=[refund_tool]
    )
    return agent_key_create(agent=other, actor="system:test")


@pytest.mark.django_db
def test_propose__same_key_twice__200_with_first_action_nothing_new(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    enqueued: Announced,
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    # Given refund-bot proposed once with an idempotency key
    body = proposal_body(idempotency_key="refund-1042")
    first = propose(client, key.key, body)
    assert first.status_code == 201
    before = recorded()
    # When it sends the same proposal again (a retry after a lost answer, say)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again = propose(client, key.key, body)
    # Then it gets the first action back with 200, and nothing is recorded or queued again
    assert again.status_code == 200
    assert again.json() == first.json()
    assert recorded() == before
    assert callbacks == []
    assert enqueued.ids() == [first.json()["id"]]


@pytest.mark.django_db
def test_propose__same_key_other_params__409_naming_key_nothing_new(
    client: Client, key: IssuedKey, book: BookVersion
) -> None:
    # Given an action proposed under an idempotency key
    first = propose(client, key.key, proposal_body(idempotency_key="refund-1042"))
    assert first.status_code == 201
    before = recorded()
    # When the same key comes with another amount (a bug in the agent)
    changed = proposal_body(idempotency_key="refund-1042", params=refund_params(amount_cents=3100))
    again = propose(client, key.key, changed)
    # Then it is refused, naming the key and the first action, and nothing is recorded
    assert again.status_code == 409
    body = again.json()
    assert body["errors"][0]["field"] == "idempotency_key"
    assert first.json()["id"] in body["errors"][0]["message"]
    assert recorded() == before


@pytest.mark.django_db
def test_propose__same_key_other_agent__each_gets_its_own(
    client: Client, key: IssuedKey, other_key: IssuedKey, book: BookVersion
) -> None:
    # Given refund-bot proposed with key "refund-1042"
    mine = propose(client, key.key, proposal_body(idempotency_key="refund-1042"))
    # When refund-bot-2 uses the same idempotency key
    theirs = propose(client, other_key.key, proposal_body(idempotency_key="refund-1042"))
    # Then keys are per agent: it gets a new action of its own
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    owners = dict(Action.objects.values_list("id", "agent__slug"))
    assert sorted(owners.values()) == ["refund-bot", "refund-bot-2"]


@pytest.mark.django_db
def test_propose__no_idempotency_key__each_proposal_new(
    client: Client, key: IssuedKey, book: BookVersion
) -> None:
    first = propose(client, key.key, proposal_body())
    second = propose(client, key.key, proposal_body())
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.django_db
def test_propose__repeat_after_agent_paused__first_action_returned(
    client: Client, key: IssuedKey, book: BookVersion
) -> None:
    # A retry of an accepted proposal reports on it even when the agent was paused since: the
    # answer is about the past action, and nothing new is done.
    first = propose(client, key.key, proposal_body(idempotency_key="refund-1042"))
    key.record.agent.status = Agent.Status.PAUSED
    key.record.agent.save(update_fields=["status"])
    again = propose(client, key.key, proposal_body(idempotency_key="refund-1042"))
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_propose__50_concurrent_duplicates__one_action_one_enqueue(
    key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    # Given 50 threads holding the same proposal with the same idempotency key
    events_before = AuditEvent.objects.count()

    def call(index: int) -> GateResult:
        own_key = AgentKey.objects.select_related("agent").get(pk=key.record.pk)
        return action_propose(key=own_key, proposal=proposal(idempotency_key="burst-1"))

    # When they all reach the gate at once
    results = at_once(50, call)
    # Then exactly one created the action and all 50 answer with it
    assert sum(result.created for result in results) == 1
    assert {result.action.pk for result in results} == {Action.objects.get().pk}
    action = Action.objects.get()
    assert action.status == Status.QUEUED
    # And it was handed to a worker exactly once
    assert enqueued.ids() == [str(action.pk)]
    # And only its own three events were written, in an intact chain
    assert verbs_of(action.pk) == ["action.proposed", "action.approved", "action.queued"]
    assert AuditEvent.objects.count() == events_before + 3
    assert audit_verify().intact


def post_json(url: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST JSON over loopback with urllib, bypassing any proxy from the environment."""
    request = urllib.request.Request(  # noqa: S310 (the live server's own http:// URL)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_propose_over_http__20_concurrent_duplicates__one_201_rest_200_same_id(
    live_server: LiveServer, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    # Given 20 clients sending the same proposal with the same idempotency key
    url = f"{live_server.url}/api/v1/actions"
    body = proposal_body(idempotency_key="burst-http")
    # When they all send it at once to a running server
    answers = at_once(20, lambda index: post_json(url, key.key, body))
    # Then one answer is 201 (created) and nineteen are 200 (the same action)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 19 + [201]
    assert {answer["id"] for _, answer in answers} == {str(Action.objects.get().pk)}
    # And the one action was handed to a worker once
    assert enqueued.ids() == [answers[0][1]["id"]]
    assert audit_verify().intact
