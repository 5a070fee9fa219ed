"""Execution leases: one caller of the system of record at a time, and no running action left
behind by a dead worker.

A worker that claims an action holds its lease for one attempt (the tool's timeout plus
ACTION_LEASE_MARGIN_SECONDS). Another delivery of the same action (a duplicate message, the
requeue sweep's reminder) calls the system of record only after taking over a lease that has
ended; until then it comes back later without calling. A worker that schedules a retry gives the
lease back at once, so the retry is not delayed. And the requeue sweep sends again a running
action whose lease ended long ago (its worker died, its message lost)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu import Queue

from apps.actions.execution import lease_seconds
from apps.actions.models import Action, Status
from apps.actions.requeue import actions_requeue
from apps.actions.states import transition
from apps.actions.tasks import execute_action
from apps.sandbox.models import FaultMode
from apps.sandbox.selectors import effect_count, refunds_for
from apps.sandbox.services import faults_set
from controlplane.celery import app as celery_app
from tests.execution.conftest import (
    ROOMY_ORDER,
    SandboxHold,
    SandboxRequest,
    Worker,
    World,
    calls_with,
    propose_refund,
    trail_of,
    wait_for_status,
    wait_until,
    worker_kill,
    worker_start,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The first call is held in flight (the `sandbox_hold` fixture) until the second delivery has
# done its part; the tool's timeout only has to outlast that moment.
TOOL_TIMEOUT_SECONDS = 10.0
# A lease of 10 + 1 = 11 s: the duplicate delivery comes back within the test, not 40 s later.
LEASE_MARGIN_SECONDS = 1
NOT_CALLED = "is being run by another worker: not called"


def purge(queue: str) -> None:
    with celery_app.connection_for_write() as connection:
        Queue(queue).bind(connection.default_channel).purge()


@pytest.fixture
def other_queue() -> Iterator[str]:
    """A second queue of the test's own, read only by the worker the test starts on it."""
    name = f"test-other-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        with celery_app.connection_for_write() as connection:
            Queue(name).bind(connection.default_channel).delete()


def test_second_message__action_running_elsewhere__tool_not_called_again_and_succeeds_once(
    world: World,
    own_queue: str,
    sandbox_requests: list[SandboxRequest],
    sandbox_hold: SandboxHold,
    workers: list[Worker],
) -> None:
    # Given a worker with two threads, and a sandbox that keeps the first delivery's call in
    # flight while a second message for the same action arrives
    world.tool.timeout_seconds = TOOL_TIMEOUT_SECONDS
    world.tool.save()
    env = {"ACTION_LEASE_MARGIN_SECONDS": str(LEASE_MARGIN_SECONDS)}
    workers.append(
        worker_start(queue=own_queue, name="leases", env=env, pool="threads", concurrency=2)
    )
    action = propose_refund(world, amount_cents=3_000)
    running = wait_for_status(action, Status.RUNNING)
    wait_until(
        lambda: calls_with(sandbox_requests, action.downstream_key) == 1,
        "the first delivery's call reached the sandbox",
    )

    # When a second message for the action arrives (the sweep's reminder, a duplicate), and
    # the first call is answered once the second delivery has found the lease held
    execute_action.delay(str(action.pk))
    wait_until(lambda: NOT_CALLED in workers[0].log(), "the second delivery found the lease held")
    sandbox_hold.release()

    # Then the action ends succeeded, once
    done = wait_for_status(action, Status.SUCCEEDED, Status.FAILED)
    assert done.status == Status.SUCCEEDED, f"{done.error}\n{workers[0].log()}"
    # ... and once the second delivery has ended too (the first delivery, the worker's pickup
    # of the announced action, logged its end, and the second, a task, its own), the system of
    # record was called once: the second found the lease held, came back after its end without
    # calling, and found it finished
    wait_until(
        lambda: (
            f"pickup: action {action.pk} succeeded" in workers[0].log()
            and "] succeeded in" in workers[0].log()
        ),
        "the second delivery ended",
    )
    log = workers[0].log()
    assert calls_with(sandbox_requests, action.downstream_key) == 1, log
    assert NOT_CALLED in log
    assert effect_count(action.downstream_key) == 1
    assert len(refunds_for(ROOMY_ORDER)) == 1
    assert done.attempts == 1
    assert done.lease_expires_at == running.lease_expires_at
    verbs = trail_of(action)
    assert verbs.count("action.running") == 1
    assert verbs.count("action.succeeded") == 1


