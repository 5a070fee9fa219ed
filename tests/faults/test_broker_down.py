"""Redis (the broker) stops while proposals keep arriving: the API keeps deciding and recording,
no allowed action is lost, and every allowed action executes exactly once.

The broker here is a Valkey server of the test's own (the embedded servers' binary), killed
outright (SIGKILL: no shutdown, every message it held gone, every connection reset) and started
again, empty, on the same port. A real web process (gunicorn) and a real Celery worker use it;
the system of record is the sandbox, served by the live server. Twice: with workers that hear
queued actions announced by PostgreSQL (the default), which keep running them through the
outage, and with workers that take them from the broker alone (ACTION_PICKUP off).

Why a sweeper and not a transactional outbox: the gate already writes every allowed action
`queued` in the transaction that decides it, so the actions table is the outbox. The notice and
the message are only reminders; a reminder the broker refused or lost is sent again by the
requeue sweep (apps/actions/requeue.py) once the action has been queued for
ACTION_REQUEUE_AFTER_SECONDS. Exactly once comes from the claim (queued -> running, one
conditional UPDATE) and the downstream idempotency key, not from the broker delivering once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import redis
import urllib3
from celery import Celery
from kombu.exceptions import OperationalError

from apps.actions.models import Action, Status
from apps.actions.tasks import requeue_actions
from apps.audit.models import AuditEvent
from apps.registry.services import agent_key_create
from apps.sandbox.selectors import effect_count
from controlplane.embedded import valkey_bin
from tests.actions.conftest import proposal_body
from tests.conftest import ROOT, WORKER_START_SECONDS, database_url_for_subprocess, worker_answers
from tests.execution.conftest import (
    WAIT_SECONDS,
    SandboxRequest,
    Worker,
    World,
    calls_with,
    wait_until,
    worker_stop,
)
from tests.faults.conftest import WebProcess, free_port, web_start, web_stop

pytestmark = pytest.mark.django_db(transaction=True)

REQUEUE_AFTER_SECONDS = 2
# An agent waits seconds for the gate's answer, not tens of seconds; the answer takes well under
# one second, Redis up or down. (A proposal that waited on the broker would take ~20 s.)
ANSWER_TIMEOUT = 10.0
# Requests whose answer time is not the subject: a ceiling only.
REQUEST_TIMEOUT = 60.0
# Seeded sandbox order 1013 holds 620.00 EUR: room for every 5.00 EUR refund proposed here.
ORDER = "1013"


@dataclass
class RedisServer:
    """A Valkey server (the Redis protocol) of the test's own on a fixed loopback port, that can
    be killed and started again (empty: no persistence, as a Redis that lost its memory)."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @cached_property
    def celery(self) -> Celery:
        """A Celery client of this broker alone (the suite's app talks to the suite's Redis)."""
        return Celery("broker-down-test", broker=self.url, set_as_current=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(valkey_bin()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=5)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test's Valkey server did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        server.celery.close()


@pytest.fixture
def queue() -> str:
    return f"test-broker-down-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pickup(request: pytest.FixtureRequest) -> str:
    """ACTION_PICKUP for the web process and the worker: "on" (the default) unless a test
    parametrizes it."""
    value: str = getattr(request, "param", "on")
    return value


@pytest.fixture
def web(
    transactional_db: Any, broker: RedisServer, queue: str, pickup: str
) -> Iterator[WebProcess]:
    """gunicorn serving the product, its broker the test's Redis."""
    process = web_start(env=services_env(broker, queue, pickup))
    try:
        yield process
    finally:
        web_stop(process)


@pytest.fixture
def worker(transactional_db: Any, broker: RedisServer, queue: str, pickup: str) -> Iterator[Worker]:
    process = worker_start_on(broker, queue=queue, pickup=pickup)
    try:
        yield process
    finally:
        worker_stop(process)


def worker_start_on(broker: RedisServer, *, queue: str, pickup: str) -> Worker:
    """A real `celery worker` on `queue`, its broker the test's Redis; waits until it answers a
    ping sent through that broker."""
    node = f"broker-down-{queue}@localhost"
    log_path = ROOT / "var" / f"broker-down-{queue}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "controlplane", "worker",
                "--pool", "threads", "--concurrency", "2", "--hostname", node,
                "--queues", queue, "--loglevel", "INFO", "--without-mingle", "--without-gossip",
            ],
            cwd=ROOT,
            env={**os.environ, **services_env(broker, queue, pickup)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = Worker(process, node, log_path)
    deadline = time.monotonic() + WORKER_START_SECONDS
    while not answers_ping(broker, node):
        if process.poll() is not None or time.monotonic() > deadline:
            output = worker.log()
            worker_stop(worker)
            raise RuntimeError(f"worker {node} did not start:\n{output}")
    return worker


def answers_ping(broker: RedisServer, node: str) -> bool:
    try:
        return worker_answers(node, broker.celery)
    except (redis.ConnectionError, OperationalError):
        return False  # (this client's own connection went down with the server: next time)


def services_env(broker: RedisServer, queue: str, pickup: str) -> dict[str, str]:
    return {
        "ACTION_PICKUP": pickup,
        "DATABASE_URL": database_url_for_subprocess(),
        "REDIS_URL": broker.url,
        "CELERY_QUEUE": queue,
        "ACTION_REQUEUE_AFTER_SECONDS": str(REQUEUE_AFTER_SECONDS),
        "LOG_FORMAT": "text",
    }


def post_proposal(
    web: WebProcess,
    key: str,
    idempotency_key: str,
    *,
    amount_cents: int = 500,
    timeout: float = REQUEST_TIMEOUT,
) -> urllib3.BaseHTTPResponse:
    params = {"order_id": ORDER, "amount_cents": amount_cents, "currency": "EUR", "reason": "x"}
    body = proposal_body(
        params=params,
        subject=f"order:{ORDER}",
        idempotency_key=idempotency_key,
    )
    return urllib3.request(
        "POST",
        f"{web.url}/api/v1/actions",
        body=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=timeout,
        retries=False,
    )


def propose_allowed(
    web: WebProcess, key: str, idempotency_key: str, *, timeout: float = REQUEST_TIMEOUT
) -> str:
    """Propose one refund the book allows; assert the gate's normal answer; its action id."""
    answer = post_proposal(web, key, idempotency_key, timeout=timeout)
    assert answer.status == 201, (answer.status, answer.data, web.log()[-3000:])
    body = json.loads(answer.data)
    assert (body["decision"], body["status"]) == ("allow", "queued"), body
    return str(body["id"])


def statuses(action_ids: list[str]) -> list[str]:
    by_id = dict(Action.objects.filter(pk__in=action_ids).values_list("pk", "status"))
    return [by_id[uuid.UUID(action_id)] for action_id in action_ids]


def all_succeeded(action_ids: list[str]) -> bool:
    return all(status == Status.SUCCEEDED for status in statuses(action_ids))


def verbs_of(action_id: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_type="actions.action", target_id=action_id)
        .order_by("sequence")
        .values_list("verb", flat=True)
    )


