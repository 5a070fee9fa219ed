"""What the benchmarks that run the product for real share: the services they need, the database
made ready, the refund world they act on, and the server and worker processes they start.

Every process is started in a session of its own and stopped (its whole group) when its block
ends, however it ends."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from kombu import Queue

from apps.accounts.roles import Role
from apps.accounts.services import user_create
from apps.books.models import BookVersion
from apps.registry.models import Agent, Workflow
from controlplane.celery import app as celery_app
from tests.factories import REFUND_CONTROLS, make_agent, make_published_book, make_tool

ROOT = Path(__file__).resolve().parent.parent
ENV = os.environ
BENCH_PASSWORD = "bench-only, never signed in with"  # noqa: S105


class BenchFailure(RuntimeError):
    """The benchmark could not measure what it set out to (a server, a worker, a bad answer)."""


# --- Services and data ---------------------------------------------------------------------


def check_services(what: str) -> None:
    # Servers named in the environment only: unset, the settings fall back to the servers
    # `make run` started, and a benchmark's rows would land in the demo's database.
    for name, server in (("DATABASE_URL", "PostgreSQL"), ("REDIS_URL", "Redis")):
        if not ENV.get(name, "").strip():
            raise BenchFailure(
                f"{name}: the {what} needs a {server} of its own; run it through `make bench` "
                "(scripts/test-services.sh starts one)"
            )


def migrate(env: dict[str, str]) -> None:
    # As the server will see the database: through manage.py with the benchmark's settings.
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise BenchFailure(f"migrate failed:\n{done.stdout}{done.stderr}")


def bench_user(username: str, role: Role) -> User:
    existing = User.objects.filter(username=username).first()
    return existing or user_create(
        username=username, password=BENCH_PASSWORD, roles=[role], check_password=False
    )


def published(workflow: Workflow, author: User, values: dict[str, Any]) -> None:
    if not BookVersion.objects.filter(
        workflow=workflow, status=BookVersion.Status.PUBLISHED
    ).exists():
        make_published_book(workflow=workflow, author=author, values=values, note="benchmark")


def active(agent: Agent) -> Agent:
    if agent.status != Agent.Status.ACTIVE:
        raise BenchFailure(f"agent {agent.slug} is {agent.status}; the benchmark needs it active")
    return agent


@dataclass(frozen=True)
class RefundWorld:
    """refund-bot in workflow `refunds` with `issue_refund`, under the factories' refund book
    (yellow zone, auto cap 50.00 EUR, hard cap 500.00 EUR, threshold 0.8, autonomous)."""

    agent: Agent
    admin: User
    risk: User


def refund_world() -> RefundWorld:
    """Made through the services; found again when it exists already."""
    risk = bench_user("bench-risk", Role.RISK)
    admin = bench_user("bench-admin", Role.ADMIN)
    refunds = Workflow.objects.get_or_create(slug="refunds", defaults={"name": "Refunds"})[0]
    refund_bot = make_agent(owner=admin, workflows=[refunds], tools=[make_tool()])
    published(refunds, risk, REFUND_CONTROLS)
    return RefundWorld(active(refund_bot), admin, risk)


# --- Processes -----------------------------------------------------------------------------


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does, through every `finally`, so the processes it started
    are stopped too (each runs in a session of its own: no signal to this one reaches them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group (a gunicorn master and its workers, say), then SIGKILL to
    whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    # The group may outlive its leader: nothing of it is left behind.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@contextmanager
def started(
    command: Sequence[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def server_env(queue: str) -> dict[str, str]:
    """The servers' and workers' environment: this process's (FIREWALL_RATE_FLOOR, the
    services' URLs) with the benchmark's settings, logging at WARNING, tasks on `queue`."""
    return {
        **ENV,
        "DJANGO_SETTINGS_MODULE": "bench.server.settings",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
        "CELERY_QUEUE": queue,
    }


@dataclass(frozen=True)
class Served:
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def gunicorn(
    env: dict[str, str],
    log: Path,
    *,
    workers: int,
    threads: int,
    ready: Callable[[int], bool],
    keep_alive: float = 2,
    worker_class: str = "gthread",
) -> Iterator[Served]:
    """gunicorn serving the product on a free loopback port, once `ready(port)`."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "controlplane.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--worker-class", worker_class,
        "--workers", str(workers), "--threads", str(threads), "--keep-alive", f"{keep_alive:g}",
        "--log-level", "warning", "--timeout", "60", "--graceful-timeout", "5",
    ]  # fmt: skip
    with started(command, env, log) as process:
        deadline = time.monotonic() + 60
        while True:
            try:
                up = ready(port)
            except (OSError, http.client.HTTPException, ValueError):
                up = False
            if up:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchFailure(f"gunicorn did not answer within 60 s:\n{log_tail(log)}")
            time.sleep(0.2)
        yield Served(port, process)


@contextmanager
def celery_worker(
    env: dict[str, str], log: Path, queue: str, *, name: str, pool: str, concurrency: int
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery worker` on `queue` alone, once it answers a ping."""
    node = f"{name}-{queue}@localhost"
    command = [
        sys.executable, "-m", "celery", "-A", "controlplane", "worker",
        "--pool", pool, "--concurrency", str(concurrency), "--hostname", node, "--queues", queue,
        "--loglevel", "WARNING", "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    with started(command, env, log) as process:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(destination=[node], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchFailure(f"worker {node} did not answer within 60 s:\n{log_tail(log)}")
        yield process


@contextmanager
def celery_beat(
    env: dict[str, str], log: Path, schedule: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The scheduler (`celery beat`) with its schedule in `schedule`, its tasks on the queue of
    `env`'s CELERY_QUEUE; once it has stayed up for a second."""
    command = [
        sys.executable, "-m", "celery", "-A", "controlplane", "beat",
        "--schedule", str(schedule), "--loglevel", "WARNING",
    ]  # fmt: skip
    with started(command, env, log) as process:
        time.sleep(1)
        if process.poll() is not None:
            raise BenchFailure(f"celery beat stopped at once:\n{log_tail(log)}")
        yield process


def purge(queue: str) -> None:
    with celery_app.connection_for_write() as conn:
        Queue(queue)(conn.default_channel).purge()


# --- Requests ------------------------------------------------------------------------------


def post(port: int, path: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return post_on(conn, path, key, body)
    finally:
        conn.close()


def post_on(
    conn: http.client.HTTPConnection, path: str, key: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data else {}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    # Nearest rank, as bench_policy.py.
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]
