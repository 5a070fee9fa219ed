from __future__ import annotations

from celery import Task, shared_task

from apps.runtime.services import runtime_sweep, step_execute


@shared_task(
    bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None, name="runtime.run_step"
)
def run_step(self: Task[[int], None], step_id: int) -> None:
    """One attempt at one step of a hosted run; a failed attempt comes back after a backoff
    (the step counts its own attempts and stops retrying past its limit)."""
    outcome = step_execute(step_id=step_id)
    if outcome.retry_after is not None:
        raise self.retry(countdown=outcome.retry_after)


@shared_task(name="runtime.sweep", ignore_result=True)
def sweep() -> None:
    """From the scheduler: resume decided steps, fail lost attempts, free stale reservations."""
    runtime_sweep()
