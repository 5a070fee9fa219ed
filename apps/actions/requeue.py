"""Sending stale queued actions, and running actions whose worker is gone, to the workers again.

An allowed action is written `queued` in the gate's transaction and announced to the workers
when it commits (apps/actions/dispatch.py). When no worker hears it (none listening, or the one
that heard it stopped before starting it) nothing is lost: the action stays `queued` in the
database, and this sweep, run by the scheduler, sends every action queued for longer than
ACTION_REQUEUE_AFTER_SECONDS through the broker. The database is the record of what must run;
notices and messages only carry reminders. (So no transactional outbox: the actions table
already is one.)

A running action whose worker died has no message to be redelivered when the worker started
it on hearing it announced, and may have lost its message otherwise (Redis restarted without
it). Its execution lease (apps/actions/execution.py) tells: a worker holds it for one attempt
and gives it back when it schedules a retry, so a lease over for ACTION_REQUEUE_AFTER_SECONDS is
an action nobody is working on. The sweep sends those again as well.

A message sent twice is harmless: the claim (queued -> running, one conditional UPDATE) lets
one delivery start the action, the lease lets one delivery at a time call the system of record,
and the downstream idempotency key makes a repeated call a no-op. Still, a message may be late
rather than lost (a backlog longer than the threshold), so the sweep sends one action at most
once per ACTION_REQUEUE_AFTER_SECONDS (`resent_at`) instead of on every run. Actions held back
by an engaged kill switch are left alone; releasing the switch sends the queued ones, and the
sweep the running ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.actions.dispatch import action_send
from apps.actions.models import Action, Status
from apps.killswitches.coverage import switch_engaged_over

logger = logging.getLogger(__name__)
BATCH = 500


@dataclass(frozen=True)
class RequeueReport:
    sent: int
    failed: int


def actions_waiting() -> list[object]:
    """The ids of queued actions no switch holds back, oldest first (at most BATCH): what a
    worker that starts listening picks up (apps/actions/pickup.py)."""
    return list(
        Action.objects.filter(status=Status.QUEUED)
        .filter(~switch_engaged_over())
        .order_by("queued_at")
        .values_list("pk", flat=True)[:BATCH]
    )


def actions_requeue(now: datetime | None = None) -> RequeueReport:
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.ACTION_REQUEUE_AFTER_SECONDS)
    queued = Q(status=Status.QUEUED, queued_at__lt=stale_before)
    # (No lease at all: started before leases existed; its start time stands in.)
    abandoned = Q(status=Status.RUNNING) & (
        Q(lease_expires_at__lt=stale_before)
        | Q(lease_expires_at__isnull=True, started_at__lt=stale_before)
    )
    not_sent_lately = Q(resent_at__isnull=True) | Q(resent_at__lt=stale_before)
    stale = list(
        Action.objects.filter(queued | abandoned)
        .filter(not_sent_lately)
        .filter(~switch_engaged_over())
        .order_by("queued_at")
        .values_list("pk", "status")[:BATCH]
    )
    sent: list[tuple[object, str]] = []
    failed = 0
    for action_id, status in stale:
        if not action_send(action_id):
            # The broker is down: the rest wait for the next sweep.
            failed = len(stale) - len(sent)
            logger.warning("requeue: %d action(s) left for the next sweep", failed)
            break
        sent.append((action_id, status))
    if sent:
        Action.objects.filter(pk__in=[action_id for action_id, _ in sent]).update(resent_at=now)
    running = sum(1 for _, status in sent if status == Status.RUNNING)
    if len(sent) > running:
        logger.info(
            "requeue: sent %d stale queued action(s) to the workers again", len(sent) - running
        )
    if running:
        logger.warning(
            "requeue: sent %d running action(s) whose lease ended to the workers again "
            "(their worker stopped, their message lost)",
            running,
        )
    return RequeueReport(sent=len(sent), failed=failed)
