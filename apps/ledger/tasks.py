from __future__ import annotations

from uuid import UUID

from celery import Task, shared_task

from apps.ledger.backtest import backtest_part_perform, backtest_perform
from apps.ledger.rollups import cost_rollup
from apps.ledger.slos import slo_check
from apps.ledger.tallies import tally_compact


@shared_task(name="ledger.cost_rollup")
def cost_rollup_task() -> None:
    """Fold the closed days of cost events into the daily rollup (idempotent)."""
    cost_rollup()


@shared_task(name="ledger.tally_compact")
def tally_compact_task() -> None:
    """Fold the action tally's new rows into one per key (the counts are the same before)."""
    tally_compact()


@shared_task(name="ledger.slo_check")
def slo_check_task() -> None:
    """Raise (once) and resolve the SLO alerts of every workflow."""
    slo_check()


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="ledger.backtest")
def backtest_run_task(self: Task[[str], None], backtest_id: str) -> None:
    """Cut the backtest into parts and send each to the workers."""
    backtest_perform(backtest_id=UUID(backtest_id), on_workers=True)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="ledger.backtest_part")
def backtest_part_task(self: Task[[int], None], part_id: int) -> None:
    """Decide one part of a backtest (the last one merges the result)."""
    backtest_part_perform(part_id=part_id)
