"""A worker killed in the middle of an action: the action still ends once, with one effect.

Here the action comes through the broker (the workers do not listen for announcements, as behind
a connection pooler; test_leases.py has a worker killed while running an announced action, which
the requeue sweep sends again). Why one refund and not zero or two:
- late acknowledgement (`acks_late`): the broker message is acknowledged only when the task
  returns, so a worker that dies mid-call leaves it unacknowledged, and Redis hands it to
  another worker once the visibility timeout has passed: the action is not lost;
- the claim: queued -> running is one conditional UPDATE, so the redelivered task finds the
  action running (not queued) and only resumes it; no second claim, no second "running";
- the lease: the claim gave the dead worker the action's execution lease, so the redelivered
  task resumes it only once that lease has ended (had it not, it would come back then);
- the downstream idempotency key: every call for the action carries `esc-<action id>`, so the
  sandbox answers the resumed call with the stored answer of the first (whose effect landed even
  though its caller died) instead of refunding again: the effect happens once.
"""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from apps.actions.models import Action, Status
from apps.actions.tasks import execute_action
from apps.sandbox.selectors import effect_count, refunds_for
from tests.execution.conftest import (
    RAN_ONCE,
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

# Seconds before Redis hands an unacknowledged task to another worker. Kombu's Redis transport
# looks for such tasks when a worker starts, and after that only every 100 s (its sweep interval
# times its throttle, 10 x 10 s), so the second worker is started once the timeout has passed.
# (A worker with this timeout restores every task left unacknowledged for longer, whatever its
# queue: the tests before this one leave none behind.)
VISIBILITY_TIMEOUT = 3
# The lease is the tool's timeout plus the margin: 10 + 1 = 11 s here. The timeout only has to
# outlast the moment between the call reaching the sandbox and the kill. The redelivery (the
# visibility timeout, then a worker's start) takes the lease over once it has ended, at once
# or after coming back at its end. (test_leases.py has a second delivery arrive while a dead
# worker's lease still runs.)
TOOL_TIMEOUT_SECONDS = 10.0
LEASE_MARGIN_SECONDS = 1


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_call__redelivered__succeeds_once_with_one_refund(
    world: World,
    own_queue: str,
    sandbox_requests: list[SandboxRequest],
    sandbox_hold: SandboxHold,
    workers: list[Worker],
) -> None:
    env = {
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "ACTION_LEASE_MARGIN_SECONDS": str(LEASE_MARGIN_SECONDS),
        "ACTION_PICKUP": "off",
    }
    world.tool.timeout_seconds = TOOL_TIMEOUT_SECONDS
    world.tool.save()
    # Given a worker whose prefork child runs the task the broker brings (as the requeue sweep
    # sends it), and a sandbox that keeps the refund call in flight until the worker has died
    workers.append(worker_start(queue=own_queue, name="first", env=env))
    action = propose_refund(world, amount_cents=3_000)
    execute_action.delay(str(action.pk))
    running = wait_for_status(action, Status.RUNNING)
    assert running.started_at is not None
    assert running.lease_expires_at is not None
    lease = running.lease_expires_at - running.started_at
    assert lease.total_seconds() == TOOL_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS
    wait_until(
        lambda: calls_with(sandbox_requests, f"esc-{action.pk}") == 1,
        "the worker's call reached the sandbox",
    )
    assert not refunds_for(ROOMY_ORDER).exists()

    # When the worker's whole process group is killed mid-call
    worker_kill(workers[0])
    # ... the orphaned call still lands in the sandbox (its caller is gone, not the request)
    sandbox_hold.release()
    wait_until(lambda: refunds_for(ROOMY_ORDER).exists(), "the orphaned call made its refund")
    assert Action.objects.get(pk=action.pk).status == Status.RUNNING
    # ... and a second worker starts on the same queue once the message is visible again
    visible_again = running.started_at.timestamp() + VISIBILITY_TIMEOUT + 1
    time.sleep(max(0.0, visible_again - timezone.now().timestamp()))
    workers.append(worker_start(queue=own_queue, name="second", env=env))

    # Then the action ends succeeded, once, with exactly one refund in the sandbox
    done = wait_for_status(action, Status.SUCCEEDED, Status.FAILED)
    assert done.status == Status.SUCCEEDED, f"{done.error}\n{workers[1].log()}"
    refunds = list(refunds_for(ROOMY_ORDER))
    assert len(refunds) == 1
    assert done.result is not None
    assert done.result["refund_id"] == refunds[0].pk
    assert effect_count(f"esc-{action.pk}") == 1
    # ... the second worker called only once the dead worker's lease had ended
    assert done.finished_at is not None
    assert done.finished_at >= running.lease_expires_at
    # ... though the sandbox was called twice, once by each worker: the key made it one
    assert calls_with(sandbox_requests, f"esc-{action.pk}") == 2
    assert done.attempts == 2
    assert trail_of(action) == RAN_ONCE
