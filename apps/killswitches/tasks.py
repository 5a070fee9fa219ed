from __future__ import annotations

from celery import Task, shared_task

from apps.killswitches.rollback import rollback_perform


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="killswitches.rollback")
def rollback_run_task(self: Task[[int], None], run_id: int) -> None:
    """Undo the actions of one rollback run. Redelivered after a lost worker, it carries on
    after the last action its report records (an undo is idempotent downstream)."""
    rollback_perform(run_id=run_id)
