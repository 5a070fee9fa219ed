"""Workers pick queued actions up from PostgreSQL's announcements (apps/actions/pickup.py): the
listener runs here, in the test's process, on a channel of the test's own, against the real
database; the tool is an in-process function (tests.actions.tools) that records each call."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client

from apps.actions.execution import Outcome
from apps.actions.gate import action_propose
from apps.actions.models import Action, Status
from apps.actions.pickup import Listener, action_run_announced
from apps.books.models import BookVersion
from apps.killswitches.switches import switch_engage, switch_release
from apps.registry.services import IssuedKey
from controlplane.celery import app as celery_app
from tests.actions import tools
from tests.actions.conftest import proposal, proposal_body, propose
from tests.announced import Announced

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("tool_calls", "in_process_tool"),
]

# Ceilings for waits on the listener's threads: far above what a healthy run takes.
WAIT_SECONDS = 60.0


@pytest.fixture
def channel() -> Iterator[str]:
    """This test's queue, and so the channel its actions are announced on."""
    queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = f"test-pickup-{uuid.uuid4().hex[:8]}"
    try:
        yield celery_app.conf.task_default_queue
    finally:
        celery_app.conf.task_default_queue = queue


@pytest.fixture
def broker_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every message sent to the broker for an action (none is expected on the pickup path)."""
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        "apps.actions.dispatch.task_send", lambda *args, **options: sent.append((args, options))
    )
    return sent


@contextmanager
def listening(channel: str, threads: int = 2) -> Iterator[Listener]:
    listener = Listener([channel], threads)
    listener.start()
    try:
        assert listener.listening.wait(WAIT_SECONDS), "the listener did not start listening"
        yield listener
    finally:
        listener.stop()


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS:g} s: {what}"
        time.sleep(0.02)


def statuses(ids: list[str]) -> list[str]:
    by_id = dict(Action.objects.filter(pk__in=ids).values_list("pk", "status"))
    return [by_id[uuid.UUID(action_id)] for action_id in ids]


def all_succeeded(ids: list[str]) -> Callable[[], bool]:
    return lambda: statuses(ids) == [Status.SUCCEEDED] * len(ids)


def test_pickup__allowed_proposal__runs_once_and_nothing_goes_to_the_broker(
    client: Client, key: IssuedKey, book: BookVersion, channel: str, broker_sends: list[Any]
) -> None:
    # Given a worker's listener on the queue's channel
    with listening(channel):
        # When the book allows a proposal
        response = propose(client, key.key, proposal_body())
        assert response.status_code == 201
        assert response.json()["status"] == Status.QUEUED
        # Then the listener runs it to success, with one call to the tool
        action_id = response.json()["id"]
        eventually(all_succeeded([action_id]), "the action succeeded")
    assert [call.idempotency_key for call in tools.REFUNDS] == [f"esc-{action_id}"]
    # ... and no message went to the broker, from the gate or from the worker
    assert broker_sends == []


def test_pickup__queued_while_nobody_listened__started_when_a_listener_starts(
    client: Client, key: IssuedKey, book: BookVersion, channel: str
) -> None:
    # Given two actions queued while no worker listened
    ids = [
        propose(client, key.key, proposal_body(subject=f"order:{n}")).json()["id"] for n in (1, 2)
    ]
    assert statuses(ids) == [Status.QUEUED, Status.QUEUED]
    # When a listener starts
    with listening(channel):
        # Then it runs both
        eventually(all_succeeded(ids), "both actions succeeded")
    assert len(tools.REFUNDS) == 2


def test_pickup__two_listeners_hear_every_notice__each_action_runs_once(
    client: Client, key: IssuedKey, book: BookVersion, channel: str, broker_sends: list[Any]
) -> None:
    # Given two workers listening on the same channel
    with listening(channel), listening(channel):
        # When twelve actions are allowed
        ids = [
            propose(client, key.key, proposal_body(subject=f"order:{n}")).json()["id"]
            for n in range(12)
        ]
        # Then each runs to success once, one listener's claim winning each
        eventually(all_succeeded(ids), "all twelve succeeded")
    assert sorted(call.idempotency_key for call in tools.REFUNDS) == sorted(
        f"esc-{action_id}" for action_id in ids
    )
    # ... and the listener that lost a claim sent no retry to the broker
    assert broker_sends == []


def test_pickup__connection_cut__listens_again_and_loses_nothing(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    channel: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with listening(channel) as listener:
        # Given the listener's connection ended by the database
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query = %s",
                [f'LISTEN "{channel}"'],
            )
            row = cursor.fetchone()
        assert row == (True,)
        # When an action is allowed right after
        with caplog.at_level(logging.WARNING, logger="apps.actions.pickup"):
            action_id = propose(client, key.key, proposal_body()).json()["id"]
            # Then the listener listens again and runs it (heard, or read as queued)
            eventually(all_succeeded([action_id]), "the action succeeded")
        assert listener.listening.is_set()
    assert len(tools.REFUNDS) == 1
    assert "lost its connection to the database" in caplog.text


def test_pickup__switch_engaged__not_started_until_released(
    client: Client, key: IssuedKey, book: BookVersion, channel: str
) -> None:
    # Given an action queued, then a global switch engaged before any worker listened
    action_id = propose(client, key.key, proposal_body()).json()["id"]
    switch = switch_engage(scope="global", reason="incident 7", actor="dana", via="api")
    with listening(channel):
        # When the listener starts, the held action is not among those it picks up
        held = propose(client, key.key, proposal_body(subject="order:7"))
        assert held.json()["status"] == Status.BLOCKED
        assert statuses([action_id]) == [Status.QUEUED]
        assert tools.REFUNDS == []
        # Then releasing the switch announces it, and it runs
        switch_release(switch_id=switch.pk, reason="fixed", actor="dana", via="api")
        eventually(all_succeeded([action_id]), "the released action succeeded")
    assert len(tools.REFUNDS) == 1


def test_announce__transaction_rolled_back__never_heard(
    key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    # When an allowed action is written in a transaction that rolls back
    def propose_then_fail() -> None:
        with transaction.atomic():
            action_propose(key=key.record, proposal=proposal(subject="order:1"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        propose_then_fail()
    # ... and another in one that commits
    kept = action_propose(key=key.record, proposal=proposal(subject="order:2")).action
    # Then only the committed one is heard
    assert enqueued.ids() == [str(kept.pk)]
    assert list(Action.objects.values_list("subject", flat=True)) == ["order:2"]


def test_run_announced__notice_names_no_action__ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="apps.actions.pickup"):
        action_run_announced("not-an-action 3f2a")
    assert "ignored a notice that names no action" in caplog.text


def test_run_announced__action_asks_for_a_retry__sent_to_the_broker_with_its_countdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    action_id = str(uuid.uuid4())
    asked: list[dict[str, Any]] = []
    sent: list[tuple[Any, Any]] = []

    def execute(**kwargs: Any) -> Outcome:
        asked.append(kwargs)
        return Outcome(Status.RUNNING, retry_after=2.5, note="leased by another worker")

    monkeypatch.setattr("apps.actions.pickup.action_execute", execute)

    def send(action: str, countdown: float | None = None) -> bool:
        sent.append((action, countdown))
        return True

    monkeypatch.setattr("apps.actions.pickup.action_send", send)
    action_run_announced(f"{action_id} req-12345678")
    assert asked == [{"action_id": uuid.UUID(action_id), "queued_only": True}]
    assert sent == [(action_id, 2.5)]