def test_worker_killed_mid_call__reminder_arrives_within_its_lease__waits_then_completes_once(
    world: World,
    own_queue: str,
    other_queue: str,
    sandbox_requests: list[SandboxRequest],
    sandbox_hold: SandboxHold,
    workers: list[Worker],
) -> None:
    # A lease of 10 + 8 = 18 s from the claim: it still runs when the second worker, already
    # up on a queue of its own, reads the reminder sent once the first is dead.
    env = {"ACTION_LEASE_MARGIN_SECONDS": "8"}
    # Given a worker calling the sandbox for an action, the call held in flight, and a second
    # worker on a queue of its own
    world.tool.timeout_seconds = TOOL_TIMEOUT_SECONDS
    world.tool.save()
    workers.append(worker_start(queue=own_queue, name="dying", env=env))
    workers.append(worker_start(queue=other_queue, name="living", env=env))
    action = propose_refund(world, amount_cents=3_000)
    running = wait_for_status(action, Status.RUNNING)
    assert running.lease_expires_at is not None
    wait_until(
        lambda: calls_with(sandbox_requests, action.downstream_key) == 1,
        "the first worker's call reached the sandbox",
    )

    # When that worker is killed mid-call (it started the action on hearing it announced, so
    # no message is left to be redelivered; its call still lands), and a reminder for the
    # action (the requeue sweep's) reaches the other worker while the dead one's lease still runs
    worker_kill(workers[0])
    sandbox_hold.release()
    execute_action.apply_async((str(action.pk),), queue=other_queue)

    # Then the second worker does not call at once: it comes back at the lease's end,
    # takes the lease over, and runs the action to the end, once
    done = wait_for_status(action, Status.SUCCEEDED, Status.FAILED)
    assert done.status == Status.SUCCEEDED, f"{done.error}\n{workers[1].log()}"
    assert NOT_CALLED in workers[1].log()
    assert done.finished_at is not None
    assert done.finished_at >= running.lease_expires_at
    assert done.lease_expires_at is not None
    assert done.lease_expires_at > running.lease_expires_at
    # ... one call from each worker, one refund (the idempotency key made the second a
    # repeat of the first)
    assert calls_with(sandbox_requests, action.downstream_key) == 2
    assert effect_count(action.downstream_key) == 1
    assert len(refunds_for(ROOMY_ORDER)) == 1
    assert done.attempts == 2


def test_running_action_whose_lease_ended_long_ago__sent_again_by_sweep__succeeds_once(
    world: World,
    own_queue: str,
    sandbox_requests: list[SandboxRequest],
    workers: list[Worker],
) -> None:
    # Given an action a worker claimed two minutes ago and never finished: the worker died
    # before calling, its lease ended long ago, and its message is gone (the broker lost it)
    action = propose_refund(world, amount_cents=3_000)
    purge(own_queue)
    long_ago = timezone.now() - timedelta(minutes=2)
    transition(
        action,
        Status.RUNNING,
        actor="system:worker",
        started_at=long_ago,
        lease_expires_at=long_ago + timedelta(seconds=40),
    )
    # ... and another one still within its lease (its worker busy with it)
    busy = propose_refund(world, amount_cents=1_000)
    purge(own_queue)
    transition(
        busy,
        Status.RUNNING,
        actor="system:worker",
        started_at=timezone.now(),
        lease_expires_at=timezone.now() + timedelta(seconds=40),
    )

    # When the scheduler's requeue sweep runs, and a worker reads the queue
    report = actions_requeue()
    workers.append(worker_start(queue=own_queue, name="sweep", env={}))

    # Then only the abandoned action was sent again
    assert (report.sent, report.failed) == (1, 0)
    # ... and it ends succeeded, once, with one call to the system of record
    done = wait_for_status(action, Status.SUCCEEDED, Status.FAILED)
    assert done.status == Status.SUCCEEDED, f"{done.error}\n{workers[0].log()}"
    assert done.attempts == 1
    assert calls_with(sandbox_requests, action.downstream_key) == 1
    assert effect_count(action.downstream_key) == 1
    verbs = trail_of(action)
    assert verbs.count("action.running") == 1
    assert verbs.count("action.succeeded") == 1
    # ... while the one still leased was left to its worker
    assert Action.objects.get(pk=busy.pk).status == Status.RUNNING
    assert calls_with(sandbox_requests, busy.downstream_key) == 0


@pytest.mark.usefixtures("celery_worker")
def test_transient_failure__retry_takes_the_released_lease__succeeds_without_waiting_for_it(
    world: World, sandbox_requests: list[SandboxRequest]
) -> None:
    # Given a sandbox that answers 503 to every other request, the first one included, and the
    # default lease (the tool's 10 s timeout plus a 30 s margin)
    faults_set(mode=FaultMode.FLAKY)
    try:
        # When refund-bot's refund is run by the worker
        action = propose_refund(world, amount_cents=3_000)

        # Then the retry (after a backoff of about half a second) runs it to the end at once:
        # the first attempt gave its lease back when it scheduled the retry
        done = wait_for_status(action, Status.SUCCEEDED, Status.FAILED)
        assert done.status == Status.SUCCEEDED, done.error
        assert done.attempts == 2
        assert calls_with(sandbox_requests, action.downstream_key) == 2
        assert effect_count(action.downstream_key) == 1
        assert done.started_at is not None
        assert done.finished_at is not None
        # (a retry that waited for the lease would have ended after it, 40 s after the start)
        assert done.finished_at - done.started_at < timedelta(seconds=lease_seconds(world.tool))
    finally:
        faults_set(mode=FaultMode.HEALTHY)
