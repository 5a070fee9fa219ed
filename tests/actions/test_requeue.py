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

pytestmark = pytest.mark.django_db


def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(action_id: str) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", refuse)


def test_broker_down__proposal_answered_and_kept_queued__sent_again_when_back(
    book: BookVersion,
    key: IssuedKey,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: CaptureCallbacks,
    enqueued: list[str],
) -> None:
    broker_down(monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        response = propose(Client(), key.key, proposal_body())
    assert response.status_code == 201, response.content
    action = Action.objects.get(pk=response.json()["id"])
    assert action.status == Status.QUEUED

    later = timezone.now() + timedelta(seconds=61)
    report = actions_requeue(later)  # still down: nothing sent, nothing lost
    assert (report.sent, report.failed) == (0, 1)
    assert Action.objects.get(pk=action.pk).status == Status.QUEUED

    monkeypatch.undo()
    sent: list[str] = []
    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", sent.append)
    assert actions_requeue(timezone.now()).sent == 0  # not stale yet: its message may be on its way
    assert actions_requeue(later).sent == 1
    assert sent == [str(action.pk)]


def test_requeue_leaves_actions_a_kill_switch_holds(
    book: BookVersion,
    key: IssuedKey,
    django_capture_on_commit_callbacks: CaptureCallbacks,
    enqueued: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = propose(Client(), key.key, proposal_body())
    action_id = response.json()["id"]
    KillSwitch.objects.create(
        scope=Scope.AGENT,
        target="refund-bot",
        reason="incident",
        engaged_by="dana",
        engaged_at=timezone.now(),
    )
    sent: list[Any] = []
    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", sent.append)
    assert actions_requeue(timezone.now() + timedelta(minutes=5)).sent == 0
    KillSwitch.objects.update(released_at=timezone.now(), released_by="dana")
    assert actions_requeue(timezone.now() + timedelta(minutes=5)).sent == 1
    assert sent == [action_id]


def test_requeue_runs_from_the_scheduler(settings: Any) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["action-requeue"]["task"] == "actions.requeue"
