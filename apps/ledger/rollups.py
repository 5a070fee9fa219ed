"""The daily cost rollup: model spend per workflow and local day, so that the balance sheet
never sums a million cost events to show one month.

How it stays exact:

- Cost events (runtime.ModelCall) are append-only: a call's cost is written when the row is
  inserted and never changed afterwards.
- The rollup holds whole days only, recomputed from the raw records (DELETE then INSERT ...
  SELECT, in one transaction with the mark), never incremented: running it twice, or after a
  crash, gives the same rows.
- Readers take days before the mark from the rollup and the rest (the live tail) from the raw
  records, in ONE SQL statement (`spend_by_day`), so they see one snapshot: a rollup committing
  meanwhile can neither be counted twice nor missed.
- A day is rolled up only once it has been over for GRACE_DAYS, and the last REOPEN_DAYS rolled
  days are recomputed on every run: a cost event recorded late with an earlier time (an external
  agent's usage carries its proposal's time; a transaction may commit minutes after its rows were
  stamped) still lands in its day. A cost event backdated further than that is a data import:
  `cost_rollup(rebuild=True)` recomputes everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.ledger.models import RollupMark

GRACE_DAYS = 1
REOPEN_DAYS = 2


def local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day))


@dataclass(frozen=True)
class RollupReport:
    rolled_until: date | None
    days: int


def _first_event_day() -> date | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(created_at) FROM runtime_modelcall")
        (first,) = cursor.fetchone()
    return timezone.localdate(first) if first is not None else None


@transaction.atomic
def cost_rollup(*, now: datetime | None = None, rebuild: bool = False) -> RollupReport:
    """Bring the rollup up to the day GRACE_DAYS before today (local time)."""
    RollupMark.objects.get_or_create(pk=RollupMark.SINGLETON)
    # The row lock serialises rollups: two schedulers, or a rebuild during a run, queue up.
    mark = RollupMark.objects.select_for_update().get(pk=RollupMark.SINGLETON)
    until = timezone.localdate(now or timezone.now()) - timedelta(days=GRACE_DAYS)
    first = _first_event_day()
    if first is None:
        return RollupReport(mark.rolled_until, 0)
    if rebuild or mark.rolled_until is None:
        start = first
    else:
        start = max(first, mark.rolled_until - timedelta(days=REOPEN_DAYS))
    if start >= until:
        return RollupReport(mark.rolled_until, 0)
    with connection.cursor() as cursor:
        if rebuild:
            cursor.execute("DELETE FROM ledger_costrollup")
        else:
            cursor.execute(
                "DELETE FROM ledger_costrollup WHERE day >= %s AND day < %s", [start, until]
            )
        cursor.execute(
            """
            INSERT INTO ledger_costrollup (workflow_id, day, calls, cost_cents)
            SELECT workflow_id, (created_at AT TIME ZONE %(tz)s)::date, count(*), sum(cost_cents)
              FROM runtime_modelcall
             WHERE created_at >= %(start)s AND created_at < %(end)s
             GROUP BY 1, 2
            """,
            {
                "tz": settings.TIME_ZONE,
                "start": local_midnight(start),
                "end": local_midnight(until),
            },
        )
    mark.rolled_until = until
    mark.updated_at = timezone.now()
    mark.save(update_fields=["rolled_until", "updated_at"])
    return RollupReport(until, (until - start).days)


@dataclass(frozen=True)
class DaySpend:
    workflow_id: int
    day: date
    calls: int
    cost_cents: Decimal


def spend_by_day(*, workflow_ids: list[int], start: date, end: date) -> list[DaySpend]:
    """Calls and cost per workflow and local day in [start, end): the rollup before its mark,
    the raw records from the mark on, read in one statement (one snapshot)."""
    if not workflow_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH mark AS (
                SELECT coalesce(
                    (SELECT rolled_until FROM ledger_rollupmark WHERE id = 1), '-infinity'::date
                ) AS day
            )
            SELECT workflow_id, day, sum(calls)::bigint, sum(cost)
              FROM (
                SELECT workflow_id, day, calls, cost_cents AS cost
                  FROM ledger_costrollup
                 WHERE day >= %(start)s AND day < %(end)s AND day < (SELECT day FROM mark)
                   AND workflow_id = ANY(%(ids)s)
                UNION ALL
                SELECT workflow_id, (created_at AT TIME ZONE %(tz)s)::date,
                       count(*), sum(cost_cents)
                  FROM runtime_modelcall
                 WHERE workflow_id = ANY(%(ids)s)
                   AND created_at >= greatest(
                        %(start_at)s, ((SELECT day FROM mark)::timestamp AT TIME ZONE %(tz)s))
                   AND created_at < %(end_at)s
                 GROUP BY 1, 2
              ) AS spend
             GROUP BY 1, 2
             ORDER BY 2, 1
            """,
            {
                "tz": settings.TIME_ZONE,
                "ids": workflow_ids,
                "start": start,
                "end": end,
                "start_at": local_midnight(start),
                "end_at": local_midnight(end),
            },
        )
        return [DaySpend(row[0], row[1], int(row[2]), row[3]) for row in cursor.fetchall()]
