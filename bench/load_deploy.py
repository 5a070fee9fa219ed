"""The product deployed for the load test (bench_load.py): the sandbox on a server of its own
with the refund tool pointed at it, the Celery workers and scheduler, and the product's web
server."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from apps.registry.models import Tool
from bench import sampling
from bench.harness import Served, celery_beat, celery_worker, gunicorn

ENV = os.environ


@dataclass(frozen=True)
class Shape:
    """How many of each, and how they are served."""

    web_workers: int
    web_threads: int
    web_class: str
    celery_workers: int
    celery_threads: int
    sandbox_threads: int

    def describe(self) -> str:
        return (
            f"gunicorn {self.web_workers} x {self.web_threads} {self.web_class}, "
            f"{self.celery_workers} Celery workers x {self.celery_threads} threads, beat"
        )


def answers(port: int, method: str, path: str, status: int, **request: Any) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, **request)
        response = conn.getresponse()
        response.read()
        return response.status == status
    finally:
        conn.close()


def sandbox_ready(credential: str) -> Callable[[int], bool]:
    def ready(port: int) -> bool:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        return answers(port, "POST", "/sandbox/noop", 200, body="{}", headers=headers)

    return ready


def gate_ready(key: str) -> Callable[[int], bool]:
    def ready(port: int) -> bool:
        # A read of an action that does not exist: the key, the API and the database answer.
        missing = f"/api/v1/actions/{uuid.UUID(int=0)}"
        return answers(port, "GET", missing, 404, headers={"Authorization": f"Bearer {key}"})

    return ready


@contextmanager
def tool_pointed_at(tool: Tool, sandbox_port: int, credential: str) -> Iterator[None]:
    before = (tool.endpoint_url, tool.undo_endpoint_url, tool.credential_secret)
    base = f"http://127.0.0.1:{sandbox_port}/sandbox"
    Tool.objects.filter(pk=tool.pk).update(
        endpoint_url=f"{base}/refunds",
        undo_endpoint_url=f"{base}/refunds/undo",
        credential_secret=credential,
    )
    try:
        yield
    finally:
        Tool.objects.filter(pk=tool.pk).update(
            endpoint_url=before[0], undo_endpoint_url=before[1], credential_secret=before[2]
        )


@dataclass(frozen=True)
class Deployed:
    web: Served
    sandbox: Served
    workers: list[subprocess.Popen[bytes]]
    beat: subprocess.Popen[bytes]

    def groups(self) -> dict[str, sampling.Group]:
        """The processes whose CPU the run reports, by name."""
        sessions = {worker.pid for worker in self.workers}
        database_port = int(settings.DATABASES["default"].get("PORT") or 5432)
        return {
            "gate web": sampling.in_session(self.web.process.pid),
            "Celery workers": lambda stat: stat.session in sessions,
            "Celery beat": sampling.in_session(self.beat.pid),
            "sandbox web": sampling.in_session(self.sandbox.process.pid),
            "PostgreSQL": sampling.postgres_on(database_port),
            "Redis": sampling.redis_on(urlsplit(ENV.get("REDIS_URL", "")).port or 6379),
            "load client": lambda stat: stat.pid == os.getpid(),
        }


def deploy(
    stack: ExitStack,
    shape: Shape,
    *,
    env: dict[str, str],
    logs: Path,
    queue: str,
    key: str,
    tool: Tool,
) -> Deployed:
    """The sandbox (switched on, with a credential of this run's own), `tool` pointed at it with
    that credential, the workers, the scheduler and the product's web server, each stopped when
    `stack` closes."""
    credential = secrets.token_urlsafe(32)
    sandbox = stack.enter_context(
        gunicorn(
            {**env, "SANDBOX_ENABLED": "true", "SANDBOX_TOKEN": credential},
            logs / "sandbox.log",
            workers=1,
            threads=shape.sandbox_threads,
            ready=sandbox_ready(credential),
            keep_alive=300,
        )
    )
    stack.enter_context(tool_pointed_at(tool, sandbox.port, credential))
    workers = [
        stack.enter_context(
            celery_worker(
                env,
                logs / f"worker{n}.log",
                queue,
                name=f"load{n}",
                pool="threads",
                concurrency=shape.celery_threads,
            )
        )
        for n in range(shape.celery_workers)
    ]
    # The scheduler, as deployed: its requeue sweep sends actions left queued, or running with
    # their lease over, to the workers again.
    beat = stack.enter_context(celery_beat(env, logs / "beat.log", logs / "beat-schedule"))
    web = stack.enter_context(
        gunicorn(
            env,
            logs / "web.log",
            workers=shape.web_workers,
            threads=shape.web_threads,
            worker_class=shape.web_class,
            ready=gate_ready(key),
            # Longer than any pause in the run: the client's pooled connections stay.
            keep_alive=300,
        )
    )
    return Deployed(web, sandbox, workers, beat)
