from __future__ import annotations

from uuid import UUID

from celery import Task, shared_task

from apps.ledger.backtest import backtest_perform
from apps.ledger.rollups import cost_rollup
from apps.ledger.slos import slo_check


@shared_task(name="ledger.cost_rollup")
def cost_rollup_task() -> None:
    """Fold the closed days of cost events into the daily rollup (idempotent)."""
    cost_rollup()


@shared_task(name="ledger.slo_check")
def slo_check_task() -> None:
    """Raise (once) and resolve the SLO alerts of every workflow."""
    slo_check()


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="ledger.backtest")
def backtest_run_task(self: Task[[str], None], backtest_id: str) -> None:
    backtest_perform(backtest_id=UUID(backtest_id))
