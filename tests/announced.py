"""What the product announced to the workers (apps/actions/dispatch.py), as a worker hears it: a
LISTEN on a channel of the test's own, so that no worker of another test hears it."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from psycopg import sql

from apps.actions.dispatch import announcement_read

# A ceiling, far above what delivery takes: the end marker arrives in milliseconds.
HEAR_SECONDS = 30.0
END = "end-of-test-notices"


class Announced:
    """The ids of the actions announced on `channel` and committed, in the order heard."""

    def __init__(self) -> None:
        self.channel = f"test-announced-{uuid.uuid4().hex[:8]}"
        self._database = connections.create_connection(DEFAULT_DB_ALIAS)
        self._database.ensure_connection()
        self._raw: psycopg.Connection[Any] = self._database.connection
        self._raw.autocommit = True
        self._raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self._heard: list[str] = []

    def ids(self) -> list[str]:
        """Everything committed so far: a notice of its own marks the end, and PostgreSQL
        delivers notices in the order their transactions committed."""
        if connection.in_atomic_block:
            raise AssertionError(
                "announcements are delivered on commit: use a transactional test "
                "(pytest.mark.django_db(transaction=True))"
            )
        self._raw.execute("SELECT pg_notify(%s, %s)", [self.channel, END])
        for notice in self._raw.notifies(timeout=HEAR_SECONDS):
            if notice.payload == END:
                return list(self._heard)
            self._heard.append(announcement_read(notice.payload)[0])
        raise AssertionError(f"the end marker was not heard within {HEAR_SECONDS} s")

    def clear(self) -> None:
        self.ids()
        self._heard.clear()

    def close(self) -> None:
        self._database.close()
