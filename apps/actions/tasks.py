from __future__ import annotations

from uuid import UUID

from celery import Task, shared_task

from apps.actions.callbacks import MAX_ATTEMPTS, CallbackFailed, callback_deliver
from apps.actions.execution import action_execute
from apps.actions.requeue import actions_requeue
from apps.core.backoff import backoff


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, name="actions.execute"
)
def execute_action(self: Task[[str], None], action_id: str) -> None:
    """Run one action. Late acknowledgement: a worker that dies mid-action leaves the message to
    be delivered again, and the claim plus the downstream idempotency key make that harmless."""
    outcome = action_execute(action_id=UUID(action_id))
    if outcome.retry_after is not None:
        raise self.retry(countdown=outcome.retry_after)


@shared_task(bind=True, max_retries=None, name="actions.deliver_callback")
def deliver_callback(self: Task[[int], None], delivery_id: int) -> None:
    """Send one outcome to the agent; retried with backoff up to MAX_ATTEMPTS attempts."""
    try:
        callback_deliver(delivery_id)
    except CallbackFailed:
        if self.request.retries + 1 >= MAX_ATTEMPTS:
            return
        raise self.retry(countdown=backoff(self.request.retries + 1, base=1.0, cap=300.0)) from None


@shared_task(name="actions.requeue", ignore_result=True)
def requeue_actions() -> None:
    """From the scheduler: send actions left `queued` (their message lost) to the workers."""
    actions_requeue()
