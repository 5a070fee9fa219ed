"""Sending stale queued actions to the workers again.

An allowed action is written `queued` in the gate's transaction and its message is sent to the
broker after the commit. When the broker cannot take it (Redis down, a network cut) the
proposal is still answered and nothing is lost: the action stays `queued` in the database, and
this sweep, run by the scheduler, sends every action queued for longer than
ACTION_REQUEUE_AFTER_SECONDS again. The database is the record of what must run; the broker
only carries reminders. A message sent twice is harmless: the claim (queued -> running, one
conditional UPDATE) lets one delivery run the action, and the downstream idempotency key makes
a repeated call to the system of record a no-op. Actions held back by an engaged kill switch
are left alone; releasing the switch sends them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.actions.execution import _switch_engaged
from apps.actions.models import Action, Status

logger = logging.getLogger(__name__)
BATCH = 500


@dataclass(frozen=True)
class RequeueReport:
    sent: int
    failed: int


def actions_requeue(now: datetime | None = None) -> RequeueReport:
    from apps.actions.tasks import execute_action

    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.ACTION_REQUEUE_AFTER_SECONDS)
    stale = list(
        Action.objects.filter(status=Status.QUEUED, queued_at__lt=stale_before)
        .filter(~_switch_engaged())
        .order_by("queued_at")
        .values_list("pk", flat=True)[:BATCH]
    )
    sent = 0
    for action_id in stale:
        try:
            execute_action.delay(str(action_id))
        except Exception as exc:  # noqa: BLE001 (the broker is down: try again next sweep)
            logger.warning(
                "requeue: broker refused action %s (%s); %d left for the next sweep",
                action_id,
                type(exc).__name__,
                len(stale) - sent,
            )
            return RequeueReport(sent=sent, failed=len(stale) - sent)
        sent += 1
    if sent:
        logger.info("requeue: sent %d stale queued action(s) to the workers again", sent)
    return RequeueReport(sent=sent, failed=0)
