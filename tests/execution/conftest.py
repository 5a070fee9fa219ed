"""Execution tests: the governed action path for real. Actions are proposed through the gate,
run by Celery workers (or by `action_execute` in the test's own process) and reach the sandbox
over HTTP, served by pytest-django's live server on a loopback port.

Everything here commits (the worker and the live server read other connections), so every test
that uses these fixtures is `@pytest.mark.django_db(transaction=True)`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from kombu import Queue

from apps.accounts.roles import Role
from apps.actions import connectors
from apps.actions.gate import Proposal, action_propose
from apps.actions.models import Action
from apps.audit.selectors import flight_record
from apps.demo.sandbox import sandbox_seed
from apps.registry.models import AgentKey, Tool
from apps.registry.services import agent_key_create
from apps.sandbox.models import FaultMode
from apps.sandbox.services import faults_set
from controlplane.celery import app as celery_app
from tests.conftest import (
    ROOT,
    WORKER_START_SECONDS,
    database_url_for_subprocess,
    worker_answers,
)
from tests.factories import make_agent, make_published_book, make_tool, make_workflow
from tests.sandbox.conftest import SANDBOX_TOKEN, sandbox_open

# Seeded sandbox orders (apps/demo/sandbox.py): 1003 holds 39.50 EUR, 1001 only 10.00 EUR.
ROOMY_ORDER = "1003"
SMALL_ORDER = "1001"
ROOMY_ORDER_TOTAL = 3_950
# The ceiling of a wait for the workers: far above what a healthy run takes on a busy machine.
WAIT_SECONDS = 120.0
# The audit trail of an allowed action that ran once to success, in order.
RAN_ONCE = [
    "action.proposed",
    "action.approved",
    "action.queued",
    "action.running",
    "action.succeeded",
]


def trail_of(action: Action) -> list[str]:
    """The verbs of the action's audit events, in order (its flight record)."""
    return list(flight_record(action_id=str(action.pk)).values_list("verb", flat=True))


@dataclass(frozen=True)
class World:
    """refund-bot in the refunds workflow (REFUND_CONTROLS), its key, and issue_refund wired to
    the sandbox with its credential; `owner` is the book's escalation owner (bob, of the risk
    role)."""

    key: AgentKey
    tool: Tool
    owner: User
    sandbox_url: str


@pytest.fixture
def sandbox_url(live_server: Any, settings: Any) -> Iterator[str]:
    """The live server's sandbox, switched on; tools pointed at it carry SANDBOX_TOKEN."""
    sandbox_open(settings)
    yield f"{live_server.url}/sandbox"
    # Calls made from this process leave keep-alive connections in the connector's pool, and
    # each keeps a live-server thread, with its database connection, waiting for a next request
    # (which would stop the test database from being dropped). Closing them ends those threads.
    connectors._pool.clear()


