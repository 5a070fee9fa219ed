"""The floor the gate is compared with: the same request, authenticated with the same agent key
and parsed with the same schema, then one INSERT into a table of its own, answering 201 JSON.

Only bench/server/urls.py mounts it, and the table is made by the benchmark (`TABLE_DDL`), not
by a migration: none of this exists in the product."""

from __future__ import annotations

import json

from django.db import connection
from django.http import HttpRequest
from ninja import NinjaAPI, Schema, Status

from apps.actions.api import ErrorOut, ProposalIn, agent_auth
from apps.core.api_errors import install_error_handlers
from apps.registry.models import AgentKey

TABLE = "bench_insert"
TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    key_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    body jsonb NOT NULL
)
"""

api = NinjaAPI(title="Escapement benchmark", version="bench", urls_namespace="bench", docs_url=None)
install_error_handlers(api)


class InsertedOut(Schema):
    id: int


@api.post("/insert", auth=agent_auth, response={201: InsertedOut, 401: ErrorOut, 422: ErrorOut})
def insert(request: HttpRequest, payload: ProposalIn) -> Status[InsertedOut]:
    key: AgentKey = request.agent_key  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (key_id, body) VALUES (%s, %s) RETURNING id",  # noqa: S608
            [key.pk, json.dumps(payload.params)],
        )
        row = cursor.fetchone()
    assert row is not None
    return Status(201, InsertedOut(id=row[0]))
