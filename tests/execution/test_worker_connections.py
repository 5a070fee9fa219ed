"""A worker keeps its database connection from one task to the next (apps/core/
worker_connections.py), and closes it after a task that failed."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from django.db import connection

from apps.actions.models import Status
from apps.actions.tasks import execute_action
from tests.conftest import database_url_for_subprocess
from tests.execution.conftest import (
    Worker,
    World,
    propose_refund,
    wait_for_status,
    wait_until,
    worker_start,
)

pytestmark = pytest.mark.django_db(transaction=True)

APPLICATION = "escapement-reuse-test"


def worker_backends() -> tuple[list[datetime], list[datetime]]:
    """When each database connection of the test's worker (its application name) was opened:
    (its listener's, those that run actions). The listener's is the one whose last statement is
    its LISTEN (apps/actions/pickup.py)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT backend_start, query LIKE 'LISTEN %%' FROM pg_stat_activity "
            "WHERE application_name = %s ORDER BY backend_start",
            [APPLICATION],
        )
        rows = cursor.fetchall()
    return [start for start, listens in rows if listens], [
        start for start, listens in rows if not listens
    ]


def announce_missing(queue: str) -> None:
    """A notice naming an action that does not exist: the run it starts fails."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [queue, f"{uuid.uuid4()} -"])


def test_worker__five_actions_in_a_row__one_connection_for_all_closed_after_a_failed_run(
    world: World, own_queue: str, workers: list[Worker]
) -> None:
    url = f"{database_url_for_subprocess()}?application_name={APPLICATION}"
    workers.append(
        worker_start(queue=own_queue, name="reuse", env={"DATABASE_URL": url}, concurrency=1)
    )

    # Given five refunds run one after another by a worker with one process
    done = [
        wait_for_status(propose_refund(world, amount_cents=100), Status.SUCCEEDED) for _ in range(5)
    ]

    # Then besides its listener, one connection served them all: opened before the first started
    first_started = min(action.started_at for action in done if action.started_at is not None)
    listener, opened = worker_backends()
    assert len(listener) == 1, listener
    assert len(opened) == 1, opened
    assert opened[0] <= first_started

    # When a run fails (a notice naming an action that does not exist)
    announce_missing(own_queue)

    # Then the worker closes that connection rather than keep one the failure may have broken,
    # and keeps listening on its own
    wait_until(lambda: worker_backends() == (listener, []), "the worker closed its connection")

    # And the next action opens a new one and succeeds
    wait_for_status(propose_refund(world, amount_cents=100), Status.SUCCEEDED)
    _, reopened = worker_backends()
    assert len(reopened) == 1
    assert reopened[0] > opened[0]

    # And a task from the broker that fails closes the connection it opened too, leaving the
    # one that runs announced actions
    execute_action.delay(str(uuid.uuid4()))
    wait_until(lambda: "raised unexpected" in workers[0].log(), "the failed task ended")
    wait_until(
        lambda: worker_backends() == (listener, reopened), "the task's connection was closed"
    )
