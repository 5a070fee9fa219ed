"""The migrations that add a column to a trail already holding events (the trace id, the
canonical payload text): the events stay as they were, and the database still refuses to change
or remove them afterwards, and after migrating back."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings

from tests.conftest import ROOT

OLD_EVENT = (
    "INSERT INTO audit_auditevent (sequence, created_at, actor_type, actor, verb, target_type,"
    " target_id, subject, payload, payload_digest, previous_hash, hash) VALUES (1,"
    " '2026-01-05 10:00:00+00:00', 'system', 'system', 'test.event', 'registry.workflow', '1',"
    " 'order:1042', '{}', 'digest', '0000', 'hash-1')"
)

# The same event once the trace id is kept (it has none).
OLD_EVENT_WITH_TRACE = (
    "INSERT INTO audit_auditevent (sequence, created_at, actor_type, actor, verb, target_type,"
    " target_id, subject, trace_id, payload, payload_digest, previous_hash, hash) VALUES (1,"
    " '2026-01-05 10:00:00+00:00', 'system', 'system', 'test.event', 'registry.workflow', '1',"
    " 'order:1042', '', '{}', 'digest', '0000', 'hash-1')"
)

Run = Callable[[str], list[tuple[Any, ...]]]


def migrate(url: str, target: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "audit", target, "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def postgres() -> Iterator[tuple[str, Run]]:
    """A new, empty PostgreSQL database on the test server; its URL and a way to run SQL."""
    db = settings.DATABASES["default"]
    server = {
        "host": db["HOST"] or "localhost",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
    }
    name = f"escapement_migration_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    url = f"postgres://{auth}@{server['host']}:{server['port']}/{name}"

    def run(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(dbname=name, autocommit=True, **server) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    try:
        yield url, run
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Each migration that adds a column to the trail: the migration before it, the migration, an
# event as written before it, the column, and the value the old event gets.
ADDED_COLUMNS = {
    "trace id": ("0003", "0004", OLD_EVENT, "trace_id", ""),
    "canonical text": ("0004", "0005", OLD_EVENT_WITH_TRACE, "payload_canonical", None),
}


@pytest.mark.parametrize("added", sorted(ADDED_COLUMNS))
def test_migration__column_added_to_existing_events__trail_stays_append_only(
    added: str, postgres: tuple[str, Run]
) -> None:
    before, migration, old_event, column, value = ADDED_COLUMNS[added]
    url, run = postgres
    # Given a trail holding an event, written before the column was kept
    migrate(url, before)
    run(old_event)

    # When the migration adds the column
    migrate(url, migration)

    # Then the event is there as it was, with the column's value for old events
    assert run(f"SELECT sequence, verb, hash, {column} FROM audit_auditevent") == [  # noqa: S608
        (1, "test.event", "hash-1", value)
    ]
    # ... and the database still refuses to change or remove it, and after migrating back too
    assert_append_only(run)
    migrate(url, before)
    assert_append_only(run)


def assert_append_only(run: Run) -> None:
    for statement in (
        "UPDATE audit_auditevent SET actor = 'mallory'",
        "DELETE FROM audit_auditevent",
    ):
        with pytest.raises(Exception, match="append-only"):
            run(statement)
    assert run("SELECT sequence, actor FROM audit_auditevent ORDER BY sequence")[0] == (1, "system")


def test_migration__chain_to_merkle_log__events_kept_numbers_go_on_and_every_table_guarded(
    postgres: tuple[str, Run],
) -> None:
    url, run = postgres
    # Given a hash-chained trail holding an event (its canonical text not kept yet)
    migrate(url, "0005")
    run(OLD_EVENT_WITH_TRACE)
    # When it becomes a Merkle log
    migrate(url, "0006")
    # Then the event is there, waiting for the sequencer, and new events are numbered after it
    assert run("SELECT sequence, verb, writer_xid > 0 FROM audit_auditevent") == [
        (1, "test.event", True)
    ]
    run(
        "INSERT INTO audit_auditevent (created_at, actor_type, actor, verb, target_type,"
        " target_id, subject, trace_id, payload, payload_digest) VALUES (now(), 'system',"
        " 'system', 'test.next', 'registry.workflow', '1', '', '', '{}', 'digest')"
    )
    assert run("SELECT sequence FROM audit_auditevent WHERE verb = 'test.next'") == [(2,)]
    assert run("SELECT count(*) FROM audit_auditleaf") == [(0,)]
    # ... and every table of the trail refuses changes, TRUNCATE included
    assert_append_only(run)
    for table in (
        "audit_auditevent",
        "audit_auditleaf",
        "audit_auditnode",
        "audit_auditcheckpoint",
    ):
        with pytest.raises(Exception, match="append-only"):
            run(f"TRUNCATE {table} CASCADE")
    assert run("SELECT count(*) FROM audit_auditevent") == [(2,)]
