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


def worker_backends() -> list[datetime]:
    """When each database connection of the test's worker (its application name) was opened."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT backend_start FROM pg_stat_activity WHERE application_name = %s",
            [APPLICATION],
        )
        return [row[0] for row in cursor.fetchall()]


def test_worker__five_actions_in_a_row__one_connection_for_all_closed_after_a_failed_task(
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

    # Then one connection served them all: opened before the first one started
    first_started = min(action.started_at for action in done if action.started_at is not None)
    opened = worker_backends()
    assert len(opened) == 1, opened
    assert opened[0] <= first_started

    # When a task fails (an action that does not exist)
    execute_action.delay(str(uuid.uuid4()))

    # Then the worker closes its connection rather than keep one the failure may have broken
    wait_until(lambda: not worker_backends(), "the worker closed its connection")

    # And the next task opens a new one and succeeds
    wait_for_status(propose_refund(world, amount_cents=100), Status.SUCCEEDED)
    reopened = worker_backends()
    assert len(reopened) == 1
    assert reopened[0] > opened[0]
