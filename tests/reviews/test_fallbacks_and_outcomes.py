"""Fallbacks and spot checks become review items; the agent learns every outcome, through
GET /api/v1/actions/{id} and through its signed callback."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from apps.actions.callbacks import callback_deliver
from apps.actions.execution import action_execute
from apps.actions.models import Action, CallbackDelivery, Status
from apps.actions.states import transition
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool
from apps.registry.services import IssuedKey
from apps.reviews.items import review_open
from apps.reviews.models import Kind, ReviewItem, State, Verdict
from apps.reviews.services import DecisionInput, review_decide
from tests.announced import Announced
from tests.reviews.conftest import hold, reload

pytestmark = pytest.mark.django_db

APPROVE = DecisionInput(verdict=Verdict.APPROVE, reason_code="within-policy")


def test_action_execute__tool_unreachable__fallback_item_for_the_escalation_owner(
    book: BookVersion,
    key: IssuedKey,
    alice: User,
    risk_user: User,
    refund_tool: Tool,
    enqueued: Announced,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The tool points at a loopback port nothing listens on, and is not retried.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refund_tool.endpoint_url = f"http://127.0.0.1:{port}/refunds"
    refund_tool.timeout_seconds = 2
    refund_tool.max_retries = 0
    refund_tool.save()
    from apps.actions.gate import action_propose
    from tests.actions.conftest import proposal

    action = action_propose(key=key.record, proposal=proposal()).action
    assert action.status == Status.QUEUED
    outcome = action_execute(action_id=action.pk)
    assert outcome.status == Status.FAILED
    item = ReviewItem.objects.get(action=action)
    assert item.kind == Kind.FALLBACK
    assert item.escalated_to == risk_user
    assert item.error
    assert item.error == reload(action).error

    # Approving a fallback runs the action again, as a new action with its own key downstream.
    with django_capture_on_commit_callbacks(execute=True):
        result = review_decide(item_id=item.pk, user=alice, given=APPROVE)
    retry = result.queued
    assert retry is not None
    assert retry.pk != action.pk
    assert retry.status == Status.QUEUED
    assert retry.params == action.params
    assert retry.downstream_key != action.downstream_key
    item.refresh_from_db()
    assert item.retry_id == retry.pk
    assert enqueued.ids()[-1] == str(retry.pk)
    assert reload(action).status == Status.FAILED  # the original stays as it ended


def test_action_propose__tool_circuit_open__fallback_held_for_the_owner(
    book: BookVersion, key: IssuedKey, refund_tool: Tool, risk_user: User
) -> None:
    from django.utils import timezone

    from apps.actions.gate import action_propose
    from apps.actions.models import ToolCircuit
    from tests.actions.conftest import proposal

    ToolCircuit.objects.create(
        tool=refund_tool, state="open", opened_at=timezone.now(), last_error="HTTP 503"
    )
    action = action_propose(key=key.record, proposal=proposal()).action
    item = ReviewItem.objects.get(action=action)
    assert action.status == Status.PENDING_REVIEW
    assert item.kind == Kind.FALLBACK
    assert item.escalated_to == risk_user
    assert "HTTP 503" in item.error


def test_review_decide__spot_check_rejected__rework_recorded_and_nothing_runs(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced
) -> None:
    from apps.actions.gate import action_propose
    from tests.actions.conftest import proposal

    action = action_propose(key=key.record, proposal=proposal()).action
    with transaction.atomic():
        for status in (Status.RUNNING, Status.SUCCEEDED):
            transition(action, status, actor="system:test")
        item = review_open(action, Kind.SPOT_CHECK, actor="system:test")
    decided = review_decide(
        item_id=item.pk,
        user=alice,
        given=DecisionInput(verdict=Verdict.REJECT, reason_code="wrong-amount"),
    )
    assert decided.queued is None
    item.refresh_from_db()
    assert (item.state, item.outcome) == (State.DECIDED, Verdict.REJECT)
    assert reload(action).status == Status.SUCCEEDED  # the record of rework; nothing runs


def test_action_api__after_a_human_decision__status_reflects_it(
    book: BookVersion, key: IssuedKey, alice: User
) -> None:
    item = hold(key)
    client = Client()
    headers = {"Authorization": f"Bearer {key.key}"}
    before = client.get(f"/api/v1/actions/{item.action_id}", headers=headers).json()
    assert before["status"] == "pending_review"
    review_decide(
        item_id=item.pk,
        user=alice,
        given=DecisionInput(verdict=Verdict.REJECT, reason_code="duplicate"),
    )
    after = client.get(f"/api/v1/actions/{item.action_id}", headers=headers).json()
    assert after["status"] == "rejected"


class _Receiver(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(self.answers.pop(0) if self.answers else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.answers, _Receiver.received = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/outcomes"
    server.shutdown()
    server.server_close()


def test_callback_deliver__agent_with_callback_url__signed_retried_and_recorded(
    book: BookVersion,
    key: IssuedKey,
    alice: User,
    agent: Agent,
    receiver: str,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent.callback_url = receiver
    agent.save()
    sent: list[int] = []
    monkeypatch.setattr("apps.actions.tasks.deliver_callback.delay", sent.append)
    item = hold(key)
    with django_capture_on_commit_callbacks(execute=True):
        review_decide(
            item_id=item.pk,
            user=alice,
            given=DecisionInput(verdict=Verdict.REJECT, reason_code="duplicate"),
        )
    delivery = CallbackDelivery.objects.get(action=item.action)
    assert sent == [delivery.pk]
    assert (delivery.status, delivery.url) == ("rejected", receiver)

    _Receiver.answers = [503]
    with pytest.raises(Exception, match="answered HTTP 503"):
        callback_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_status, delivery.delivered_at) == (1, 503, None)

    callback_deliver(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.delivered_at is not None
    headers, body = _Receiver.received[-1]
    payload = json.loads(body)
    assert payload["action"] == str(item.action_id)
    assert payload["status"] == "rejected"
    stamp, signature = (
        part.split("=", 1)[1] for part in headers["X-Escapement-Signature"].split(",")
    )
    expected = hmac.new(
        agent.callback_secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(signature, expected)

    callback_deliver(delivery.pk)  # delivered already: nothing is sent twice
    assert len(_Receiver.received) == 2


def test_reject__agent_without_callback_url__no_callback(
    book: BookVersion, key: IssuedKey, alice: User
) -> None:
    item = hold(key)
    review_decide(
        item_id=item.pk,
        user=alice,
        given=DecisionInput(verdict=Verdict.REJECT, reason_code="duplicate"),
    )
    assert not CallbackDelivery.objects.exists()


def test_make_agent__two_agents__each_has_its_own_callback_secret(
    agent: Agent, user_for: Any
) -> None:
    from tests.factories import make_agent

    other = make_agent("other-bot", owner=agent.owner)
    assert len(agent.callback_secret) == 64
    assert agent.callback_secret != other.callback_secret
    assert Action.objects.count() == 0


def test_propose__allowed_for_an_agent_with_a_callback_url__no_callback_for_the_answer(
    book: BookVersion, key: IssuedKey, agent: Agent, enqueued: Announced
) -> None:
    # Given an agent with a callback URL
    agent.callback_url = "http://127.0.0.1:9/outcomes"
    agent.save()
    from apps.actions.gate import action_propose
    from tests.actions.conftest import proposal

    # When the gate allows its proposal
    action = action_propose(key=key.record, proposal=proposal()).action
    # Then the agent learns approved/queued from the answer itself: no callback is recorded
    assert action.status == Status.QUEUED
    assert not CallbackDelivery.objects.filter(action=action).exists()


def test_fallback_retry__agent_with_a_callback_url__approval_of_the_new_action_reported(
    book: BookVersion,
    key: IssuedKey,
    alice: User,
    agent: Agent,
    enqueued: Announced,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a failed action of an agent with a callback URL, in its fallback item
    agent.callback_url = "http://127.0.0.1:9/outcomes"
    agent.save()
    from apps.actions.gate import action_propose
    from tests.actions.conftest import proposal

    action = action_propose(key=key.record, proposal=proposal()).action
    with transaction.atomic():
        transition(action, Status.RUNNING, actor="system:test")
        transition(action, Status.FAILED, actor="system:test", error="HTTP 503")
        item = review_open(action, Kind.FALLBACK, error="HTTP 503", actor="system:test")
    sent: list[int] = []
    monkeypatch.setattr("apps.actions.tasks.deliver_callback.delay", sent.append)
    # When a person approves running it again
    with django_capture_on_commit_callbacks(execute=True):
        retry = review_decide(item_id=item.pk, user=alice, given=APPROVE).queued
    # Then the new action's approval reaches the agent like any move made after the answer
    assert retry is not None
    delivery = CallbackDelivery.objects.get(action=retry)
    assert delivery.status == Status.APPROVED
    assert delivery.pk in sent


def test_reject__broker_refuses_the_callback__decision_kept_and_delivery_waits(
    book: BookVersion,
    key: IssuedKey,
    alice: User,
    agent: Agent,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an agent with a callback URL, and a broker that refuses every message
    from kombu.exceptions import OperationalError

    agent.callback_url = "http://127.0.0.1:9/outcomes"
    agent.save()
    item = hold(key)

    def refuse(delivery_id: int) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("apps.actions.tasks.deliver_callback.delay", refuse)
    # When a supervisor rejects the held action
    with django_capture_on_commit_callbacks(execute=True):
        review_decide(
            item_id=item.pk,
            user=alice,
            given=DecisionInput(verdict=Verdict.REJECT, reason_code="duplicate"),
        )
    # Then the decision stands, and the outcome waits in its delivery row
    assert reload(item.action).status == Status.REJECTED
    delivery = CallbackDelivery.objects.get(action=item.action)
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == ("rejected", 0, None)