@pytest.fixture
def world(transactional_db: Any, user_for: Any, sandbox_url: str) -> World:
    sandbox_seed()
    owner: User = user_for(Role.RISK)
    workflow = make_workflow()
    tool = make_tool()
    tool.endpoint_url = f"{sandbox_url}/refunds"
    tool.undo_endpoint_url = f"{sandbox_url}/refunds/undo"
    tool.credential_secret = SANDBOX_TOKEN
    tool.reversible = True
    tool.save()
    agent = make_agent(owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    make_published_book(workflow=workflow, author=owner)
    key = agent_key_create(agent=agent, actor="system:test").record
    return World(key=key, tool=tool, owner=owner, sandbox_url=sandbox_url)


def propose_refund(
    world: World,
    *,
    amount_cents: int,
    order_id: str = ROOMY_ORDER,
    confidence: Decimal = Decimal("0.9"),
) -> Action:
    """refund-bot proposes a refund of `amount_cents` on `order_id` through the gate."""
    proposal = Proposal(
        workflow="refunds",
        tool="issue_refund",
        params={
            "order_id": order_id,
            "amount_cents": amount_cents,
            "currency": "EUR",
            "reason": "parcel arrived damaged",
        },
        subject=f"order:{order_id}",
        confidence=confidence,
        reasoning="photo of the damaged parcel attached to the ticket",
    )
    return action_propose(key=world.key, proposal=proposal).action


def wait_for_status(action: Action, *statuses: str, timeout: float = WAIT_SECONDS) -> Action:
    """Poll the database until the action is in one of `statuses`; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        current = Action.objects.get(pk=action.pk)
        if current.status in statuses:
            return current
        assert time.monotonic() < deadline, (
            f"action stayed {current.status} for {timeout:g}s, expected {' or '.join(statuses)}"
        )
        time.sleep(0.05)


@dataclass(frozen=True)
class SandboxRequest:
    path: str
    idempotency_key: str


def is_sandbox_call(environ: dict[str, Any] | None) -> bool:
    path = str((environ or {}).get("PATH_INFO", ""))
    return path.startswith("/sandbox/") and path != "/sandbox/faults"


@pytest.fixture
def sandbox_requests() -> Iterator[list[SandboxRequest]]:
    """Every request the sandbox receives during the test, whoever sends it (the live server
    runs in this process, so Django's request_started signal sees the worker's calls too).

    The test ends only once the sandbox has answered them all: a call its caller gave up on (a
    slow sandbox, a killed worker) would otherwise land after the test, in the next one's
    tables."""
    seen: list[SandboxRequest] = []
    serving: set[int] = set()  # the live-server threads serving a sandbox call

    def record(sender: Any, environ: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if is_sandbox_call(environ):
            serving.add(threading.get_ident())
            seen.append(SandboxRequest((environ or {})["PATH_INFO"], key_of(environ)))

    def done(sender: Any, **kwargs: Any) -> None:
        serving.discard(threading.get_ident())

    request_started.connect(record, dispatch_uid="execution-tests-sandbox-requests")
    request_finished.connect(done, dispatch_uid="execution-tests-sandbox-requests")
    try:
        yield seen
        wait_until(lambda: not serving, "the sandbox answered every call")
    finally:
        request_started.disconnect(dispatch_uid="execution-tests-sandbox-requests")
        request_finished.disconnect(dispatch_uid="execution-tests-sandbox-requests")


def key_of(environ: dict[str, Any] | None) -> str:
    return str((environ or {}).get("HTTP_IDEMPOTENCY_KEY", ""))


def calls_with(requests: list[SandboxRequest], idempotency_key: str) -> int:
    return sum(1 for request in requests if request.idempotency_key == idempotency_key)


def wait_until(condition: Any, what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll until `condition()` holds; fail, naming `what`, after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting until {what}"
        time.sleep(0.05)


class SandboxHold:
    """Keeps every call to the sandbox in flight until the test releases it: the live-server
    thread serving a call waits before the sandbox reads it (it runs in this process, so the
    request_started signal reaches it). Where a slow sandbox would answer after a fixed delay,
    whether or not the test got to do its part in time, a held call answers only once the test
    has done it."""

    def __init__(self) -> None:
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait(self, sender: Any, environ: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if is_sandbox_call(environ):
            # (bounded, so that a test that fails before releasing does not hang the server)
            self._released.wait(timeout=WAIT_SECONDS)


@pytest.fixture
def sandbox_hold(sandbox_requests: list[SandboxRequest]) -> Iterator[SandboxHold]:
    """Sandbox calls held from the start of the test until `release()` (after
    `sandbox_requests` has seen them: a held call is already counted)."""
    hold = SandboxHold()
    request_started.connect(hold.wait, dispatch_uid="execution-tests-sandbox-hold")
    try:
        yield hold
    finally:
        hold.release()
        request_started.disconnect(dispatch_uid="execution-tests-sandbox-hold")


@pytest.fixture
def own_queue() -> Iterator[str]:
    """A queue of this test's own: the tasks it sends go there, to be read only by the workers
    it starts, or by none at all when the test runs `action_execute` itself, step by step (the
    session's worker may be up, listening on the default queue, and must not race it)."""
    name = f"test-own-{uuid.uuid4().hex[:8]}"
    # Set and restored by hand: on undo, monkeypatch would delete the override, which Celery's
    # layered settings refuse.
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = name
    try:
        yield name
    finally:
        celery_app.conf.task_default_queue = previous
        with celery_app.connection_for_write() as connection:
            Queue(name).bind(connection.default_channel).purge()


# Workers started by the tests themselves (the suite-wide `celery_worker` fixture cannot be killed).


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen[bytes]
    node: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def worker_start(
    *, queue: str, name: str, env: dict[str, str], pool: str = "prefork", concurrency: int = 1
) -> Worker:
    """Start `celery worker` on `queue` against the test database, in a process group of its
    own (so that killing the group takes the pool's children too); wait until it answers."""
    node = f"{name}-{queue}@localhost"
    log_path = ROOT / "var" / f"{name}-{queue}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "controlplane", "worker",
                "--pool", pool, "--concurrency", str(concurrency), "--hostname", node,
                "--queues", queue, "--loglevel", "INFO", "--without-mingle", "--without-gossip",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": database_url_for_subprocess(),
                "CELERY_QUEUE": queue,
                "LOG_FORMAT": "text",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = Worker(process, node, log_path)
    deadline = time.monotonic() + WORKER_START_SECONDS
    while not worker_answers(node):
        if process.poll() is not None or time.monotonic() > deadline:
            output = worker.log()
            worker_stop(worker)
            raise RuntimeError(f"worker {node} did not start:\n{output}")
    return worker


def worker_kill(worker: Worker) -> None:
    """SIGKILL the worker and its pool's children at once: no shutdown, no acknowledgement."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def worker_stop(worker: Worker) -> None:
    """Stop a worker the polite way (warm shutdown), or kill it if it does not go in time."""
    if worker.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=15)
    # The group may outlive its leader (a pool child): make sure nothing is left behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    worker.log_path.unlink(missing_ok=True)


@pytest.fixture
def workers(transactional_db: Any) -> Iterator[list[Worker]]:
    """The Celery workers a test starts (it appends them): stopped when it ends, however it
    ends, and the sandbox made healthy again."""
    started: list[Worker] = []
    yield started
    faults_set(mode=FaultMode.HEALTHY)
    for worker in started:
        worker_stop(worker)
