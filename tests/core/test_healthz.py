"""/healthz: database, broker and a worker, each checked for real."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.core.models import Heartbeat
from apps.core.tasks import heartbeat, ping
from controlplane.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def broker_url(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the web side at another broker for one test."""

    def use(url: str) -> None:
        monkeypatch.setattr(celery_app.conf, "broker_url", url)

    return use


@pytest.mark.django_db
def test_healthz__all_up__200_with_each_check(
    client: Client, celery_worker: str, settings: Any
) -> None:
    # Given PostgreSQL, Redis and a worker (which, on a busy machine, may take more than the
    # usual second to answer: the check ends at its first answer anyway)
    settings.HEALTHZ_WORKER_TIMEOUT = 60.0
    # When /healthz is asked
    response = client.get("/healthz")
    # Then every check passes, naming the servers and the worker
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert re.fullmatch(r"PostgreSQL \d+\.\d+", body["checks"]["database"]["detail"])
    assert body["checks"]["broker"]["ok"] is True
    assert re.fullmatch(r"(Redis|Valkey) \d+\.\d+\.\d+", body["checks"]["broker"]["detail"])
    assert body["checks"]["workers"]["ok"] is True
    assert body["checks"]["workers"]["workers"]


@pytest.mark.django_db
def test_healthz__no_worker__503(client: Client, broker_url: Any) -> None:
    # Given a reachable Redis database on which no worker listens
    broker_url(celery_app.conf.broker_url.rsplit("/", 1)[0] + "/15")
    # When /healthz is asked
    response = client.get("/healthz")
    # Then it answers 503 naming the worker check as failing
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["workers"]["ok"] is False
    assert "no worker answered" in body["checks"]["workers"]["detail"]


@pytest.mark.django_db
def test_healthz__broker_down__503_and_no_ping_attempted(client: Client, broker_url: Any) -> None:
    broker_url(f"redis://127.0.0.1:{closed_port()}/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["detail"].startswith("unreachable")
    assert body["checks"]["workers"] == {
        "ok": False,
        "detail": "not checked: broker unreachable",
        "duration_ms": 0.0,
    }


def test_healthcheck_command__database_down__exit_1_naming_database(tmp_path: Path) -> None:
    # Given a DATABASE_URL on which nothing listens
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://nobody@127.0.0.1:{closed_port()}/none",
        "ESCAPEMENT_VAR_DIR": str(tmp_path),
        "HEALTHZ_WORKER_TIMEOUT": "0.2",
        "LOG_LEVEL": "ERROR",
        # A Redis database on which no worker listens, so the verdict does not depend on
        # whether another test started one.
        "REDIS_URL": celery_app.conf.broker_url.rsplit("/", 1)[0] + "/15",
    }
    # When the health check command runs
    completed = subprocess.run(
        [sys.executable, "manage.py", "healthcheck"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    # Then it exits 1, reports the database unreachable and says so in one line
    assert completed.returncode == 1
    report = json.loads(completed.stdout)
    assert report["checks"]["database"]["ok"] is False
    assert report["checks"]["database"]["detail"] == "unreachable (OperationalError)"
    assert completed.stderr.strip().splitlines()[-1] == "unhealthy: database, workers"


@pytest.mark.django_db(transaction=True)
def test_worker__task_sent__comes_back(celery_worker: str) -> None:
    # Given a worker process
    # When a task goes through Redis
    result = ping.delay("hello").get(timeout=120)
    # Then its answer comes back through the result backend
    assert result["echo"] == "hello"


@pytest.mark.django_db(transaction=True)
def test_heartbeat__run_by_worker__stamps_scheduler(client: Client, celery_worker: str) -> None:
    # Given no heartbeat yet
    assert not Heartbeat.objects.exists()
    # When the scheduler's task runs on the worker
    heartbeat.delay()
    # Then the stamp is written and /healthz reports the scheduler alive
    deadline = time.monotonic() + 120
    while not Heartbeat.objects.filter(component="scheduler").exists():
        assert time.monotonic() < deadline, "the worker did not record the heartbeat"
        time.sleep(0.05)
    assert client.get("/healthz").json()["scheduler"]["status"] == "ok"
