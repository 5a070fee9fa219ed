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

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Field

from apps.actions.breaker import CIRCUIT_REFUSING_SQL, circuit_cooling_since
from apps.actions.dispatch import announcement
from apps.actions.models import Action
from apps.actions.states import Actor, insert_record, path_end
from apps.audit.services import audit_collected, audit_rows
from apps.core.workers import task_channel
from apps.killswitches.coverage import COVERING_SQL

# Each value names its column's type (text for text columns, whose length PostgreSQL then
# checks on assignment), so that a parameter in the SELECT the row is written from has a type.
_TEXT_TYPES = ("varchar", "text")


@dataclass(frozen=True)
class Stopped:
    """Why the statement wrote nothing: a switch covers the action, or its tool's circuit is
    open and cooling down (either or both)."""

    switched: bool
    broken: bool


@cache
def _action_columns() -> tuple[tuple[Field[Any, Any], ...], str, str]:
    """The action's fields, their columns, and the SELECT list that writes them: the same in
    every statement, so composed once per process."""
    fields = tuple(Action._meta.concrete_fields)
    columns: list[str] = []
    values: list[str] = []
    for field in fields:
        columns.append(connection.ops.quote_name(str(field.column)))
        db_type = str(field.db_type(connection))
        values.append("%s::text" if db_type.startswith(_TEXT_TYPES) else f"%s::{db_type}")
    return fields, ", ".join(columns), ", ".join(values)


def _action_row(action: Action) -> tuple[str, str, list[Any]]:
    """The action's columns, the SELECT list that writes them, and its params, as the ORM's
    INSERT would write them (defaults, `auto_now`, the database form of each value)."""
    fields, columns, values = _action_columns()
    params = [field.get_db_prep_save(field.pre_save(action, True), connection) for field in fields]
    return columns, values, params


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
    columns, values, action_params = _action_row(action)
    event_columns, event_rows, event_params = audit_rows(events)
    statement = (
        f"WITH stop AS (SELECT EXISTS ({COVERING_SQL}) AS switched,"  # noqa: S608 (constants)
        f" EXISTS ({CIRCUIT_REFUSING_SQL}) AS broken),"
        f" written AS (INSERT INTO actions_action ({columns}) SELECT {values} FROM stop"
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
        *action_params,
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
