"""The action tally: how many actions of each workflow are in each state, per quarter hour of
creation, so that the balance sheet never counts a month of actions row by row.

How it stays exact:

- The database keeps it, not the application: a trigger on the actions table (migration
  ledger/0002) appends a +1 row for the state an action enters and a -1 row for the state it
  leaves, in the transaction that changes the action. Every path that writes actions (the gate,
  workers, reviews, drains, bulk updates, deletes, raw SQL) is counted, and a transaction that
  rolls back takes its tally rows with it.
- Appending never waits: concurrent proposals each insert their own rows; no counter row is
  locked, so the tally adds no contention to the gate.
- `tally_compact` (the scheduler, every minute) folds the rows of every touched key into one,
  in a single statement: a reader sees the tally before or after it, never half of it, and rows
  appended meanwhile are left for the next run. The sum over any set of keys is the live count
  at the reader's snapshot, compacted or not; compaction only keeps the sum cheap.
- Buckets are quarter hours of UTC: every time zone's midnight falls on one, so a month in
  settings.TIME_ZONE is a whole number of buckets, whatever the zone (a bound that is not on a
  quarter hour is counted from the actions themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from django.db import connection, transaction
from django.db.models import Count

from apps.actions.models import Action

BUCKET_SECONDS = 15 * 60
COMPACT_LOCK = 0x1ED6E7  # the advisory lock that keeps two compactions from doing work twice


@dataclass(frozen=True)
class ActionCount:
    """`n` actions of a workflow, governed by a book version, decided and now in `status`,
    created in period `period` (between bounds[period] and bounds[period + 1])."""

    period: int
    workflow_id: int
    book_version_id: int | None
    decision: str
    status: str
    n: int


def _on_bucket(moment: datetime) -> bool:
    return moment.timestamp() % BUCKET_SECONDS == 0


def action_counts(
    *,
    workflow_ids: Sequence[int],
    bounds: Sequence[datetime],
    statuses: Sequence[str] | None = None,
) -> list[ActionCount]:
    """The actions of `workflow_ids` by period of creation (the periods between consecutive
    `bounds`, ascending), governing version, decision and current status (only `statuses`,
    when given)."""
    if not workflow_ids or len(bounds) < 2:
        return []
    wanted = list(statuses) if statuses is not None else None
    if all(_on_bucket(bound) for bound in bounds):
        return _from_tally(list(workflow_ids), list(bounds), wanted)
    return _from_actions(list(workflow_ids), list(bounds), wanted)


def _from_tally(
    workflow_ids: list[int], bounds: list[datetime], statuses: list[str] | None
) -> list[ActionCount]:
    with connection.cursor() as cursor:
        # width_bucket numbers the periods from 1 (0 before the first bound, len after the last;
        # the WHERE keeps only those inside).
        cursor.execute(
            """
            SELECT width_bucket(bucket, %(bounds)s::timestamptz[]) - 1, workflow_id,
                   book_version_id, decision, status, sum(n)
              FROM ledger_actiontally
             WHERE workflow_id = ANY(%(ids)s) AND bucket >= %(first)s AND bucket < %(last)s
               AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
             GROUP BY 1, 2, 3, 4, 5
            HAVING sum(n) <> 0
            """,
            {
                "bounds": bounds,
                "ids": workflow_ids,
                "first": bounds[0],
                "last": bounds[-1],
                "statuses": statuses,
            },
        )
        return [
            ActionCount(period, workflow_id, version_id, decision, status, int(n))
            for period, workflow_id, version_id, decision, status, n in cursor.fetchall()
        ]


def _from_actions(
    workflow_ids: list[int], bounds: list[datetime], statuses: list[str] | None
) -> list[ActionCount]:
    counts = []
    for period, (start, end) in enumerate(pairwise(bounds)):
        actions = Action.objects.filter(
            workflow_id__in=workflow_ids, created_at__gte=start, created_at__lt=end
        )
        if statuses is not None:
            actions = actions.filter(status__in=statuses)
        grouped = (
            actions.values_list("workflow_id", "book_version_id", "decision", "status")
            .annotate(n=Count("pk"))
            .order_by()
        )
        counts += [ActionCount(period, *row) for row in grouped]
    return counts


@transaction.atomic
def tally_compact() -> int:
    """Fold the tally rows of every key that has new ones into one row per key; returns how
    many rows were folded (0 when another compaction is running)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [COMPACT_LOCK])
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(
            """
            WITH fresh AS (
                SELECT DISTINCT workflow_id, bucket FROM ledger_actiontally WHERE NOT compacted
            ), moved AS (
                DELETE FROM ledger_actiontally AS tally USING fresh
                 WHERE tally.workflow_id = fresh.workflow_id AND tally.bucket = fresh.bucket
                RETURNING tally.workflow_id, tally.bucket, tally.book_version_id, tally.decision,
                          tally.status, tally.n
            ), folded AS (
                INSERT INTO ledger_actiontally
                       (workflow_id, bucket, book_version_id, decision, status, n, compacted)
                SELECT workflow_id, bucket, book_version_id, decision, status, sum(n), true
                  FROM moved
                 GROUP BY 1, 2, 3, 4, 5
                HAVING sum(n) <> 0
            )
            SELECT count(*) FROM moved
            """
        )
        folded: int = cursor.fetchone()[0]
    return folded


@transaction.atomic
def tally_rebuild() -> None:
    """Count every action again from scratch (after a restore, or to check the trigger's work):
    writers of actions wait until it commits."""
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE actions_action IN SHARE MODE")
        cursor.execute("DELETE FROM ledger_actiontally")
        cursor.execute(
            """
            INSERT INTO ledger_actiontally
                   (workflow_id, bucket, book_version_id, decision, status, n, compacted)
            SELECT workflow_id,
                   date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                   book_version_id, decision, status, count(*), true
              FROM actions_action
             GROUP BY 1, 2, 3, 4, 5
            """
        )
