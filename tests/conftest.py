"""Shared fixtures. The suite runs against real PostgreSQL and Redis (see scripts/test-services.sh,
which `make test` uses to provide them) and refuses to run on anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.backends.postgresql.operations import DatabaseOperations
from django.test import Client

from apps.accounts.roles import Role
from apps.accounts.services import user_create
from controlplane.celery import app as celery_app
from tests.announced import Announced

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"

# One user per role; names follow the house habit (alice, bob, ...) so that tests read well.
ROLE_USERS: dict[Role, str] = {
    Role.SUPERVISOR: "alice",
    Role.RISK: "bob",
    Role.FINANCE: "charlie",
    Role.ONCALL: "dana",
    Role.ADMIN: "erin",
}


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine or not os.environ.get("DATABASE_URL"):
        pytest.exit(
            "tests need PostgreSQL: set DATABASE_URL, or run `make test` to start one", returncode=2
        )
    if not os.environ.get("REDIS_URL"):
        pytest.exit(
            "tests need Redis: set REDIS_URL, or run `make test` to start one", returncode=2
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the servers the suite really talks to, with the versions they report."""
    import psycopg
    import redis

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"],
        dbname=db["NAME"], connect_timeout=5,
    ) as conn:  # fmt: skip
        pg_version = conn.info.parameter_status("server_version")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=5)
    redis_version = broker.info("server")["redis_version"]
    return [
        f"database: PostgreSQL {pg_version} at {db['HOST'] or 'local socket'}:{db['PORT'] or 5432}",
        f"broker: Redis {redis_version} at {settings.CELERY_BROKER_URL.split('@')[-1]}",
    ]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The production hasher is slow on purpose; tests create and sign in many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_witness_file(settings: Any) -> None:
    # Tests side by side have databases of their own; one witness file would mix their logs.
    # Tests of the witness file point it at a file of their own.
    settings.AUDIT_WITNESS_FILE = ""


def _flush_past_the_trail_triggers(self: BaseDatabaseOperations, sql_list: Iterable[str]) -> None:
    """Between transactional tests Django empties every table with TRUNCATE, which the audit
    trail's triggers refuse; the suite's role (a superuser) sets them aside for that statement
    alone, as the replication role does."""
    _flush(self, ["SET LOCAL session_replication_role = replica", *sql_list])


_flush = DatabaseOperations.execute_sql_flush
DatabaseOperations.execute_sql_flush = _flush_past_the_trail_triggers  # type: ignore[method-assign]


@pytest.fixture
def enqueued(transactional_db: None) -> Iterator[Announced]:
    """The action ids announced to the workers (tests/announced.py), on a channel of the test's
    own: no worker hears them. Needs a transactional test: notices are delivered on commit."""
    announced = Announced()
    queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = announced.channel
    try:
        yield announced
    finally:
        celery_app.conf.task_default_queue = queue
        announced.close()


def make_user(role: Role | None, username: str | None = None) -> User:
    name = username or (ROLE_USERS[role] if role else "nobody")
    return user_create(username=name, password=PASSWORD, roles=[role] if role else [])


@pytest.fixture
def user_for(db: Any) -> Any:
    """user_for(Role.RISK) -> the risk user (created on first use)."""

    def get(role: Role | None) -> User:
        name = ROLE_USERS[role] if role else "nobody"
        existing = User.objects.filter(username=name).first()
        return existing or make_user(role)

    return get


@pytest.fixture
def client_for(user_for: Any) -> Any:
    """client_for(Role.RISK) -> a test client signed in as the risk user."""

    def get(role: Role | None, **client_kwargs: Any) -> Client:
        client = Client(**client_kwargs)
        client.force_login(user_for(role))
        return client

    return get


def database_url_for_subprocess() -> str:
    """The test database as a URL, so that a worker process works on the same data."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


# Ceilings for waits on other processes: far above what a healthy run takes even on a busy
# machine, so that reaching one means something is wrong, not that the machine is slow.
WORKER_START_SECONDS = 120
PING_SECONDS = 5.0


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """A real Celery worker process on the test database and Redis, on a queue of its own.

    Returns the worker's node name. Tests that need the worker to see their rows must commit
    them (use `transactional_db`).
    """
    with django_db_blocker.unblock():
        database_url = database_url_for_subprocess()
    queue = f"test-{uuid.uuid4().hex[:8]}"
    node = f"{queue}@localhost"
    env = {
        **os.environ,
        # (named, so that its sessions can be told from the others)
        "DATABASE_URL": f"{database_url}?application_name={queue}",
        "CELERY_QUEUE": queue,
        "LOG_FORMAT": "text",
        "AUDIT_WITNESS_FILE": "",
    }
    celery_app.conf.task_default_queue = queue
    log_path = ROOT / "var" / f"{queue}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "controlplane", "worker",
                "--pool", "threads", "--concurrency", "4", "--hostname", node,
                "--queues", queue, "--loglevel", "INFO", "--without-mingle", "--without-gossip",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not worker_answers(node):
            if process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker did not answer within {WORKER_START_SECONDS}s:\n{log_path.read_text()}"
                )
        yield node
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log_path.unlink(missing_ok=True)
        with django_db_blocker.unblock():
            other_sessions_ended(timeout=WORKER_START_SECONDS, application_name=queue)


def worker_answers(node: str, app: Any = celery_app) -> bool:
    """Whether the worker `node` answers a ping. The call returns as soon as it has answered;
    the long timeout is for a worker that is slow to answer on a busy machine (a short one
    would drop its late answers, every time)."""
    return bool(app.control.ping(destination=[node], timeout=PING_SECONDS))


def other_sessions_ended(timeout: float = 10.0, application_name: str | None = None) -> None:
    """Wait until no other session (of `application_name`, when given) is connected to the test
    database. A worker keeps its connections between tasks, and PostgreSQL ends a backend a
    moment after its process has gone: the test database can only be dropped once they are all
    gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND (%s::text IS NULL OR application_name = %s)",
                [application_name, application_name],
            )
            row = cursor.fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.05)