def each_ran_once(action_ids: list[str], sandbox_requests: list[SandboxRequest]) -> None:
    """Every one of these allowed actions ran exactly once: one claim, one attempt, one call to
    the system of record with its idempotency key, one effect there; and nothing else called."""
    actions = {str(action.pk): action for action in Action.objects.filter(pk__in=action_ids)}
    for action_id in action_ids:
        action = actions[action_id]
        assert action.attempts == 1, action_id
        assert verbs_of(action_id).count("action.running") == 1, action_id
        assert verbs_of(action_id).count("action.succeeded") == 1, action_id
        assert calls_with(sandbox_requests, action.downstream_key) == 1, action_id
        assert effect_count(action.downstream_key) == 1, action_id
    assert len(sandbox_requests) == len(action_ids)


def proposed_before_the_outage(world: World, web: WebProcess) -> tuple[str, list[str]]:
    """A new key of refund-bot, and three refunds proposed with it and run."""
    key = agent_key_create(agent=world.key.agent, actor="system:test").key
    before = [propose_allowed(web, key, f"before-{n}") for n in range(3)]
    wait_until(lambda: all_succeeded(before), "the refunds proposed before the outage ran")
    return key, before


def send_requeue_sweep(broker: RedisServer, queue: str) -> None:
    """What the scheduler does every 30 s: send the `actions.requeue` task, for a worker to run."""
    broker.celery.send_task(requeue_actions.name, queue=queue)


