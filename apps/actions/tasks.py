from __future__ import annotations

from uuid import UUID

from celery import Task, shared_task

from apps.actions.execution import action_execute


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, name="actions.execute"
)
def execute_action(self: Task[[str], None], action_id: str) -> None:
    """Run one action. Late acknowledgement: a worker that dies mid-action leaves the message to
    be delivered again, and the claim plus the downstream idempotency key make that harmless."""
    outcome = action_execute(action_id=UUID(action_id))
    if outcome.retry_after is not None:
        raise self.retry(countdown=outcome.retry_after)
