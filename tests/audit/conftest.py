"""Writing events and changing the trail out of band, as an attacker with the database owner's
rights could (the suite's role is a superuser; the application's role cannot do any of this,
see tests/core/test_db_roles.py)."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction

from apps.audit.services import audit_record
from apps.registry.models import Workflow


def out_of_band(sql: str, params: list[Any] | None = None) -> None:
    """Run SQL with the trail's triggers set aside, inside the test's transaction only."""
    with connection.cursor() as cursor:
        # (the checks of foreign keys written earlier in the transaction run now, not at its end)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params or [])
        cursor.execute("SET LOCAL session_replication_role = origin")


def record_events(count: int, *, slug: str = "claims") -> Workflow:
    workflow, _ = Workflow.objects.get_or_create(slug=slug, defaults={"name": slug.title()})
    for number in range(count):
        with transaction.atomic():
            audit_record(actor="system", verb="test.event", target=workflow, data={"n": number})
    return workflow
