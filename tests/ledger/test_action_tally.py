"""The action tally the balance sheet counts from equals the actions themselves, through every
way an action is written: created, changed one by one and in bulk, deleted, in transactions that
roll back, before and after compaction, and while compaction runs beside concurrent writers."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction

from apps.actions.models import Action
from apps.ledger.models import ActionTally
from apps.ledger.tallies import (
    ActionCount,
    _from_actions,
    action_counts,
    tally_compact,
    tally_rebuild,
)
from tests.ledger.conftest import World, add_action

pytestmark = pytest.mark.django_db

START = datetime(2025, 3, 1, tzinfo=UTC)
STATUSES = ["queued", "running", "succeeded", "failed", "rolled_back", "rejected", "expired"]
DECISIONS = ["allow", "hold", "deny"]


def _key(counts: list[ActionCount]) -> Counter[tuple[Any, ...]]:
    totals: Counter[tuple[Any, ...]] = Counter()
    for count in counts:
        totals[
            (count.period, count.workflow_id, count.book_version_id, count.decision, count.status)
        ] += count.n
    return +totals  # drops keys that sum to zero


def _assert_tally_is_live(world: World, bounds: list[datetime]) -> None:
    ids = [world.refunds.pk, world.invoices.pk]
    from_tally = _key(action_counts(workflow_ids=ids, bounds=bounds))
    direct = _key(_from_actions(ids, bounds, None))
    assert from_tally == direct
    assert sum(from_tally.values()) > 0


def _bounds() -> list[list[datetime]]:
    months = [START + timedelta(days=31 * index) for index in range(3)]
    months = [month.replace(day=1) for month in months]
    quarter_hours = [START + timedelta(days=3, minutes=15 * index) for index in range(0, 400, 37)]
    return [months, quarter_hours, [START - timedelta(days=1), START + timedelta(days=90)]]


def _scatter(world: World, rng: random.Random, count: int) -> list[Action]:
    return [
        add_action(
            world,
            workflow=rng.choice([world.refunds, world.invoices]),
            status=rng.choice(STATUSES),
            decision=rng.choice(DECISIONS),
            at=START + timedelta(seconds=rng.randrange(60 * 86_400)),
        )
        for _ in range(count)
    ]


def test_tally__every_kind_of_write__equals_the_actions(world: World) -> None:
    rng = random.Random(7)
    actions = _scatter(world, rng, 300)
    for bounds in _bounds():
        _assert_tally_is_live(world, bounds)

    # One by one, through save() (as the services do), including a change of creation time.
    for action in rng.sample(actions, 60):
        action.status = rng.choice(STATUSES)
        action.save(update_fields=["status"])
    moved = actions[0]
    moved.created_at = START + timedelta(days=45, minutes=7)
    moved.save(update_fields=["created_at"])
    # In bulk (as drains and sweeps do), and deleted.
    Action.objects.filter(status="queued").update(status="expired")
    Action.objects.filter(pk__in=[action.pk for action in actions[1:21]]).delete()
    # A change other than to a counted column writes no tally row.
    rows_before = ActionTally.objects.count()
    Action.objects.filter(pk=actions[30].pk).update(error="upstream said no")
    assert ActionTally.objects.count() == rows_before

    for bounds in _bounds():
        _assert_tally_is_live(world, bounds)


def test_tally__rolled_back_transaction__leaves_no_trace(world: World) -> None:
    add_action(world, workflow=world.refunds, status="queued", decision="allow", at=START)
    rows_before = ActionTally.objects.count()

    def write_then_fail() -> None:
        with transaction.atomic():
            add_action(world, workflow=world.refunds, status="queued", decision="allow", at=START)
            Action.objects.update(status="running")
            raise RuntimeError("the gate's transaction fails after writing")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert ActionTally.objects.count() == rows_before
    _assert_tally_is_live(world, [START, START + timedelta(days=1)])


def test_compact__folds_one_row_per_key__counts_unchanged_and_again_idempotent(
    world: World,
) -> None:
    rng = random.Random(11)
    actions = _scatter(world, rng, 200)
    for action in actions[:100]:
        action.status = "succeeded" if action.status != "succeeded" else "rolled_back"
        action.save(update_fields=["status"])
    ids = [world.refunds.pk, world.invoices.pk]
    bounds = _bounds()[0]
    before = _key(action_counts(workflow_ids=ids, bounds=bounds))

    folded = tally_compact()

    assert folded > 0
    assert not ActionTally.objects.filter(compacted=False).exists()
    keys = ActionTally.objects.values_list(
        "workflow_id", "bucket", "book_version_id", "decision", "status"
    )
    assert len(keys) == len(set(keys))  # one row per key
    assert not ActionTally.objects.filter(n=0).exists()
    assert _key(action_counts(workflow_ids=ids, bounds=bounds)) == before
    assert tally_compact() == 0  # nothing new: nothing to fold

    changed = actions[150]
    changed.status = "failed" if changed.status != "failed" else "expired"
    changed.save(update_fields=["status"])
    fresh = list(ActionTally.objects.filter(compacted=False).values_list("bucket", "n"))
    assert sorted(n for _, n in fresh) == [-1, 1]  # left one state, entered another
    in_bucket = ActionTally.objects.filter(
        workflow_id=changed.workflow_id, bucket=fresh[0][0]
    ).count()
    assert tally_compact() == in_bucket  # only the bucket with new rows is folded again
    _assert_tally_is_live(world, bounds)


def test_rebuild__counts_from_scratch__same_counts(world: World) -> None:
    _scatter(world, random.Random(3), 120)
    ids = [world.refunds.pk, world.invoices.pk]
    bounds = _bounds()[0]
    before = _key(action_counts(workflow_ids=ids, bounds=bounds))
    ActionTally.objects.all().delete()  # as after a restore that lost the tally

    tally_rebuild()

    assert _key(action_counts(workflow_ids=ids, bounds=bounds)) == before


def test_counts__bound_not_on_a_quarter_hour__counted_from_the_actions(world: World) -> None:
    add_action(world, workflow=world.refunds, status="succeeded", decision="allow", at=START)
    at = START + timedelta(minutes=10)
    add_action(world, workflow=world.refunds, status="succeeded", decision="allow", at=at)
    ActionTally.objects.all().delete()  # the tally would now say nothing: it must not be asked

    counts = action_counts(
        workflow_ids=[world.refunds.pk], bounds=[START, START + timedelta(minutes=7)]
    )

    assert [(count.status, count.n) for count in counts] == [("succeeded", 1)]


def test_counts__statuses_filter__only_those(world: World) -> None:
    for status in ("succeeded", "succeeded", "failed"):
        add_action(world, workflow=world.refunds, status=status, decision="allow", at=START)

    counts = action_counts(
        workflow_ids=[world.refunds.pk],
        bounds=[START, START + timedelta(days=1)],
        statuses=["succeeded"],
    )

    assert [(count.status, count.n) for count in counts] == [("succeeded", 2)]


def test_beat__compacts_every_minute() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["ledger-tally-compact"]
    assert entry == {"task": "ledger.tally_compact", "schedule": 60.0}


@pytest.mark.django_db(transaction=True)
def test_compact__beside_concurrent_writers__tally_stays_exact(world: World) -> None:
    """Four writers create and move actions on their own committed transactions while
    compaction runs again and again: at every step and at the end, the tally is the count."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                with transaction.atomic():
                    action = add_action(
                        world,
                        workflow=rng.choice([world.refunds, world.invoices]),
                        status="queued",
                        decision="allow",
                        at=START + timedelta(minutes=rng.randrange(240)),
                    )
                for status in ("running", rng.choice(["succeeded", "failed"])):
                    Action.objects.filter(pk=action.pk).update(status=status)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
        finally:
            connection.close()

    def compactor() -> None:
        try:
            while not stop.is_set():
                tally_compact()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
        finally:
            connection.close()

    writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    folding = threading.Thread(target=compactor)
    folding.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    folding.join(timeout=60)

    assert not errors, errors
    assert Action.objects.count() == 160
    _assert_tally_is_live(world, [START, START + timedelta(hours=4)])
    tally_compact()
    _assert_tally_is_live(world, [START, START + timedelta(hours=4)])
    assert not ActionTally.objects.filter(compacted=False).exists()
    # Every action was counted once, in the state it ended in.
    ids = [world.refunds.pk, world.invoices.pk]
    total = sum(
        count.n
        for count in action_counts(workflow_ids=ids, bounds=[START, START + timedelta(hours=4)])
    )
    assert total == 160
