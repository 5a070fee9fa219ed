"""The gate's allow path writes an allowed action and its events in one statement: the same row
and the same events as the full path would write, nothing at all when a switch or the tool's
circuit stops it or when any part of it fails, and its SQL copies of the switch and circuit
rules answer as the ORM's do."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.forms.models import model_to_dict
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.actions.allow_path import Stopped, action_insert_unless_stopped
from apps.actions.breaker import CIRCUIT_REFUSING_SQL, circuit_cooling_since, circuit_refusing
from apps.actions.models import Action, Decision, Status, ToolCircuit
from apps.actions.states import transition_insert
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.core.models import CircuitState
from apps.killswitches.models import KillSwitch
from apps.registry.models import Agent, Tool, Workflow
from apps.registry.services import IssuedKey
from tests.actions.conftest import proposal_body, propose
from tests.announced import Announced

pytestmark = pytest.mark.django_db(transaction=True)

PATH = (Status.APPROVED, Status.QUEUED)


def new_action(agent: Agent, refunds: Workflow, tool: Tool, book: BookVersion) -> Action:
    now = timezone.now()
    return Action(
        agent=agent,
        workflow=refunds,
        tool=tool,
        book_version=book,
        decision=Decision.ALLOW,
        reasons=[{"policy": "refunds-small", "message": "under the cap"}],
        spot_check=True,
        params={"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "ü"},
        subject="order:1042",
        confidence=Decimal("0.9300"),
        reasoning="why",
        evidence=[{"source": "ticket:77"}],
        idempotency_key="k-1",
        trace_id="trace-1",
        segment="smb",
        params_digest="d" * 64,
        created_at=now,
        queued_at=now,
    )


def write(action: Action, **proposed: Any) -> Stopped | None:
    return action_insert_unless_stopped(
        action,
        PATH,
        actor="agent:refund-bot",
        decider="system:gate",
        proposed=proposed or {"workflow": "refunds"},
    )


def events_of(action: Action) -> list[tuple[str, str, str, Any]]:
    return list(
        AuditEvent.objects.filter(target_id=str(action.pk))
        .order_by("sequence")
        .values_list("actor_type", "actor", "verb", "payload")
    )


@pytest.mark.parametrize(
    ("params", "reasoning", "confidence"),
    [
        (
            {"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "ü"},
            "why",
            "0.93",
        ),
        (
            {"reason": 'a "quoted" \\ back\nslash', "nested": [1, 2.5, None, {"k": True}]},
            "line one\nline two 'quoted' \u2603 \U0001f600",
            "1",
        ),
        ({"big": 2**62, "empty": {}, "list": []}, "", "0.0001"),
    ],
    ids=["plain", "quotes-backslashes-unicode", "edges"],
)
def test_allow_path__row_and_events__the_same_as_the_full_path_writes(
    agent: Agent,
    refunds: Workflow,
    refund_tool: Tool,
    book: BookVersion,
    params: dict[str, Any],
    reasoning: str,
    confidence: str,
) -> None:
    # Given two identical new actions
    one_statement = new_action(agent, refunds, refund_tool, book)
    full_path = new_action(agent, refunds, refund_tool, book)
    for action in (one_statement, full_path):
        action.params, action.reasoning = params, reasoning
        action.confidence = Decimal(confidence)
    full_path.idempotency_key = "k-2"
    # When one is written by the allow path and the other by the full path's insert
    assert write(one_statement) is None
    with transaction.atomic():
        transition_insert(
            full_path,
            PATH,
            actor="agent:refund-bot",
            decider="system:gate",
            proposed={"workflow": "refunds"},
            reported=False,
        )
    # Then the stored rows differ in their id, key and times only
    skip = {"id", "idempotency_key", "created_at", "updated_at", "queued_at"}
    stored = [
        {k: v for k, v in model_to_dict(Action.objects.get(pk=a.pk)).items() if k not in skip}
        for a in (one_statement, full_path)
    ]
    assert stored[0] == stored[1]
    assert stored[0]["status"] == Status.QUEUED
    assert Action.objects.get(pk=one_statement.pk).created_at == one_statement.created_at
    # And the events are the same, in the same order
    assert events_of(one_statement) == events_of(full_path)
    assert [verb for _, _, verb, _ in events_of(one_statement)] == [
        "action.proposed",
        "action.approved",
        "action.queued",
    ]


def test_allow_path__value_longer_than_its_column__refused_and_nothing_written(
    agent: Agent, refunds: Workflow, refund_tool: Tool, book: BookVersion
) -> None:
    # Given an action whose subject is longer than its column (200 characters)
    action = new_action(agent, refunds, refund_tool, book)
    action.subject = "s" * 201
    # When the allow path writes it, PostgreSQL refuses it naming the type
    with pytest.raises(DatabaseError, match=r"character varying\(200\)"):
        write(action)
    # Then nothing was written
    assert not Action.objects.exists()
    assert not AuditEvent.objects.filter(target_type="actions.action").exists()


@pytest.mark.parametrize("scope", ["global", "workflow", "agent", "tool"])
def test_allow_path__switch_engaged__writes_nothing_and_says_so(
    agent: Agent, refunds: Workflow, refund_tool: Tool, book: BookVersion, scope: str
) -> None:
    # Given a switch covering the action
    target = {"global": "", "workflow": "refunds", "agent": agent.slug, "tool": "issue_refund"}
    KillSwitch.objects.create(
        scope=scope,
        target=target[scope],
        reason="test",
        engaged_by="dana",
        engaged_at=timezone.now(),
    )
    action = new_action(agent, refunds, refund_tool, book)
    # When the allow path writes it
    stopped = write(action)
    # Then nothing is written, and the switch is named as the reason
    assert stopped == Stopped(switched=True, broken=False)
    assert not Action.objects.filter(pk=action.pk).exists()
    assert events_of(action) == []


def test_allow_path__circuit_open__writes_nothing_and_says_so(
    agent: Agent, refunds: Workflow, refund_tool: Tool, book: BookVersion
) -> None:
    # Given the tool's circuit open and cooling down
    ToolCircuit.objects.create(tool=refund_tool, state=CircuitState.OPEN, opened_at=timezone.now())
    action = new_action(agent, refunds, refund_tool, book)
    # When the allow path writes it
    # Then nothing is written, and the circuit is named as the reason
    assert write(action) == Stopped(switched=False, broken=True)
    assert not Action.objects.filter(pk=action.pk).exists()
    assert events_of(action) == []


def test_allow_path__an_event_refused__the_action_is_not_written(
    agent: Agent, refunds: Workflow, refund_tool: Tool, book: BookVersion
) -> None:
    # Given an event that PostgreSQL refuses (a NUL character cannot be stored in jsonb)
    action = new_action(agent, refunds, refund_tool, book)
    # When the allow path writes the action with it
    with pytest.raises(DatabaseError):
        write(action, note="\x00")
    # Then neither the action nor any event is kept
    assert not Action.objects.filter(pk=action.pk).exists()
    assert events_of(action) == []


def test_allow_path__the_same_idempotency_key_twice__the_second_refused(
    agent: Agent, refunds: Workflow, refund_tool: Tool, book: BookVersion
) -> None:
    # Given an action written with an idempotency key
    assert write(new_action(agent, refunds, refund_tool, book)) is None
    again = new_action(agent, refunds, refund_tool, book)
    # When another is written with the same key
    # Then the unique constraint refuses it, and its events are not kept
    with pytest.raises(DatabaseError):
        write(again)
    assert events_of(again) == []


def test_allow_path__repeated_key_inside_a_transaction__that_transaction_stays_usable(
    agent: Agent, refunds: Workflow, refund_tool: Tool, book: BookVersion
) -> None:
    # Given an action written with an idempotency key
    assert write(new_action(agent, refunds, refund_tool, book)) is None
    again = new_action(agent, refunds, refund_tool, book)
    with transaction.atomic():
        # When another is written with the same key inside a caller's transaction
        with pytest.raises(DatabaseError):
            write(again)
        # Then that transaction can still read (the refusal was kept to a savepoint)
        assert Action.objects.filter(idempotency_key="k-1").count() == 1
    assert events_of(again) == []


def test_gate__allowed_proposal__one_statement_after_the_registry_check(
    client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    # Given a proposal the book allows, the registry read once already
    assert propose(client, key.key, proposal_body()).status_code == 201
    # When another is proposed
    with CaptureQueriesContext(connection) as queries:
        response = propose(client, key.key, proposal_body(subject="order:1043"))
    # Then the gate ran two statements: the registry's generation, and the write
    assert response.status_code == 201
    assert response.json()["status"] == Status.QUEUED
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 2, statements
    assert "registry_registrygeneration" in statements[0]
    assert "INSERT INTO actions_action" in statements[1]
    assert "INSERT INTO audit_auditevent" in statements[1]
    # And the action went to the workers
    assert enqueued.ids()[-1] == response.json()["id"]


def test_gate__switch_engaged__the_full_path_blocks_it(
    client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    # Given a global switch engaged
    KillSwitch.objects.create(
        scope="global", target="", reason="incident 7", engaged_by="dana", engaged_at=timezone.now()
    )
    # When an allowed proposal arrives
    response = propose(client, key.key, proposal_body())
    # Then it is recorded blocked, naming the switch, and nothing is sent
    assert response.status_code == 201
    assert response.json()["status"] == Status.BLOCKED
    assert enqueued.ids() == []
    action = Action.objects.get(pk=response.json()["id"])
    assert action.reasons[0]["policy"] == "kill-switch:global"
    assert [verb for _, _, verb, _ in events_of(action)] == ["action.proposed", "action.blocked"]


def test_gate__circuit_open__the_full_path_holds_it_for_a_person(
    client: Client, key: IssuedKey, book: BookVersion, refund_tool: Tool, enqueued: Announced
) -> None:
    # Given the tool's circuit open
    ToolCircuit.objects.create(
        tool=refund_tool, state=CircuitState.OPEN, opened_at=timezone.now(), last_error="503"
    )
    # When an allowed proposal arrives
    response = propose(client, key.key, proposal_body())
    # Then it is held for review, naming the circuit, and nothing is sent
    assert response.status_code == 201
    assert response.json()["status"] == Status.PENDING_REVIEW
    assert enqueued.ids() == []
    assert Action.objects.get(pk=response.json()["id"]).reasons[0]["policy"] == "circuit-open"


@pytest.mark.parametrize(
    ("state", "opened_minutes_ago"),
    [
        (None, None),
        (CircuitState.CLOSED, None),
        (CircuitState.OPEN, 0),
        (CircuitState.OPEN, None),
        (CircuitState.OPEN, 60),
        (CircuitState.HALF_OPEN, 0),
    ],
)
def test_circuit_refusing_sql__each_state__answers_as_the_orm(
    refund_tool: Tool, state: str | None, opened_minutes_ago: int | None
) -> None:
    # Given the tool's circuit in this state (None: no row at all)
    if state is not None:
        opened = (
            None
            if opened_minutes_ago is None
            else timezone.now() - timedelta(minutes=opened_minutes_ago)
        )
        ToolCircuit.objects.create(tool=refund_tool, state=state, opened_at=opened)
    # When the ORM and the SQL copy are asked
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS ({CIRCUIT_REFUSING_SQL})",
            [refund_tool.pk, circuit_cooling_since(refund_tool)],
        )
        row = cursor.fetchone()
    # Then they agree
    assert row is not None
    assert row[0] is (circuit_refusing(refund_tool) is not None)
