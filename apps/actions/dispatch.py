"""Handing actions and callbacks to the workers: the only code that sends them.

The database is the record of what must run; a notice or a message only reminds a worker.

A queued action is announced by PostgreSQL itself: `NOTIFY` in the transaction that queues it,
which PostgreSQL delivers when that transaction commits and drops if it rolls back, so a worker
never hears of a row it cannot read yet, and the web process sends nothing to the broker. Every
worker listens (apps/actions/pickup.py) and starts what it hears at once. Where workers cannot
listen (ACTION_PICKUP off: a connection pooler in transaction mode), each announced action is
also sent through the broker once the transaction commits. The broker is the fallback too: the
requeue sweep (apps/actions/requeue.py) sends an action left queued by a worker that was not
listening, and a worker that starts listening picks up what is already queued.

A callback is a message to the broker, sent once the transaction that wrote its delivery row
commits; a broker that cannot take it never fails the request: the delivery row keeps it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from apps.core.request_context import get_request_id
from apps.core.tracing import context_carried
from apps.core.workers import task_channel, task_send

logger = logging.getLogger(__name__)

EXECUTE = "actions.execute"
DELIVER_CALLBACK = "actions.deliver_callback"


def action_send(action_id: Any, *, countdown: float | None = None) -> bool:
    """Send one action to the workers through the broker now (to be run `countdown` seconds
    later, when given); False (logged) when the broker refused it."""
    try:
        if countdown is None:
            task_send(EXECUTE, str(action_id))
        else:
            task_send(EXECUTE, str(action_id), countdown=countdown)
    except Exception as exc:  # noqa: BLE001 (whatever the broker's failure, the action is kept)
        logger.warning(
            "broker refused action %s (%s); it stays queued for the requeue sweep",
            action_id,
            type(exc).__name__,
        )
        return False
    return True


def announcement(action_id: Any) -> str:
    """The notice of a queued action: its id, the request that queued it (for the logs of the
    worker that runs it) and, when tracing is on, the trace context (so that the run continues
    the request's trace)."""
    return f"{action_id} {get_request_id()} {context_carried()}".rstrip()


def announcement_read(payload: str) -> tuple[str, str, str]:
    """(action id, request id, traceparent or "") from a notice."""
    action_id, request_id, traceparent = [*payload.split(" ", 2), "", ""][:3]
    return action_id, request_id or "-", traceparent


def action_dispatch(action_id: Any) -> None:
    """Announce the queued action to the workers, delivered when the current transaction
    commits (at once outside one)."""
    actions_announce([action_id])


def actions_announce(action_ids: Iterable[Any]) -> None:
    """Announce queued actions to the workers in one statement: a switch's release announces
    those it held back."""
    ids = list(action_ids)
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_notify(%s, payload)) FROM unnest(%s::text[]) AS payload",
            [task_channel(), [announcement(action_id) for action_id in ids]],
        )
    actions_send_on_commit(ids)


def actions_send_on_commit(action_ids: Iterable[Any]) -> None:
    """Where workers do not listen (ACTION_PICKUP off), also send the announced actions through
    the broker once the transaction commits; a broker that refuses leaves them to the sweep."""
    if settings.ACTION_PICKUP:
        return
    for action_id in action_ids:
        transaction.on_commit(partial(action_send, action_id), robust=True)


def actions_resume(action_ids: Iterable[Any]) -> None:
    """Announce queued actions a released switch held back (delivered when the transaction
    commits); those no worker hears wait for the requeue sweep like any other."""
    actions_announce(action_ids)


def callback_dispatch(delivery_id: int) -> None:
    """Send one callback delivery to the workers once the current transaction commits."""

    def send() -> None:
        try:
            task_send(DELIVER_CALLBACK, delivery_id)
        except Exception as exc:  # noqa: BLE001 (the delivery row keeps what must be sent)
            logger.warning(
                "broker refused callback %s (%s); it stays undelivered",
                delivery_id,
                type(exc).__name__,
            )

    transaction.on_commit(send, robust=True)
