from __future__ import annotations

from celery import shared_task

from apps.reviews.services import reviews_sweep


@shared_task(name="reviews.sweep")
def sweep_reviews() -> dict[str, int]:
    """Escalate overdue review items and expire stale ones (every minute, from the scheduler)."""
    report = reviews_sweep()
    return {"escalated": len(report.escalated), "expired": len(report.expired)}
