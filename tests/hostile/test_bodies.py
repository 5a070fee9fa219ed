"""Hostile bodies: oversized, deeply nested, text the database cannot store (NUL, lone
surrogates), unicode and control characters, SQL injection. Each is a clear 4xx naming the field
with nothing recorded, or (for text that is merely unusual) stored and given back exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from apps.actions.models import Action
from apps.audit.models import AuditEvent
from apps.core.api_input import MAX_DEPTH
from apps.killswitches.models import KillSwitch
from tests.actions.conftest import GOOD_PARAMS, proposal_body, propose
from tests.hostile.conftest import Hostile

pytestmark = pytest.mark.django_db


def recorded() -> tuple[int, int]:
    return Action.objects.count(), AuditEvent.objects.count()


def post_raw(client: Client, key: str, raw: bytes | str) -> Any:
    return client.post(
        "/api/v1/actions",
        raw,
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


def test_propose__body_over_upload_limit__413_naming_body(
    client: Client, hostile: Hostile, settings: Any
) -> None:
    # Given a limit of 64 kB on request bodies, and a proposal of 100 kB
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    before = recorded()
    body = proposal_body(evidence=[{"snippet": "x" * 100_000}])

    # When it is sent
    answer = propose(client, hostile.agent_key, body)

    # Then it is refused as too large, naming the body and the limit, and nothing is recorded
    assert answer.status_code == 413, answer.content
    assert answer.json() == {
        "detail": "The request body is too large.",
        "errors": [{"field": "body", "message": "at most 65536 bytes"}],
    }
    assert recorded() == before


def test_propose__reasoning_over_its_limit__422_naming_reasoning(
    client: Client, hostile: Hostile
) -> None:
    before = recorded()
    answer = propose(client, hostile.agent_key, proposal_body(reasoning="why " * 2_501))
    assert answer.status_code == 422
    assert [error["field"] for error in answer.json()["errors"]] == ["reasoning"]
    assert recorded() == before


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body_changes", "expected_field"),
    [
        ({"params": {**GOOD_PARAMS, "deep": nested(MAX_DEPTH)}}, "params.deep"),
        ({"evidence": [nested(MAX_DEPTH)]}, "evidence[0]"),
    ],
    ids=["params", "evidence"],
)
def test_propose__nested_past_the_limit__422_naming_where(
    client: Client, hostile: Hostile, body_changes: dict[str, Any], expected_field: str
) -> None:
    # Given a value nested past MAX_DEPTH levels inside a field
    before = recorded()

    # When it is proposed
    answer = propose(client, hostile.agent_key, proposal_body(**body_changes))

    # Then it is refused naming the field where the nesting goes too deep, and nothing recorded
    assert answer.status_code == 422
    # (the body is one level and the field another, so the refusal lands MAX_DEPTH - 2 further)
    (error,) = answer.json()["errors"]
    assert error["field"] == expected_field + ".a" * (MAX_DEPTH - 2)
    assert error["message"] == f"nested deeper than {MAX_DEPTH} levels"
    assert recorded() == before


def test_propose__nested_beyond_what_the_json_parser_handles__422_naming_body(
    client: Client, hostile: Hostile
) -> None:
    # Given 100,000 nested arrays: too deep even for the JSON parser's own recursion
    before = recorded()
    raw = '{"workflow": "refunds", "params": ' + "[" * 100_000 + "]" * 100_000 + "}"

    answer = post_raw(client, hostile.agent_key, raw)

    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"field": "body", "message": f"nested deeper than {MAX_DEPTH} levels"}
    ]
    assert recorded() == before


def test_propose__nesting_within_the_limit__accepted(client: Client, hostile: Hostile) -> None:
    # Evidence nested just within the limit (the body itself is one level, the list another)
    answer = propose(
        client,
        hostile.agent_key,
        proposal_body(evidence=[nested(MAX_DEPTH - 2)], idempotency_key="deep-ok"),
    )
    assert answer.status_code == 201, answer.content


# Every text field of a proposal, and a param's name: each must refuse NUL and lone surrogates.
TEXT_FIELDS: list[tuple[str, Any]] = [
    ("subject", lambda bad: {"subject": f"order:{bad}"}),
    ("reasoning", lambda bad: {"reasoning": f"because{bad}"}),
    ("trace_id", lambda bad: {"trace_id": f"t{bad}"}),
    ("segment", lambda bad: {"segment": f"s{bad}"}),
    ("idempotency_key", lambda bad: {"idempotency_key": f"k{bad}"}),
    ("params.reason", lambda bad: {"params": {**GOOD_PARAMS, "reason": f"r{bad}"}}),
    ("params.order_id", lambda bad: {"params": {**GOOD_PARAMS, "order_id": f"1{bad}"}}),
    ("evidence[1].snippet", lambda bad: {"evidence": ["ok", {"snippet": f"s{bad}"}]}),
    (
        "usage.model",
        lambda bad: {"usage": {"model": f"m{bad}", "input_tokens": 1, "output_tokens": 1}},
    ),
    (f"params.x{chr(0)}y", lambda bad: {"params": {**GOOD_PARAMS, f"x{bad}y": 1}}),
]


@pytest.mark.parametrize(("field", "change"), TEXT_FIELDS, ids=[f for f, _ in TEXT_FIELDS])
def test_propose__nul_character_in_text__422_naming_field(
    client: Client, hostile: Hostile, field: str, change: Any
) -> None:
    before = recorded()
    answer = propose(client, hostile.agent_key, proposal_body(**change("\x00")))
    assert answer.status_code == 422, answer.content
    (error,) = answer.json()["errors"]
    assert error["field"] == field
    assert "NUL" in error["message"]
    assert recorded() == before


@pytest.mark.parametrize(("field", "change"), TEXT_FIELDS[:6], ids=[f for f, _ in TEXT_FIELDS[:6]])
def test_propose__lone_surrogate_in_text__422_naming_field(
    client: Client, hostile: Hostile, field: str, change: Any
) -> None:
    # json.dumps writes the lone surrogate as the escape \ud800, exactly as a client would
    before = recorded()
    answer = post_raw(client, hostile.agent_key, json.dumps(proposal_body(**change("\ud800"))))
    assert answer.status_code == 422, answer.content
    (error,) = answer.json()["errors"]
    assert error["field"] == field
    assert "surrogate" in error["message"]
    assert recorded() == before


def test_engage__nul_in_reason__422_naming_reason_and_no_switch(
    client: Client, hostile: Hostile
) -> None:
    before = KillSwitch.objects.count()
    answer = client.post(
        "/api/v1/killswitches",
        {"scope": "global", "reason": "stop\x00now"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {hostile.staff_token}"},
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "reason"
    assert KillSwitch.objects.count() == before


# Unusual but storable text: right-to-left override, zero-width joiner, combining marks, emoji,
# astral plane, tabs, newlines, escape and bell characters, and a long line of CJK.
UNUSUAL = (
    "\u202egnirts\u202c \u200d e\u0301\u0308 \U0001f4a5\U0001f9ea "
    "\U0001d518\U0001d52b\U0001d526 \t\n\r\x1b[31m\x07 " + ("退款" * 50)
)


def test_propose__unicode_and_control_characters__stored_and_read_back_exactly(
    client: Client, hostile: Hostile
) -> None:
    # When every text field of a proposal carries unusual text
    body = proposal_body(
        subject=f"order:{UNUSUAL[:150]}",
        reasoning=UNUSUAL,
        trace_id=UNUSUAL[:90],
        segment="\u00e9\u00e8\u00ea",
        idempotency_key=f"k-{UNUSUAL[:100]}",
        params={**GOOD_PARAMS, "reason": UNUSUAL},
        evidence=[{"snippet": UNUSUAL}],
    )
    created = propose(client, hostile.agent_key, body)

    # Then it is decided like any other, and stored and given back character for character
    assert created.status_code == 201, created.content
    action_id = created.json()["id"]
    read = client.get(
        f"/api/v1/actions/{action_id}", headers={"Authorization": f"Bearer {hostile.agent_key}"}
    )
    assert read.json()["subject"] == body["subject"]
    action = Action.objects.get(pk=action_id)
    assert action.reasoning == UNUSUAL
    assert action.params["reason"] == UNUSUAL
    assert action.evidence == [{"snippet": UNUSUAL}]
    assert action.trace_id == UNUSUAL[:90]
    assert action.idempotency_key == f"k-{UNUSUAL[:100]}"


SQL = [
    "refunds' OR '1'='1",
    "refunds'; DROP TABLE actions_action; --",
    'refunds" OR 1=1 --',
    "1; SELECT pg_sleep(5)",
]


@pytest.mark.parametrize("attempt", SQL)
def test_propose__sql_in_workflow__403_naming_workflow_and_tables_intact(
    client: Client, hostile: Hostile, attempt: str
) -> None:
    before = recorded()
    answer = propose(client, hostile.agent_key, proposal_body(workflow=attempt[:63]))
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["field"] == "workflow"
    assert recorded() == before


@pytest.mark.parametrize("attempt", SQL)
def test_propose__sql_in_text_fields__stored_verbatim_as_data(
    client: Client, hostile: Hostile, attempt: str
) -> None:
    # When SQL arrives in the subject, the reasoning and a param
    answer = propose(
        client,
        hostile.agent_key,
        proposal_body(
            subject=attempt,
            reasoning=attempt,
            params={**GOOD_PARAMS, "order_id": attempt},
            idempotency_key=f"sql-{SQL.index(attempt)}",
        ),
    )

    # Then it is one more action whose fields hold the text as typed, and every table is there
    assert answer.status_code == 201, answer.content
    action = Action.objects.get(pk=answer.json()["id"])
    assert (action.subject, action.reasoning, action.params["order_id"]) == (attempt,) * 3
    assert Action.objects.filter(subject=attempt).count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('actions_action') IS NOT NULL")
        assert cursor.fetchone() == (True,)


def test_read__sql_in_path__422_naming_action_id(client: Client, hostile: Hostile) -> None:
    answer = client.get(
        "/api/v1/actions/1%27%20OR%20%271%27=%271",
        headers={"Authorization": f"Bearer {hostile.agent_key}"},
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "action_id"


def test_list_switches__sql_in_query__422_naming_limit(client: Client, hostile: Hostile) -> None:
    answer = client.get(
        "/api/v1/killswitches?limit=1;DROP%20TABLE%20killswitches_killswitch",
        headers={"Authorization": f"Bearer {hostile.staff_token}"},
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "limit"
    assert KillSwitch.objects.exists()
