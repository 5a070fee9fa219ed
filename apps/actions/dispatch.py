"""Handing actions and callbacks to the workers: the only code that sends them.

The database is the record of what must run; a message only reminds a worker. So every send
waits for the transaction that wrote the row to commit, and a broker that cannot take a message
(Redis down, a network cut) never fails the request that decided the action: the action stays
`queued` and the requeue sweep (apps/actions/requeue.py) sends it again; a callback stays
undelivered in its CallbackDelivery row."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from apps.core.workers import task_send

logger = logging.getLogger(__name__)

EXECUTE = "actions.execute"
DELIVER_CALLBACK = "actions.deliver_callback"


def action_send(action_id: Any) -> bool:
    """Send one action to the workers now; False (logged) when the broker refused it."""
    try:
        task_send(EXECUTE, str(action_id))
    except Exception as exc:  # noqa: BLE001 (whatever the broker's failure, the action is kept)
        logger.warning(
            "broker refused action %s (%s); it stays queued for the requeue sweep",
            action_id,
            type(exc).__name__,
        )
        return False
    return True


def action_dispatch(action_id: Any) -> None:
    """Send the action to the workers once the current transaction commits."""
    action_key = str(action_id)
    transaction.on_commit(lambda: action_send(action_key), robust=True)


def actions_resume(action_ids: Iterable[Any]) -> None:
    """Send queued actions a released switch held back, once the transaction commits; those the
    broker refuses wait for the requeue sweep like any other."""
    keys = [str(action_id) for action_id in action_ids]

    def send() -> None:
        for key in keys:
            if not action_send(key):
                return

    transaction.on_commit(send, robust=True)


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