@pytest.mark.parametrize("pickup", ["off"], indirect=True)
def test_redis_stops_while_proposals_arrive__all_decided_recorded_then_each_runs_once(
    world: World,
    broker: RedisServer,
    queue: str,
    web: WebProcess,
    worker: Worker,
    sandbox_requests: list[SandboxRequest],
) -> None:
    # Given refund-bot with a key, and a web process and a worker on the test's own Redis, which
    # run the refunds proposed to them through the broker alone (the worker does not listen for
    # announcements, as behind a connection pooler)
    key, before = proposed_before_the_outage(world, web)

    # When Redis dies, and refund-bot keeps proposing
    broker.kill()
    during = [propose_allowed(web, key, f"during-{n}", timeout=ANSWER_TIMEOUT) for n in range(5)]
    held = post_proposal(web, key, "during-held", amount_cents=6_000, timeout=ANSWER_TIMEOUT)
    held_answer = json.loads(held.data)

    # Then every proposal got its normal answer at once (201, allow, queued: checked as
    # they were made; one over the book's 50.00 EUR cap held for a person), and each is
    # recorded with its decision and audit trail, and kept queued
    assert held.status == 201, held_answer
    assert (held_answer["decision"], held_answer["status"]) == ("hold", "pending_review")
    for action_id in during:
        assert verbs_of(action_id) == ["action.proposed", "action.approved", "action.queued"]
        assert f"broker refused action {action_id}" in web.log()
    assert statuses(during) == [Status.QUEUED] * len(during)
    # ... and asking for one answers too
    state = urllib3.request(
        "GET",
        f"{web.url}/api/v1/actions/{during[0]}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=ANSWER_TIMEOUT,
        retries=False,
    )
    assert state.status == 200
    assert json.loads(state.data)["status"] == "queued"

    # When Redis is back, empty (whatever it held is gone)
    broker.start()

    # Then the worker and the web process reconnect by themselves: new proposals run
    wait_until(lambda: answers_ping(broker, worker.node), "the worker answered again")
    after = [propose_allowed(web, key, f"after-{n}") for n in range(3)]
    wait_until(lambda: all_succeeded(after), "the refunds proposed after the outage ran")
    # ... while the ones whose message never reached the broker are still queued: the
    # database, not the broker, holds them
    assert statuses(during) == [Status.QUEUED] * len(during)

    # When the scheduler's requeue sweep runs, once they have been queued long enough
    queued = Action.objects.filter(pk__in=during).values_list("queued_at", flat=True)
    newest = max(queued_at for queued_at in queued if queued_at is not None)
    time.sleep(max(newest.timestamp() + REQUEUE_AFTER_SECONDS + 0.2 - time.time(), 0))
    send_requeue_sweep(broker, queue)

    # Then the refunds proposed during the outage run too, sent again by the sweep
    wait_until(lambda: all_succeeded(during), "the refunds proposed during the outage ran")
    assert f"requeue: sent {len(during)} stale queued action(s)" in worker.log()
    assert worker.process.poll() is None
    assert web.process.poll() is None

    # ... and every allowed action ran exactly once: one claim, one attempt, one call to the
    # system of record with its idempotency key, one refund there; the held one none
    each_ran_once(before + during + after, sandbox_requests)
    assert statuses([held_answer["id"]]) == [Status.PENDING_REVIEW]


def test_redis_stops__workers_that_listen_run_every_allowed_action_meanwhile__once(
    world: World,
    broker: RedisServer,
    web: WebProcess,
    worker: Worker,
    sandbox_requests: list[SandboxRequest],
) -> None:
    # Given refund-bot with a key, and a web process and a worker listening for the actions
    # PostgreSQL announces, both on the test's own Redis
    key, before = proposed_before_the_outage(world, web)

    # When Redis dies, and refund-bot keeps proposing
    broker.kill()
    during = [propose_allowed(web, key, f"during-{n}", timeout=ANSWER_TIMEOUT) for n in range(5)]

    # Then every proposal got its answer at once, and each runs all the same: the worker heard
    # it from PostgreSQL, no broker in the path
    wait_until(lambda: all_succeeded(during), "the refunds proposed during the outage ran")
    assert "broker refused action" not in web.log()
    for action_id in during:
        assert f"pickup: action {action_id} succeeded" in worker.log()

    # When Redis is back, empty, new proposals run as before
    broker.start()
    after = [propose_allowed(web, key, f"after-{n}") for n in range(3)]
    wait_until(lambda: all_succeeded(after), "the refunds proposed after the outage ran")
    assert worker.process.poll() is None
    assert web.process.poll() is None

    # ... and every allowed action ran exactly once
    each_ran_once(before + during + after, sandbox_requests)
