"""The gate's allow path in one statement: an allowed action and its audit events written
together, and the action announced to the workers (apps/actions/dispatch.py), unless a kill
switch or the tool's circuit stops it.

Most proposals are allowed, and on that path the gate's time was mostly its round trips to
PostgreSQL and the ORM composing them (docs/benchmarks.md): BEGIN, a read of the switches, a
read of the circuit, the action's INSERT, its events' INSERT, COMMIT. Here they are one
statement, composed by hand and run on its own (autocommit): a statement is atomic, so the
action and its events commit or fail together as they did in one transaction, and its snapshot
is taken when it starts, so a switch committed before it is always seen. When a switch covers
the action or the circuit refuses, the statement writes nothing and says which; the gate then
records the proposal on its full path, which blocks it or holds it for a person.

What the statement reads and writes is each rule's own copy in SQL, held equal to the ORM's by
tests: the switches covering an action (apps/killswitches/coverage.py: COVERING_SQL) and a
refusing circuit (apps/actions/breaker.py: CIRCUIT_REFUSING_SQL)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Field, JSONField

from apps.actions.breaker import CIRCUIT_REFUSING_SQL, circuit_cooling_since
from apps.actions.dispatch import announcement
from apps.actions.models import Action
from apps.actions.states import Actor, insert_record, path_end
from apps.audit.services import audit_collected, audit_rows
from apps.core.workers import task_channel
from apps.killswitches.coverage import COVERING_SQL


@dataclass(frozen=True)
class Stopped:
    """Why the statement wrote nothing: a switch covers the action, or its tool's circuit is
    open and cooling down (either or both)."""

    switched: bool
    broken: bool


@cache
def _action_columns() -> tuple[tuple[Field[Any, Any], ...], str, str]:
    """The action's fields, their columns, and the SELECT list that reads them from the row
    `r` the action's JSON makes: the same in every statement, so composed once per process."""
    fields = tuple(Action._meta.concrete_fields)
    columns = [connection.ops.quote_name(str(field.column)) for field in fields]
    return fields, ", ".join(columns), ", ".join(f"r.{column}" for column in columns)


def _json_value(value: Any) -> Any:
    """A column's database value as JSON gives it to PostgreSQL, which parses it back into the
    column's type (checking a varchar's length as an INSERT would)."""
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def action_json(action: Action) -> str:
    """The new action's row as one JSON object, column by column, as the ORM's INSERT would
    write it (defaults, `auto_now`, the database form of each value). One parameter rather than
    one per column: a statement of few parameters is parsed once per process by psycopg."""
    fields, _, _ = _action_columns()
    row: dict[str, Any] = {}
    for field in fields:
        value = field.pre_save(action, True)
        if isinstance(field, JSONField):
            if field.encoder is not None and value is not None:
                value = json.loads(json.dumps(value, cls=field.encoder))
            row[str(field.column)] = value
        else:
            row[str(field.column)] = _json_value(field.get_db_prep_save(value, connection))
    return json.dumps(row, separators=(",", ":"))


def action_insert_unless_stopped(
    action: Action,
    path: Sequence[str],
    *,
    actor: Actor,
    decider: Actor,
    proposed: Mapping[str, Any],
) -> Stopped | None:
    """Write the new `action` in the status it reaches along `path`, with the events
    `transition_insert` would record (none reported to the agent), and announce it to the
    workers, in one statement; None when written, else what stopped it (and nothing is written
    or announced)."""
    action.status = path_end(action, path)
    with audit_collected() as events:
        insert_record(action, path, actor=actor, decider=decider, proposed=proposed, reported=False)
    _, columns, values = _action_columns()
    event_columns, event_rows, event_params = audit_rows(events)
    statement = (
        f"WITH stop AS (SELECT EXISTS ({COVERING_SQL}) AS switched,"  # noqa: S608 (constants)
        f" EXISTS ({CIRCUIT_REFUSING_SQL}) AS broken),"
        f" written AS (INSERT INTO actions_action ({columns}) SELECT {values}"
        " FROM stop, json_populate_record(NULL::actions_action, %s::json) AS r"
        " WHERE NOT stop.switched AND NOT stop.broken RETURNING pg_notify(%s, %s)),"
        f" recorded AS (INSERT INTO audit_auditevent {event_columns}"
        f" SELECT * FROM (VALUES {event_rows}) AS e WHERE EXISTS (SELECT FROM written))"
        " SELECT switched, broken FROM stop"
    )
    params = [
        action.workflow.slug,
        action.agent.slug,
        action.tool.slug,
        action.tool_id,
        circuit_cooling_since(action.tool),
        action_json(action),
        task_channel(),
        announcement(action.pk),
        *event_params,
    ]
    # Inside a caller's transaction the statement gets a savepoint, so that a refusal (a
    # repeated idempotency key) leaves that transaction usable, as the full path's block does.
    inside = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with inside, connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    assert row is not None  # (the stop CTE is always one row)
    switched, broken = bool(row[0]), bool(row[1])
    if switched or broken:
        return Stopped(switched=switched, broken=broken)
    action._state.adding = False
    return None
