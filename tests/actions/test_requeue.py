"""The broker cannot take a message: the proposal is still answered and recorded `queued`, and
the requeue sweep sends it to the workers once the broker is back; nothing is lost, nothing is
sent while a kill switch holds it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError

from apps.actions.models import Action, Status
from apps.actions.requeue import actions_requeue
from apps.books.models import BookVersion
from apps.killswitches.models import KillSwitch, Scope
from apps.registry.services import IssuedKey
from tests.actions.conftest import CaptureCallbacks, proposal_body, propose
from tests.announced import Announced

pytestmark = pytest.mark.django_db


def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(action_id: str) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", refuse)


def proposed(key: IssuedKey, capture: CaptureCallbacks, **body: Any) -> str:
    """An allowed proposal through the API, its message handed over at commit; its id."""
    with capture(execute=True):
        response = propose(Client(), key.key, proposal_body(**body))
    assert response.status_code == 201, response.content
    return str(response.json()["id"])


def sends_recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The broker back: what is sent to the workers from now on, in order."""
    sent: list[str] = []
    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", sent.append)
    return sent


def test_broker_down__proposal_answered_and_kept_queued__sent_again_when_back(
    book: BookVersion,
    key: IssuedKey,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: CaptureCallbacks,
    enqueued: Announced,
) -> None:
    broker_down(monkeypatch)
    action = Action.objects.get(pk=proposed(key, django_capture_on_commit_callbacks))
    assert action.status == Status.QUEUED

    later = timezone.now() + timedelta(seconds=61)
    report = actions_requeue(later)  # still down: nothing sent, nothing lost
    assert (report.sent, report.failed) == (0, 1)
    assert Action.objects.get(pk=action.pk).status == Status.QUEUED

    monkeypatch.undo()
    sent = sends_recorded(monkeypatch)
    assert actions_requeue(timezone.now()).sent == 0  # not stale yet: its message may be on its way
    assert actions_requeue(later).sent == 1
    assert sent == [str(action.pk)]


def test_requeue_leaves_actions_a_kill_switch_holds(
    book: BookVersion,
    key: IssuedKey,
    django_capture_on_commit_callbacks: CaptureCallbacks,
    enqueued: Announced,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    action_id = proposed(key, django_capture_on_commit_callbacks)
    KillSwitch.objects.create(
        scope=Scope.AGENT,
        target="refund-bot",
        reason="incident",
        engaged_by="dana",
        engaged_at=timezone.now(),
    )
    sent = sends_recorded(monkeypatch)
    assert actions_requeue(timezone.now() + timedelta(minutes=5)).sent == 0
    KillSwitch.objects.update(released_at=timezone.now(), released_by="dana")
    assert actions_requeue(timezone.now() + timedelta(minutes=5)).sent == 1
    assert sent == [action_id]


def test_requeue_runs_from_the_scheduler(settings: Any) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["action-requeue"]["task"] == "actions.requeue"


def test_requeue__same_stale_action__sent_again_at_most_once_per_threshold(
    book: BookVersion,
    key: IssuedKey,
    django_capture_on_commit_callbacks: CaptureCallbacks,
    enqueued: Announced,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an action queued long ago whose message has not been run (a backlog, or lost)
    action_id = proposed(key, django_capture_on_commit_callbacks)
    sent = sends_recorded(monkeypatch)
    later = timezone.now() + timedelta(seconds=61)

    # When the sweep runs every 30 s
    reports = [actions_requeue(later + timedelta(seconds=30 * n)) for n in range(4)]

    # Then it sends the action again once per ACTION_REQUEUE_AFTER_SECONDS (60 s), not each time
    assert [report.sent for report in reports] == [1, 0, 0, 1]
    assert sent == [action_id, action_id]
    assert Action.objects.get(pk=action_id).resent_at == later + timedelta(seconds=90)


def test_requeue__running_actions__only_those_whose_lease_ended_long_ago_sent_again(
    book: BookVersion,
    key: IssuedKey,
    django_capture_on_commit_callbacks: CaptureCallbacks,
    enqueued: Announced,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given three running actions: one whose lease ended two minutes ago (its worker died and
    # its message is lost), one whose lease ended a moment ago (its retry is on its way), and
    # one still leased (its worker is calling the tool)
    now = timezone.now()
    ids = []
    for n, lease_end in enumerate(
        [now - timedelta(minutes=2), now - timedelta(seconds=5), now + timedelta(seconds=30)]
    ):
        ids.append(proposed(key, django_capture_on_commit_callbacks, idempotency_key=f"lease-{n}"))
        Action.objects.filter(pk=ids[-1]).update(
            status=Status.RUNNING, started_at=now - timedelta(minutes=3), lease_expires_at=lease_end
        )
    sent = sends_recorded(monkeypatch)

    # When the sweep runs, and runs again 30 s later
    first = actions_requeue(now)
    second = actions_requeue(now + timedelta(seconds=30))

    # Then only the abandoned one is sent, once
    assert (first.sent, second.sent) == (1, 0)
    assert sent == [ids[0]]
